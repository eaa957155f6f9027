"""Chaos: `limitline run --live` against `limitline sandbox` with faults, operators and kill -9.

Usage: python benchmarks/chaos.py [--kills 10] [--seed 1] [--min-operations 2000]

The sandbox (a separate process, it outlives every runtime) injects 5xx, 429 bursts,
timeouts before and after the exchange acted, and latency; an "operator" cancels our
orders, places orders of its own and deposits funds. The runtime is killed with SIGKILL at
random moments and restarted, again and again. Then the market is frozen, the faults are
cleared, and one last run settles. The harness checks:

- no two exchange orders for one intent (client order id);
- no strategy ever over its allocation: the journal, folded entry by entry, never leaves a
  balance negative;
- no fill lost or doubled: the exchange's trades of our orders are exactly the fills table;
- the ledger equal to the exchange: the balances (less operator deposits), and the open
  orders;
- every exchange order traceable to an intent, or classified as external.

It prints the figures; `tests/test_chaos.py` runs a short version.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actors.ledger.core import LedgerCore  # noqa: E402
from store.db import load_journal, open_store  # noqa: E402

KEY, SECRET = "chaos-key", "chaos-secret"
ALLOCATIONS = {"dipper": (Decimal(3000), Decimal("0.3")), "trender": (Decimal(3000), Decimal("0.3"))}
FAULTS = {
    "error_rates": {"server_error": 0.03, "rate_limit": 0.01, "timeout": 0.01, "timeout_after_accept": 0.03},
    "latency_ms": 3, "retry_after_seconds": 1, "hold_seconds": 2,
}


@attrs.define
class Report:
    kills: int = 0
    runs: int = 0
    exchange_operations: int = 0
    faults_injected: dict[str, int] = attrs.Factory(dict)
    operator_actions: int = 0
    orders: int = 0
    fills: int = 0
    duplicates: list[str] = attrs.Factory(list)
    over_allocations: list[str] = attrs.Factory(list)
    lost_fills: list[str] = attrs.Factory(list)
    doubled_fills: list[str] = attrs.Factory(list)
    balance_differences: list[str] = attrs.Factory(list)
    open_order_differences: list[str] = attrs.Factory(list)
    untraceable_orders: list[str] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.over_allocations or self.lost_fills or self.doubled_fills
                    or self.balance_differences or self.open_order_differences or self.untraceable_orders)

    def lines(self) -> list[str]:
        return [
            f"runs {self.runs}, kill -9 {self.kills}, exchange operations {self.exchange_operations}",
            f"faults injected {sum(self.faults_injected.values())} {dict(sorted(self.faults_injected.items()))}, operator actions {self.operator_actions}",
            f"orders {self.orders}, fills {self.fills}",
            f"duplicates {len(self.duplicates)}, over-allocations {len(self.over_allocations)}, "
            f"lost fills {len(self.lost_fills)}, doubled fills {len(self.doubled_fills)}",
            f"final differences: balances {len(self.balance_differences)}, open orders {len(self.open_order_differences)}, "
            f"untraceable orders {len(self.untraceable_orders)}",
        ] + [f"  ! {problem}" for problem in self.balance_differences + self.open_order_differences + self.untraceable_orders
             + self.duplicates + self.over_allocations + self.lost_fills + self.doubled_fills]


class _Process:
    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.popen = subprocess.Popen([sys.executable, "-m", "supervisors.cli", *args], cwd=cwd, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def readline_matching(self, stream: str, needle: str, deadline: float) -> str:
        pipe = self.popen.stderr if stream == "stderr" else self.popen.stdout
        assert pipe is not None
        while time.monotonic() < deadline:
            line = pipe.readline()
            if not line:
                break
            if needle in line:
                return line
        raise RuntimeError(f"no line with {needle!r} on {stream}")


def _admin(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return {"error": error.code}


def _config(tmp: Path, url: str) -> Path:
    strategies = [
        {"name": "dipper", "buy": {"kind": "change", "percent": -0.2, "lookback": 1},
         "sell": {"kind": "change", "percent": 0.2, "lookback": 1}, "sizing": {"quote": 150}},
        {"name": "trender", "buy": {"kind": "sma_cross", "fast": 2, "slow": 5, "direction": "up"},
         "sell": {"kind": "sma_cross", "fast": 2, "slow": 5, "direction": "down"}, "sizing": {"quote": 200}},
    ]
    config = {
        "store": str(tmp / "chaos.sqlite"),
        "status": {"port": 0},
        "reconciler": {"interval_seconds": 0.3},
        "venues": [{"name": "binance", "kind": "ccxt", "exchange": "binance", "base_url": url,
                    "api_key_env": "LL_KEY", "secret_env": "LL_SECRET", "poll_seconds": 0.1,
                    "rate_limit_per_second": 100, "never_placed_after_seconds": 3, "timeout_seconds": 1,
                    "isolate_after_seconds": 20}],
        "strategies": [
            {**s, "venue": "binance", "symbol": "BTC/USDT", "mode": "live",
             "allocation": {"quote": str(ALLOCATIONS[s["name"]][0]), "base": str(ALLOCATIONS[s["name"]][1]),
                            "base_cost": 2500},
             "limit_offset_bps": -3, "ttl_seconds": 10800, "max_open_orders": 3,
             "breaker": {"threshold": 3, "cooldown_seconds": 1, "max_cooldown_seconds": 4}}
            for s in strategies
        ],
    }
    path = tmp / "chaos.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_chaos(kills: int, seed: int, min_operations: int = 0, workdir: Path | None = None,
              run_seconds: tuple[float, float] = (1.5, 4.0), log=print) -> Report:
    rng = random.Random(seed)
    report = Report()
    tmp = Path(workdir or tempfile.mkdtemp(prefix="limitline-chaos-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LL_KEY": KEY, "LL_SECRET": SECRET,
           "LIMITLINE_SANDBOX_API_KEY": KEY, "LIMITLINE_SANDBOX_SECRET": SECRET}
    quote = sum(q for q, _ in ALLOCATIONS.values())
    base = sum(b for _, b in ALLOCATIONS.values())
    faults = tmp / "faults.yaml"
    faults.write_text(yaml.safe_dump({**FAULTS, "seed": seed}))
    sandbox = _Process(["sandbox", "--port", "0", "--speed", "10", "--balances", f"USDT={quote},BTC={base}",
                        "--faults", str(faults)], env, tmp)
    deposits: Counter[str] = Counter()
    external: list[str] = []
    try:
        line = sandbox.readline_matching("stderr", "REST on", time.monotonic() + 30)
        url = line.split("REST on ")[1].split(" ")[0]
        config = _config(tmp, url)
        run = ["run", "--live", "-q", "-c", str(config)]
        while report.kills < kills or report.exchange_operations < min_operations:
            runtime = _Process(run, env, tmp)
            report.runs += 1
            # The run's random length counts from when it trades, not from its launch: on a
            # loaded machine the start alone can take the whole window, and a run that never
            # traded tests nothing (kills during a start are the restart tests' subject).
            runtime.readline_matching("stderr", "running", time.monotonic() + 120)
            deadline = time.monotonic() + rng.uniform(*run_seconds)
            while time.monotonic() < deadline:
                time.sleep(rng.uniform(0.2, 0.6))
                report.operator_actions += _operator(url, rng, deposits, external)
            runtime.popen.send_signal(signal.SIGKILL)
            runtime.popen.wait(timeout=10)
            report.kills += 1
            report.exchange_operations = _admin(url, "/admin/state")["requests"]
            log(f"kill {report.kills}: {report.exchange_operations} exchange operations so far")

        # Settle: no more faults or operators, the market stands still, one clean run.
        _admin(url, "/admin/faults", {})
        _admin(url, "/admin/market", {"frozen": True})
        for cid in external:
            _admin(url, "/admin/operator/cancel", {"clientOrderId": cid})
        unresolved = _unresolved(tmp / "chaos.sqlite")
        final = _Process(["run", "--live", "-c", str(config)], env, tmp)
        report.runs += 1
        deadline = time.monotonic() + 120
        pending = {"venue_reconciled"}
        resolutions = 0
        assert final.popen.stdout is not None
        while (pending or resolutions < len(unresolved)) and time.monotonic() < deadline:
            line = final.popen.stdout.readline()
            if not line:
                break
            pending.discard("venue_reconciled" if "venue_reconciled" in line else "")
            if "order_resolved" in line or "never placed" in line:
                resolutions += 1
        # Settled: every exchange trade of ours recorded, no order left unresolved.
        while time.monotonic() < deadline and not _settled(tmp / "chaos.sqlite", url):
            time.sleep(0.1)
        final.popen.send_signal(signal.SIGTERM)
        final.popen.wait(timeout=30)
        state = _admin(url, "/admin/state")
        report.exchange_operations = state["requests"]
        report.faults_injected = state["faults"]["injected"]
        _check(report, tmp / "chaos.sqlite", state, deposits)
    finally:
        sandbox.popen.kill()
    return report


def _operator(url: str, rng: random.Random, deposits: Counter[str], external: list[str]) -> int:
    roll = rng.random()
    state = _admin(url, "/admin/state")
    ours = [cid for cid in state["open_orders"] if cid.startswith("ll-")]
    if roll < 0.3 and ours:
        _admin(url, "/admin/operator/cancel", {"clientOrderId": rng.choice(ours)})
        return 1
    if roll < 0.4:
        cid = f"operator-{len(external)}"
        # Far from the market: it never fills, it only sits there and locks funds.
        if "error" not in _admin(url, "/admin/operator/order", {"symbol": "BTC/USDT", "side": "buy", "price": "1",
                                                               "quantity": "5", "clientOrderId": cid}):
            external.append(cid)
        return 1
    if roll < 0.45:
        _admin(url, "/admin/operator/balance", {"asset": "USDT", "delta": "100"})
        deposits["USDT"] += 100
        return 1
    return 0


def _settled(store: Path, url: str) -> bool:
    trades = {t["id"] for t in _admin(url, "/admin/state")["trades"] if t["clientOrderId"].startswith("ll-")}
    recorded = {row[0] for row in sqlite3.connect(store).execute("SELECT trade_id FROM fills")}
    return trades <= recorded and not _unresolved(store)


def _unresolved(store: Path) -> list[str]:
    if not store.exists():
        return []
    rows = sqlite3.connect(store).execute(
        "SELECT client_order_id FROM orders WHERE state IN ('UNKNOWN', 'SUBMITTING', 'RESERVED')").fetchall()
    return [row[0] for row in rows]


def _check(report: Report, store: Path, state: dict[str, Any], deposits: Counter[str]) -> None:
    db = sqlite3.connect(store)
    ours = [o for o in state["orders"] if o["clientOrderId"].startswith("ll-")]
    report.orders = len(ours)
    report.duplicates = [cid for cid, n in Counter(o["clientOrderId"] for o in ours).items() if n > 1]

    # Fold the journal one entry at a time: no balance may ever go negative.
    entries = load_journal(open_store(store, readonly=True))
    ledger = LedgerCore()
    for entry in entries:
        ledger.apply(entry)
        try:
            ledger.check_invariants([entry.strategy])
        except AssertionError as broken:
            report.over_allocations.append(f"after journal entry {entry.kind} {entry.client_order_id}: {broken}")

    exchange_trades = Counter(t["id"] for t in state["trades"] if t["clientOrderId"].startswith("ll-"))
    recorded = Counter(row[0] for row in db.execute("SELECT trade_id FROM fills"))
    settled = Counter(e.trade_id for e in entries if e.kind == "settle")
    report.fills = len(exchange_trades)
    report.lost_fills = sorted(set(exchange_trades) - set(recorded)) + sorted(set(exchange_trades) - set(settled))
    report.doubled_fills = sorted(t for t, n in (recorded + settled).items() if n > 2) + sorted(set(recorded) - set(exchange_trades))

    held = {"USDT": Decimal(0), "BTC": Decimal(0)}
    for account in ledger.accounts.values():
        held["USDT"] += account.quote_free + account.quote_reserved
        held["BTC"] += account.base_free + account.base_reserved
    for asset, amount in held.items():
        balance = state["balances"].get(asset, {"free": "0", "used": "0"})
        on_exchange = Decimal(balance["free"]) + Decimal(balance["used"]) - deposits[asset]
        if on_exchange != amount:
            report.balance_differences.append(f"{asset}: exchange {on_exchange} (less deposits), ledger {amount}")

    open_on_exchange = {o["clientOrderId"] for o in ours if o["status"] == "open"}
    open_in_record = {row[0] for row in db.execute(
        "SELECT client_order_id FROM orders WHERE state IN ('OPEN', 'PARTIALLY_FILLED', 'CANCELING', 'UNKNOWN')")}
    for cid in sorted(open_on_exchange ^ open_in_record):
        where = "exchange" if cid in open_on_exchange else "record"
        report.open_order_differences.append(f"{cid} open only in the {where}")

    known = {row[0] for row in db.execute("SELECT client_order_id FROM orders")}
    external = {row[0] for row in db.execute(
        "SELECT json_extract(payload, '$.key') FROM events WHERE kind = 'reconcile_difference' AND json_extract(payload, '$.class') = 'external_order'")}
    for order in state["orders"]:
        if order["clientOrderId"] in known or order["orderId"] in external or order["status"] != "open":
            continue
        report.untraceable_orders.append(f"{order['clientOrderId']} (exchange id {order['orderId']})")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-operations", type=int, default=2000)
    args = parser.parse_args()
    started = time.monotonic()
    report = run_chaos(args.kills, args.seed, args.min_operations)
    print(f"chaos run, seed {args.seed}, {time.monotonic() - started:.0f} s:")
    for line in report.lines():
        print(f"  {line}")
    print("PASS" if report.ok else "FAIL")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
