"""Candles, and reading them from CSV files.

Format: ``timestamp,open,high,low,close,volume``, volume in the base asset. Timestamps in
UTC ISO-8601 (the bundled files), or epoch milliseconds or seconds (what exchanges export);
rows oldest first, or newest first (exports often are). Whatever was converted is said in
:attr:`CandleFile.handling` ("timestamps in epoch milliseconds", "newest first: reversed"), so
the Lab can report it. A bad row is an error that names the file and the row: a wrong price
would quietly make every backtest and every simulated fill wrong.

:func:`read_candles` keeps a file's candles in columns (:class:`CandleSeries`: 53 bytes a
candle, a million candles in about 50 MB, against about 700 bytes as Candle objects), each
value kept exactly: a Decimal's digits and exponent, so ``2505.560`` reads back as
``Decimal('2505.560')``. A Candle is built when one is asked for.
"""

from __future__ import annotations

import csv
import functools
import re
from array import array
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np  # imported where used: the sans-IO cores import this module, and load no numpy

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
    """Every candle of ``path``, oldest first, checked: ordered, no duplicates, sane prices.
    A file that is not a CSV of UTF-8 text is a :class:`CandleDataError` naming the file and
    the row. (As a list; :func:`read_candles` keeps them compact and says how it read them.)"""
    return list(read_candles(path).candles)


class CandleSeries(Sequence[Candle]):
    """Candles in columns: epoch seconds, and each of open, high, low, close and volume as
    int64 digits with an int8 exponent (a value that does not fit, more than 18 digits, is
    kept as a Decimal). Oldest first. Indexing builds a :class:`Candle`; slicing is a view
    (no copy). Pickles as its arrays (a sweep ships it to its workers once)."""

    __slots__ = ("_ts", "_columns", "_views")

    def __init__(self, ts: np.ndarray, columns: tuple[tuple[np.ndarray, np.ndarray | None], ...]) -> None:
        self._ts = ts
        self._columns = columns  # (digits, exponents) per value; exponents None: an object array of Decimals
        # Memoryviews index to plain ints faster than numpy scalars (building a Candle is
        # the cost of every pass over the series).
        self._views = tuple((memoryview(d), memoryview(e)) if e is not None else (d, None) for d, e in columns)

    def __reduce__(self) -> tuple[Any, ...]:
        return (CandleSeries, (self._ts, self._columns))

    def __len__(self) -> int:
        return len(self._ts)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            if index.step not in (None, 1):
                return [self[i] for i in range(*index.indices(len(self)))]
            return CandleSeries(self._ts[index], tuple((d[index], e[index] if e is not None else None) for d, e in self._columns))
        ts = int(self._ts[index])  # IndexError past the end, as a list
        if index < 0:
            index += len(self._ts)
        return Candle(ts, *(Decimal(d[index]).scaleb(e[index]) if e is not None else d[index] for d, e in self._views))

    def __iter__(self) -> Iterator[Candle]:
        for i in range(len(self._ts)):
            yield self[i]

    def timestamps(self) -> np.ndarray:
        """Epoch seconds of every candle (a read-only view)."""
        view = self._ts.view()
        view.flags.writeable = False
        return view

    def floats(self, name: str) -> np.ndarray:
        """Every ``open``, ``high``, ``low``, ``close`` or ``volume`` as a float, each the very
        float ``float(Decimal)`` gives (for indicators and charts; never for money)."""
        import numpy as np

        digits, exponents = self._columns[COLUMNS.index(name) - 1]
        if exponents is None or len(digits) == 0 or np.abs(digits).max() >= 2**53 or np.abs(exponents).max() > 22:
            return np.array([float(getattr(c, name)) for c in self], dtype=float)
        # One correctly rounded operation on exact operands (digits below 2**53, powers of ten
        # up to 1e22 are exact floats): the same float as float(Decimal).
        scale = np.power(10.0, np.abs(exponents).astype(float))
        whole = digits.astype(float)
        return np.where(exponents < 0, whole / scale, whole * scale)

    def closes(self) -> np.ndarray:
        return self.floats("close")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<CandleSeries of {len(self):,} candles>"


