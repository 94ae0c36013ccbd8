"""The nightly run for one business date, stage by stage.

    fetch  -> land every statement file (content-addressed, idempotent)
    load   -> parse, check totals and period, load statements and platform records
    match  -> information flow and funds flow breaks
    settle -> the T+N settlement batch of the merchants
    report -> the Excel workbooks, payout files and the analyst snapshot

``load``, ``match`` and ``settle`` write the warehouse in ONE transaction: a
run that fails leaves the warehouse exactly as it was (only the ``runs``
audit row and the quarantined rows of the failed file are kept, so the
failure can be investigated). The CLI and the Airflow DAG call the same
functions: ``fetch_day``, ``process_day``, ``report_day``, ``run_day``. A split day
(large channels reconciled in key-hash buckets, ``recon.buckets``) commits its load
first (``load_day``) and then reconciles and settles in one transaction.
"""
from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import pyarrow as pa

from loaders.base import ParsedFile, Quarantined
from loaders.fetch import FetchedFile, NotYetAvailable, fetch_statement
from loaders.fetch.landing import Landing
from loaders.internal import load_staged, read_platform, staging_parent
from loaders.load import LoadResult, load_file, parse_fetched
from recon.archive import refuse_if_archived
from recon.buckets import apply_buckets, bucket_dir, discard_slices, reconcile_bucket
from recon.config import Config
from recon.errors import UserError
from recon.matching import reconcile_day
from recon.warehouse import connect, transaction, unordered_writes

Progress = Callable[[str, str], None]


def _quiet(stage: str, message: str) -> None:
    pass


class StatementMissing(UserError):
    """A required statement is not published (yet)."""

    exit_code = 75  # EX_TEMPFAIL: a scheduler may try again


