"""Shared test helpers: a fast config on a temp store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def fast_config_raw(tmp_path: Path, speed: float = 50.0) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["store"] = str(tmp_path / "limitline.sqlite")
    raw["status"]["port"] = 0
    raw["reconciler"]["interval_seconds"] = 0.5
    raw["venues"][0]["replay"]["BTC/USD"]["speed"] = speed
    return raw


@pytest.fixture
def fast_raw(tmp_path: Path) -> dict[str, Any]:
    """The default config, sped up, on a temp store, status on any free port."""
    return fast_config_raw(tmp_path)


@pytest.fixture
def fast_config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(fast_config_raw(tmp_path)))
    return path


@pytest.fixture
def credentials(monkeypatch):
    """The live tests' sandbox credentials, in the environment variables their config names."""
    from helpers import KEY, SECRET

    monkeypatch.setenv("LL_TEST_KEY", KEY)
    monkeypatch.setenv("LL_TEST_SECRET", SECRET)