class _Column:
    """One value column while a file is read: digits and exponents, or Decimals once a value
    does not fit (more than 18 digits, or an exponent beyond int8)."""

    __slots__ = ("digits", "exponents", "wide")

    def __init__(self) -> None:
        self.digits = array("q")
        self.exponents = array("b")
        self.wide: list[Decimal] | None = None

    def append(self, value: Decimal | None, digits: int, exponent: int) -> None:
        """A value: ``value`` None, given as ``digits`` and ``exponent``; else the Decimal."""
        if self.wide is None:
            if value is not None:
                exponent = value.as_tuple().exponent  # type: ignore[assignment]
                if not isinstance(exponent, int) or not -128 <= exponent <= 127:
                    exponent = 1000  # not kept in columns: below
                else:
                    digits = int(value.scaleb(-exponent))
            if -128 <= exponent <= 127 and -(2**63) <= digits < 2**63:
                self.digits.append(digits)
                self.exponents.append(exponent)
                return
            self.wide = [Decimal(d).scaleb(e) for d, e in zip(self.digits, self.exponents)]
            self.digits, self.exponents = array("q"), array("b")
        self.wide.append(value if value is not None else Decimal(digits).scaleb(exponent))

    def arrays(self, reverse: bool) -> tuple[np.ndarray, np.ndarray | None]:
        import numpy as np

        if self.wide is not None:
            values = np.empty(len(self.wide), dtype=object)
            values[:] = self.wide[::-1] if reverse else self.wide
            return values, None
        digits = np.frombuffer(self.digits, dtype=np.int64)
        exponents = np.frombuffer(self.exponents, dtype=np.int8)
        return (digits[::-1].copy(), exponents[::-1].copy()) if reverse else (digits, exponents)


@attrs.frozen
class CandleFile:
    candles: CandleSeries
    #: How the file was read, for a person: ``timestamps in epoch milliseconds``, ``newest
    #: first: reversed to oldest first``. Empty for the bundled format.
    handling: tuple[str, ...]


#: A number written plainly (``2505.560``): its digits and exponent are read off the text.
PLAIN = re.compile(r"^[0-9]+(\.[0-9]*)?$")
#: Epoch timestamps of at least this many are milliseconds (in seconds it is the year 5138).
EPOCH_MS_FROM = 100_000_000_000


def read_candles(path: str | Path) -> CandleFile:
    """Every candle of ``path``, checked (see :func:`load_candles`), in columns, with how the
    file was read. Rows must be strictly ordered one way: oldest first, or newest first
    (then reversed); timestamps all ISO-8601, all epoch milliseconds or all epoch seconds."""
    import numpy as np

    path = Path(path)
    try:
        # Bytes that are not UTF-8 are kept (as surrogates) so the row holding them is named.
        handle = path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    except OSError as error:
        raise CandleDataError(f"{path}: cannot read the file ({error.strerror})") from None
    row_number = 1
    stamps = array("q")
    columns = tuple(_Column() for _ in COLUMNS[1:])
    unit: str | None = None
    descending: bool | None = None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is not None and not _is_text(header):
                raise CandleDataError(f"{path}:1: not UTF-8 text; {EXPECTED}")
            if header is None:
                raise CandleDataError(f"{path}: the file is empty; {EXPECTED}")
            if tuple(h.strip().lower() for h in header) != COLUMNS:
                raise CandleDataError(f"{path}:1: the header must be {','.join(COLUMNS)}, got {_shown(header)}")
            for row_number, row in enumerate(reader, start=2):
                if not row:
                    continue
                if not _is_text(row):
                    raise CandleDataError(f"{path}:{row_number}: not UTF-8 text; {EXPECTED}")
                row_unit = _timestamp_unit(row[0])
                if unit is None:
                    unit = row_unit
                elif row_unit != unit:
                    raise CandleDataError(f"{path}:{row_number}: timestamp {_shown(row[0])} is not {_UNITS[unit]} "
                                          "like the rows before it; use one kind of timestamp in a file")
                plain = _plain_row(row, unit)
                if plain is None:  # a problem (named here), or a form only Decimal reads (1E+2)
                    candle = _parse_row(path, row_number, row, unit)
                    ts, parts = candle.ts, [(v, 0, 0) for v in (candle.open, candle.high, candle.low, candle.close, candle.volume)]
                else:
                    ts, parts = plain
                if stamps:
                    if ts == stamps[-1]:
                        raise CandleDataError(f"{path}:{row_number}: duplicate timestamp {_shown(row[0])}")
                    if descending is None:
                        descending = ts < stamps[-1]
                    elif (ts < stamps[-1]) != descending:
                        order = "newest first" if descending else "oldest first"
                        raise CandleDataError(f"{path}:{row_number}: out-of-order timestamp {_shown(row[0])} "
                                              f"(the rows before it are {order})")
                stamps.append(ts)
                for column, (value, digits, exponent) in zip(columns, parts):
                    column.append(value, digits, exponent)
        except csv.Error as error:  # e.g. a field longer than any CSV line: not a CSV file
            raise CandleDataError(f"{path}:{reader.line_num or 1}: not readable as CSV ({error}); {EXPECTED}") from None
    if not stamps:
        raise CandleDataError(f"{path}: no candles")
    reverse = bool(descending)
    ts = np.frombuffer(stamps, dtype=np.int64)
    series = CandleSeries(ts[::-1].copy() if reverse else ts, tuple(c.arrays(reverse) for c in columns))
    handling = []
    if unit == "ms":
        handling.append("timestamps in epoch milliseconds (read as UTC)")
    elif unit == "s":
        handling.append("timestamps in epoch seconds (read as UTC)")
    if reverse:
        handling.append("rows newest first: reversed to oldest first")
    return CandleFile(series, tuple(handling))


