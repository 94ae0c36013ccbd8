"""Generate a consistent multi-day world at any size: statements, platform database, config, ground truth.

``generate_world(out, orders=N, days=K, seed=S)`` is what ``recon generate`` runs; see
``recon.generate.world`` for what is injected and ``docs``-style notes there.
"""
from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Callable

from recon.generate.world import DEFAULT_START, GROUND_TRUTH_COLUMNS, World, WorldSpec

__all__ = ["generate_world", "WorldSpec", "GROUND_TRUTH_COLUMNS", "DEFAULT_START"]


def generate_world(out: str | Path, orders: int, days: int = 1, seed: int = 0, break_rate: float = 0.0005,
                   refund_rate: float = 0.02, start: date = DEFAULT_START, chunk_rows: int = 500_000,
                   merchants: int = 20, progress: Callable[[str], None] | None = None) -> dict:
    """Write the world into ``out``; returns its description (also in ``out/world.json``)."""
    spec = WorldSpec(Path(out), orders, days, seed, break_rate, refund_rate, start, chunk_rows, merchants)
    return World(spec, progress).generate()
