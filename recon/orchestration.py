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

Scale-out: :func:`reconcile_bucket` / :func:`merge_buckets` reconcile one channel's day in N key-hash
buckets with the unchanged matching SQL (see docs/deploy.md).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

from recon.config import Config, ConfigError, load_config

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
        config_path=str(cfg.config_path))


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


def reconcile_and_settle() -> dict:
    """Load + match + settle the day in one warehouse transaction (``pipeline.process_day``)."""
    from recon.pipeline import process_day

    with task_errors("reconcile and settle"):
        cfg = load()
        d = business_date_from_context(_context(), cfg)
        result = process_day(cfg, d, progress=_progress)
        summary = {"business_date": d.isoformat(), "run_id": result.run_id, "files": len(result.files),
                   "rows": sum(f.rows for f in result.files), "platform": result.platform_rows,
                   "matched": result.matched, "breaks": result.breaks, "settlement": result.settlement}
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


# ----------------------------------------------------------------------------- key-hash buckets
#: Every keyed table the day's reconciliation reads, as the rows of one channel and one bucket. The bucket
#: is hash(reference) % N where the reference is the platform's order / refund number a row pairs on: the
#: number inside the match key (``payment:<ref>``, ``refund:<ref>``, ``internal:<ref>``) and the funds-flow
#: reference. A channel row without the merchant's number takes the platform number its channel id maps to,
#: exactly as the matching does, so both sides of a pair, its duplicates, its funds movements and its carried
#: breaks always fall into the same bucket. {src} is the warehouse catalog, {where} the channel + bucket test.
_IDS = ("SELECT channel, order_type, channel_txn_id, "
        "min(CASE order_type WHEN 'payment' THEN order_no ELSE refund_no END) AS k "
        "FROM {src}.platform_orders WHERE channel_txn_id IS NOT NULL GROUP BY ALL")
BUCKET_INPUTS = {
    "platform_orders": ("SELECT t.* FROM {src}.platform_orders t WHERE {where}",
                        "CASE t.order_type WHEN 'payment' THEN t.order_no ELSE t.refund_no END"),
    "channel_transactions": (
        "SELECT t.* FROM {src}.channel_transactions t LEFT JOIN (" + _IDS + ") i ON i.channel = t.channel "
        "AND i.order_type = t.txn_type "
        "AND i.channel_txn_id = CASE t.txn_type WHEN 'payment' THEN t.channel_txn_id ELSE t.channel_refund_id END "
        "WHERE {where}",
        "CASE t.txn_type WHEN 'payment' THEN coalesce(i.k, t.merchant_order_no, t.channel_txn_id) "
        "ELSE coalesce(i.k, t.merchant_refund_no, t.channel_refund_id, "
        "coalesce(t.merchant_order_no, t.channel_txn_id) || '@' || t.amount) END"),
    "platform_expected_funds": ("SELECT t.* FROM {src}.platform_expected_funds t WHERE {where}",
                                "coalesce(t.refund_no, t.order_no)"),
    "channel_funds_movements": ("SELECT t.* FROM {src}.channel_funds_movements t WHERE {where}",
                                "coalesce(t.reference, t.channel_txn_id, t.movement_id)"),
    # Settlement-batch checks compare a bank's lump sum with a whole channel's day: not splittable by key.
    "bank_statement_lines": ("SELECT t.* FROM {src}.bank_statement_lines t WHERE false", None),
}
#: The reference of a break or a matched pair: its match key without the kind prefix and a duplicate's
#: ``#<occurrence>``. Channel-wide breaks (``batch:<T>``) belong to no bucket.
_KEY_REF = r"regexp_replace(regexp_replace(t.match_key, '^(payment|refund|internal):', ''), '#[0-9]+$', '')"
#: What the reconciliation writes; each bucket writes its own slice (seeded with the slice's current rows).
BUCKET_OUTPUTS = {
    "discrepancies": f"t.match_key NOT LIKE 'batch:%' AND {{bucket:{_KEY_REF}}}",
    "matched_transactions": f"{{bucket:{_KEY_REF}}}",
    "discrepancy_members": "false",          # members of settlement-batch breaks only
    "discrepancy_resolutions": "false",      # append-only audit: a bucket's new rows are appended at merge
}


def bucket_sql(ref_sql: str, buckets: int) -> str:
    # DuckDB hash(): 64-bit, stable for a DuckDB version (every bucket of one run uses the same version).
    return f"(hash({ref_sql}) % {int(buckets)})"


def _bucket_dir(out_dir: Path, channel: str, d: date) -> Path:
    return Path(out_dir) / f"business_date={d.isoformat()}" / f"channel={channel}"


def _has_batch_credits(con, src: str, channel: str, d: date) -> bool:
    return con.execute(f"SELECT count(*) FROM {src}.bank_statement_lines WHERE payer_channel = ? "
                       "AND business_date <= ? AND direction = 'in'", [channel, d]).fetchone()[0] > 0


