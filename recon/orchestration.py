"""What the nightly Airflow DAG (``dags/recon_nightly.py``) does, step by step, with no Airflow at import time.

The DAG file only wires these functions; each is a thin layer over :mod:`recon.pipeline`, the same
code ``recon run`` uses:

    plan                 -> the configured channel names (the DAG maps the channel tasks over them)
    wait_and_fetch(ch)   -> sensor poke: land the channel's statements of the day, or "not yet"
    verify(ch)           -> parse what landed (footer totals, period, quarantine policy); no warehouse write
    reconcile_and_settle -> ``pipeline.process_day``: load every landed file + platform rows, match, settle,
                            in ONE warehouse transaction (a failed day leaves the warehouse as it was)
    report               -> ``pipeline.report_day(publish=False)``: workbooks and payout files
    publish              -> ``reports.snapshot.publish_snapshot``: the analyst snapshot

Business date (see :func:`business_date_of` and docs/deploy.md): a scheduled or backfill run reconciles the
platform-time-zone date of ``data_interval_start``; the schedule is a cron *data interval*
``[D 10:30, D+1 10:30)`` that fires at its end, so the run at 10:30 on D+1 reconciles D. A manual run
(``airflow dags test recon_nightly 2026-06-05``, ``dag.test(logical_date=...)``, a trigger with a logical
date) reconciles the date of the logical date it was given. Never ``now()``.

Errors: a transient fault (:func:`is_transient`: a dropped connection, a timeout, HTTP 5xx, a locked
warehouse) is re-raised so Airflow retries it with exponential backoff; anything else becomes
``AirflowFailException`` (no retry: a wrong password or a corrupt file does not get better by waiting).

Scale-out (``schedule.buckets``, docs/deploy.md): the day is loaded and committed first (``load``:
``pipeline.load_day``), each bucket of a split channel is its own mapped task (``bucket``:
``recon.buckets.reconcile_bucket`` on a read-only warehouse, writing Parquet), and ``reconcile_and_settle``
reconciles the other channels, merges the buckets and settles in one transaction. ``recon_buckets`` redoes
one channel of a day already reconciled (``plan_buckets``, ``bucket_step``, ``merge_step``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterator
from zoneinfo import ZoneInfo

from recon.config import Config, ConfigError, load_config
from recon.warehouse import connect

log = logging.getLogger("recon.orchestration")

CONFIG_ENV = "RECON_CONFIG"
CONFIG_VARIABLE = "recon_config"
DAG_ID = "recon_nightly"


# ----------------------------------------------------------------------------- config
def config_path() -> str:
    """The config file: environment variable RECON_CONFIG, else the Airflow Variable ``recon_config``."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        try:
            from airflow.sdk import Variable

            path = Variable.get(CONFIG_VARIABLE, default=None)
        except Exception:  # no Airflow, or no API server to ask (e.g. a bare DagBag parse)
            path = None
    if not path:
        raise ConfigError(f"no recon config: set the environment variable {CONFIG_ENV} or the Airflow "
                          f"Variable {CONFIG_VARIABLE} to the path of the YAML config file")
    return path


def load() -> Config:
    return load_config(config_path())


@dataclass(frozen=True)
class DagSettings:
    """The little the DAG needs at parse time: one local YAML read, no network, no database."""

    cron: str
    timezone: str
    start_date: datetime
    catchup: bool
    deadline_seconds: float
    poke_interval_seconds: float
    retries: int
    retry_delay: timedelta
    max_retry_delay: timedelta
    pool: str
    config_path: str
    buckets: dict[str, int]                    # split channels: the nightly DAG gets load and bucket tasks
    archive: bool = False                      # archive.nightly: the DAG ends with an archive task
    backup: bool = False                       # backup.nightly: ... and then a backup task


