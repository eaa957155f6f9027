"""Candles downloaded from an exchange into a local cache the Lab reads.

``limitline data download --exchange binance --symbol BTC/USDT --timeframe 1h --since
2024-01-01`` pages ccxt's ``fetch_ohlcv`` (through :mod:`exchange.ccxt_adapter`, public data:
no credentials) into ``<cache>/binance/BTC-USDT/1h.csv``, in the bundled CSV format (oldest
first, ISO-8601 UTC). ``limitline lab --data binance:BTC/USDT:1h`` then reads that file.

- **Resuming.** A second run continues after the last candle in the file (``--since`` only
  counts for a new file). Each page is appended whole and flushed, so an interrupted run
  loses at most the page in flight; a torn last line (a crash mid-write) is cut off first.
- **Closed candles only.** A candle whose period has not ended on the exchange's clock
  (``fetch_time``) is not written: its values would still change.
- **Gaps are reported, never filled.** A step longer than the timeframe between two candles
  (the exchange has none there: an outage, a delisting) is listed with the number of
  missing candles; the Lab lists them again in its report.
- **Transient failures** (timeouts, 5xx, rate limits, an unreachable host) are retried
  with a doubling back-off (``Retry-After`` when the exchange gives one), each retry told
  (what failed, when the next try is): up to :data:`RETRIES` times once the download has
  written candles (a rerun resumes), :data:`FIRST_RETRIES` times before (an exchange not
  reached at all is most likely a wrong ``--base-url`` or no network, not worth minutes).
  Anything else stops the download with the exchange's message, keeping every page written.
- **Nothing written for nothing.** The file (and its header) is created with the first page
  of candles: a symbol the exchange does not list (:class:`UnknownSymbol`, before any page)
  or an exchange never reached leaves no file behind.
"""

from __future__ import annotations

import difflib
import os
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from exchange.candles import COLUMNS, Candle

DEFAULT_CACHE = Path("limitline-data") / "candles"
PAGE = 1000
RETRIES = 8
#: Retries before anything was downloaded (1 + 2 + 4 s of waiting).
FIRST_RETRIES = 3
SPEC = re.compile(r"^(?P<exchange>[a-z0-9]+):(?P<symbol>[A-Za-z0-9._-]+/[A-Za-z0-9._:-]+?):(?P<timeframe>\d+[smhdwMy])$")


class DownloadError(RuntimeError):
    """The download stopped; what was written so far is kept (a rerun resumes)."""


class UnknownSymbol(ValueError):
    """The exchange does not list the symbol asked for (checked before anything is written)."""


@attrs.frozen
class DataSpec:
    exchange: str
    symbol: str
    timeframe: str

    def path(self, cache: Path = DEFAULT_CACHE) -> Path:
        """``<cache>/<exchange>/<BASE-QUOTE>/<timeframe>.csv`` (``:`` of a derivative's
        symbol, ``BTC/USDT:USDT``, becomes ``_``)."""
        market = self.symbol.replace("/", "-").replace(":", "_")
        return cache / self.exchange / market / f"{self.timeframe}.csv"

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol}:{self.timeframe}"


def parse_spec(text: str) -> DataSpec | None:
    """``exchange:symbol:timeframe`` (``binance:BTC/USDT:1h``), or None for anything else (a
    file path)."""
    match = SPEC.match(text)
    if match is None:
        return None
    return DataSpec(match["exchange"], match["symbol"], match["timeframe"])


@attrs.define
class DownloadReport:
    path: Path
    added: int = 0
    pages: int = 0
    resumed_after: int | None = None  # the last candle already in the file (epoch s)
    first: int | None = None  # first and last candle written by this run
    last: int | None = None
    #: Holes in what this run wrote (and between the file's old end and its first page):
    #: ``{"after": ts, "before": ts, "missing": candles}``.
    gaps: list[dict[str, int]] = attrs.Factory(list)
    #: Candles left out because their period had not ended on the exchange's clock.
    forming: int = 0
    retries: int = 0


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _row(candle: Candle) -> str:
    return ",".join((iso(candle.ts), *(f"{v:f}" for v in (candle.open, candle.high, candle.low, candle.close, candle.volume))))


def last_candle_ts(path: Path) -> int | None:
    """The timestamp of the file's last whole row, cutting off a torn last line (a crash
    mid-write) first. None for a file with no candle yet."""
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return None
        tail_start = max(0, size - 4096)
        handle.seek(tail_start)
        tail = handle.read()
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            handle.truncate(tail_start + cut + 1 if cut >= 0 else 0)
            tail = tail[: cut + 1] if cut >= 0 else b""
        lines = [line for line in tail.split(b"\n") if line.strip()]
        if not lines or lines[-1].decode().strip().lower().startswith("timestamp"):
            return None
        stamp = lines[-1].split(b",", 1)[0].decode()
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())


