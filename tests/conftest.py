"""Shared fixtures: the bundled demo world in a temporary folder, with its own config file."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from recon.config import Config, load_config
from recon.demo import write_demo_config

DEMO_DATE = date(2026, 6, 5)


def demo_config(out: Path, **overrides) -> Config:
    return load_config(write_demo_config(out, **overrides))


@pytest.fixture
def demo_cfg(tmp_path: Path) -> Config:
    return demo_config(tmp_path)
