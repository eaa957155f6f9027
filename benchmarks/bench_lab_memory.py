"""Peak memory of a Lab run over a 3-million-row CSV, against reading the same CSV alone.

Usage: python benchmarks/bench_lab_memory.py [--rows 3000000] [--code DIR] [--only all|one|both]

Writes a CSV of ``--rows`` candles by stitching the bundled BTC/USD 1h candles end to end
(epoch milliseconds, newest first, as an exchange exports them; timestamps running on) into
a temporary directory, then measures in fresh processes the peak resident memory
(ru_maxrss) and time of

- reading it (``read_candles``: the baseline, what any run must hold),
- ``limitline lab --strategy sma-cross`` on it (one strategy; report written), and
- ``limitline lab`` on it (every strategy of the default config in one run; reports written),

and prints each with its ratio to the reading. ``--code DIR``: run the Lab of another
checkout (the code before a change; it must have the same command line).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from bench_candles import write_export  # noqa: E402

READ = """
import resource, sys
sys.path.insert(0, {root!r})
from exchange.candles import read_candles
candles = read_candles({path!r}).candles
print(len(candles), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""

LAB = ("import resource, runpy, sys; sys.argv = sys.argv[1:]; "
       "code = 0\ntry:\n    runpy.run_module('supervisors.cli', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
       "print('maxrss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file=sys.stderr)\nsys.exit(code)")


def read_rss(path: Path, code: Path) -> int:
    out = subprocess.run([sys.executable, "-c", READ.format(root=str(code), path=str(path))], capture_output=True,
                         text=True, check=True).stdout.split()
    return int(out[1])


def lab(path: Path, directory: Path, code: Path, *strategy: str) -> tuple[float, int, str]:
    """(seconds, peak RSS in bytes, the summary's total-return line) of one `limitline lab`."""
    report = directory / ("report-" + ("-".join(strategy[1:]) or "all"))
    command = [sys.executable, "-c", LAB, "limitline", "lab", *strategy, "--data", str(path), "--report", str(report)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=directory, env={**os.environ, "PYTHONPATH": str(code)})
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    rss = int(next(line for line in done.stderr.splitlines() if line.startswith("maxrss")).split()[1])
    returns = next((line.strip() for line in done.stdout.splitlines() if line.strip().startswith("total return")), "")
    return elapsed, rss, returns


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose Lab runs (default: this one)")
    parser.add_argument("--only", choices=("one", "all", "both"), default="both",
                        help="one: --strategy sma-cross; all: every strategy in one run; both (default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stitched.csv"
        write_export(path, args.rows)
        baseline = read_rss(path, args.code)
        print(f"{args.rows:,} rows ({path.stat().st_size / 1e6:.0f} MB of CSV), code: {args.code}")
        print(f"reading the CSV (baseline):        {baseline / 2**20:7,.0f} MiB peak")
        runs = []
        if args.only in ("one", "both"):
            runs.append(("limitline lab --strategy sma-cross", ("--strategy", "sma-cross")))
        if args.only in ("all", "both"):
            runs.append(("limitline lab (both strategies)", ()))
        for label, strategy in runs:
            elapsed, rss, returns = lab(path, Path(tmp), args.code, *strategy)
            print(f"{label + ':':34} {rss / 2**20:7,.0f} MiB peak ({rss / baseline:.2f}x the reading), {elapsed:6.1f} s"
                  f"   [{' '.join(returns.split())}]")


if __name__ == "__main__":
    main()