@dataclass
class DayResult:
    business_date: date
    run_id: str
    files: list[LoadResult] = field(default_factory=list)
    platform_rows: dict[str, int] = field(default_factory=dict)
    matched: int = 0
    breaks: dict[str, int] = field(default_factory=dict)
    settlement: dict = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def open_warehouse(cfg: Config, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    return connect(cfg.warehouse, read_only=read_only, memory_limit=cfg.duckdb_memory_limit,
                   threads=cfg.duckdb_threads)


def check_formats(cfg: Config) -> None:
    """Every statement names a known format: say so before anything is fetched."""
    from loaders.load import FORMATS

    for channel in cfg.channels:
        for i, st in enumerate(channel.statements):
            if st.format not in FORMATS:
                raise UserError(f"config: channels[{channel.name}].statements[{i}].format: unknown format "
                                f"{st.format!r} (known: {', '.join(sorted(FORMATS))})")


# ----------------------------------------------------------------------------- fetch
def fetch_day(cfg: Config, business_date: date, channels: list[str] | None = None,
              progress: Progress = _quiet) -> list[FetchedFile]:
    """Land every configured statement of the day. Missing required files raise StatementMissing."""
    landed, missing = [], []
    for channel in cfg.channels:
        if channels and channel.name not in channels:
            continue
        for st in channel.statements:
            try:
                files = fetch_statement(cfg, channel, st, business_date)
            except NotYetAvailable as exc:
                if st.optional:
                    progress("fetch", f"{channel.name} {st.kind}: none (optional): {exc}")
                    continue
                missing.append(f"{channel.name} {st.kind} ({st.format}): {exc}")
                continue
            for f in files:
                note = " (restatement)" if f.restatement else ""
                progress("fetch", f"{channel.name} {st.kind}: {f.original_name} sha256 {f.sha256[:12]}{note}")
            if not files:
                progress("fetch", f"{channel.name} {st.kind}: the channel has no statement for this day")
            landed.extend(files)
    if missing:
        raise StatementMissing("statement not available: " + "; ".join(missing))
    return landed


def landed_files(cfg: Config, business_date: date) -> list[FetchedFile]:
    """The newest landed file of each statement of the day (what `process_day` loads)."""
    landing, latest = Landing(cfg.landing_dir), {}
    for e in landing.entries(business_date=business_date):
        latest[(e["channel"], e["kind"], e["format"], e["original_name"])] = e
    out = []
    for e in latest.values():
        digest = e["sha256"]
        path = Path(cfg.landing_dir) / "objects" / digest[:2] / digest / e["original_name"]
        out.append(FetchedFile(e["channel"], business_date, e["kind"], e["format"], path, e["original_name"],
                               e["source"], e["size_bytes"], digest, datetime.fromisoformat(e["fetched_at"])))
    return sorted(out, key=lambda f: (f.channel, f.kind, f.original_name))


# ----------------------------------------------------------------------------- load + match + settle
def _record_run(con, run_id: str, d: date, cfg: Config, status: str, stage: str | None = None,
                message: str | None = None, summary: dict | None = None) -> None:
    now = datetime.now(timezone.utc)
    if status == "running":
        con.execute("INSERT INTO runs VALUES (?, ?, ?, NULL, 'running', ?, NULL, ?, NULL)",
                    [run_id, d, now, stage, cfg.config_sha256])
    else:
        con.execute("UPDATE runs SET finished_at = ?, status = ?, stage = ?, message = ?, summary = ? "
                    "WHERE run_id = ?", [now, status, stage, message,
                                         json.dumps(summary, default=str) if summary else None, run_id])


def _keep_quarantine(con, rejected: list[tuple[FetchedFile, list[Quarantined]]], d: date) -> None:
    """After a rollback, keep what could not be loaded: nothing is lost without a trace."""
    now = datetime.now(timezone.utc)
    rows = [[d, f.channel, f.sha256, str(f.path), q.line_no, q.field, q.reason, q.raw_text, now]
            for f, qs in rejected for q in qs]
    if rows:
        with transaction(con):
            con.execute("DELETE FROM quarantine WHERE business_date = ? AND file_id IN (SELECT unnest(?))",
                        [d, sorted({r[2] for r in rows})])
            con.executemany("INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


@contextmanager
def _recorded_run(con: duckdb.DuckDBPyConnection, cfg: Config, result: DayResult, stage: list[str],
                  rejected: list[tuple[FetchedFile, list[Quarantined]]]) -> Iterator[None]:
    """The ``runs`` row of a run: ``running`` at the start; on failure ``failed`` with the stage
    (``stage[0]``, kept current by the caller) and the message, and the failed files' quarantined rows kept."""
    _record_run(con, result.run_id, result.business_date, cfg, "running", stage[0])
    try:
        yield
    except BaseException as exc:
        try:
            con.execute("RESET SESSION preserve_insertion_order")   # the load's setting, after the rollback
            _keep_quarantine(con, rejected, result.business_date)
            _record_run(con, result.run_id, result.business_date, cfg, "failed", stage[0], str(exc)[:2000])
        except Exception:
            pass
        raise


def process_day(cfg: Config, business_date: date, files: list[FetchedFile] | None = None,
                progress: Progress = _quiet, con: duckdb.DuckDBPyConnection | None = None, *,
                split: dict[str, int] | None = None, bucket_out: Path | None = None) -> DayResult:
    """Load, reconcile and settle one day in one warehouse transaction.

    With ``split`` (channel -> number of key-hash buckets) the day has been loaded already
    (:func:`load_day`) and those channels reconciled bucket by bucket (``recon.buckets.reconcile_bucket``,
    Parquet under ``bucket_out``): nothing is loaded again; the other channels are reconciled, the buckets
    merged and the day settled, in one transaction; then the merged Parquet is removed.
    """
    from settlement.engine import settle_day

    if split is None:
        files = landed_files(cfg, business_date) if files is None else files
    result = DayResult(business_date, uuid.uuid4().hex[:12])
    own = con is None
    con = con or open_warehouse(cfg)
    rejected: list[tuple[FetchedFile, list[Quarantined]]] = []
    stage = ["load" if split is None else "match"]
    try:
        refuse_if_archived(con, cfg, business_date)
        with _recorded_run(con, cfg, result, stage, rejected), \
                tempfile.TemporaryDirectory(prefix=".platform-", dir=staging_parent(cfg)) as staging, \
                transaction(con):
            if split is None:
                t0 = time.perf_counter()
                _load_day(con, cfg, business_date, files, Path(staging), result, rejected, progress)
                result.seconds["load"] = time.perf_counter() - t0
            stage[0], t0 = "match", time.perf_counter()
            _reconcile(con, cfg, business_date, result, progress, split or {}, bucket_out)
            result.seconds["match"] = time.perf_counter() - t0
            stage[0], t0 = "settle", time.perf_counter()
            summary = settle_day(con, cfg, business_date)
            result.settlement = asdict(summary)
            held = ", ".join(f"{c} {a:,.2f}" for c, a in sorted(result.settlement.get("held_amount", {}).items()))
            progress("settle", f"batches {', '.join(result.settlement.get('batch_ids', [])) or 'none'}: "
                               f"{result.settlement.get('settled', 0)} settled, {result.settlement.get('held', 0)} "
                               f"held{' (' + held + ')' if held else ''}, {result.settlement.get('released', 0)} "
                               "released from earlier holds")
            for warning in summary.warnings:
                progress("settle", "warning: " + warning)
            result.seconds["settle"] = time.perf_counter() - t0
        _record_run(con, result.run_id, business_date, cfg, "succeeded", "settle", None, _summary(result))
        for channel in split or {}:
            discard_slices(bucket_out, business_date, channel)      # merged and committed
        return result
    finally:
        if own:
            con.close()


def load_day(cfg: Config, business_date: date, files: list[FetchedFile] | None = None,
             progress: Progress = _quiet, con: duckdb.DuckDBPyConnection | None = None) -> DayResult:
    """Load the day's statements and platform rows and commit, without reconciling.

    The first step of a split run (:func:`process_day` with ``split``): key-hash buckets read the loaded
    day from a read-only warehouse. Recorded in ``runs`` with status ``loaded``; loading again is
    idempotent (unchanged files are skipped, the day's platform rows replaced).
    """
    files = landed_files(cfg, business_date) if files is None else files
    result = DayResult(business_date, uuid.uuid4().hex[:12])
    own = con is None
    con = con or open_warehouse(cfg)
    rejected: list[tuple[FetchedFile, list[Quarantined]]] = []
    try:
        refuse_if_archived(con, cfg, business_date)
        with _recorded_run(con, cfg, result, ["load"], rejected), \
                tempfile.TemporaryDirectory(prefix=".platform-", dir=staging_parent(cfg)) as staging, \
                transaction(con):
            t0 = time.perf_counter()
            _load_day(con, cfg, business_date, files, Path(staging), result, rejected, progress)
            result.seconds["load"] = time.perf_counter() - t0
        _record_run(con, result.run_id, business_date, cfg, "loaded", "load", None, _summary(result))
        return result
    finally:
        if own:
            con.close()


def _reconcile(con: duckdb.DuckDBPyConnection, cfg: Config, d: date, result: DayResult, progress: Progress,
               split: dict[str, int], bucket_out: Path | None) -> None:
    """The day's matching: the channels not split in one pass, then each split channel's buckets merged."""
    for channel in split:
        cfg.channel(channel)                              # a configured channel, or a clear error
    rest = [c.name for c in cfg.channels if c.name not in split]
    # the split channels' settlement-batch checks (whole days, not splittable by key) run here too
    recon = reconcile_day(con, cfg, d, channels=rest if split else None, batch_only=list(split))
    result.matched, result.breaks = recon.matched, dict(recon.by_type)
    progress("match", f"{recon.matched} matched, {sum(recon.by_type.values())} breaks "
                      + ", ".join(f"{k} {v}" for k, v in recon.by_type.items())
                      + f"; {recon.pending} pending at the day cut, {recon.auto_resolved} earlier "
                        f"breaks auto-resolved, {sum(recon.carried_open.values())} still open"
                      + (f" (every channel but {', '.join(split)}, and their settlement batches)" if split else ""))
    for channel, n in split.items():
        if bucket_out is None:
            raise ValueError("split channels need the folder their buckets were written to (bucket_out)")
        merged = apply_buckets(con, d, channel, n, bucket_out)
        result.matched += merged["matched"]
        for k, v in merged["breaks"].items():
            result.breaks[k] = result.breaks.get(k, 0) + v
        progress("match", f"{channel}: {n} key-hash buckets merged: {merged['matched']} matched, "
                          f"{sum(merged['breaks'].values())} breaks")
    result.breaks = dict(sorted(result.breaks.items()))


def _load_day(con: duckdb.DuckDBPyConnection, cfg: Config, business_date: date, files: list[FetchedFile],
              staging: Path, result: DayResult, rejected: list, progress: Progress) -> None:
    """The day's statement files and platform rows into the warehouse (inside the caller's transaction).

    The platform database is read in a thread of its own while the statements load. The rows are
    written without the insertion-order promise (:func:`recon.warehouse.unordered_writes`): at ten
    million orders the load costs 4-6 s less. Matching keeps the default: without the promise it
    was faster alone on a committed day, but 6 s slower inside the run.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="platform") as pool, unordered_writes(con):
        platform = pool.submit(read_platform, cfg, business_date, staging)
        for f, parsed in _parsed_in_turn(cfg, files):
            rejected.append((f, parsed.quarantine))
            channel = cfg.channel(f.channel)
            res = load_file(con, f, parsed, business_date, channel.quarantine_policy, result.run_id)
            del parsed
            _release_arrow_memory()
            result.files.append(res)
            state = "unchanged, already loaded" if res.skipped else (
                f"restated (replaces {res.restated[:12]})" if res.restated else "loaded")
            progress("load", f"{f.channel} {f.kind}: {res.rows} rows, {res.quarantined} quarantined, "
                             f"footer {'ok' if res.footer_ok else res.footer_ok}; {state}")
        result.platform_rows = load_staged(con, platform.result(), business_date)
        _release_arrow_memory()
        progress("load", "platform: " + ", ".join(f"{v} {k}" for k, v in result.platform_rows.items()))


def _parse(cfg: Config, f: FetchedFile) -> ParsedFile:
    channel = cfg.channel(f.channel)
    st = next(s for s in channel.statements if s.kind == f.kind and s.format == f.format)
    return parse_fetched(f, {"currency": channel.currency, "kind": st.kind, **st.options})


def _parsed_in_turn(cfg: Config, files: list[FetchedFile]) -> Iterator[tuple[FetchedFile, ParsedFile]]:
    """The files with their parsed rows, in order; the next file is parsed in a thread while this one loads.

    At most two files' rows are in memory: the one being loaded and the one being parsed
    (parsing is mostly Arrow C++ and the insert is DuckDB, both outside the GIL, so the
    two use both cores). A parse error is raised in file order, as without the thread.
    """
    queue: deque[tuple[FetchedFile, Future]] = deque()
    todo = iter(files)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parse") as pool:
        def parse_next() -> None:
            f = next(todo, None)
            if f is not None:
                queue.append((f, pool.submit(_parse, cfg, f)))

        parse_next()
        try:
            while queue:
                f, future = queue.popleft()
                parsed = future.result()
                parse_next()
                yield f, parsed
                del parsed
        finally:
            for _, future in queue:
                future.cancel()


def _release_arrow_memory() -> None:
    """Hand the memory of freed Arrow tables back to the system.

    Arrow's allocator (mimalloc) keeps freed pages for reuse; after a 4.6M-row statement
    is loaded they would stay resident (about 1 GiB) beside DuckDB's buffer pool for the
    rest of the run.
    """
    pa.default_memory_pool().release_unused()


def _summary(result: DayResult) -> dict:
    return {"files": len(result.files), "rows": sum(f.rows for f in result.files),
            "quarantined": sum(f.quarantined for f in result.files), "matched": result.matched,
            "breaks": result.breaks, "settlement": result.settlement, "platform": result.platform_rows,
            # wall seconds of the stages recorded so far (load, match, settle): night against night, the stage
            # that keeps growing is the one to look at (docs/deploy.md)
            "seconds": {k: round(v, 3) for k, v in result.seconds.items()}}


# ----------------------------------------------------------------------------- report
def report_day(cfg: Config, business_date: date, con: duckdb.DuckDBPyConnection | None = None,
               progress: Progress = _quiet, publish: bool = True) -> dict[str, str]:
    """Workbooks, payout files and the analyst snapshot, from the warehouse alone."""
    from reports.snapshot import publish_snapshot

    own = con is None
    con = con or open_warehouse(cfg)
    snapshot_con = con.cursor() if publish else None
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot") as pool:
            # The snapshot copies committed data through its own connection; it runs beside the
            # workbooks (Python-bound) so the two use both cores.
            snapshot = pool.submit(publish_snapshot, cfg, business_date, con=snapshot_con) if publish else None
            outputs = _write_reports(con, cfg, business_date, progress)
            if snapshot is not None:
                outputs["snapshot"] = str(snapshot.result())
                progress("report", f"analyst snapshot {outputs['snapshot']}")
        return outputs
    finally:
        if snapshot_con is not None:
            snapshot_con.close()
        if own:
            con.close()


def _write_reports(con: duckdb.DuckDBPyConnection, cfg: Config, business_date: date,
                   progress: Progress) -> dict[str, str]:
    from reports.excel import write_discrepancy_report, write_settlement_report
    from settlement.payout import write_payout_files

    out_dir = Path(cfg.output_dir) / "reports" / business_date.isoformat()
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {"discrepancy_report": str(write_discrepancy_report(con, cfg, business_date, out_dir))}
    progress("report", f"discrepancy report {outputs['discrepancy_report']}")
    # Every batch the day's run wrote into (released holds and adjustments included).
    batches = con.execute("SELECT DISTINCT batch_id FROM settlement_items WHERE run_date = ? ORDER BY 1",
                          [business_date]).fetchall()
    for (batch_id,) in batches:
        outputs[f"settlement_report:{batch_id}"] = str(write_settlement_report(con, cfg, batch_id, out_dir))
        for p in write_payout_files(con, cfg, batch_id, out_dir):
            outputs[f"payout:{p.name}"] = str(p)
        progress("report", f"settlement batch {batch_id}: workbook and payout files in {out_dir}")
    return outputs


def run_day(cfg: Config, business_date: date, progress: Progress = _quiet,
            split: dict[str, int] | None = None, report: bool = True) -> DayResult:
    """Every stage for one business date: what `recon run` does (``report=False``: all but the report stage).

    ``split`` (channel -> N) runs the nightly DAG's split path in this process: load and commit, each
    bucket in turn (read-only, Parquet under ``<output_dir>/buckets``), then reconcile, merge and settle.
    """
    check_formats(cfg)
    t0 = time.perf_counter()
    files = fetch_day(cfg, business_date, progress=progress)
    fetch_s = time.perf_counter() - t0
    loaded = _load_and_split(cfg, business_date, files, progress, split) if split else None
    con = open_warehouse(cfg)
    try:
        result = process_day(cfg, business_date, files, progress, con=con, split=split or None,
                             bucket_out=bucket_dir(cfg))
        result.seconds["fetch"] = fetch_s
        if loaded is not None:          # what the split path's own load run loaded; its buckets are matching
            result.files, result.platform_rows = loaded.files, loaded.platform_rows
            result.seconds["load"] = loaded.seconds["load"]
            result.seconds["buckets"] = loaded.seconds["buckets"]
            result.seconds["match"] += loaded.seconds["buckets"]
        if report:
            t0 = time.perf_counter()
            result.outputs = report_day(cfg, business_date, con=con, progress=progress)
            result.seconds["report"] = time.perf_counter() - t0
    finally:
        con.close()
    return result


def _load_and_split(cfg: Config, d: date, files: list[FetchedFile], progress: Progress,
                    split: dict[str, int]) -> DayResult:
    """The split path's first steps: the day loaded and committed, then every bucket reconciled.

    The buckets run one after the other here (each already uses every core); the DAG runs them as
    parallel tasks. The writer connection is closed first: a read-only reader cannot open the file while
    a writer holds it.
    """
    loaded = load_day(cfg, d, files, progress)
    progress("load", f"committed by run {loaded.run_id}; reconciling "
                     + ", ".join(f"{ch} in {n} buckets" for ch, n in split.items()))
    t0 = time.perf_counter()
    for channel, n in split.items():
        for b in range(n):
            r = reconcile_bucket(cfg, d, channel, b, n, bucket_dir(cfg))
            progress("match", f"{channel} bucket {b + 1}/{n}: {r['matched']} matched, "
                              f"{sum(r['breaks'].values())} breaks ({r['seconds']:.1f} s)")
    loaded.seconds["buckets"] = time.perf_counter() - t0
    return loaded
