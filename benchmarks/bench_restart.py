"""Start-up after a long history: time until ``limitline run`` says "running", and its peak RSS.

Usage: python benchmarks/bench_restart.py [--pairs 400000] [--sim-orders 600000]
                                          [--code DIR] [--keep DIR]

Fills a store (a real sqlite file, through the real writer's ``write_batch``) with the
default config's two strategies, their allocations, ``pairs`` reservations each released
again (two journal entries apiece: the ledger ends where it started, so pre-flight passes)
and ``sim-orders`` simulated orders placed and cancelled on the default simulated venue
(balances end where they started). Then runs ``limitline run`` on it as a separate process
and measures the wall time from the spawn to its "running" line and the process's peak RSS
by then (``VmHWM``, /proc/PID/status), and stops it with SIGINT. The baseline, measured in
the same run, is the same start on an empty store. The history store is started twice: the
first start has no ledger checkpoint and folds the whole journal (and checkpoints it), the
second starts from that checkpoint.

``--code DIR`` runs the ``limitline`` of another checkout (e.g. the code before a change,
``git archive COMMIT | tar -x -C DIR``) on the same stores, for a before/after figure.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actors.ledger.core import LedgerCore  # noqa: E402
from actors.messages import WRITER, RecordJournal, RecordSimulatedExchange, Release, Reserve  # noqa: E402
from actors.writer.core import Batch, plan_batch  # noqa: E402
from exchange.records import Side  # noqa: E402
from store.db import open_store, write_batch  # noqa: E402
from supervisors.app import build_shadow_venue  # noqa: E402
from supervisors.config import parse_config  # noqa: E402

CHUNK = 20_000


def config_for(store: Path) -> dict:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["store"] = str(store)
    raw["status"]["port"] = 0
    return raw


def fill_store(store: Path, pairs: int, sim_orders: int) -> None:
    raw = config_for(store)
    config = parse_config(raw)
    connection = open_store(store)
    ledger = LedgerCore()
    entries = []
    for s in config.strategies:
        entries += ledger.allocate(s.name, s.allocation.quote, s.allocation.base, 0.0, "allocation from the config",
                                   s.allocation.base_cost)
    strategy = next(s for s in config.strategies if s.allocation.quote > 0)
    base, quote = strategy.symbol.split("/")
    for i in range(pairs):
        cid = f"ll-bench-{i}"
        for message in (Reserve(cid, strategy.name, Side.BUY, strategy.symbol, base, quote, Decimal("100"),
                                Decimal("0.01"), Decimal("0.002"), f"strategy:{strategy.name}"),
                        Release(cid, "canceled")):
            for send in ledger.handle(message, float(i)):
                if send.to == WRITER and isinstance(send.message, RecordJournal):
                    entries += send.message.entries
        if len(entries) >= CHUNK:
            write_batch(connection, Batch(journal=entries))
            entries = []
    write_batch(connection, Batch(journal=entries))

    venue = config.venues[0]
    exchange = build_shadow_venue(venue).exchange
    exchange.track_changes = True
    market = next(iter(exchange.markets.values()))
    for i in range(sim_orders):
        cid = f"ll-sim-{i}"
        exchange.create_limit_order(market.symbol, Side.BUY, market.min_amount * 10, Decimal("100"), cid, float(i))
        exchange.cancel_order(cid)
        if (i + 1) % CHUNK == 0 or i == sim_orders - 1:
            exchange.forget_finished(1000, 10_000)
            write_batch(connection, plan_batch([RecordSimulatedExchange(venue.name, exchange.drain_changes(), {})])[0])
    connection.close()


def start(store: Path, code: Path, work: Path) -> tuple[float, float]:
    """Seconds from the spawn to "running", and peak RSS (MB) by then."""
    path = work / f"{store.stem}.yaml"
    path.write_text(yaml.safe_dump(config_for(store)))
    env = {**os.environ, "PYTHONPATH": str(code)}
    began = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "supervisors.cli", "run", "-q", "-c", str(path)], cwd=work,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "limitline: running" in line:
                break
        else:
            raise SystemExit(f"limitline exited ({process.wait()}) before running")
        elapsed = time.perf_counter() - began
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
        return elapsed, peak
    finally:
        if process.poll() is None:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=400_000, help="reservations released again (2 journal entries each)")
    parser.add_argument("--sim-orders", type=int, default=600_000, help="simulated orders placed and cancelled")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose limitline runs (default: this one)")
    parser.add_argument("--keep", type=Path, help="make the stores here and keep them (reused when present)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        empty, full = work / "empty.sqlite", work / "full.sqlite"
        if not full.exists():
            began = time.perf_counter()
            fill_store(full, args.pairs, args.sim_orders)
            print(f"store: {2 * args.pairs:,} journal entries, {args.sim_orders:,} simulated orders, "
                  f"{full.stat().st_size / 2**20:.0f} MB, made in {time.perf_counter() - began:.0f} s", flush=True)
        empty.unlink(missing_ok=True)
        base_time, base_rss = start(empty, args.code, work)
        print(f"empty store:   running after {base_time:6.2f} s, peak RSS {base_rss:7.1f} MB", flush=True)
        connection = sqlite3.connect(full)  # not migrated here: --code may be older code
        if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'ledger_checkpoints'").fetchone():
            with connection:
                connection.execute("DELETE FROM ledger_checkpoints")  # a store kept by --keep: start over
        connection.close()
        full_time, full_rss = start(full, args.code, work)
        print(f"history store: running after {full_time:6.2f} s, peak RSS {full_rss:7.1f} MB "
              f"({full_time / base_time:.1f}x the time, {full_rss / base_rss:.1f}x the RSS of the empty store)"
              "  (no checkpoint: the whole journal folded)", flush=True)
        # That start folded the whole journal and checkpointed the ledger's state: the
        # next one folds only what follows the checkpoint.
        again_time, again_rss = start(full, args.code, work)
        print(f"history store: running after {again_time:6.2f} s, peak RSS {again_rss:7.1f} MB "
              f"({again_time / base_time:.1f}x the time, {again_rss / base_rss:.1f}x the RSS of the empty store)"
              f"  (from the checkpoint the first start wrote: {full_time / again_time:.1f}x faster)")


if __name__ == "__main__":
    main()
