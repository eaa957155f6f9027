"""Candles, and reading them from the bundled CSV format.

Format: ``timestamp,open,high,low,close,volume``, oldest first, timestamps in UTC ISO-8601,
volume in the base asset. A bad row is an error that names the file and the row: a wrong
price would quietly make every backtest and every simulated fill wrong.
"""

from __future__ import annotations

import csv
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


def load_candles(path: str | Path) -> list[Candle]:
    """Every candle of ``path``, checked: sorted, no duplicates, sane prices."""
    path = Path(path)
    try:
        handle = path.open(newline="")
    except OSError as error:
        raise CandleDataError(f"{path}: cannot read the file ({error.strerror})") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip().lower() for h in header) != COLUMNS:
            raise CandleDataError(f"{path}: the header must be {','.join(COLUMNS)}, got {header}")
        candles: list[Candle] = []
        for row_number, row in enumerate(reader, start=2):
            if not row:
                continue
            candle = _parse_row(path, row_number, row)
            if candles and candle.ts <= candles[-1].ts:
                problem = "duplicate" if candle.ts == candles[-1].ts else "out-of-order"
                raise CandleDataError(f"{path}:{row_number}: {problem} timestamp {row[0]}")
            candles.append(candle)
    if not candles:
        raise CandleDataError(f"{path}: no candles")
    return candles


def _parse_row(path: Path, row_number: int, row: list[str]) -> Candle:
    where = f"{path}:{row_number}"
    if len(row) != len(COLUMNS):
        raise CandleDataError(f"{where}: expected {len(COLUMNS)} columns, got {len(row)}")
    try:
        ts = datetime.fromisoformat(row[0].replace("Z", "+00:00"))
    except ValueError:
        raise CandleDataError(f"{where}: timestamp {row[0]!r} is not ISO-8601") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    values = []
    for name, text in zip(COLUMNS[1:], row[1:]):
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise CandleDataError(f"{where}: {name} {text!r} is not a number") from None
        if not value.is_finite() or value < 0:
            raise CandleDataError(f"{where}: {name} must be a finite number >= 0, got {text}")
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