def dag_settings() -> DagSettings:
    cfg = load()
    s = cfg.schedule
    # Without a start date the scheduler only runs the latest interval (no catch-up); with one, every
    # interval from that business date on runs, oldest first (one run at a time: carry-over feeds the next).
    start = s.start_date or date(2026, 1, 1)
    return DagSettings(
        cron=s.cron, timezone=cfg.timezone,
        start_date=datetime(start.year, start.month, start.day, tzinfo=ZoneInfo(cfg.timezone)),
        catchup=s.start_date is not None,
        deadline_seconds=s.file_deadline_minutes * 60, poke_interval_seconds=s.poke_interval_seconds,
        retries=s.retries, retry_delay=timedelta(seconds=s.retry_delay_seconds),
        max_retry_delay=timedelta(seconds=s.max_retry_delay_seconds), pool=s.pool,
        config_path=str(cfg.config_path), buckets=dict(s.buckets), archive=cfg.archive.nightly,
        backup=cfg.backup.nightly)


# ----------------------------------------------------------------------------- business date
AUTOMATIC_RUN_TYPES = ("scheduled", "backfill")


def business_date_of(*, zone: str | ZoneInfo, data_interval_start: datetime | None,
                     logical_date: datetime | None = None, run_type: str | None = None,
                     run_after: datetime | None = None) -> date:
    """The business date a DAG run reconciles (never derived from the wall clock).

    - scheduled / backfill run: ``data_interval_start`` in the platform zone. The timetable is a cron data
      interval, so the run that fires at 10:30 on D+1 covers [D 10:30, D+1 10:30) and reconciles D.
    - manual run with a logical date (``airflow dags test recon_nightly 2026-06-05``): that date, in the
      platform zone (2026-06-05T00:00Z is 08:00 in Shanghai: business date 2026-06-05).
    - manual run without a logical date: the day before ``run_after`` (the last complete business day).
    """
    zone = ZoneInfo(zone) if isinstance(zone, str) else zone
    kind = str(getattr(run_type, "value", run_type) or "").lower()
    if kind in AUTOMATIC_RUN_TYPES and data_interval_start is not None:
        return data_interval_start.astimezone(zone).date()
    if logical_date is not None:
        return logical_date.astimezone(zone).date()
    if data_interval_start is not None:
        return data_interval_start.astimezone(zone).date()
    if run_after is None:
        raise ValueError("a DAG run with neither a logical date, a data interval nor run_after")
    return run_after.astimezone(zone).date() - timedelta(days=1)


def business_date_from_context(context: Any, cfg: Config) -> date:
    dag_run = context.get("dag_run")
    return business_date_of(
        zone=cfg.timezone, data_interval_start=context.get("data_interval_start"),
        logical_date=context.get("logical_date"), run_type=getattr(dag_run, "run_type", None),
        run_after=getattr(dag_run, "run_after", None))


def _context() -> Any:
    from airflow.sdk import get_current_context

    return get_current_context()


# ----------------------------------------------------------------------------- errors
_TRANSIENT_TEXT = re.compile(
    r"could not connect|connection refused|connection reset|timed? ?out|temporarily unavailable|"
    r"server closed the connection|terminating connection|too many connections|could not set lock|"
    r"database is locked|conflicting lock", re.I)


def is_transient(exc: BaseException) -> bool:
    """A fault worth retrying later with backoff; everything else fails the task at once."""
    if getattr(exc, "transient", None) is not None:      # loaders.fetch.FetchError / TransientFetchError
        return bool(exc.transient)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    name = type(exc).__name__
    if name in ("OperationalError", "InterfaceError", "DisconnectionError", "IOException"):
        return bool(_TRANSIENT_TEXT.search(str(exc)))    # sqlalchemy/psycopg2 connection loss, DuckDB lock
    return False


