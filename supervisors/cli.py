"""The ``limitline`` command.

- ``limitline run [-c CONFIG]``: run every configured strategy in one process (shadow mode
  unless armed for live trading). SIGINT or SIGTERM stops the tree in reverse order and
  flushes the store; a second signal exits at once. SIGHUP, or saving the config file,
  applies the edited config to the running process (``supervisors.reload``). A store another process holds is
  refused (exit 2), naming that process. A run continues where the store says the last one
  stopped (shadow mode included: the simulated exchange's state is kept); ``--fresh`` moves
  the store aside first and starts over.
- ``limitline check [-c CONFIG]``: run every pre-flight check without starting anything.
- ``limitline sandbox [--port N] [--data CSV] [--faults FILE]``: a local exchange speaking
  Binance's spot REST, to run a live configuration end to end before real money.

Exit status: 0 done, 1 the runtime failed (a supervisor gave up) or, for ``check``, a
strategy failed its pre-flight checks, 2 the config or the command line is wrong, 130
stopped at once by a second signal.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Sequence

import trio

from actors.messages import RecordEvent
from store.errors import StoreBusy, StoreUnavailable
from supervisors.app import App, preflight_all
from supervisors.logs import EVENTS, FORMATS, event_fields, json_line, setup_logging, utc
from supervisors.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from supervisors.status import StatusAddressError
from supervisors.tree import ShutdownTimeout, SupervisorGaveUp
from supervisors.watch import watch_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FORCED = 0, 1, 2, 130

#: Events worth a line on the console; everything is in the event log anyway.
ECHOED = {
    "order_placed", "fill", "order_rejected", "order_canceled", "order_expired", "strategy_active",
    "preflight_failed", "breaker_open", "breaker_half_open", "breaker_closed", "strategy_inactive",
    "venue_isolated", "venue_recovered", "child_isolated", "order_unknown", "order_resolved", "strategy_paused",
    "strategy_resumed", "venue_reconciled", "venue_rate_limited", "exchange_error", "child_exited", "child_restarting", "supervisor_gave_up", "child_abandoned",
    "reconcile_difference", "config_applied", "config_rejected", "config_unchanged", "strategy_reconfigured",
    "strategy_removed",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="limitline", description="Run limit-order strategies safely.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the strategies (shadow mode unless armed for live)")
    run.add_argument("-c", "--config", help=f"YAML config (default: the embedded {DEFAULT_CONFIG.name})")
    run.add_argument("-q", "--quiet", action="store_true", help="do not print orders and fills")
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
    sandbox = commands.add_parser("sandbox", help="a local exchange on 127.0.0.1 speaking Binance's spot REST")
    sandbox.add_argument("--port", type=int, default=8790, help="port on 127.0.0.1 (0: any free port)")
    sandbox.add_argument("--data", help="candle CSV to replay (default: the bundled BTC/USD 1h)")
    sandbox.add_argument("--symbol", default="BTC/USDT", help="the market it lists (default BTC/USDT)")
    sandbox.add_argument("--speed", type=float, default=5.0, help="candles per second (default 5)")
    sandbox.add_argument("--faults", help="YAML or JSON file of faults to inject (see README)")
    sandbox.add_argument("--balances", default="USDT=100000,BTC=2", help="the account, e.g. USDT=100000,BTC=2")
    lab = commands.add_parser("lab", help="backtest one strategy of the config on historical candles")
    lab.add_argument("-c", "--config", help="YAML config (default: the embedded one)")
    lab.add_argument("--strategy", required=True, help="the strategy's name in the config")
    lab.add_argument("--data", help="candle CSV (default: the venue's replay data, else the bundled BTC/USD 1h)")
    lab.add_argument("--from", dest="start", help="first candle, ISO-8601 (UTC)")
    lab.add_argument("--to", dest="end", help="last candle, ISO-8601 (UTC)")
    lab.add_argument("--report", help="directory for report.json and report.html (default: lab-report/NAME)")
    lab.add_argument("--every-bar", action="store_true", help="visit every candle (the default fast path skips quiet ones; same trades)")
    args = parser.parse_args(argv)
    try:
        setup_logging(getattr(args, "log_format", "text"), getattr(args, "log_file", None))
    except OSError as error:
        print(f"limitline: --log-file {args.log_file}: cannot be opened for appending ({error.strerror or error}); "
              "name a file in a directory you can write to", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "sandbox":
        return run_sandbox(args)

    try:
        config = load_config(args.config, live=getattr(args, "live", False), lab=args.command == "lab")
    except ConfigError as error:
        print(f"limitline: invalid config {error.source}:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check":
        return _check(config)
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
    return trio.run(_run, config, args.quiet, args.live, args.config, args.log_format)


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
    from datetime import datetime, timezone

    from exchange.candles import CandleDataError, bundled_path, find_gaps, load_candles
    from supervisors.lab import Lab
    from supervisors.lab_report import summary, write_report

    settings = next((s for s in config.strategies if s.name == args.strategy), None)
    if settings is None:
        names = ", ".join(s.name for s in config.strategies)
        print(f"limitline: --strategy: no strategy is named {args.strategy!r} (strategies: {names})", file=sys.stderr)
        return EXIT_USAGE
    market, data = lab_market(config, settings)
    try:
        candles = load_candles(args.data or data or str(bundled_path()))
        bounds = [_utc(text, name) for text, name in ((args.start, "--from"), (args.end, "--to"))]
    except (CandleDataError, ValueError) as bad:
        print(f"limitline: {bad}", file=sys.stderr)
        return EXIT_USAGE
    start, end = bounds
    candles = [c for c in candles if (start is None or c.ts >= start) and (end is None or c.ts <= end)]
    if len(candles) < 2:
        print("limitline: fewer than 2 candles between --from and --to", file=sys.stderr)
        return EXIT_USAGE
    directory = Path(args.report or Path("lab-report") / settings.name)
    problem = _report_directory_problem(directory)
    if problem is not None:  # found now, not after the whole backtest has run
        print(f"limitline: --report {directory}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if settings.mode == "live":
        print(f"lab: {settings.name} is a live strategy; the Lab backtests it as configured and never places an order",
              file=sys.stderr)

    def progress(done: int, total: int) -> None:
        print(f"\rlab: {done * 100 // total:3d} % ({done:,}/{total:,} candles)", end="", file=sys.stderr, flush=True)

    result = Lab(settings, market, candles, keep_events=False, fast=not args.every_bar).run(progress)
    print(file=sys.stderr)
    numbers = write_report(result, directory, settings.name, find_gaps(candles))
    first = datetime.fromtimestamp(candles[0].ts, timezone.utc).date()
    last = datetime.fromtimestamp(candles[-1].ts, timezone.utc).date()
    print(f"Strategy Lab: {settings.name} on {settings.symbol}, {first} to {last}")
    print(summary(settings.name, numbers))
    if result.below_tick:
        at = datetime.fromtimestamp(result.below_tick[0], timezone.utc).isoformat().replace("+00:00", "Z")
        print(f"warning: {len(result.below_tick)} signal(s) blocked because the limit price was below one tick "
              f"({market.tick_size} {market.quote}), first at the candle of {at}: the market's tick_size is too coarse "
              "for these prices, so this backtest says little about the strategy")
    print(f"report: {directory / 'report.json'} and {directory / 'report.html'}")
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


def lab_market(config: Config, settings: Any) -> tuple[Any, str | None]:
    """The market rules and default data for a strategy in the Lab: its simulated venue's,
    or (for an exchange venue, whose rules live on the exchange) the sandbox's defaults."""
    from exchange.markets import MarketRules
    from exchange.sandbox import default_rules
    from supervisors.config import SimulatedVenueConfig, data_path

    venue = config.venue(settings.venue)
    if isinstance(venue, SimulatedVenueConfig):
        m = next((m for m in venue.markets if m.symbol == settings.symbol), None)
        if m is not None:
            rules = MarketRules.for_symbol(m.symbol, tick_size=m.tick_size, lot_size=m.lot_size, min_amount=m.min_amount,
                                           min_notional=m.min_notional, maker_fee=m.maker_fee, taker_fee=m.taker_fee)
            replay = venue.replay.get(settings.symbol)
            return rules, str(data_path(replay.data)) if replay else None
    return default_rules(settings.symbol), None


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
    settings = SandboxSettings(data=data, symbol=args.symbol, port=args.port, speed=args.speed, api_key=key, secret=secret, balances=balances)
    sandbox = Sandbox(settings, faults)

    async def serve_until_signal() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_sandbox, sandbox, args.port)
            print(f"limitline sandbox: Binance spot REST on {url} ({args.symbol}, {args.speed:g} candles/s); "
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


def _check(config: Config) -> int:
    """Run every pre-flight check; one line per strategy; 1 if any fails."""
    failed = 0
    for name, problems in preflight_all(config).items():
        if problems:
            failed += 1
            print(f"FAIL  {name}: {'; '.join(problems)}")
        else:
            strategy = next(s for s in config.strategies if s.name == name)
            print(f"ok    {name}: {strategy.symbol} on {strategy.venue} ({strategy.mode})")
    return EXIT_FAILED if failed else EXIT_OK


async def _run(config: Config, quiet: bool, live: bool, path: str | None = None, log_format: str = "text") -> int:
    app = App(config, echo=functools.partial(_echo, quiet=quiet, log_format=log_format), live=live, config_path=path)
    stop = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, stop, app)
        try:
            with stop:
                await app.run(task_status=_Announce(config, app, nursery, path))
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


