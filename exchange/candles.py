"""Candles, and reading them from the bundled CSV format.

Format: ``timestamp,open,high,low,close,volume``, oldest first, timestamps in UTC ISO-8601,
volume in the base asset. A bad row is an error that names the file and the row: a wrong
price would quietly make every backtest and every simulated fill wrong.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path

import attrs

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
BUNDLED_BTC_USD_1H = "btc_usd_1h_coinbase.csv"


@attrs.frozen
class Candle:
    """One closed bar. ``ts`` is its opening time in epoch seconds (UTC)."""

    ts: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


class CandleDataError(ValueError):
    """A candle file that cannot be trusted, with the row that shows why."""


def bundled_path(name: str = BUNDLED_BTC_USD_1H) -> Path:
    return Path(str(resources.files("exchange") / "data" / name))


EXPECTED = f"a candle file is a CSV of UTF-8 text with the header {','.join(COLUMNS)}"
#: The most of a bad value a message repeats.
SHOWN = 80


def _shown(text: object) -> str:
    shown = repr(text)
    return shown if len(shown) <= SHOWN else shown[: SHOWN - 1] + "…"


def load_candles(path: str | Path) -> list[Candle]:
    """Every candle of ``path``, checked: sorted, no duplicates, sane prices. A file that is
    not a CSV of UTF-8 text is a :class:`CandleDataError` naming the file and the row."""
    path = Path(path)
    try:
        # Bytes that are not UTF-8 are kept (as surrogates) so the row holding them is named.
        handle = path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    except OSError as error:
        raise CandleDataError(f"{path}: cannot read the file ({error.strerror})") from None
    row_number = 1
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is not None and not _is_text(header):
                raise CandleDataError(f"{path}:1: not UTF-8 text; {EXPECTED}")
            if header is None or tuple(h.strip().lower() for h in header) != COLUMNS:
                raise CandleDataError(f"{path}:1: the header must be {','.join(COLUMNS)}, got {_shown(header)}")
            candles: list[Candle] = []
            for row_number, row in enumerate(reader, start=2):
                if not row:
                    continue
                if not _is_text(row):
                    raise CandleDataError(f"{path}:{row_number}: not UTF-8 text; {EXPECTED}")
                candle = _parse_row(path, row_number, row)
                if candles and candle.ts <= candles[-1].ts:
                    problem = "duplicate" if candle.ts == candles[-1].ts else "out-of-order"
                    raise CandleDataError(f"{path}:{row_number}: {problem} timestamp {_shown(row[0])}")
                candles.append(candle)
        except csv.Error as error:  # e.g. a field longer than any CSV line: not a CSV file
            raise CandleDataError(f"{path}:{reader.line_num or 1}: not readable as CSV ({error}); {EXPECTED}") from None
    if not candles:
        raise CandleDataError(f"{path}: no candles")
    return candles


def _is_text(row: list[str]) -> bool:
    """No byte of the row failed to decode as UTF-8 (those became lone surrogates)."""
    return all(field.isascii() or not any("\udc80" <= ch <= "\udcff" for ch in field) for field in row)


@functools.lru_cache(maxsize=8)
def _cached(path: Path, mtime_ns: int, size: int) -> tuple[Candle, ...]:
    return tuple(load_candles(path))


def load_candles_cached(path: str | Path) -> Sequence[Candle]:
    """:func:`load_candles`, read once per process for an unchanged file (the config check
    reads every replay file, then the runtime replays the same ones)."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except OSError as error:
        raise CandleDataError(f"{path}: cannot read the file ({error.strerror})") from None
    return _cached(resolved, stat.st_mtime_ns, stat.st_size)


def _parse_row(path: Path, row_number: int, row: list[str]) -> Candle:
    where = f"{path}:{row_number}"
    if len(row) != len(COLUMNS):
        raise CandleDataError(f"{where}: expected {len(COLUMNS)} columns, got {len(row)}")
    try:
        ts = datetime.fromisoformat(row[0].replace("Z", "+00:00"))
    except ValueError:
        raise CandleDataError(f"{where}: timestamp {_shown(row[0])} is not ISO-8601") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    values = []
    for name, text in zip(COLUMNS[1:], row[1:]):
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise CandleDataError(f"{where}: {name} {_shown(text)} is not a number") from None
        if not value.is_finite() or value < 0:
            raise CandleDataError(f"{where}: {name} must be a finite number >= 0, got {_shown(text)}")
        values.append(value)
    open_, high, low, close, volume = values
    if low <= 0:
        raise CandleDataError(f"{where}: low must be greater than 0, got {low}")
    if high < low:
        raise CandleDataError(f"{where}: high {high} is below low {low}")
    if not (low <= open_ <= high and low <= close <= high):
        raise CandleDataError(f"{where}: open and close must lie between low {low} and high {high}")
    return Candle(int(ts.timestamp()), open_, high, low, close, volume)


def find_gaps(candles: list[Candle]) -> list[dict[str, int]]:
    """Missing candles: wherever the step between two is longer than the usual (median) step.

    The Lab reports them (it does not invent candles to fill them).
    """
    if len(candles) < 3:
        return []
    steps = sorted(b.ts - a.ts for a, b in zip(candles, candles[1:]))
    usual = steps[len(steps) // 2]
    return [
        {"after": a.ts, "before": b.ts, "missing": (b.ts - a.ts) // usual - 1}
        for a, b in zip(candles, candles[1:])
        if b.ts - a.ts > usual
    ]
