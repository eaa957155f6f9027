"""The ``limitline`` command.

- ``limitline run [-c CONFIG]``: run every configured strategy in one process (shadow mode
  unless armed for live trading). SIGINT or SIGTERM stops the tree in reverse order and
  flushes the store; a second signal exits at once. SIGHUP, or saving the config file,
  applies the edited config to the running process (``supervisors.reload``). A store another process holds is
  refused (exit 2), naming that process. A run continues where the store says the last one
  stopped (shadow mode included: the simulated exchange's state is kept); ``--fresh`` moves
  the store aside first and starts over.
- ``limitline check [-c CONFIG]``: run every pre-flight check without starting anything.
- ``limitline status [--url URL | -c CONFIG] [--watch N]``: a terminal view of a running
  process, read from its status server (:mod:`supervisors.status_view`).
- ``limitline sandbox [--market spot|usdm] [--port N] [--data CSV] [--faults FILE]``: a local
  exchange speaking Binance's spot REST (or USD-M futures REST), to run a live configuration
  end to end before real money.

Exit status: 0 done, 1 the runtime failed (a supervisor gave up) or, for ``check``, a
strategy failed its pre-flight checks, 2 the config or the command line is wrong, 130
stopped at once by a second signal, or by Ctrl-C while starting (before the strategies
ran: a short message, no traceback).
"""

from __future__ import annotations

import os
import signal
import sys

