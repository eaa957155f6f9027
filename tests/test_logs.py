"""`run --log-format json --log-file PATH`: machine-readable lines, UTC times, no secrets."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import Lines

from actors.messages import RecordEvent
from supervisors.logs import JsonFormatter, TextFormatter
from supervisors.secrets import guard_logs

ROOT = Path(__file__).resolve().parents[1]
BIN = [sys.executable, "-m", "supervisors.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CANARY = "canary-log-secret-5e1d"


def record(message: str, **extra) -> logging.LogRecord:
    made = logging.getLogRecordFactory()("limitline", logging.WARNING, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    made.created = 1_500_000_000.5
    return made


def test_a_json_line_holds_the_event_with_utc_times_and_never_a_secret():
    guard_logs((CANARY,))
    event = RecordEvent("fill", "strategy:dip", 1_500_000_000.25, strategy="dip", client_order_id="ll-1",
                        reason=f"the exchange said {CANARY}", payload={"price": "2458.12"})
    line = JsonFormatter().format(record(f"key {CANARY} leaked", event=event))
    assert CANARY not in line
    document = json.loads(line)
    assert document["time"] == "2017-07-14T02:40:00.500Z" and document["level"] == "WARNING"
    assert document["message"] == "key *** leaked"
    assert document["event"] == {"kind": "fill", "at": "2017-07-14T02:40:00.250Z", "strategy": "dip",
                                 "actor": "strategy:dip", "client_order_id": "ll-1", "rule": None,
                                 "reason": "the exchange said ***", "payload": {"price": "2458.12"}}
    assert TextFormatter().format(record("plain")) == "2017-07-14T02:40:00Z WARNING plain"


def test_a_log_file_that_cannot_be_opened_is_refused_at_once(tmp_path, fast_config_path):
    result = subprocess.run([*BIN, "run", "-c", str(fast_config_path), "--log-file", str(tmp_path / "no" / "such" / "x.log")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60, env=ENV)
    assert result.returncode == 2
    assert "--log-file" in result.stderr and "cannot be opened for appending" in result.stderr


def test_run_writes_json_lines_to_stdout_and_the_log_file(tmp_path, fast_config_path):
    log = tmp_path / "limitline.log"
    process = subprocess.Popen([*BIN, "run", "-c", str(fast_config_path), "--log-format", "json", "--log-file", str(log)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        stdout, stderr = Lines(process.stdout), Lines(process.stderr)
        stderr.wait_for(r"status at http")
        stdout.wait_for(r'"kind": "fill"')
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    printed = [json.loads(line) for line in stdout.seen if line.strip()]
    assert printed and all(p["logger"] == "limitline.events" and p["time"].endswith("Z") for p in printed)
    fill = next(p for p in printed if p["event"]["kind"] == "fill")
    assert fill["event"]["strategy"] in ("sma-cross", "dip-buyer") and fill["event"]["payload"]["fee_currency"]
    written = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = {w["event"]["kind"] for w in written if "event" in w}
    assert "fill" in kinds and "order_placed" in kinds
    # The file has what the terminal showed, line for line (the terminal may have had fewer at the stop).
    shown = [p["message"] for p in printed if p["event"]["kind"] == "fill"]
    assert [w["message"] for w in written if w.get("event", {}).get("kind") == "fill"][: len(shown)] == shown
