"""kill -9 at three points of an order's life, then restart: no duplicate, no lost fill,
the ledger equal to the exchange.

The runtime and the sandbox exchange are separate processes (the exchange outlives the
runtime, as a real one does). The runtime crashes itself at the point under test with
``os._exit(137)``, exactly what ``kill -9`` leaves behind: nothing flushed, nothing closed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from helpers import Lines

from actors.ledger.core import LedgerCore
from store.db import load_journal, open_store

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET = "crash-key", "crash-secret"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "LL_KEY": KEY, "LL_SECRET": SECRET,
       "LIMITLINE_SANDBOX_API_KEY": KEY, "LIMITLINE_SANDBOX_SECRET": SECRET}


class Process:
    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen([sys.executable, "-m", "supervisors.cli", *args], cwd=cwd, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stdout, self.stderr = Lines(self.popen.stdout), Lines(self.popen.stderr)

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=30)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


def admin(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def write_config(tmp: Path, url: str) -> Path:
    config = {
        "store": str(tmp / "live.sqlite"),
        "status": {"port": 0},
        "reconciler": {"interval_seconds": 0.3},
        "venues": [{"name": "binance", "kind": "ccxt", "exchange": "binance", "base_url": url,
                    "api_key_env": "LL_KEY", "secret_env": "LL_SECRET", "poll_seconds": 0.1,
                    "rate_limit_per_second": 200, "never_placed_after_seconds": 2}],
        "strategies": [{"name": "dipper", "venue": "binance", "symbol": "BTC/USDT", "mode": "live",
                        "allocation": {"quote": 5000, "base": 0.5, "base_cost": 2500}, "sizing": {"quote": 300},
                        "buy": {"kind": "change", "percent": -0.2, "lookback": 1},
                        "sell": {"kind": "change", "percent": 0.2, "lookback": 1},
                        "limit_offset_bps": -5, "ttl_seconds": 36000, "max_open_orders": 2}],
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def check_books(store: Path, url: str) -> None:
    state = admin(url, "/admin/state")
    ours = [o for o in state["orders"] if o["clientOrderId"].startswith("ll-")]
    duplicates = [cid for cid, n in Counter(o["clientOrderId"] for o in ours).items() if n > 1]
    assert duplicates == [], f"intents sent twice: {duplicates}"
    exchange_trades = {t["id"] for t in state["trades"] if t["clientOrderId"].startswith("ll-")}
    recorded = [row[0] for row in sqlite3.connect(store).execute("SELECT trade_id FROM fills")]
    assert sorted(recorded) == sorted(exchange_trades), "a fill was lost or recorded twice"
    ledger = LedgerCore.from_journal(load_journal(open_store(store, readonly=True)))
    ledger.check_invariants()
    held_quote = sum((a.quote_free + a.quote_reserved for a in ledger.accounts.values()), Decimal(0))
    held_base = sum((a.base_free + a.base_reserved for a in ledger.accounts.values()), Decimal(0))
    balances = {asset: Decimal(b["free"]) + Decimal(b["used"]) for asset, b in state["balances"].items()}
    assert (held_quote, held_base) == (balances["USDT"], balances["BTC"]), "the ledger differs from the exchange"


EVIDENCE = {
    "before_send": r"never placed|order_resolved",
    "after_send": r"order_resolved",
    "before_fill_record": r"\bfill\b",
}


@pytest.mark.parametrize("point", ["before_send", "after_send", "before_fill_record"])
def test_kill_9_then_restart_loses_and_doubles_nothing(tmp_path, point):
    sandbox = Process(["sandbox", "--port", "0", "--speed", "20", "--balances", "USDT=5000,BTC=0.5"], tmp_path, ENV)
    runs: list[Process] = []
    try:
        url = sandbox.stderr.wait_for(r"REST on (http://127\.0\.0\.1:\d+)").group(1)
        config = write_config(tmp_path, url)
        run = ["run", "--live", "-c", str(config)]

        crashing = Process(run, tmp_path, {**ENV, "LIMITLINE_CRASH_AT": point})
        runs.append(crashing)
        assert crashing.popen.wait(timeout=60) == 137, "".join(crashing.stderr.seen)

        restarted = Process(run, tmp_path, ENV)
        runs.append(restarted)
        restarted.stdout.wait_for_all([r"venue_reconciled", EVIDENCE[point]])

        # Stop the market, let a fresh start reconcile once more, and compare the books.
        admin(url, "/admin/market", {"frozen": True})
        assert restarted.stop() == 0
        final = Process(run, tmp_path, ENV)
        runs.append(final)
        final.stdout.wait_for(r"venue_reconciled")
        assert final.stop() == 0
        check_books(tmp_path / "live.sqlite", url)
    finally:
        for process in runs:
            process.kill()
        sandbox.kill()
