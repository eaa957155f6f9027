"""Shadow mode across restarts, end to end through the binary: the default config run,
stopped (SIGINT, or kill -9) while an order is open, and run again in the same place.

The second run must trade at once: no pre-flight failure, orders placed and filled, the
open order still resting (or ended by the exchange's evidence, never declared "never
placed" after a clean stop), every fill in the fills table and the ledger alike, trade ids
never repeated, and no order open past its time-to-live in market time. Then ``--fresh``
starts over, keeping the old store beside the new one.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal as D
from pathlib import Path

import pytest
import yaml
from helpers import Lines

from actors.ledger.core import LedgerCore
from store.db import load_journal, load_orders, open_store

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
#: Candles per second: the default's 5, doubled, so each test stays well under 20 s.
SPEED = 10
#: A line of the console: time, kind, strategy, client order id.
LINE = re.compile(r"^\S+ UTC\s+(\w+)\s+(\S+)\s+(ll-\S+)")  # time UTC, kind, strategy, order


class Run:
    def __init__(self, config: Path, cwd: Path, *extra: str) -> None:
        self.popen = subprocess.Popen([sys.executable, "-m", "supervisors.cli", "run", "-c", str(config), *extra],
                                      cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stdout, self.stderr = Lines(self.popen.stdout), Lines(self.popen.stderr)

    def events(self) -> list[tuple[str, str, str]]:
        return [m.groups() for m in map(LINE.match, self.stdout.seen) if m]

    def until_fills(self, count: int, placed_here: bool = False, timeout: float = 60) -> None:
        """Until ``count`` fills are printed (of orders placed by this run, if asked)."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            placed = {cid for kind, _, cid in events if kind == "order_placed"}
            fills = [cid for kind, _, cid in events if kind == "fill" and (not placed_here or cid in placed)]
            if len(fills) >= count:
                return
            self.stdout.wait_for(r"\bfill\b", timeout=max(0.1, deadline - time.monotonic()))

    def stop(self, how: int) -> int:
        self.popen.send_signal(how)
        return self.popen.wait(timeout=30)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


def make_config(tmp_path: Path) -> Path:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["store"] = "limitline-data/limitline.sqlite"  # the default: relative to where it runs
    raw["status"]["port"] = 0
    raw["reconciler"]["interval_seconds"] = 0.5
    raw["venues"][0]["replay"]["BTC/USD"]["speed"] = SPEED
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def open_in_store(store: Path) -> list:
    return load_orders(open_store(store, readonly=True), open_only=True)


