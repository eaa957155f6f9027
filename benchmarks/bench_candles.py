"""Memory and time to read a large candle CSV, against the same candles as Candle objects.

Usage: python benchmarks/bench_candles.py [--rows 3000000] [--lab]

Writes a CSV of ``--rows`` candles in an exchange's export form (epoch milliseconds, newest
first: the bundled BTC/USD 1h candles repeated, timestamps running on) into a temporary
directory, then in fresh processes measures the peak resident memory (ru_maxrss) and time of

- ``read_candles`` (the Lab's reader: columns, 53 bytes a candle, exact Decimals), and
- the baseline: the same candles as a list of Candle objects (what ``load_candles`` gives,
  and what the Lab held before),

and prints both with the ratio. ``--lab`` also runs ``limitline lab`` (sma-cross, the
default fast path) on the file and prints its peak memory and time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exchange.candles import bundled_path  # noqa: E402

CHILD = """
import resource, sys, time
sys.path.insert(0, {root!r})
from exchange.candles import read_candles
start = time.perf_counter()
candles = read_candles({path!r}).candles
if {as_list}:
    candles = list(candles)
elapsed = time.perf_counter() - start
print(len(candles), elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def write_export(path: Path, rows: int) -> None:
    lines = bundled_path().read_text().splitlines()[1:]
    parsed = [(int(datetime.fromisoformat(line[:20].replace("Z", "+00:00")).timestamp()), line.split(",", 1)[1])
              for line in lines]
    first = parsed[0][0]
    with path.open("w") as out:
        out.write("timestamp,open,high,low,close,volume\n")
        for i in range(rows - 1, -1, -1):  # newest first
            _, values = parsed[i % len(parsed)]
            out.write(f"{(first + 3600 * i) * 1000},{values}\n")


def measure(path: Path, as_list: bool) -> tuple[int, float, int]:
    code = CHILD.format(root=str(ROOT), path=str(path), as_list=as_list)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), float(out[1]), int(out[2])


def lab(path: Path, directory: Path) -> tuple[float, int]:
    command = [sys.executable, "-c", "import resource, runpy, sys; sys.argv = sys.argv[1:]; "
               "code = 0\ntry:\n    runpy.run_module('supervisors.cli', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
               "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file=sys.stderr)\nsys.exit(code)",
               "limitline", "lab", "--strategy", "sma-cross", "--data", str(path), "--report", str(directory / "r")]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=directory, env={**os.environ, "PYTHONPATH": str(ROOT)})
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    rss = int(next(line for line in done.stderr.splitlines() if line.startswith("maxrss")).split()[1])
    return elapsed, rss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--lab", action="store_true", help="also run `limitline lab` on the file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.csv"
        write_export(path, args.rows)
        size = path.stat().st_size
        rows, columns_s, columns_rss = measure(path, as_list=False)
        _, list_s, list_rss = measure(path, as_list=True)
        print(f"{rows:,} rows, {size / 1e6:.0f} MB of CSV (epoch ms, newest first)")
        print(f"read_candles (columns):        {columns_rss / 2**20:8,.0f} MiB peak, {columns_s:6.1f} s")
        print(f"baseline, Candle objects list: {list_rss / 2**20:8,.0f} MiB peak, {list_s:6.1f} s")
        print(f"memory: {list_rss / columns_rss:.1f}x less than the baseline")
        if args.lab:
            elapsed, rss = lab(path, Path(tmp))
            print(f"limitline lab on the file:     {rss / 2**20:8,.0f} MiB peak, {elapsed:6.1f} s")


if __name__ == "__main__":
    main()