def reconcile_bucket(cfg: Config, d: date, channel: str, bucket: int, buckets: int, out_dir: Path) -> dict:
    """Reconcile one key-hash bucket of one channel's day; writes Parquet, never the warehouse.

    The warehouse is opened read-only (many buckets can read it at once, from many processes). TEMP
    views named like the input tables show only this channel's rows of this bucket, and TEMP tables
    named like the output tables hold this slice's current rows; the pipeline's own ``reconcile_day``
    then runs unchanged and resolves its table names to them (DuckDB looks in ``temp`` first; a write
    to any other table fails: the warehouse is read-only). The slice it leaves is written to
    ``<out_dir>/business_date=D/channel=C/<table>/bucket=<b>.parquet``.
    """
    from recon import pipeline

    if not 0 <= bucket < buckets:
        raise ValueError(f"bucket {bucket} is not in 0..{buckets - 1}")
    cfg.channel(channel)                                   # a known channel (its name is a safe identifier)
    out = _bucket_dir(out_dir, channel, d)
    con = pipeline.open_warehouse(cfg, read_only=True)
    try:
        db = con.execute("SELECT current_database()").fetchone()[0]
        src = f'"{db}".main'
        if _has_batch_credits(con, src, channel, d):
            raise ValueError(f"channel {channel}: a bank statement shows its settlement-batch credits; the batch "
                             "check compares whole days and cannot be split by key: reconcile it unsplit")
        ch = f"'{channel}'"
        for table, (sql, ref) in BUCKET_INPUTS.items():
            where = f"t.channel = {ch} AND {bucket_sql(ref, buckets)} = {bucket}" if ref else "true"
            con.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS " + sql.format(src=src, where=where))
        for table, seed in BUCKET_OUTPUTS.items():
            ddl = con.execute("SELECT sql FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' "
                              "AND table_name = ?", [db, table]).fetchone()[0]
            for seq in re.findall(r"nextval\('([^']+)'\)", ddl):
                con.execute(f"CREATE TEMP SEQUENCE IF NOT EXISTS {seq}")
            con.execute(re.sub(r"^CREATE TABLE\s+(\S+\.)*", "CREATE TEMP TABLE ", ddl, count=1))
            cond = re.sub(r"\{bucket:(.*)\}", lambda m: f"{bucket_sql(m.group(1), buckets)} = {bucket}", seed)
            if seed != "false":
                cond = f"t.channel = {ch} AND {cond}"
            con.execute(f"INSERT INTO temp.main.{table} SELECT * FROM {src}.{table} t WHERE {cond}")
        t0 = time.perf_counter()
        summary = pipeline.reconcile_day(con, cfg, d)
        seconds = time.perf_counter() - t0
        files = {}
        for table in BUCKET_OUTPUTS:
            path = out / table / f"bucket={bucket}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".parquet.tmp")
            cols = "* EXCLUDE (resolution_id)" if table == "discrepancy_resolutions" else "*"
            con.execute(f"COPY (SELECT {cols} FROM temp.main.{table}) TO '{tmp}' (FORMAT parquet)")
            os.replace(tmp, path)                        # a reader sees the whole bucket file or none
            files[table] = str(path)
        return {"channel": channel, "bucket": bucket, "buckets": buckets, "matched": summary.matched,
                "breaks": dict(summary.by_type), "seconds": round(seconds, 3), "files": files}
    finally:
        con.close()


def merge_buckets(cfg: Config, d: date, channel: str, buckets: int, out_dir: Path,
                  con=None) -> dict[str, int]:
    """Apply every bucket's slice of one channel to the warehouse, in one transaction.

    A bucket file holds the complete new state of its slice (the channel's keyed breaks of every day whose
    reference hashes to the bucket, as ``reconcile_day`` left them), so the channel's keyed breaks are
    replaced whole, its matched pairs of the day replaced, and the buckets' audit rows appended.
    Refuses to merge if a bucket file is missing.
    """
    from recon import pipeline
    from recon.warehouse import transaction

    base = _bucket_dir(out_dir, channel, d)
    paths = {t: [base / t / f"bucket={b}.parquet" for b in range(buckets)] for t in BUCKET_OUTPUTS}
    missing = [str(p) for ps in paths.values() for p in ps if not p.exists()]
    if missing:
        raise FileNotFoundError(f"cannot merge channel {channel} for {d}: bucket files missing: {missing}")

    def files(table: str) -> str:
        # hive_partitioning off: the folder names (business_date=..., channel=...) are for people and engines
        # that prune by them; the rows already carry both columns.
        return "read_parquet([" + ", ".join(f"'{p}'" for p in paths[table]) + "], hive_partitioning = false)"

    own = con is None
    con = con or pipeline.open_warehouse(cfg)
    try:
        with transaction(con):
            con.execute("DELETE FROM discrepancies WHERE channel = ? AND match_key NOT LIKE 'batch:%'", [channel])
            con.execute(f"INSERT INTO discrepancies SELECT * FROM {files('discrepancies')}")
            con.execute("DELETE FROM matched_transactions WHERE channel = ? AND business_date = ?", [channel, d])
            con.execute(f"INSERT INTO matched_transactions SELECT * FROM {files('matched_transactions')} "
                        "WHERE business_date = ?", [d])
            cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {files('discrepancy_resolutions')}").fetchall()]
            collist = ", ".join(f'"{c}"' for c in cols)
            con.execute(f"INSERT INTO discrepancy_resolutions ({collist}) "
                        f"SELECT {collist} FROM {files('discrepancy_resolutions')}")
        return {t: con.execute(f"SELECT count(*) FROM {files(t)}").fetchone()[0] for t in BUCKET_OUTPUTS}
    finally:
        if own:
            con.close()


# ----------------------------------------------------------------------------- the bucket DAG's steps
def bucket_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / "buckets"


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
    with task_errors(f"bucket {bucket}"):
        ctx = _context()
        cfg = load()
        return reconcile_bucket(cfg, business_date_from_context(ctx, cfg), ctx["params"]["channel"], bucket,
                                int(ctx["params"]["buckets"]), bucket_dir(cfg))


def merge_step() -> dict[str, int]:
    with task_errors("merge buckets"):
        ctx = _context()
        cfg = load()
        return merge_buckets(cfg, business_date_from_context(ctx, cfg), ctx["params"]["channel"],
                             int(ctx["params"]["buckets"]), bucket_dir(cfg))