@contextlib.contextmanager
def task_errors(what: str) -> Iterator[None]:
    """Re-raise transient faults (Airflow retries them); turn the rest into a failure without retry."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    try:
        yield
    except AirflowException:
        raise                       # sensor timeout, reschedule, skip, fail: Airflow's own signals
    except Exception as exc:
        if is_transient(exc):
            log.warning("%s: transient fault, Airflow will retry with backoff: %s", what, exc)
            raise
        raise AirflowFailException(f"{what}: {exc}") from exc


# ----------------------------------------------------------------------------- steps
def _progress(stage: str, message: str) -> None:
    log.info("[%s] %s", stage, message)


def plan() -> list[str]:
    """The channels to fetch and verify, one mapped task each."""
    with task_errors("plan"):
        cfg = load()
        d = business_date_from_context(_context(), cfg)
        log.info("business date %s: channels %s (config %s)", d, [c.name for c in cfg.channels],
                 cfg.config_path)
        return [c.name for c in cfg.channels]


def _file_info(f) -> dict:
    return {"channel": f.channel, "kind": f.kind, "format": f.format, "file": f.original_name,
            "sha256": f.sha256, "size_bytes": f.size_bytes, "source": f.source}


def wait_and_fetch(channel: str):
    """One sensor poke: land the channel's statements of the day, or report "not yet".

    Returns a ``PokeReturnValue`` with the landed files, or False while a required statement is not
    published. Past the deadline (``schedule.file_deadline_minutes`` after the first poke) it raises
    ``AirflowSensorTimeout`` naming the channel, the date and what is missing.
    """
    from airflow.sdk import PokeReturnValue
    from airflow.sdk.exceptions import AirflowSensorTimeout
    from recon.pipeline import StatementMissing, fetch_day

    ctx = _context()
    with task_errors(f"fetch {channel}"):
        cfg = load()
        d = business_date_from_context(ctx, cfg)
        deadline = cfg.schedule.file_deadline_minutes * 60
        try:
            files = fetch_day(cfg, d, channels=[channel], progress=_progress)
        except StatementMissing as exc:
            first = ctx["ti"].get_first_reschedule_date(ctx)
            waited = (datetime.now(timezone.utc) - first).total_seconds() if first else 0.0
            if waited >= deadline:
                raise AirflowSensorTimeout(
                    f"channel {channel}: statement for business date {d} not published by the deadline "
                    f"({cfg.schedule.file_deadline_minutes:g} min after the wait began; waited {waited:.0f} s): "
                    f"{exc}") from None
            log.info("channel %s, business date %s: not yet (%s); waited %.0f of %.0f s",
                     channel, d, exc, waited, deadline)
            return False
        landed = [_file_info(f) for f in files]
        log.info("channel %s, business date %s: landed %s", channel, d, landed)
        return PokeReturnValue(is_done=True, xcom_value=landed)


def verify(channel: str) -> list[dict]:
    """Check the channel's landed files before anything is loaded: content hash, parse, footer, period,
    quarantine policy. Nothing is written to the warehouse; a bad file fails here, naming file and line."""
    from loaders.base import FileError
    from loaders.fetch.landing import sha256_file
    from loaders.load import check_period, parse_fetched
    from recon.pipeline import landed_files

    with task_errors(f"verify {channel}"):
        cfg = load()
        d = business_date_from_context(_context(), cfg)
        ch = cfg.channel(channel)
        files = [f for f in landed_files(cfg, d) if f.channel == channel]
        required = {(s.kind, s.format) for s in ch.statements if not s.optional}
        missing = required - {(f.kind, f.format) for f in files}
        if missing:
            raise FileError(cfg.landing_dir, f"channel {channel}: nothing landed for business date {d} for "
                                             f"{sorted(missing)}")
        out = []
        for f in files:
            if sha256_file(f.path) != f.sha256:
                raise FileError(f.path, "landed file does not match its sha256 (changed after landing)")
            st = next(s for s in ch.statements if s.kind == f.kind and s.format == f.format)
            parsed = parse_fetched(f, {"currency": ch.currency, **st.options})
            if parsed.footer.ok is False:
                raise FileError(f.path, f"the file's own totals disagree with its rows: {parsed.footer.message}")
            check_period(parsed, d)
            if parsed.quarantine and ch.quarantine_policy == "fail":
                q = parsed.quarantine[0]
                raise FileError(f.path, f"{len(parsed.quarantine)} row(s) cannot be loaded (policy: fail); "
                                        f"first: {q.reason}", line_no=q.line_no, field=q.field)
            info = {**_file_info(f), "rows": parsed.rows.num_rows, "quarantined": len(parsed.quarantine),
                    "footer_ok": parsed.footer.ok, "footer": parsed.footer.message}
            log.info("verified %s", info)
            out.append(info)
        return out


def load_statements() -> list[dict]:
    """Split run, first step: load the day and commit (``pipeline.load_day``); returns the bucket jobs."""
    from recon.pipeline import load_day

    with task_errors("load"):
        cfg = load()
        if not cfg.schedule.buckets:
            raise ValueError("the DAG was parsed with schedule.buckets, the config now has none: wait for the "
                             "DAG to be parsed again, then rerun")
        d = business_date_from_context(_context(), cfg)
        result = load_day(cfg, d, progress=_progress)
        log.info("business date %s loaded by run %s: %d files, platform %s", d, result.run_id, len(result.files),
                 result.platform_rows)
        return [{"channel": ch, "bucket": b, "buckets": n} for ch, n in cfg.schedule.buckets.items() for b in range(n)]


def bucket_job(job: dict) -> dict:
    """Split run: one key-hash bucket of one channel (read-only warehouse, writes Parquet)."""
    from recon.buckets import bucket_dir, reconcile_bucket

    with task_errors(f"{job['channel']} bucket {job['bucket']}"):
        ctx = _context()
        cfg = load()
        return reconcile_bucket(cfg, business_date_from_context(ctx, cfg), job["channel"], int(job["bucket"]),
                                int(job["buckets"]), bucket_dir(cfg))


def reconcile_and_settle(buckets: list[dict] | None = None) -> dict:
    """Load + match + settle the day in one warehouse transaction (``pipeline.process_day``).

    ``buckets``: the results of a split run's bucket tasks; the day is loaded already, the buckets' channels
    are merged, the rest reconciled, and the day settled, in one transaction.
    """
    from recon.buckets import bucket_dir
    from recon.pipeline import process_day

    with task_errors("reconcile and settle"):
        cfg = load()
        d = business_date_from_context(_context(), cfg)
        split = {b["channel"]: int(b["buckets"]) for b in buckets or []}
        result = process_day(cfg, d, progress=_progress, split=split or None, bucket_out=bucket_dir(cfg))
        summary = {"business_date": d.isoformat(), "run_id": result.run_id, "files": len(result.files),
                   "rows": sum(f.rows for f in result.files), "platform": result.platform_rows,
                   "matched": result.matched, "breaks": result.breaks, "settlement": result.settlement}
        if split:   # the files and platform rows were loaded by the `load` task's run (its XCom and runs row)
            summary["loaded_by_run"] = sorted({b.get("basis_run") or "" for b in buckets or []})
            summary["split"] = split
        return json.loads(json.dumps(summary, default=str))      # XCom: plain JSON


def report() -> dict[str, str]:
    """Workbooks and payout files of the day (no snapshot yet)."""
    from recon.pipeline import report_day

    with task_errors("report"):
        cfg = load()
        d = business_date_from_context(_context(), cfg)
        return report_day(cfg, d, progress=_progress, publish=False)


def publish() -> str:
    """Publish the analyst snapshot: the last step, so readers never see a day that did not finish."""
    from reports.snapshot import publish_snapshot

    with task_errors("publish snapshot"):
        cfg = load()
        d = business_date_from_context(_context(), cfg)
        path = str(publish_snapshot(cfg, d))
        log.info("business date %s: analyst snapshot %s; warehouse %s", d, path, cfg.warehouse)
        return path


def archive() -> dict:
    """``recon archive move`` after the night: the closed days older than ``archive.keep_days`` leave the warehouse."""
    from recon.archive import move

    with task_errors("archive"):
        cfg = load()
        con = connect(cfg.warehouse)
        try:
            moved, kept = move(con, cfg, progress=lambda m: log.info("archive: %s", m))
        finally:
            con.close()
        for st in kept:
            log.info("archive: %s stays: %s", st.business_date, "; ".join(st.blockers))
        out = {"archived": [str(m["business_date"]) for m in moved], "rows": sum(m["rows"] for m in moved),
               "kept": [str(st.business_date) for st in kept], "compacted": False}
        if cfg.archive.compact_min_free is not None:
            from recon.compact import compact

            done = compact(cfg.warehouse, min_free_share=cfg.archive.compact_min_free,
                           memory_limit=cfg.duckdb_memory_limit, threads=cfg.duckdb_threads,
                           progress=lambda m: log.info("compact: %s", m))
            out.update(compacted=done["compacted"], file_bytes_before=done["before"].file_bytes,
                       file_bytes_after=done["after"].file_bytes)
        return out


def backup() -> dict:
    """``recon backup make`` after the night: a checked copy of the warehouse in ``backup_dir``."""
    from recon.backup import make

    with task_errors("backup"):
        done = make(load(), progress=lambda m: log.info("backup: %s", m))
        return {"path": str(done["path"]), "bytes": done["bytes"], "tables": done["tables"],
                "latest_reconciled": str(done["latest_reconciled"]), "removed": [str(p) for p in done["removed"]]}


# ----------------------------------------------------------------------------- notification
def failure_message(context: Any) -> dict:
    ti = context.get("ti") or context.get("task_instance")
    exc = context.get("exception")
    msg = {
        "dag_id": getattr(ti, "dag_id", None) or DAG_ID,
        "run_id": getattr(ti, "run_id", None) or getattr(context.get("dag_run"), "run_id", None),
        "task_id": getattr(ti, "task_id", None),
        "map_index": getattr(ti, "map_index", None),
        "try_number": getattr(ti, "try_number", None),
        "error": f"{type(exc).__name__}: {exc}" if exc is not None else None,
    }
    try:
        msg["business_date"] = business_date_from_context(context, load()).isoformat()
    except Exception:
        msg["business_date"] = None
    return msg


def post_webhook(url: str, payload: dict, timeout: float = 10.0) -> int:
    body = json.dumps(payload, default=str).encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "payrecon"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (URL from the operator's config)
        return resp.status


def send_email(cfg: Config, payload: dict) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    subject = (f"[payrecon] {payload['dag_id']} failed: {payload['task_id']} "
               f"(business date {payload['business_date']})")
    rows = "".join(f"<tr><th align=left>{k}</th><td>{v}</td></tr>" for k, v in payload.items())
    with SmtpHook(smtp_conn_id=cfg.schedule.smtp_conn_id) as hook:
        # the sender: the connection's extra "from_email", else payrecon@<this host>
        hook.send_email_smtp(to=cfg.schedule.notify_email, subject=subject, html_content=f"<table>{rows}</table>",
                             from_email=hook.from_email or f"payrecon@{socket.getfqdn()}")


def notify_failure(context: Any) -> None:
    """``on_failure_callback``: a webhook POST and/or an email, as ``schedule`` configures.

    Runs once per task that finally failed (not on a retry). A notification that cannot be delivered
    is logged, never raised: it must not hide the failure it reports.
    """
    payload = failure_message(context)
    log.error("task failed: %s", payload)
    try:
        cfg = load()
    except Exception as exc:
        log.error("cannot read the config to notify: %s", exc)
        return
    if cfg.schedule.notify_webhook:
        try:
            status = post_webhook(cfg.schedule.notify_webhook, payload)
            log.info("failure notification posted to the webhook (HTTP %s)", status)
        except Exception as exc:
            log.error("failure notification: webhook POST failed: %s", exc)
    if cfg.schedule.notify_email:
        try:
            send_email(cfg, payload)
            log.info("failure notification mailed to %s", cfg.schedule.notify_email)
        except Exception as exc:
            log.error("failure notification: email failed: %s", exc)


def plan_buckets() -> list[int]:
    """The buckets of the run's channel (params ``channel``, ``buckets``); the channel must be configured."""
    with task_errors("plan buckets"):
        ctx = _context()
        cfg = load()
        channel, n = ctx["params"]["channel"], int(ctx["params"]["buckets"])
        cfg.channel(channel)
        if n < 1:
            raise ValueError(f"buckets must be at least 1, got {n}")
        log.info("business date %s: channel %s in %d key-hash buckets", business_date_from_context(ctx, cfg),
                 channel, n)
        return list(range(n))


def bucket_step(bucket: int) -> dict:
    ctx = _context()
    return bucket_job({"channel": ctx["params"]["channel"], "bucket": bucket, "buckets": ctx["params"]["buckets"]})


def merge_step() -> dict:
    from recon.buckets import bucket_dir, merge_buckets

    with task_errors("merge buckets"):
        ctx = _context()
        cfg = load()
        return merge_buckets(cfg, business_date_from_context(ctx, cfg), ctx["params"]["channel"],
                             int(ctx["params"]["buckets"]), bucket_dir(cfg))
