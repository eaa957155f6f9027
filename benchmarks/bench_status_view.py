"""``limitline status`` against a process running a thousand strategies.

Usage: python benchmarks/bench_status_view.py [--strategies 1000] [--candles 50] [--repeat 5]

Runs ``limitline run`` (shadow mode, a separate process; the config of
``bench_thousand.py``) with N strategies, waits until the replay has ended (so the books
stand still), then times, each ``--repeat`` times:

- the command as a person runs it: ``limitline status --url URL`` in a new process (Python's
  start, the two requests, the rich tables of the summary and the first page);
- the baseline, in the same run: ``limitline status --url URL`` against the same command on
  a process with a single strategy.

It also times the two requests alone (``/status`` and the first page) from this process.
Target (issue 14): a thousand strategies print as quickly as one (a summary and a page).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_thousand import config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = [sys.executable, "-m", "supervisors.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}


def start(tmp: Path, strategies: int, candles: int) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([*BIN, "run", "-q", "--summary-every", "0", "-c", str(config(tmp, strategies, candles, 10000))],
                               cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    assert process.stderr is not None
    for line in process.stderr:
        if "status at " in line:
            url = line.split("status at ")[1].split("/status")[0]
            break
    else:
        raise SystemExit(f"limitline run did not start ({process.wait()})")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # the replay's end: every candle released
        venues = json.loads(urllib.request.urlopen(f"{url}/status", timeout=30).read())["venues"]
        left = [r["candles_left"] for v in venues for r in v["report"].get("replay", {}).values()]
        if left and all(n == 0 for n in left):
            return process, url
        time.sleep(1)
    raise SystemExit("the replay did not end within 600 s")


def time_command(url: str, repeat: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        result = subprocess.run([*BIN, "status", "--url", url], capture_output=True, text=True, env=ENV, timeout=120)
        times.append(time.perf_counter() - began)
        assert result.returncode == 0, result.stderr
        size = len(result.stdout)
    return statistics.median(times), size


def time_requests(url: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        urllib.request.urlopen(f"{url}/status", timeout=30).read()
        urllib.request.urlopen(f"{url}/status/strategies?offset=0&limit=20", timeout=30).read()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategies", type=int, default=1000)
    parser.add_argument("--candles", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = {}
    for count in (1, args.strategies):
        with tempfile.TemporaryDirectory() as tmp:
            process, url = start(Path(tmp), count, args.candles)
            try:
                command, size = time_command(url, args.repeat)
                results[count] = (command, time_requests(url, args.repeat), size)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=120)
    (one, one_requests, one_size), (many, many_requests, many_size) = results[1], results[args.strategies]
    print(f"limitline status, median of {args.repeat}: 1 strategy {one:.2f} s ({one_size:,} chars); "
          f"{args.strategies:,} strategies {many:.2f} s ({many_size:,} chars): {many / one:.2f}x")
    print(f"the two requests alone: 1 strategy {one_requests * 1000:.1f} ms; {args.strategies:,} strategies "
          f"{many_requests * 1000:.1f} ms: {many_requests / one_requests:.2f}x")


if __name__ == "__main__":
    main()
