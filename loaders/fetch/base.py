"""Outcomes of a fetch: files, 'not there yet', or an error that names the source (never credentials)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


class FetchError(Exception):
    """A real error (auth, permission, host key, corrupt archive): do not retry blindly."""

    transient = False


class TransientFetchError(FetchError):
    """A fault worth retrying with backoff (timeout, dropped connection, HTTP 5xx)."""

    transient = True


class NotYetAvailable(Exception):
    """The file (or its done-marker) is not published yet; try again later."""


@dataclass(frozen=True)
class StagedFile:
    """A complete, verified file in the staging folder, not yet landed."""

    path: Path
    original_name: str
    source: str                      # host:remote path or URL without credentials, or local path
    extracted_from: str | None = None  # original_name of the archive (in FetchOutcome.archives) it came from


@dataclass(frozen=True)
class FetchOutcome:
    files: list[StagedFile] = field(default_factory=list)
    no_statement: bool = False       # the channel said there is no statement for this day
    archives: list[StagedFile] = field(default_factory=list)  # originals as they arrived (gzip/ZIP): kept, not parsed


@dataclass(frozen=True)
class FetchedFile:
    """A landed file: kept as it arrived, content-addressed."""

    channel: str
    business_date: object
    kind: str
    format: str
    path: Path                       # the landed copy (landing/<sha[:2]>/<sha>/<name>)
    original_name: str
    source: str
    size_bytes: int
    sha256: str
    fetched_at: datetime
    restatement: bool = False
