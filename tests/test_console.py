"""What ``limitline run`` prints: the event lines (blocked signals only with ``-v``, fees
with their currency, times labelled UTC), the periodic summary line, the end of the replay;
as plain functions, and end to end in a real ``limitline run`` process."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from conftest import fast_config_raw
from helpers import Lines
from actors.messages import RecordEvent
from supervisors.console import event_line, summary_line
from supervisors.display import money

BIN = [sys.executable, "-m", "supervisors.cli"]
ROOT = Path(__file__).resolve().parents[1]
AT = 1796673003.5  # 2026-12-07 19:50:03.5 UTC
UTC_LINE = r"^\d\d:\d\d:\d\d UTC  "


def test_a_blocked_signal_is_shown_only_when_verbose():
    blocked = RecordEvent(kind="blocked", actor="strategy:seller", at=AT, strategy="seller", rule="change(0.01%,1)",
                          reason="nothing to sell: holds no BTC", payload={"side": "sell"})
    assert event_line(blocked) is None
    assert event_line(blocked, verbose=True) == (
        "19:50:03 UTC  blocked               seller  side=sell  rule=change(0.01%,1)  (nothing to sell: holds no BTC)"
    )
    # What is not worth a line stays unprinted even when verbose.
    assert event_line(RecordEvent(kind="evaluated", actor="strategy:seller", at=AT, strategy="seller"), True) is None


def test_a_fee_always_carries_its_currency_and_times_say_utc():
    fill = RecordEvent(kind="fill", actor="strategy:dip-buyer", at=AT, strategy="dip-buyer", client_order_id="ll-d-1",
                       rule="change(-1.5%,3)", payload={"side": "buy", "price": "2568.96", "amount": "0.19463",
                                                        "fee": "0.00019463", "fee_currency": "BTC", "trade_id": "5"})
    assert event_line(fill) == ("19:50:03 UTC  fill                  dip-buyer  ll-d-1  side=buy price=2568.96 "
                                "amount=0.19463 fee=0.00019463 BTC  rule=change(-1.5%,3)")
    unnamed = RecordEvent(kind="fill", actor="strategy:x", at=AT, strategy="x", payload={"fee": "0.1"})
    assert "fee=0.1 (currency not reported)" in event_line(unnamed)


def test_the_end_of_the_replay_is_a_line():
    ended = RecordEvent(kind="replay_finished", actor="connection:sim", at=AT,
                        reason="sim: every candle of the replay has been released")
    line = event_line(ended)
    assert re.match(UTC_LINE + r"replay_finished\s+connection:sim  the replay has ended \(sim: every candle", line)
    assert "Ctrl-C stops" in line


def test_what_protection_does_is_a_line_with_its_reason():
    for kind in ("protection_placed", "protection_refused", "protection_escalated", "closed_by_protection",
                 "unprotected", "close_held", "market_settings_set"):
        event = RecordEvent(kind=kind, actor="strategy:spot", at=AT, strategy="spot", reason="why it happened")
        line = event_line(event)
        assert line is not None and re.match(UTC_LINE + kind + r"\s+spot\b.*why it happened", line), (kind, line)


def test_the_summary_line_counts_states_orders_fills_and_gives_pnl_and_fees_with_currencies():
    summary = {
        "strategies": {"total": 3, "by_state": {"active": 1, "inactive": 2}, "open_orders": 4},
        "realized_pnl": {"USD": "12.8676256922380701876500195", "USDT": "-3.1"},
        "fees_paid": {"BTC": "0.00099063", "USD": "2.516473504"},
    }
    assert summary_line(summary, 14, AT) == (
        "19:50:03 UTC  summary               strategies 3: active 1, paused 0, inactive 2  open orders 4  fills 14"
        "  realized P&L 12.87 USD, -3.10 USDT  fees 0.00099063 BTC, 2.52 USD"
    )
    nothing = summary_line({"strategies": {"total": 1, "by_state": {"paused": 1}}}, 0, AT)
    assert nothing.endswith("strategies 1: active 0, paused 1  open orders 0  fills 0  realized P&L 0  fees none")


# ------------------------------------------------------------------ end to end


def blocking_config(tmp_path: Path) -> Path:
    """Both default strategies on the last candles of the bundled data (in lockstep: the
    replay ends within seconds), and ``seller``, which holds no coins and whose sell rule
    fires on most candles: every time, a blocked signal (``nothing to sell``)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    raw = fast_config_raw(tmp_path, speed=200)
    replay = raw["venues"][0]["replay"]["BTC/USD"]
    replay["start"], replay["lockstep"] = "2019-10-05T00:00:00Z", True
    raw["strategies"].append({
        "name": "seller", "venue": "sim", "symbol": "BTC/USD", "allocation": {"quote": 500}, "sizing": {"quote": 100},
        "buy": {"kind": "change", "percent": -50, "lookback": 1}, "sell": {"kind": "change", "percent": 0.01, "lookback": 1},
        "limit_offset_bps": 0, "ttl_seconds": 3600, "max_open_orders": 1,
    })
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_until_the_replay_ends(tmp_path: Path, *flags: str) -> tuple[list[str], dict, sqlite3.Connection]:
    """``limitline run`` until a summary line after the end of the replay; its stdout
    lines, the ``/status`` read after that line, and its store."""
    process = subprocess.Popen([*BIN, "run", "-c", str(blocking_config(tmp_path)), "--summary-every", "0.5", *flags],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        stderr, stdout = Lines(process.stderr), Lines(process.stdout)
        url = stderr.wait_for(r"status at (http://127\.0\.0\.1:\d+)/status").group(1)
        stdout.wait_for(r"replay_finished")
        # The second summary after the end was read wholly after it: the final figures.
        stdout.wait_for(r"  summary  ")
        stdout.wait_for(r"  summary  ")
        with urllib.request.urlopen(f"{url}/status", timeout=10) as answer:
            status = json.loads(answer.read())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    return [line.rstrip("\n") for line in stdout.seen if line], status, sqlite3.connect(tmp_path / "limitline.sqlite")


def test_run_prints_blocked_signals_only_with_v_and_a_summary_line(tmp_path):
    quiet_lines, status, store = run_until_the_replay_ends(tmp_path / "default")
    blocked_in_store = store.execute("SELECT count(*) FROM events WHERE kind = 'blocked'").fetchone()[0]
    assert blocked_in_store > 0  # there were blocked signals to print ...
    assert not [line for line in quiet_lines if "  blocked  " in line]  # ... and none was printed

    verbose_lines, _, verbose_store = run_until_the_replay_ends(tmp_path / "verbose", "-v")
    blocked = [line for line in verbose_lines if re.search(r"  blocked\s+\S+  ", line)]
    stored = verbose_store.execute("SELECT count(*) FROM events WHERE kind = 'blocked'").fetchone()[0]
    assert stored > 0 and len(blocked) == stored  # every blocked signal, once, before the replay's end
    assert any(re.search(r"  blocked\s+seller  side=sell  rule=change\(0\.01%,1\)  \(nothing to sell", line)
               for line in blocked)

    for line in quiet_lines + verbose_lines:
        assert re.match(UTC_LINE, line), line  # every line's time says UTC
        if "fee=" in line:
            assert re.search(r"fee=\d[\d.]* [A-Z]{2,}\b", line), line
    ended = [i for i, line in enumerate(quiet_lines) if "replay_finished" in line]
    assert len(ended) == 1 and "the replay has ended" in quiet_lines[ended[0]]

    # The summary after the replay's end: the figures of /status and the store.
    final = [line for line in quiet_lines[ended[0]:] if "  summary  " in line][-1]
    fills = store.execute("SELECT count(*) FROM fills").fetchone()[0]
    states = status["strategies"]["by_state"]
    realized = ", ".join(money(v, c) for c, v in status["realized_pnl"].items())
    fees = ", ".join(money(v, c) for c, v in status["fees_paid"].items())
    assert fills > 0 and set(status["fees_paid"]) == {"BTC", "USD"}
    assert final.endswith(
        f"summary               strategies 3: active {states.get('active', 0)}, paused {states.get('paused', 0)}"
        f"  open orders {status['strategies']['open_orders']}  fills {fills}  realized P&L {realized}  fees {fees}"
    ), final


def test_terminal_escapes_in_a_reason_are_written_out_never_sent():
    from actors.messages import RecordEvent
    from supervisors.console import event_line

    event = RecordEvent("strategy_paused", "strategy:x", 0.0, strategy="x", reason="boom\x1b[2J\r\nforged line")
    line = event_line(event)
    assert "\x1b" not in line and "\n" not in line and "\r" not in line
    assert "boom\\x1b[2J\\x0d\\x0aforged line" in line
