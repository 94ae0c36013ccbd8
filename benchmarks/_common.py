"""Helpers shared by the benchmark scripts (bench_load, bench_settlement)."""
from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(text: str, begin: str, end: str, heading: str, path: Path = RESULTS) -> None:
    """Put ``text`` between the ``begin``/``end`` markers of RESULTS.md, replacing what was there;
    without the markers, append them under a new ``## heading`` section."""
    body = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in body and end in body:
        body = body[: body.index(begin)] + block + body[body.index(end) + len(end):]
    else:
        body = body.rstrip("\n") + f"\n\n## {heading}\n\n" + block + "\n"
    path.write_text(body, encoding="utf-8")