def check_store(store: Path, config: Path) -> None:
    """The books of a stopped run agree with each other and with the simulated exchange."""
    db = sqlite3.connect(store)
    fills = {row[0]: row[1:] for row in db.execute("SELECT trade_id, client_order_id, price, amount, fee FROM fills")}
    trades = {row[0]: row[1:] for row in db.execute("SELECT trade_id, client_order_id, price, amount, fee FROM sim_trades")}
    settled = [row[0] for row in db.execute("SELECT trade_id FROM journal WHERE kind = 'settle'")]
    [fill_events] = db.execute("SELECT count(*) FROM events WHERE kind = 'fill'").fetchone()
    assert fills == trades, "the fills table and the simulated exchange's trades differ"
    assert sorted(settled) == sorted(fills), "the ledger settled other trades than the fills table holds"
    assert fill_events == len(fills), f"{fill_events} fill events, {len(fills)} rows in fills: a trade id was given twice"
    ledger = LedgerCore.from_journal(load_journal(open_store(store, readonly=True)))
    ledger.check_invariants()
    raw = yaml.safe_load(config.read_text())
    unallocated = {asset: D(str(amount)) for asset, amount in raw["venues"][0]["balances"].items()}
    for s in raw["strategies"]:
        unallocated["USD"] -= D(str(s["allocation"].get("quote", 0)))
        unallocated["BTC"] -= D(str(s["allocation"].get("base", 0)))
    held = {
        "USD": sum((a.quote_free + a.quote_reserved for a in ledger.accounts.values()), D(0)),
        "BTC": sum((a.base_free + a.base_reserved for a in ledger.accounts.values()), D(0)),
    }
    balances = {a: D(free) + D(used) for a, free, used in db.execute("SELECT asset, free, used FROM sim_balances")}
    assert {a: held[a] + unallocated[a] for a in held} == balances, "the ledger and the simulated account differ"
    # Orders open in the book rest on the exchange with what they filled (the stop may have
    # come between the exchange's fill and the strategy's record: the next start reports it).
    [last_ts] = db.execute("SELECT last_ts FROM sim_replay").fetchone()
    ttl = {s["name"]: s["ttl_seconds"] for s in raw["strategies"]}
    for order in open_in_store(store):
        assert last_ts - order.market_ts <= 2 * ttl[order.strategy] + 2 * 3600, \
            f"{order.client_order_id} is {order.state.value} past its time-to-live"
    kinds = dict(db.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
    for kind in ("preflight_failed", "reconcile_difference", "illegal_transition", "unknown_order", "ledger_refused"):
        assert kind not in kinds, f"{kinds[kind]} {kind} event(s)"


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "kill-9"])
def test_shadow_mode_continues_where_it_stopped(tmp_path, how):
    config = make_config(tmp_path)
    store = tmp_path / "limitline-data" / "limitline.sqlite"
    runs: list[Run] = []
    try:
        first = Run(config, tmp_path)
        runs.append(first)
        first.until_fills(3)
        # Stop just after an order is placed: it is open (or filling) when the process goes.
        first.stdout.wait_for(r"\border_placed\b")
        assert first.stop(how) == (0 if how == signal.SIGINT else -signal.SIGKILL)
        open_at_stop = {o.client_order_id: o for o in open_in_store(store)}
        fills_before = {row[0] for row in sqlite3.connect(store).execute("SELECT trade_id FROM fills")}
        assert open_at_stop, "no order was open at the stop"

        second = Run(config, tmp_path)
        runs.append(second)
        second.stdout.wait_for_all([r"strategy_active\s+sma-cross", r"strategy_active\s+dip-buyer"], timeout=30)
        second.until_fills(2, placed_here=True, timeout=60)  # new orders, placed and filled
        assert second.stop(signal.SIGINT) == 0
        printed = "".join(second.stdout.seen)
        assert "preflight_failed" not in printed and "max open orders" not in printed
        if how == signal.SIGINT:
            assert "never placed" not in printed  # a clean stop loses no order
        check_store(store, config)
        fills_after = {row[0] for row in sqlite3.connect(store).execute("SELECT trade_id FROM fills")}
        assert fills_before < fills_after
        # The order open at the stop rested on: it filled or expired (by the exchange's
        # evidence) or still rests within its time-to-live; it was never dropped.
        states = {o.client_order_id: o.state.value for o in load_orders(open_store(store, readonly=True))}
        for cid in open_at_stop:
            assert states[cid] in ("OPEN", "PARTIALLY_FILLED", "FILLED", "EXPIRED", "REJECTED"), (cid, states[cid])
            if how == signal.SIGINT:
                assert states[cid] != "REJECTED", f"{cid} was open at a clean stop and declared never placed"

        if how == signal.SIGINT:
            fresh = Run(config, tmp_path, "--fresh")
            runs.append(fresh)
            kept = tmp_path / fresh.stderr.wait_for(r"--fresh: the previous store is kept as (\S+);").group(1)
            fresh.stdout.wait_for_all([r"strategy_active\s+sma-cross", r"strategy_active\s+dip-buyer"], timeout=30)
            assert fresh.stop(signal.SIGINT) == 0
            assert kept.parent == store.parent and kept.name.startswith("limitline.") and kept.exists()
            assert {row[0] for row in sqlite3.connect(kept).execute("SELECT trade_id FROM fills")} == fills_after
            [started] = sqlite3.connect(store).execute("SELECT count(*) FROM journal WHERE kind = 'allocate'").fetchone()
            assert started == 2  # a new ledger: the two allocations from the config
    finally:
        for run in runs:
            run.kill()
