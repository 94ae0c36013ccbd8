"""The landing zone: every fetched file kept as it arrived, content-addressed, with a manifest.

Layout: ``<landing>/objects/<sha256[:2]>/<sha256>/<original name>`` holds the bytes;
``<landing>/manifest.jsonl`` has one line per (channel, business date,
statement, sha256). Landing identical content again is a no-op; different
content for a channel/day/statement already landed is flagged a restatement.

A compressed download is kept twice: the archive exactly as it arrived
(manifest ``role: "archive"``) and each extracted statement file (``role:
"statement"``, ``extracted_from`` = the archive's sha256). :meth:`Landing.entries`
lists statement rows unless asked for archives too.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterator

from loaders.fetch.base import FetchedFile, StagedFile
from recon.config import Statement


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_name(name: str) -> str:
    """A remote file name reduced to a safe local base name (no folders, no '..')."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if base in ("", ".", "..") or base.startswith("."):
        raise ValueError(f"unsafe file name {name!r}")
    return base


class Landing:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.manifest = self.root / "manifest.jsonl"

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private temporary folder on the same file system; removed whatever happens."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=self.root / "tmp"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def entries(self, channel: str | None = None, business_date: date | None = None,
                include_archives: bool = False) -> list[dict]:
        if not self.manifest.exists():
            return []
        rows = [json.loads(ln) for ln in self.manifest.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return [r for r in rows if (channel is None or r["channel"] == channel)
                and (business_date is None or r["business_date"] == business_date.isoformat())
                and (include_archives or r.get("role", "statement") != "archive")]

    def land(self, staged: StagedFile, channel: str, statement: Statement, business_date: date,
             role: str = "statement", extracted_from: str | None = None) -> FetchedFile:
        digest = sha256_file(staged.path)
        obj = self.root / "objects" / digest[:2] / digest / safe_name(staged.original_name)
        obj.parent.mkdir(parents=True, exist_ok=True)
        if not obj.exists():
            os.replace(staged.path, obj)          # atomic: same file system
        previous = [e for e in self.entries(channel, business_date, include_archives=True)
                    if e["kind"] == statement.kind and e["format"] == statement.format
                    and e.get("role", "statement") == role and e["original_name"] == staged.original_name]
        now = datetime.now(timezone.utc)
        landed = FetchedFile(channel, business_date, statement.kind, statement.format, obj, staged.original_name,
                             staged.source, obj.stat().st_size, digest, now,
                             restatement=bool(previous) and all(e["sha256"] != digest for e in previous))
        if not any(e["sha256"] == digest for e in previous):
            row = {"channel": channel, "business_date": business_date.isoformat(),
                   "kind": statement.kind, "format": statement.format,
                   "original_name": staged.original_name, "source": staged.source,
                   "size_bytes": landed.size_bytes, "sha256": digest,
                   "fetched_at": now.isoformat(), "restatement": landed.restatement}
            if role != "statement":
                row["role"] = role
            if extracted_from:
                row["extracted_from"] = extracted_from
            with open(self.manifest, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return landed
