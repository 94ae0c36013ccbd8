"""Shared fixtures: the bundled demo world in a temporary folder, with its own config file."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from recon.config import Config, load_config
from recon.demo import SAMPLES, build_platform_db

DEMO_DATE = date(2026, 6, 5)


def write_demo_config(out: Path, **overrides) -> Path:
    """A copy of sample_files/recon.yml writing into ``out``; statement paths point at the samples."""
    out.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((SAMPLES / "recon.yml").read_text(encoding="utf-8"))
    for channel in raw["channels"]:
        for st in channel["statements"]:
            st["source"]["path"] = str(SAMPLES / st["source"]["path"])
    url = f"sqlite:///{out / 'platform.db'}"
    if not (out / "platform.db").exists():
        build_platform_db(url)
    raw.update({"warehouse": str(out / "warehouse.duckdb"), "output_dir": str(out),
                "landing_dir": str(out / "landing"), "internal_source": {"url": url}, **overrides})
    path = out / "recon.yml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def demo_config(out: Path, **overrides) -> Config:
    return load_config(write_demo_config(out, **overrides))


@pytest.fixture
def demo_cfg(tmp_path: Path) -> Config:
    return demo_config(tmp_path)
