"""Smoke test of the built executable: `check`, `lab`, and `run --live` against `sandbox`.

    python scripts/smoke_binary.py dist/limitline

Each step runs the binary as a user would, in a temporary directory, with a time limit;
the last line says how many steps passed (exit 1 if any failed). Only the standard
library: it runs with any Python 3.11+.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STEP_SECONDS = 120


def lines_of(pipe, into: "queue.Queue[str]") -> None:
    for line in pipe:
        into.put(line)
    into.put("")


class Process:
    """A running command whose stdout and stderr lines can be waited for."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.seen: list[str] = []
        for pipe in (self.popen.stdout, self.popen.stderr):
            threading.Thread(target=lines_of, args=(pipe, self.lines), daemon=True).start()

    def wait_for(self, pattern: str, seconds: float = STEP_SECONDS) -> re.Match:
        deadline = time.monotonic() + seconds
        ended = 0
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {seconds:g}s; last lines:\n"
                                     + "".join(self.seen[-20:])) from None
            if line == "":
                ended += 1
                if ended == 2:
                    raise AssertionError(f"it ended before a line matching {pattern!r}:\n" + "".join(self.seen[-20:]))
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return -9


def run(binary: str, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_SECONDS)


def step_check(binary: str, cwd: Path, env: dict[str, str]) -> None:
    result = run(binary, "check", cwd=cwd, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    sma-cross: BTC/USD on sim (shadow)" in result.stdout, result.stdout


def step_lab(binary: str, cwd: Path, env: dict[str, str]) -> None:
    result = run(binary, "lab", "--strategy", "dip-buyer", "--to", "2017-10-01T00:00:00Z", "--report", "report",
                 cwd=cwd, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Strategy Lab: dip-buyer on BTC/USD" in result.stdout, result.stdout
    assert (cwd / "report" / "report.html").stat().st_size > 0


LIVE = """\
store: {store}
status: {{port: 0}}
reconciler: {{interval_seconds: 0.5}}
venues:
  - name: sandbox
    kind: ccxt
    exchange: binance
    base_url: {url}
    api_key_env: LL_SMOKE_KEY
    secret_env: LL_SMOKE_SECRET
    poll_seconds: 0.2
    rate_limit_per_second: 100
strategies:
  - name: smoke
    venue: sandbox
    symbol: BTC/USDT
    mode: live
    allocation: {{quote: 5000, base: 0.5, base_cost: 2500}}
    sizing: {{quote: 200}}
    buy: {{kind: change, percent: -0.3, lookback: 1}}
    sell: {{kind: change, percent: 0.3, lookback: 1}}
    limit_offset_bps: -5
    ttl_seconds: 7200
    max_open_orders: 2
"""


def step_run_live(binary: str, cwd: Path, env: dict[str, str]) -> None:
    env = {**env, "LIMITLINE_SANDBOX_API_KEY": "smoke-key", "LIMITLINE_SANDBOX_SECRET": "smoke-secret",
           "LL_SMOKE_KEY": "smoke-key", "LL_SMOKE_SECRET": "smoke-secret"}
    sandbox = Process([binary, "sandbox", "--port", "0", "--speed", "20"], cwd, env)
    try:
        url = sandbox.wait_for(r"Binance spot REST on (http://127\.0\.0\.1:\d+)").group(1)
        config = cwd / "live.yaml"
        config.write_text(LIVE.format(store=cwd / "live.sqlite", url=url))
        limitline = Process([binary, "run", "--live", "-c", str(config)], cwd, env)
        try:
            limitline.wait_for(r"running 1 strategies, 1 LIVE")
            limitline.wait_for(r"\bfill\b +smoke")
            assert limitline.stop() == 0, "".join(limitline.seen[-20:])
            limitline.wait_for(r"stopped; the store is flushed", 10)
        finally:
            limitline.stop()
        assert not any("smoke-secret" in line for line in limitline.seen), "a secret was printed"
    finally:
        sandbox.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    binary = str(Path(argv[0]).resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    passed = failed = 0
    for step in (step_check, step_lab, step_run_live):
        with tempfile.TemporaryDirectory(prefix="limitline-smoke-") as directory:
            started = time.monotonic()
            try:
                step(binary, Path(directory), env)
            except Exception as error:  # noqa: BLE001 - reported, then counted
                failed += 1
                print(f"FAIL  {step.__name__}: {error}", flush=True)
            else:
                passed += 1
                print(f"ok    {step.__name__} ({time.monotonic() - started:.1f} s)", flush=True)
    print(f"smoke: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