#: Set by :func:`_interrupted_while_starting`: the start checks it before it runs anything.
_interrupted = False


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C while the program is still importing (most of a second): nothing was started
    or written, so stop here without a traceback. Exit 130, as a forced exit.

    The flag is the part that cannot be lost: an exception raised by a signal handler
    lands in whatever code was running, and code that clears errors (a C lookup that
    swallows any exception, an ``except BaseException``) can drop it, and the start would
    go on to run, deaf to this Ctrl-C. :func:`main` checks the flag before it runs."""
    global _interrupted
    if not _interrupted:
        _interrupted = True
        print("\nlimitline: interrupted while starting; stopped before anything ran", file=sys.stderr, flush=True)
    raise SystemExit(130)


if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "limitline":
    # Only when this is the limitline program, not a module imported by another one. First
    # of all: a Ctrl-C in the imports before it is Python's KeyboardInterrupt, a traceback.
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import argparse  # noqa: E402  (after the handler: importing takes most of the start)
import functools  # noqa: E402
import logging  # noqa: E402
from decimal import Decimal  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any, Sequence  # noqa: E402

import trio  # noqa: E402

from store.errors import StoreBusy, StoreUnavailable  # noqa: E402
from supervisors.console import DEFAULT_SUMMARY_SECONDS, EventEcho, print_summaries  # noqa: E402
from supervisors.config import DEFAULT_CONFIG, Config, ConfigError, load_config  # noqa: E402
from supervisors.logs import FORMATS, setup_logging  # noqa: E402
from supervisors.tree import ShutdownTimeout, SupervisorGaveUp  # noqa: E402
from supervisors.watch import watch_config  # noqa: E402

if TYPE_CHECKING:
    from supervisors.app import App

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FORCED = 0, 1, 2, 130

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="limitline", description="Run limit-order strategies safely.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the strategies (shadow mode unless armed for live)")
    run.add_argument("-c", "--config", help=f"YAML config (default: the embedded {DEFAULT_CONFIG.name})")
    run.add_argument("-q", "--quiet", action="store_true", help="do not print orders and fills")
    run.add_argument("-v", "--verbose", action="store_true", help="also print every blocked signal with its reason")
    run.add_argument("--summary-every", type=float, default=DEFAULT_SUMMARY_SECONDS, metavar="SECONDS",
                     help=f"print a one-line summary every SECONDS (default {DEFAULT_SUMMARY_SECONDS:g}; 0: never)")
    run.add_argument("--live", action="store_true", help="arm live trading for strategies with mode: live (real orders)")
    run.add_argument("--log-format", choices=FORMATS, default="text",
                     help="text (default) or json: one JSON object per line on stdout, stderr and the log file")
    run.add_argument("--log-file", help="append the log (warnings, and every line the terminal shows) to this file")
    run.add_argument("--fresh", action="store_true",
                     help="start over from nothing: move the store aside (kept, with the time in its name) first; "
                          "refused if any strategy is live")
    check = commands.add_parser("check", help="check the config without starting anything")
    check.add_argument("-c", "--config", help="YAML config (default: the embedded one)")
    check.add_argument("--live", action="store_true", help="check as `run --live` would")
    add_status_command(commands)
    sandbox = commands.add_parser("sandbox", help="a local exchange on 127.0.0.1 speaking Binance's spot REST")
    sandbox.add_argument("--port", type=int, default=8790, help="port on 127.0.0.1 (0: any free port)")
    sandbox.add_argument("--data", help="candle CSV to replay (default: the bundled BTC/USD 1h)")
    sandbox.add_argument("--symbol", default="BTC/USDT", help="the market it lists (default BTC/USDT)")
    sandbox.add_argument("--speed", type=float, default=5.0, help="candles per second (default 5)")
    sandbox.add_argument("--faults", help="YAML or JSON file of faults to inject (see README)")
    sandbox.add_argument("--balances", default="USDT=100000,BTC=2", help="the account, e.g. USDT=100000,BTC=2 (usdm: the quote asset's is the futures wallet)")
    sandbox.add_argument("--market", choices=("spot", "usdm"), default="spot",
                         help="spot: Binance spot REST (ccxt.binance); usdm: Binance USD-M futures REST (ccxt.binanceusdm), "
                              "the symbol's linear perpetual")
    lab = commands.add_parser("lab", help="backtest the config's strategies (or one) on historical candles")
    lab.add_argument("-c", "--config", help="YAML config (default: the embedded one)")
    lab.add_argument("--strategy", help="backtest this strategy alone (default: every strategy of the config in one run; with --sweep: the sweep file's)")
    lab.add_argument("--data", help="candle CSV (default: the venue's replay data, else the bundled BTC/USD 1h)")
    lab.add_argument("--from", dest="start", help="first candle, ISO-8601 (UTC)")
    lab.add_argument("--to", dest="end", help="last candle, ISO-8601 (UTC)")
    lab.add_argument("--report", help="directory for report.json and report.html (default: lab-report/NAME)")
    lab.add_argument("--every-bar", action="store_true", help="visit every candle (the default fast path skips quiet ones; same trades)")
    lab.add_argument("--sweep", metavar="SWEEP.yaml", help="sweep parameters with walk-forward windows (see the README)")
    lab.add_argument("--dask", metavar="ADDRESS", help="with --sweep: run on this Dask scheduler (tcp://host:8786, or local)")
    lab.add_argument("--ray", metavar="ADDRESS", help="with --sweep: run on this Ray cluster (ray://host:10001, auto, or local)")
    lab.add_argument("--workers", type=int, help="with --sweep: local processes (default: every core)")
    lab.add_argument("--cache", help="where --data exchange:symbol:timeframe is looked for (default limitline-data/candles)")
    data = commands.add_parser("data", help="candles for the Lab: download from an exchange into a local cache")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    download = data_commands.add_parser("download", help="page an exchange's candles (ccxt fetch_ohlcv) into the cache")
    download.add_argument("--exchange", required=True, help="a ccxt exchange id, e.g. binance")
    download.add_argument("--symbol", required=True, help="the market, e.g. BTC/USDT")
    download.add_argument("--timeframe", default="1h", help="candle length, e.g. 1m, 1h, 1d (default 1h)")
    download.add_argument("--since", help="first candle, ISO-8601 UTC (a new file; a file in the cache resumes after its last)")
    download.add_argument("--until", help="last candle, ISO-8601 UTC (default: the last closed one)")
    download.add_argument("--cache", help="cache directory (default limitline-data/candles)")
    download.add_argument("--base-url", help="rewrite the exchange's REST URLs (a proxy, or `limitline sandbox`)")
    args = parser.parse_args(argv)
    try:
        setup_logging(getattr(args, "log_format", "text"), getattr(args, "log_file", None))
    except OSError as error:
        print(f"limitline: --log-file {args.log_file}: cannot be opened for appending ({error.strerror or error}); "
              "name a file in a directory you can write to", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "sandbox":
        return run_sandbox(args)
    if args.command == "data":
        return run_data_download(args)
    if args.command == "status" and args.url:
        return run_status(args, None)

    try:
        # `status` only reads where the process listens: a live config is read as the run reads it.
        config = load_config(args.config, live=getattr(args, "live", False) or args.command == "status",
                             lab=args.command == "lab")
    except ConfigError as error:
        print(f"limitline: invalid config {error.source}:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check":
        return _check(config)
    if args.command == "status":
        return run_status(args, config)
    if args.command == "lab":
        return run_lab(config, args)
    if args.fresh:
        try:
            problem = start_fresh(config)
        except (StoreBusy, StoreUnavailable) as refused:
            problem = str(refused)
        if problem is not None:
            print(f"limitline: --fresh: {problem}", file=sys.stderr)
            return EXIT_USAGE
    if args.summary_every < 0:
        print("limitline: --summary-every must be 0 (never) or a number of seconds", file=sys.stderr)
        return EXIT_USAGE
    # trio takes Ctrl-C from here: a KeyboardInterrupt until _run opens its signal
    # receiver (its first step), then an orderly stop (see _watch_signals).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if _interrupted:
        return EXIT_FORCED  # a Ctrl-C whose SystemExit was lost on the way (see _interrupted_while_starting)
    try:
        return trio.run(_run, config, args.quiet, args.live, args.verbose, args.summary_every, args.config, args.log_format)
    except KeyboardInterrupt:
        # Before the tree started: the store lock was released on the way out, and nothing
        # had been written but what opening the store writes.
        print("\nlimitline: interrupted while starting; stopped before anything ran", file=sys.stderr, flush=True)
        return EXIT_FORCED


def start_fresh(config: Config) -> str | None:
    """Move the store aside so this run starts from nothing; why not, if it must not.

    The whole store moves, not only the simulated exchange's tables: the ledger, the order
    book and the simulated account agree with each other, and a ledger that kept coins a
    fresh account lacks would fail every pre-flight. Nothing is deleted: the old store is
    kept beside the new one with the time in its name. Refused when a strategy is live:
    that store is the only record of real orders and real money."""
    from store.db import archive_store

    live = [s.name for s in config.strategies if s.mode == "live"]
    if live:
        return (f"refused: strategies {', '.join(live)} are live; the store holds the record of their real orders. "
                f"Use a config (or a store path) of shadow strategies only")
    from store.lock import StoreLock

    with StoreLock(config.store):  # never move the store of a running process (StoreBusy)
        archived = archive_store(config.store)
    if archived is None:
        print(f"limitline: --fresh: no store at {config.store} yet; starting from nothing", file=sys.stderr)
    else:
        print(f"limitline: --fresh: the previous store is kept as {archived}; starting from nothing", file=sys.stderr)
    return None


def run_lab(config: Config, args: argparse.Namespace) -> int:
    """``limitline lab``: a backtest or a sweep. A run that fails leaves no ``--report``
    directory it created behind (an empty directory would look like a report)."""
    created: list[Path] = []
    code = EXIT_USAGE
    try:
        code = _run_lab(config, args, created)
    finally:
        if code != EXIT_OK:
            _remove_empty(created)
    return code


def _remove_empty(created: list[Path]) -> None:
    """Removes the directories this run created (deepest first) while they are empty."""
    for directory in reversed(created):
        try:
            directory.rmdir()
        except OSError:
            return


def _run_lab(config: Config, args: argparse.Namespace, created: list[Path]) -> int:
    from datetime import datetime, timezone

    import numpy as np

    from exchange.candles import CandleDataError, bundled_path, find_gaps
    from supervisors.lab import Lab, StrategyFailed
    from supervisors.lab_config import lab_venues
    from supervisors.lab_report import summary, summary_table, write_report

    sweep = None
    if args.sweep is not None:
        from supervisors.sweep_spec import load_sweep

        try:
            sweep = load_sweep(args.sweep)
        except ConfigError as error:
            print(f"limitline: invalid sweep {error.source}:", file=sys.stderr)
            for problem in error.problems:
                print(f"  {problem}", file=sys.stderr)
            return EXIT_USAGE
    elif args.dask is not None or args.ray is not None or args.workers is not None:
        print("limitline: --dask, --ray and --workers run a sweep: give --sweep SWEEP.yaml too", file=sys.stderr)
        return EXIT_USAGE
    name = args.strategy or (sweep.strategy if sweep is not None else None)
    if name is None and sweep is not None:
        print("limitline: --strategy: name the strategy to sweep (or strategy: in the sweep file)", file=sys.stderr)
        return EXIT_USAGE
    if name is None:
        chosen = list(config.strategies)  # every strategy of the config, in one run
    else:
        settings = next((s for s in config.strategies if s.name == name), None)
        if settings is None:
            names = ", ".join(s.name for s in config.strategies)
            print(f"limitline: --strategy: no strategy is named {name!r} (strategies: {names})", file=sys.stderr)
            return EXIT_USAGE
        chosen = [settings]
    symbols = sorted({s.symbol for s in chosen})
    if len(symbols) > 1:
        print(f"limitline: lab: the strategies trade {', '.join(symbols)}, and a Lab run replays one market's candles: "
              "run each market's strategies on their own (--strategy NAME)", file=sys.stderr)
        return EXIT_USAGE
    settings = chosen[0]
    label = settings.name if len(chosen) == 1 else "all"
    market, data = lab_market(config, settings)
    perpetual = lab_perpetual_exchange(config, settings)
    if len(chosen) > 1 and any(lab_perpetual_exchange(config, s) is not None for s in chosen):
        print("limitline: lab: a perpetual strategy runs on its own in the Lab for now: name it with --strategy NAME",
              file=sys.stderr)
        return EXIT_USAGE
    if perpetual is not None:
        from supervisors.lab_perpetual import PerpetualLab

        market = perpetual.markets[settings.symbol]
        if sweep is not None:
            print(f"limitline: --sweep: strategy {settings.name} trades a perpetual; sweeps run spot strategies only "
                  "for now (run the Lab once per parameter set)", file=sys.stderr)
            return EXIT_USAGE
    try:
        source, read = lab_candles(args.data or data or str(bundled_path()), args.cache)
        bounds = [_utc(text, name) for text, name in ((args.start, "--from"), (args.end, "--to"))]
    except (CandleDataError, ValueError) as bad:
        print(f"limitline: {bad}", file=sys.stderr)
        return EXIT_USAGE
    for note in read.handling:
        print(f"lab: {source}: {note}", file=sys.stderr)
    start, end = bounds
    stamps = read.candles.timestamps()
    first_index = 0 if start is None else int(np.searchsorted(stamps, start, side="left"))
    end_index = len(stamps) if end is None else int(np.searchsorted(stamps, end, side="right"))
    candles = read.candles[first_index:end_index]  # a view: no candle is copied
    if len(candles) < 2:
        span = (f"the data holds {len(stamps):,} candle(s), {_iso(int(stamps[0]))} to {_iso(int(stamps[-1]))}"
                if len(stamps) else "the data holds no candle")
        print(f"limitline: fewer than 2 candles between --from and --to: {span}; choose --from and --to within it",
              file=sys.stderr)
        return EXIT_USAGE
    spec = _cached_spec(args.data)
    if spec is not None and spec.symbol != settings.symbol:
        print(f"lab: warning: --data {spec} holds {spec.symbol} candles and {settings.name} trades {settings.symbol}: "
              f"the backtest replays {spec.symbol}'s prices under {settings.symbol}'s rules", file=sys.stderr)
    if args.report is not None and not args.report.strip():
        print("limitline: --report: empty; name a directory for report.json and report.html "
              f"(without --report: lab-report/{label})", file=sys.stderr)
        return EXIT_USAGE
    default = Path("lab-report") / (label + ("-sweep" if sweep is not None else ""))
    directory = Path(args.report) if args.report is not None else default
    created += [p for p in reversed([directory, *directory.parents]) if not p.exists()]
    problem = _report_directory_problem(directory)
    if problem is not None:  # found now, not after the whole backtest has run
        print(f"limitline: --report {directory}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    for s in chosen:
        if s.mode == "live":
            print(f"lab: {s.name} is a live strategy; the Lab backtests it as configured and never places an order",
                  file=sys.stderr)

    if sweep is not None:
        return run_lab_sweep(args, sweep, settings.name, market, candles, directory)

    def progress(done: int, total: int) -> None:
        print(f"\rlab: {done * 100 // total:3d} % ({done:,}/{total:,} candles)", end="", file=sys.stderr, flush=True)

    try:
        if perpetual is not None:  # every candle: see supervisors/lab_perpetual.py
            outcome = PerpetualLab(settings, perpetual, candles, keep_events=False).run(progress)
        else:
            lab = Lab.together(chosen, lab_venues(config, chosen), candles, keep_events=False, fast=not args.every_bar,
                               keep_records=False)
            run = lab.run_all(progress)
            del lab  # its cores and per-candle arrays: the report needs only the run's results
            outcome = run.combined
    except StrategyFailed as failed:
        print(f"\nlimitline: lab: {failed}; no report written (in `run` this strategy is paused with this "
              "message, its siblings go on)", file=sys.stderr)
        return EXIT_USAGE
    print(file=sys.stderr)
    data_read = {"source": source, "handling": list(read.handling)}
    gaps = find_gaps(candles)
    first = datetime.fromtimestamp(candles[0].ts, timezone.utc).date()
    last = datetime.fromtimestamp(candles[-1].ts, timezone.utc).date()
    names = [s.name for s in chosen]
    if len(chosen) == 1:
        numbers = write_report(outcome, directory, settings.name, gaps, market, data_read)
        print(f"Strategy Lab: {settings.name} on {settings.symbol}, {first} to {last}")
        print(summary(settings.name, numbers))
    else:
        parts = {}
        for s in chosen:
            parts[s.name] = write_report(run.results[s.name], directory / s.name, s.name, gaps, market, data_read)
        numbers = write_report(run.combined, directory, f"{', '.join(names)} (combined)", gaps, market, data_read, parts)
        print(f"Strategy Lab: {', '.join(names)} on {settings.symbol} in one run, sharing each venue's candle volume, "
              f"{first} to {last}")
        print(summary_table(parts, numbers))
    below = sorted(outcome.below_tick)
    if below:
        at = datetime.fromtimestamp(below[0], timezone.utc).isoformat().replace("+00:00", "Z")
        print(f"warning: {len(below)} signal(s) blocked because the limit price was below one tick "
              f"({market.tick_size} {market.quote}), first at the candle of {at}: the market's tick_size is too coarse "
              "for these prices, so this backtest says little about the strategy")
    print(f"report: {directory / 'report.json'} and {directory / 'report.html'}"
          + (f" (the combined account; each strategy's in {directory}/NAME/)" if len(chosen) > 1 else ""))
    return EXIT_OK


def _iso(ts: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _cached_spec(data: str | None) -> Any:
    """The :class:`~supervisors.candle_cache.DataSpec` ``--data`` names, or None (a file)."""
    from supervisors.candle_cache import parse_spec

    return parse_spec(data) if data is not None and not Path(data).exists() else None


def lab_candles(data: str, cache: str | None) -> tuple[str, Any]:
    """(what was read, :class:`~exchange.candles.CandleFile`) for ``--data``: a CSV path, or
    ``exchange:symbol:timeframe`` from the download cache. Raises CandleDataError or
    ValueError with the fix."""
    from exchange.candles import read_candles
    from supervisors.candle_cache import DEFAULT_CACHE, parse_spec

    spec = parse_spec(data) if not Path(data).exists() else None
    if spec is None:
        return data, read_candles(data)
    path = spec.path(Path(cache) if cache else DEFAULT_CACHE)
    if not path.exists():
        raise ValueError(f"--data {spec}: no candles in the cache ({path}); download them first: limitline data download "
                         f"--exchange {spec.exchange} --symbol {spec.symbol} --timeframe {spec.timeframe} --since 2024-01-01"
                         + (f" --cache {cache}" if cache else ""))
    return f"{spec} ({path})", read_candles(path)


def run_lab_sweep(args: argparse.Namespace, sweep: Any, name: str, market: Any, candles: Any, directory: Path) -> int:
    """``lab --sweep``: the walk-forward sweep on the executor asked for, its table printed,
    sweep.json and sweep.html written."""
    import time

    from tqdm import tqdm

    from supervisors.sweep import none_can_run, planned, run_sweep, windows
    from supervisors.sweep_executors import ExecutorUnavailable, open_executor
    from supervisors.sweep_report import table, write_sweep_report
    from supervisors.sweep_spec import StrategyTemplate

    template = StrategyTemplate(args.config, name)
    problems = template.check_paths(sweep)
    try:
        windows(sweep, len(candles))
    except ValueError as short:
        problems.append(str(short))
    if args.workers is not None and args.workers < 1:
        problems.append(f"--workers: must be 1 or more, got {args.workers}")
    if problems:
        print(f"limitline: invalid sweep {args.sweep}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        executor = open_executor(candles, dask=args.dask, ray=args.ray, workers=args.workers)
    except ExecutorUnavailable as unavailable:
        print(f"limitline: {unavailable}", file=sys.stderr)
        return EXIT_USAGE
    from supervisors.lab import StrategyFailed

    started = time.monotonic()
    try:
        with tqdm(total=planned(sweep), unit="backtest", desc=f"sweep on {executor.name}", file=sys.stderr,
                  dynamic_ncols=True) as bar:
            result = run_sweep(sweep, template, market, candles, executor, bar.update)
            bar.total = bar.n  # TPE or infeasible windows may run fewer than planned
            bar.refresh()
    except StrategyFailed as failed:
        print(f"\nlimitline: lab --sweep: {failed}; no report written", file=sys.stderr)
        return EXIT_USAGE
    finally:
        executor.close()
    elapsed = time.monotonic() - started
    cause = none_can_run(result)
    if cause is not None:
        print(f"limitline: lab --sweep: {cause}; no report written", file=sys.stderr)
        return EXIT_USAGE
    write_sweep_report(result, directory, name)
    sets = len({repr(sorted(t.params.items())) for t in result.trials})
    print(f"Sweep: {name} on {market.symbol}, {len(result.trials):,} in-sample backtests of {sets:,} parameter sets "
          f"in {len(result.windows)} window(s) on {executor.name}, {elapsed:.1f} s; objective {sweep.objective}")
    print(table(result))
    print(f"report: {directory / 'sweep.json'} and {directory / 'sweep.html'}")
    return EXIT_OK


def run_data_download(args: argparse.Namespace) -> int:
    """``data download``: page the exchange's candles into the cache, resuming; the gaps
    found and the file written are printed."""
    from exchange.ccxt_adapter import exchange_exists, make_client, timeframe_seconds
    import time

    from supervisors.candle_cache import DEFAULT_CACHE, DataSpec, DownloadError, UnknownSymbol, download, iso

    if not exchange_exists(args.exchange):
        print(f"limitline: --exchange: ccxt has no exchange {args.exchange!r}", file=sys.stderr)
        return EXIT_USAGE
    try:
        timeframe_seconds(args.timeframe, args.exchange)
        since, until = _utc(args.since, "--since"), _utc(args.until, "--until")
        client = make_client(args.exchange, base_url=args.base_url, timeout_ms=30_000)
    except ValueError as bad:
        print(f"limitline: {bad}", file=sys.stderr)
        return EXIT_USAGE
    if since is not None and until is not None and until < since:
        print(f"limitline: --until: {iso(until)} is before --since {iso(since)}; give an --until after --since "
              "(or none: up to the last closed candle)", file=sys.stderr)
        return EXIT_USAGE
    if since is not None and since > time.time():
        print(f"limitline: --since: {iso(since)} is in the future; no candle exists there yet", file=sys.stderr)
        return EXIT_USAGE
    spec = DataSpec(args.exchange, args.symbol, args.timeframe)
    path = spec.path(Path(args.cache) if args.cache else DEFAULT_CACHE)
    if since is None and not path.exists():
        print(f"limitline: --since: {path} does not exist yet; give the first candle's time, e.g. --since 2024-01-01",
              file=sys.stderr)
        return EXIT_USAGE

    def progress(report: Any) -> None:
        print(f"\rdata: {report.added:,} candles, up to {iso(report.last)}", end="", file=sys.stderr, flush=True)

    def retrying(what: str, seconds: float) -> None:
        print(f"\ndata: {what}; next try in {seconds:g} s", file=sys.stderr, flush=True)

    try:
        report = download(client, spec, since or 0, path, until, progress, retrying=retrying)
    except UnknownSymbol as unknown:
        print(f"limitline: {unknown}", file=sys.stderr)
        return EXIT_USAGE
    except DownloadError as stopped:
        if path.exists():
            print(f"\nlimitline: data download {spec} stopped: {stopped}. What was written is kept in {path}; "
                  "run the same command again to resume", file=sys.stderr)
        else:
            where = f" at {args.base_url}" if args.base_url else ""
            print(f"\nlimitline: data download {spec} stopped before any candle: {stopped}. Nothing was written; "
                  f"check that {args.exchange}{where} is reachable (--base-url, the network)", file=sys.stderr)
        return EXIT_FAILED
    print(file=sys.stderr)
    resumed = f", resumed after {iso(report.resumed_after)}" if report.resumed_after is not None else ""
    span = f" ({iso(report.first)} to {iso(report.last)})" if report.first is not None else ""
    print(f"data: {spec}: {report.added:,} new candles{span} in {report.pages} page(s){resumed} -> {path}")
    for gap in report.gaps[:20]:
        print(f"gap: no candles between {iso(gap['after'])} and {iso(gap['before'])} ({gap['missing']:,} missing; not filled in)")
    if len(report.gaps) > 20:
        print(f"gap: ... {len(report.gaps) - 20:,} more")
    print(f"data: {len(report.gaps)} gap(s); the Lab reads it with --data {spec}")
    return EXIT_OK


def _report_directory_problem(directory: Path) -> str | None:
    """Why report.json and report.html could not be written into ``directory``, or None.
    Creates the directory (as writing the report would); writes nothing else."""
    import tempfile

    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except FileExistsError:
        return "is a file, not a directory; name a directory for report.json and report.html"
    except NotADirectoryError:
        return "a part of this path is a file, not a directory; name a directory for report.json and report.html"
    except OSError as error:
        return f"cannot be written ({error.strerror or error}); name a directory you can write to"
    return None


def _utc(text: str | None, name: str) -> int | None:
    from datetime import datetime, timezone

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}: expected an ISO-8601 time like 2018-01-01T00:00:00Z, got {text!r}") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp())


def lab_perpetual_exchange(config: Config, settings: Any) -> Any:
    """The simulated perpetuals account a strategy on a swap venue runs on in the Lab (the
    one shadow mode builds from the venue), or None for a spot strategy."""
    from supervisors.config import SimulatedVenueConfig

    venue = config.venue(settings.venue)
    if not isinstance(venue, SimulatedVenueConfig) or venue.market_type != "swap":
        return None
    from supervisors.app import build_perpetual_exchange

    return build_perpetual_exchange(venue)


def lab_market(config: Config, settings: Any) -> tuple[Any, str | None]:
    """The market rules and default data of a strategy in the Lab (see
    :func:`supervisors.lab_config.lab_market`, where the rule lives)."""
    from supervisors.lab_config import lab_market as rules_and_data

    return rules_and_data(config, settings)


def run_sandbox(args: argparse.Namespace) -> int:
    from exchange.candles import CandleDataError, bundled_path, load_candles
    from exchange.faults import FaultSettings
    from exchange.sandbox import (
        Sandbox,
        SandboxSettings,
        credentials_from_env,
        serve_sandbox,
    )

    faults = None
    if args.faults:
        try:
            import cattrs
            import yaml

            from supervisors.config import read_yaml

            with open(args.faults, "rb") as handle:
                faults = cattrs.structure(read_yaml(handle.read(1 << 20).decode()) or {}, FaultSettings)
        except (OSError, ValueError, yaml.YAMLError, cattrs.BaseValidationError) as bad:
            shown = str(bad) if len(str(bad)) <= 200 else str(bad)[:199] + "…"
            print(f"limitline: --faults {args.faults}: {shown}", file=sys.stderr)
            return EXIT_USAGE
        if faults.problems():
            print(f"limitline: --faults {args.faults}: {'; '.join(faults.problems())}", file=sys.stderr)
            return EXIT_USAGE
    data = args.data or str(bundled_path())
    try:
        load_candles(data)
    except CandleDataError as bad:
        print(f"limitline: --data: {bad}", file=sys.stderr)
        return EXIT_USAGE
    if not 0 <= args.port <= 65535 or args.speed <= 0:
        print("limitline: --port must be 0-65535 and --speed greater than 0", file=sys.stderr)
        return EXIT_USAGE
    if args.port and not _port_free(args.port):
        print(f"limitline: --port: 127.0.0.1:{args.port} is already in use by another program; choose another --port, "
              "or 0 for any free port", file=sys.stderr)
        return EXIT_USAGE
    try:
        balances = {asset.strip(): Decimal(amount) for asset, amount in (pair.split("=") for pair in args.balances.split(","))}
    except (ValueError, ArithmeticError):
        print(f"limitline: --balances must look like USDT=100000,BTC=2, got {args.balances!r}", file=sys.stderr)
        return EXIT_USAGE
    key, secret = credentials_from_env()
    settings = SandboxSettings(data=data, symbol=args.symbol, port=args.port, speed=args.speed, api_key=key, secret=secret,
                               balances=balances, market=args.market)
    sandbox = Sandbox(settings, faults)

    async def serve_until_signal() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, args.port)
            kind = "USD-M futures" if args.market == "usdm" else "spot"
            print(f"limitline sandbox: Binance {kind} REST on {url} ({args.symbol}, {args.speed:g} candles/s); "
                  f"admin at {url}/admin/state. Point an exchange's base_url at it. Ctrl-C stops.", file=sys.stderr, flush=True)
            with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(serve_until_signal)
    return EXIT_OK


def _port_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be listened on now (as the server will, SO_REUSEADDR)."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def add_status_command(commands: Any) -> None:
    from supervisors.status_view import DEFAULT_LIMIT, MAX_LIMIT

    status = commands.add_parser("status", help="a terminal view of a running process (strategies, P&L, orders, venues)")
    status.add_argument("--url", help="its status server, e.g. http://127.0.0.1:8787 (default: status.host and "
                                      "status.port of the config)")
    status.add_argument("-c", "--config", help="the running process's YAML config (default: the embedded one)")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="redraw every SECONDS until Ctrl-C")
    status.add_argument("--offset", type=int, default=0, help="first strategy of the page (default 0)")
    status.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                        help=f"strategies on the page (1-{MAX_LIMIT}, default {DEFAULT_LIMIT})")
    status.add_argument("--state", choices=["active", "paused", "inactive"], help="only strategies in this state")
    status.add_argument("--strategy", metavar="NAME", help="one strategy, with all its open orders")


def run_status(args: argparse.Namespace, config: Config | None) -> int:
    """``limitline status``: 0 shown (or watched until Ctrl-C), 2 the process could not be
    read (not running, a token missing) or bad options."""
    from rich.console import Console

    from supervisors.status_view import MAX_LIMIT, StatusClient, StatusUnavailable, default_url, show

    if not 1 <= args.limit <= MAX_LIMIT or args.offset < 0 or (args.watch is not None and args.watch <= 0):
        print(f"limitline: --limit must be 1-{MAX_LIMIT}, --offset 0 or more, --watch more than 0 seconds",
              file=sys.stderr)
        return EXIT_USAGE
    url = args.url or default_url(config.status.host, config.status.port)  # type: ignore[union-attr]
    try:
        show(StatusClient.from_env(url), Console(), watch=args.watch, offset=args.offset, limit=args.limit,
             state=args.state, strategy=args.strategy)
    except StatusUnavailable as problem:
        print(f"limitline status: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _check(config: Config) -> int:
    """Run every pre-flight check; one line per strategy; 1 if any fails."""
    from supervisors.app import preflight_all

    from supervisors.config import config_warnings

    for warning in config_warnings(config):
        print(f"warn  {warning}")
    failed = 0
    for name, problems in preflight_all(config).items():
        if problems:
            failed += 1
            print(f"FAIL  {name}: {'; '.join(problems)}")
        else:
            strategy = next(s for s in config.strategies if s.name == name)
            print(f"ok    {name}: {strategy.symbol} on {strategy.venue} ({strategy.mode})")
    return EXIT_FAILED if failed else EXIT_OK


async def _run(config: Config, quiet: bool, live: bool, verbose: bool = False,
               summary_every: float = DEFAULT_SUMMARY_SECONDS, path: str | None = None, log_format: str = "text") -> int:
    # The receiver first, before the imports and the App: from here a Ctrl-C is a message
    # for _watch_signals, never an exception raised into whatever runs (which code that
    # clears errors could drop, leaving a process deaf to Ctrl-C). A stop asked for before
    # `with stop:` is entered still stops: entering a cancelled scope cancels at once.
    with trio.open_signal_receiver(*RUN_STOP_SIGNALS, signal.SIGHUP) as signals:
        # Imported here: `limitline status` needs none of the runtime (ccxt alone takes 0.3 s).
        from supervisors.app import App
        from supervisors.status import StatusAddressError

        app = App(config, echo=EventEcho(verbose, quiet=quiet, log_format=log_format), live=live, config_path=path)
        stop = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            announce = _Announce(config, app, nursery, path)
            nursery.start_soon(_watch_signals, stop, app, signals)
            if summary_every > 0:
                nursery.start_soon(_summaries, announce, app, summary_every)
            try:
                with stop:
                    await app.run(task_status=announce)
            except (StoreUnavailable, StatusAddressError) as refused:
                # Found before anything started or was written: the config or the machine.
                print(f"limitline: {refused}", file=sys.stderr)
                return EXIT_USAGE
            except (SupervisorGaveUp, ShutdownTimeout) as error:
                print(f"limitline: stopped: {error}", file=sys.stderr)
                return EXIT_FAILED
            finally:
                nursery.cancel_scope.cancel()
    print("limitline: stopped; the store is flushed.", file=sys.stderr)
    return EXIT_OK


async def _summaries(announce: "_Announce", app: App, every: float) -> None:
    await announce.running.wait()
    await print_summaries(app, every)


class _Announce:
    def __init__(self, config: Config, app: "App", nursery: trio.Nursery | None = None, path: str | None = None) -> None:
        self.config, self.app, self.nursery, self.path = config, app, nursery, path
        self.running = trio.Event()

    def started(self, value: object = None) -> None:
        from actors.runtime import tune_garbage_collector

        self.running.set()
        tune_garbage_collector()
        if self.nursery is not None and self.path is not None:
            # Edits are applied once everything runs; the embedded default has no file to watch.
            self.nursery.start_soon(_watch_file, self.path, self.app)
        for notice in self.app.notices:
            print(f"limitline: {notice}", file=sys.stderr, flush=True)
        status = next(c for c in self.app.snapshot()["children"] if c["name"] == "status")
        url = status.get("status", {}).get("url")
        live = sum(s.mode == "live" for s in self.config.strategies)
        mode = f"{live} LIVE (real orders)" if live else "all in shadow mode"
        print(
            f"limitline: running {len(self.config.strategies)} strategies, {mode}; "
            f"dashboard at {url}/, status at {url}/status (or `limitline status`); store {self.config.store}. "
            "Times are UTC. Ctrl-C stops.",
            file=sys.stderr,
            flush=True,
        )


#: Each stops the process in order (the sandbox stops on SIGHUP too).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: ``run`` stops on these; SIGHUP applies the edited config instead, as daemons do (nginx,
#: sshd). A closed terminal therefore no longer stops it (and what it prints there is
#: dropped): stop it with Ctrl-C or SIGTERM, which flush the store.
RUN_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def _watch_file(path: str, app: App) -> None:
    """Apply each saved edit of the config; a directory that cannot be watched leaves SIGHUP."""
    class Started:
        @staticmethod
        def started(value: object = None) -> None:
            print(f"limitline: watching {path} for edits (saving it, or SIGHUP, applies them)", file=sys.stderr, flush=True)

    try:
        await watch_config(path, functools.partial(app.reload, "file changed"), task_status=Started)
    except Exception as error:  # noqa: BLE001 - the process runs on without the watch
        logging.getLogger("limitline").warning(
            "not watching %s for edits (%s: %s); send SIGHUP to apply an edit", path, type(error).__name__, error)


async def _watch_signals(stop: trio.CancelScope, app: App, signals: Any) -> None:
    """Stop in order on the first stop signal, exit at once on the second; SIGHUP reloads.
    ``signals``: the receiver of ``RUN_STOP_SIGNALS`` and SIGHUP that :func:`_run` opened
    first of all, so that none is missed before this task runs."""
    async with trio.open_nursery() as reloads:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if not stop.cancel_called:
                    try:
                        print("limitline: SIGHUP: reading the config again", file=sys.stderr, flush=True)
                    except OSError:
                        pass  # the SIGHUP of a closed terminal: nowhere to print, running on
                    # In its own task: a stop signal is never queued behind a reload.
                    reloads.start_soon(app.reload, "SIGHUP")
                continue
            if not stop.cancel_called:
                print(f"limitline: {signal.Signals(signum).name}: stopping in order (again to exit at once)",
                      file=sys.stderr, flush=True)
                stop.cancel()
            else:
                print("limitline: second signal: exiting now", file=sys.stderr, flush=True)
                os._exit(EXIT_FORCED)


if __name__ == "__main__":
    sys.exit(main())
