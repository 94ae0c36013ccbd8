"""Statements that are already in a folder (or a mounted share)."""
from __future__ import annotations

import glob
import shutil
from datetime import date
from pathlib import Path

from loaders.fetch.base import FetchOutcome, NotYetAvailable, StagedFile
from recon.config import FolderTransport, Statement, expand_path


class FolderFetcher:
    def __init__(self, transport: FolderTransport):
        self.transport = transport

    def fetch(self, statement: Statement, business_date: date, staging: Path, channel: str = "") -> FetchOutcome:
        pattern = expand_path(self.transport.path, business_date, channel=channel)
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise NotYetAvailable(f"no file matches {pattern}")
        staged = []
        for src in matches:
            dst = staging / Path(src).name
            shutil.copyfile(src, dst)
            staged.append(StagedFile(dst, Path(src).name, str(Path(src).resolve())))
        return FetchOutcome(staged)