def download(
    client: Any,
    spec: DataSpec,
    since: int,
    path: Path,
    until: int | None = None,
    progress: Callable[[DownloadReport], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retrying: Callable[[str, float], None] | None = None,
) -> DownloadReport:
    """Pages ``fetch_ohlcv`` from ``since`` (epoch s; or after the file's last candle) to
    ``until`` (inclusive; default: the last closed candle) into ``path``. ``client``: a ccxt
    client from :func:`exchange.ccxt_adapter.make_client`. ``retrying(what failed, seconds
    until the next try)`` before each retry. Raises :class:`UnknownSymbol` (nothing written)
    or :class:`DownloadError` (``report.pages`` tells whether this run wrote any page)."""
    from exchange.ccxt_adapter import perform, timeframe_seconds

    step = timeframe_seconds(spec.timeframe)
    report = DownloadReport(path)
    if path.exists():
        report.resumed_after = last_candle_ts(path)
    if report.resumed_after is not None:
        since = report.resumed_after + step
    previous = report.resumed_after

    def call(operation: str, args: tuple[Any, ...]) -> Any:
        started = report.pages > 0 or report.resumed_after is not None
        return _call(perform, client, operation, args, report, sleep, RETRIES if started else FIRST_RETRIES, retrying)

    call("load_markets", ())
    listed = getattr(client, "markets", None) or {}
    if spec.symbol not in listed:
        close = difflib.get_close_matches(spec.symbol, list(listed), n=3)
        raise UnknownSymbol(f"--symbol: {spec.exchange} lists no market {spec.symbol!r}"
                            + (f"; did you mean {', '.join(close)}?" if close else
                               f" (it lists {len(listed):,} markets, in ccxt's form BASE/QUOTE)"))
    out = None
    try:
        while until is None or since <= until:
            now = call("fetch_time", ()) // 1000
            page: list[Candle] = call("fetch_candles", (spec.symbol, spec.timeframe, since * 1000, PAGE))
            page = [c for c in page if c.ts >= since and (until is None or c.ts <= until)]
            closed = [c for c in page if c.ts + step <= now]
            report.forming += len(page) - len(closed)
            if not closed:
                break
            for candle in closed:
                if previous is not None and candle.ts - previous > step:
                    report.gaps.append({"after": previous, "before": candle.ts, "missing": (candle.ts - previous) // step - 1})
                previous = candle.ts
            if out is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                out = path.open("a", encoding="utf-8", newline="")
                if report.resumed_after is None:
                    out.write(",".join(COLUMNS) + "\n")
            out.write("".join(_row(c) + "\n" for c in closed))
            out.flush()
            os.fsync(out.fileno())
            report.added += len(closed)
            report.pages += 1
            report.first = report.first if report.first is not None else closed[0].ts
            report.last = closed[-1].ts
            since = closed[-1].ts + step
            if progress is not None:
                progress(report)
            if len(closed) < len(page):
                break  # the forming candle: nothing closed lies beyond it yet
    finally:
        if out is not None:
            out.close()
    return report


def _call(perform: Callable[..., Any], client: Any, operation: str, args: tuple[Any, ...], report: DownloadReport,
          sleep: Callable[[float], None], retries: int = RETRIES,
          retrying: Callable[[str, float], None] | None = None) -> Any:
    """One operation, asked again (at most ``retries`` times) on a transient failure or a
    rate limit."""
    from exchange.ccxt_adapter import classify
    from exchange.errors import ErrorKind

    delay = 1.0
    for attempt in range(retries + 1):
        try:
            return perform(client, operation, args)
        except Exception as error:  # noqa: BLE001 - classified below, by the one table
            kind = classify(error, write=False)
            if kind not in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED):
                raise DownloadError(f"{operation}: {type(error).__name__}: {error}") from None
            if attempt == retries:
                raise DownloadError(f"{operation}: {type(error).__name__}: {error} (gave up after {retries} "
                                    f"retr{'y' if retries == 1 else 'ies'})") from None
            report.retries += 1
            retry_after = getattr(error, "retry_after", None)
            wait = retry_after if retry_after is not None else delay
            if retrying is not None:
                retrying(f"{operation} failed ({type(error).__name__}: {_short(error)}), retry {attempt + 1} of {retries}",
                         wait)
            sleep(wait)
            delay = min(delay * 2, 60.0)
    raise AssertionError("unreachable")


def _short(error: Exception) -> str:
    """An error's message on one line, at most 160 characters."""
    text = " ".join(str(error).split())
    return text if len(text) <= 160 else text[:157] + "..."
