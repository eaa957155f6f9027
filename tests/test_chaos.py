"""A short chaos run in CI: faults, operators and kill -9, then every check of the harness
(`benchmarks/chaos.py` runs the long one by hand)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_harness():
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "benchmarks" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_a_short_chaos_run_loses_doubles_and_overspends_nothing(tmp_path):
    chaos = load_harness()
    report = chaos.run_chaos(kills=3, seed=7, workdir=tmp_path, run_seconds=(3.0, 5.0), log=lambda line: None)
    assert report.kills == 3 and report.runs == 4
    assert report.orders > 0 and report.exchange_operations > 50
    assert report.ok, "\n".join(report.lines())
