"""The `limitline` binary end to end: check, errors, and a real shadow run over HTTP."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml
from helpers import Lines

BIN = [sys.executable, "-m", "supervisors.cli"]
ROOT = Path(__file__).resolve().parents[1]


def limitline(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*BIN, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_check_passes_on_the_default_config(tmp_path):
    result = limitline("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok    sma-cross: BTC/USD on sim (shadow)" in result.stdout
    assert "ok    dip-buyer: BTC/USD on sim (shadow)" in result.stdout


def test_check_fails_with_one_line_per_strategy_and_exit_1(tmp_path):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["strategies"][0]["sizing"]["quote"] = -5
    path = tmp_path / "one-bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = limitline("check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "FAIL  sma-cross: sizing.quote: must be greater than 0, got -5",
        "ok    dip-buyer: BTC/USD on sim (shadow)",
    ]


def test_an_invalid_config_exits_2_with_every_problem_and_no_traceback(tmp_path):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["strategies"][0]["venue"] = "nowhere"
    raw["strategies"][1]["max_open_ordrs"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    for command in ("run", "check"):
        result = limitline(command, "-c", str(path), cwd=tmp_path)
        assert result.returncode == 2
        assert "strategies[1].max_open_ordrs: unknown field (check its spelling)" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_missing_config_file_says_so(tmp_path):
    result = limitline("run", "-c", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "the config file does not exist" in result.stderr and "Traceback" not in result.stderr


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_run_in_shadow_mode_serves_status_and_events_and_stops_cleanly_on_sigterm(fast_config_path, tmp_path):
    process = subprocess.Popen(
        [*BIN, "run", "-c", str(fast_config_path)], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        stderr, stdout = Lines(process.stderr), Lines(process.stdout)
        base = stderr.wait_for(r"status at (http://127\.0\.0\.1:\d+)/status").group(1)
        stdout.wait_for(r"\bfill\b.*dip-buyer|\bfill\b.*sma-cross")
        status = get_json(f"{base}/status")
        assert status["mode"] == "shadow"
        names = {}

        def walk(node):
            names[node["name"]] = node
            for child in node.get("children", []):
                walk(child)

        walk(get_json(f"{base}/status/tree"))
        for name in ["writer", "ledger", "venues", "venue:sim", "connection:sim", "strategy:sma-cross",
                     "strategy:dip-buyer", "reconciler", "status"]:
            assert names[name]["state"] == "running", name
        assert names["strategy:dip-buyer"]["mailbox"]["capacity"] == 1024
        events = get_json(f"{base}/events?strategy=dip-buyer&limit=5")["events"]
        assert 1 <= len(events) <= 5 and all(e["strategy"] == "dip-buyer" for e in events)
        try:
            urllib.request.urlopen(f"{base}/events?limit=0", timeout=10)
            raise AssertionError("limit=0 was accepted")
        except urllib.error.HTTPError as error:
            assert error.code == 400 and b"limit: must be a whole number" in error.read()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        stderr.wait_for(r"stopped; the store is flushed")
    finally:
        if process.poll() is None:
            process.kill()
    connection = sqlite3.connect(tmp_path / "limitline.sqlite")
    kinds = dict(connection.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
    assert kinds["evaluated"] > 0 and kinds["order_placed"] > 0 and kinds["fill"] > 0
    assert connection.execute("SELECT DISTINCT type FROM orders").fetchall() == [("limit",)]
    assert connection.execute("SELECT count(*) FROM fills").fetchone()[0] == kinds["fill"]
