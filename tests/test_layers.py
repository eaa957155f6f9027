"""The layers and the sans-IO cores are contracts that fail the build (import-linter, run
from the test command), not a convention kept by grep."""

from __future__ import annotations

import ast
import fnmatch
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("actors", "exchange", "store", "supervisors")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def copy_of_the_tree(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_import_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_a_back_edge_breaks_the_layers_contract(tmp_path):
    root = copy_of_the_tree(tmp_path)
    with (root / "exchange" / "matching.py").open("a") as module:
        module.write("\nimport actors.orders  # a back-edge: the leaf importing a layer above it\n")
    result = lint(root)
    assert result.returncode != 0
    assert "exchange is not allowed to import actors" in result.stdout


def test_a_core_that_does_io_breaks_the_sans_io_contract(tmp_path):
    root = copy_of_the_tree(tmp_path)
    # Transitively: the ledger core imports actors.orders, which now imports sqlite3.
    with (root / "actors" / "orders.py").open("a") as module:
        module.write("\nimport sqlite3  # noqa\n")
    result = lint(root)
    assert result.returncode != 0
    assert "actors.ledger.core is not allowed to import sqlite3" in result.stdout


def core_modules() -> list[str]:
    """Every module of actors/ that is a core by its name (``core.py``, ``*_core.py``)."""
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "actors").rglob("*.py")
        if path.stem == "core" or path.stem.endswith("_core")
    )


def test_the_sans_io_contract_names_every_core():
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][1]
    patterns = contract["source_modules"]

    def covered(module: str) -> bool:
        return any(fnmatch.fnmatchcase(module, pattern) and module.count(".") == pattern.count(".") for pattern in patterns)

    assert [m for m in core_modules() if not covered(m)] == []


IO = {"ccxt", "trio", "sqlite3", "anyio", "httpx", "hypercorn", "asyncio", "socket", "numpy"}


def test_importing_any_core_loads_no_io_and_only_its_own_rules():
    # import-linter does not follow imports inside third-party packages; this does.
    for core in core_modules():
        probe = f"import {core}, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(IO | {'actors'})!r}))"
        result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
        loaded = ast.literal_eval(result.stdout)
        assert not [m for m in loaded if m.split(".")[0] in IO], (core, loaded)
        if not core.startswith("actors.strategy"):
            assert not [m for m in loaded if m.startswith("actors.strategy")], (core, loaded)
