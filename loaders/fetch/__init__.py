"""Fetch a channel's statement files for a business date into the landing zone.

Each transport (folder, sftp, http) implements :class:`Transport`'s
``fetch(statement, business_date, staging_dir) -> FetchOutcome``; the landing
zone (``loaders.fetch.landing``) keeps every original content-addressed and
writes the manifest. ``fetch_statement`` is the one entry point the pipeline,
the CLI and the DAG call.
"""
from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Callable

from loaders.fetch.base import FetchError, FetchedFile, FetchOutcome, NotYetAvailable, TransientFetchError
from loaders.fetch.folder import FolderFetcher
from loaders.fetch.landing import Landing
from recon.config import Channel, Config, Statement

__all__ = ["FetchError", "FetchedFile", "FetchOutcome", "NotYetAvailable", "TransientFetchError", "fetch_statement",
           "fetcher_for"]


def fetcher_for(statement: Statement, sleep: Callable[[float], None] | None = None):
    """The fetcher for a statement's transport; ``sleep`` (backoff waits) is injectable for tests."""
    kind = statement.source.type
    if kind == "folder":
        return FolderFetcher(statement.source)
    if kind == "sftp":
        from loaders.fetch.sftp import SftpFetcher
        return SftpFetcher(statement.source, sleep=sleep)
    if kind == "http":
        from loaders.fetch.http import HttpFetcher
        return HttpFetcher(statement.source, sleep=sleep)
    raise FetchError(f"unknown transport {kind!r}")


def fetch_statement(cfg: Config, channel: Channel, statement: Statement, business_date: date,
                    sleep: Callable[[float], None] | None = None) -> list[FetchedFile]:
    """Fetch one statement of one channel for one day and land it; returns the landed files.

    Raises :class:`NotYetAvailable` when the file is not published yet (a
    scheduler waits and tries again) and :class:`FetchError` for real errors.
    An empty list means the channel said: no statement for this day.
    """
    landing = Landing(Path(cfg.landing_dir))
    with landing.staging() as staging:
        outcome = fetcher_for(statement, sleep=sleep).fetch(statement, business_date, staging, channel=channel.name)
        # Everything is complete and verified in staging before anything is landed.
        archives = {a.original_name: landing.land(a, channel.name, statement, business_date, role="archive").sha256
                    for a in outcome.archives}
        return [landing.land(f, channel.name, statement, business_date,
                             extracted_from=archives.get(f.extracted_from) if f.extracted_from else None)
                for f in outcome.files]
