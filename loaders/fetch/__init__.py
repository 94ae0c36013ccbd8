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

from loaders.fetch.base import FetchError, FetchedFile, FetchOutcome, NotYetAvailable
from loaders.fetch.folder import FolderFetcher
from loaders.fetch.landing import Landing
from recon.config import Channel, Config, Statement

__all__ = ["FetchError", "FetchedFile", "FetchOutcome", "NotYetAvailable", "fetch_statement", "fetcher_for"]


def fetcher_for(statement: Statement):
    kind = statement.source.type
    if kind == "folder":
        return FolderFetcher(statement.source)
    if kind == "sftp":
        from loaders.fetch.sftp import SftpFetcher
        return SftpFetcher(statement.source)
    if kind == "http":
        from loaders.fetch.http import HttpFetcher
        return HttpFetcher(statement.source)
    raise FetchError(f"unknown transport {kind!r}")


def fetch_statement(cfg: Config, channel: Channel, statement: Statement, business_date: date) -> list[FetchedFile]:
    """Fetch one statement of one channel for one day and land it; returns the landed files.

    Raises :class:`NotYetAvailable` when the file is not published yet (a
    scheduler waits and tries again) and :class:`FetchError` for real errors.
    An empty list means the channel said: no statement for this day.
    """
    landing = Landing(Path(cfg.landing_dir))
    with landing.staging() as staging:
        outcome = fetcher_for(statement).fetch(statement, business_date, staging, channel=channel.name)
        return [landing.land(f, channel.name, statement, business_date) for f in outcome.files]