class _Announce:
    def __init__(self, config: Config, app: App, nursery: trio.Nursery | None = None, path: str | None = None) -> None:
        self.config, self.app, self.nursery, self.path = config, app, nursery, path

    def started(self, value: object = None) -> None:
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
            f"status at {url}/status; store {self.config.store}. Ctrl-C stops.",
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


async def _watch_signals(stop: trio.CancelScope, app: App | None = None) -> None:
    async with trio.open_nursery() as reloads:
        with trio.open_signal_receiver(*RUN_STOP_SIGNALS, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if app is not None and not stop.cancel_called:
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


def _echo(event: RecordEvent, quiet: bool = False, log_format: str = "text") -> None:
    """One line per event worth it: on stdout (unless ``quiet``) and in the log file."""
    if event.kind not in ECHOED:
        return
    line = _event_line(event)
    if _events_log.isEnabledFor(logging.INFO):
        _events_log.info("%s", line, extra={"event": event})
    if quiet:
        return
    if log_format == "json":
        line = json_line({"time": utc(event.at), "level": "INFO", "logger": EVENTS, "message": line,
                          "event": event_fields(event)})
    try:
        print(line, flush=True)
    except OSError:
        pass  # the terminal is gone (closed after a SIGHUP): the event log has it all


_events_log = logging.getLogger(EVENTS)


def _event_line(event: RecordEvent) -> str:
    at = datetime.fromtimestamp(event.at, tz=timezone.utc).strftime("%H:%M:%S")
    who = event.strategy or event.actor
    detail = " ".join(f"{k}={v}" for k, v in event.payload.items() if k in ("side", "price", "amount", "fee"))
    if "fee" in event.payload and event.payload.get("fee_currency"):
        detail += f" {event.payload['fee_currency']}"  # a fee means nothing without its currency
    parts = [at, f"{event.kind:<20}", who]
    if event.client_order_id:
        parts.append(event.client_order_id)
    if detail:
        parts.append(detail)
    if event.rule:
        parts.append(f"rule={event.rule}")
    if event.reason:
        parts.append(f"({event.reason})")
    return "  ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