def _plain_row(row: list[str], unit: str) -> tuple[int, list[tuple[None, int, int]]] | None:
    """The quick reading of a row of plain numbers (``2505.56``): (epoch seconds, (None,
    digits, exponent) per value), when the row passes every check :func:`_parse_row` makes,
    compared exactly in integers. None otherwise: :func:`_parse_row` then names the problem."""
    if len(row) != len(COLUMNS):
        return None
    parts = []
    for text in row[1:]:
        text = text.strip()
        if not PLAIN.match(text):
            return None
        point = text.find(".")
        if point >= 0:
            parts.append((None, int(text[:point] + text[point + 1:]), point - len(text) + 1))
        else:
            parts.append((None, int(text), 0))
    (_, o, eo), (_, h, eh), (_, low, el), (_, c, ec), _ = parts
    e = min(eo, eh, el, ec)
    o, h, low, c = o * 10 ** (eo - e), h * 10 ** (eh - e), low * 10 ** (el - e), c * 10 ** (ec - e)
    if not (0 < low <= o <= h and low <= c <= h):
        return None
    stamp = row[0].strip()
    if unit == "iso":
        try:
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return int(moment.timestamp()), parts
    ts = int(stamp)
    if unit == "ms":
        if ts % 1000:
            return None
        ts //= 1000
    return ts, parts


_UNITS = {"iso": "ISO-8601", "ms": "in epoch milliseconds", "s": "in epoch seconds"}


def _timestamp_unit(text: str) -> str:
    stripped = text.strip()
    if stripped.isdigit():
        return "ms" if int(stripped) >= EPOCH_MS_FROM else "s"
    return "iso"


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


def _parse_row(path: Path, row_number: int, row: list[str], unit: str = "iso") -> Candle:
    where = f"{path}:{row_number}"
    if len(row) != len(COLUMNS):
        raise CandleDataError(f"{where}: expected {len(COLUMNS)} columns, got {len(row)}")
    if unit == "iso":
        try:
            moment = datetime.fromisoformat(row[0].replace("Z", "+00:00"))
        except ValueError:
            raise CandleDataError(f"{where}: timestamp {_shown(row[0])} is not ISO-8601 or epoch milliseconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        ts = int(moment.timestamp())
    else:
        ts = int(row[0])
        if unit == "ms":
            if ts % 1000:
                raise CandleDataError(f"{where}: timestamp {_shown(row[0])} (epoch milliseconds) is not a whole second")
            ts //= 1000
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
    return Candle(ts, open_, high, low, close, volume)


def find_gaps(candles: Sequence[Candle]) -> list[dict[str, int]]:
    """Missing candles: wherever the step between two is longer than the usual (median) step.

    The Lab reports them (it does not invent candles to fill them).
    """
    import numpy as np

    if len(candles) < 3:
        return []
    if isinstance(candles, CandleSeries):
        ts = candles.timestamps()
    else:
        ts = np.fromiter((c.ts for c in candles), dtype=np.int64, count=len(candles))
    steps = np.diff(ts)
    usual = int(np.sort(steps)[len(steps) // 2])
    wide = np.flatnonzero(steps > usual)
    return [{"after": int(ts[i]), "before": int(ts[i + 1]), "missing": int(steps[i]) // usual - 1} for i in wide]
