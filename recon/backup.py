"""Backups of the warehouse: a consistent, checked copy of its file, the last few kept, and a restore.

The warehouse holds what nothing else gives back: who resolved which break and why, which settlement
batches were confirmed and paid (the guard against paying twice reads them), holds and reserves. The
statement files (``landing_dir``) and archived days (``archive_dir``) are plain files that any file backup
covers; the warehouse is one file a run may be writing, and a ``cp`` of it meanwhile can be unusable.

``recon backup make`` takes the warehouse's write lock (a run in progress makes it fail; none can start
while it works), copies the database into ``<backup_dir>/<warehouse name>-<UTC time>.duckdb`` with the same
copy and check as ``recon compact`` (every table's rows, every sequence, every definition), names the file
only once it is complete, and removes the oldest beyond ``backup.keep``. Being a fresh copy, a backup holds
no free blocks: it is as small as the warehouse can be.

``recon backup restore --from FILE`` checks that the file is a payrecon warehouse this code can open, copies
it beside the warehouse and swaps it in under the current file's lock (the current file is kept as
``<warehouse>.before-restore-<UTC time>``, never overwritten). Everything reconciled after the backup was
taken is then gone from the warehouse: the command says from which business date on the days must be run
again, and what people did in the replaced file that the backup lacks.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import duckdb

from recon.compact import check_room, copy_database, discard, file_space, gib, swap_in
from recon.config import Config
from recon.errors import UserError
from recon.warehouse import SCHEMA_VERSION, WarehouseError, connect, current_version

Progress = Callable[[str], None]
SUFFIX = ".duckdb"


@dataclass(frozen=True)
class BackupFile:
    path: Path
    bytes: int
    taken_at: datetime            # from the file's name (UTC)


def _stem(cfg: Config) -> str:
    return Path(cfg.warehouse).name.removesuffix(SUFFIX)


def list_backups(cfg: Config) -> list[BackupFile]:
    """The backups in ``backup_dir``, oldest first (by the time in their names)."""
    out = []
    for p in Path(cfg.backup_path).glob(f"{_stem(cfg)}-*{SUFFIX}"):
        stamp = p.name[len(_stem(cfg)) + 1: -len(SUFFIX)]
        try:
            taken = datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)
        except ValueError:
            continue                  # not one of ours
        out.append(BackupFile(p, p.stat().st_size, taken))
    return sorted(out, key=lambda b: b.taken_at)


def make(cfg: Config, *, progress: Progress = lambda _m: None) -> dict:
    """Copy the warehouse into ``backup_dir`` (checked), then keep the newest ``backup.keep`` backups."""
    folder = Path(cfg.backup_path)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    final = folder / f"{_stem(cfg)}-{now.strftime('%Y%m%dT%H%M%S%fZ')}{SUFFIX}"
    partial = final.with_name(final.name + ".partial")
    started = time.monotonic()
    con = connect(cfg.warehouse, memory_limit=cfg.duckdb_memory_limit, threads=cfg.duckdb_threads)
    try:
        con.execute("CHECKPOINT")
        check_room(folder, file_space(con, Path(cfg.warehouse)), f"back up {cfg.warehouse}")
        latest = con.execute("SELECT max(business_date) FROM runs WHERE status = 'succeeded'").fetchone()[0]
        try:
            tables = copy_database(con, partial)
        except BaseException:
            discard(partial)
            raise
    finally:
        con.close()
    partial.rename(final)
    removed = [b.path for b in list_backups(cfg)[:-cfg.backup.keep]]
    for p in removed:
        p.unlink()
    progress(f"backup {final} ({gib(final.stat().st_size)}, {tables} tables checked; latest reconciled day "
             f"{latest}); {len(removed)} older backup(s) removed")
    return {"path": final, "bytes": final.stat().st_size, "tables": tables, "latest_reconciled": latest,
            "removed": removed, "seconds": time.monotonic() - started}


def _describe_backup(src: Path) -> tuple[int, date | None]:
    """(schema version, latest reconciled day) of a backup file; a UserError when it is not a warehouse."""
    if not src.is_file():
        raise UserError(f"backup {src}: no such file")
    try:
        con = duckdb.connect(str(src), read_only=True)
    except (duckdb.IOException, duckdb.InvalidInputException, duckdb.SerializationException) as exc:
        raise UserError(f"backup {src}: not a DuckDB database ({exc})") from None
    try:
        version = current_version(con)
        if version == 0:
            raise UserError(f"backup {src}: not a payrecon warehouse (no schema_version table)")
        if version > SCHEMA_VERSION:
            raise UserError(f"backup {src}: schema version {version} is newer than this code ({SCHEMA_VERSION})")
        latest = con.execute("SELECT max(business_date) FROM runs WHERE status = 'succeeded'").fetchone()[0]
    finally:
        con.close()
    return version, latest


def restore(cfg: Config, src: str | Path, *, progress: Progress = lambda _m: None) -> dict:
    """Put backup ``src`` in the warehouse's place; the current file stays as ``<warehouse>.before-restore-<time>``."""
    src = Path(src).resolve()
    version, latest = _describe_backup(src)
    path = Path(cfg.warehouse).resolve()
    # never overwritten: after two restores in a row the first replaced file is the one with the latest work
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    incoming, old = path.with_name(path.name + ".restoring"), path.with_name(f"{path.name}.before-restore-{stamp}")
    incoming.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = _hold(path, progress)                         # the current file's lock, while it is swapped out
    try:
        shutil.copyfile(src, incoming)
        swap_in(path, incoming, old)
    except BaseException:
        discard(incoming)
        raise
    finally:
        if con is not None:
            con.close()
    check = connect(path)                               # migrates a backup of an older release
    try:
        lost = _lost_since(check, old) if old.exists() else {}
    finally:
        check.close()
    progress(f"restored {src} into {path} (schema version {version}"
             + (f", migrated to {SCHEMA_VERSION}" if version < SCHEMA_VERSION else "") + ")"
             + (f"; the previous file is kept as {old}" if old.exists() else ""))
    progress(f"latest reconciled day in the backup: {latest}; run every later business date again"
             if latest else "the backup holds no reconciled day")
    redo_to = lost.get("replaced_latest")
    if redo_to and (latest is None or redo_to > latest):
        start = latest + timedelta(days=1) if latest else redo_to
        progress(f"the replaced warehouse had reconciled up to {redo_to}: `recon run --config {cfg.config_path} "
                 f"--from {start} --to {redo_to}`")
    if lost.get("confirmed"):
        progress("confirmed in the replaced warehouse but not in the backup (their payouts may have been sent: "
                 "check with the bank before confirming them again): " + ", ".join(lost["confirmed"]))
    if lost.get("resolutions"):
        progress(f"{lost['resolutions']} resolution(s) recorded in the replaced warehouse after the backup: enter "
                 "them again (`recon resolve`); their notes are in discrepancy_resolutions of the previous file")
    return {"path": path, "latest_reconciled": latest, "kept": old if old.exists() else None,
            "schema_version": version, **lost}


def _lost_since(con: duckdb.DuckDBPyConnection, old: Path) -> dict:
    """What a person did in the replaced warehouse that the backup lacks: batches confirmed (perhaps paid) and
    resolutions recorded. Empty when the replaced file does not open."""
    try:
        con.execute(f"ATTACH '{str(old).replace(chr(39), chr(39) * 2)}' AS replaced (READ_ONLY)")
    except duckdb.Error:
        return {}
    try:
        confirmed = [r[0] for r in con.execute(
            "SELECT batch_id FROM replaced.settlement_batches WHERE status = 'confirmed' "
            "EXCEPT SELECT batch_id FROM settlement_batches WHERE status = 'confirmed' ORDER BY 1").fetchall()]
        replaced_latest = con.execute(
            "SELECT max(business_date) FROM replaced.runs WHERE status = 'succeeded'").fetchone()[0]
        resolutions = con.execute(
            "SELECT count(*) FROM (SELECT discrepancy_id, action, recorded_at FROM replaced.discrepancy_resolutions "
            "WHERE recorded_by <> 'system' EXCEPT "
            "SELECT discrepancy_id, action, recorded_at FROM discrepancy_resolutions)").fetchone()[0]
    except duckdb.Error:
        return {}
    finally:
        con.execute("DETACH replaced")
    return {"confirmed": confirmed, "resolutions": resolutions, "replaced_latest": replaced_latest}


def _hold(path: Path, progress: Progress) -> duckdb.DuckDBPyConnection | None:
    """The current warehouse's write lock; None when there is no file, or one DuckDB cannot open (a broken
    file, often the reason for a restore: no run can write it either)."""
    if not path.exists():
        return None
    try:
        return duckdb.connect(str(path))
    except duckdb.Error as exc:
        if "lock" in str(exc).lower():
            raise WarehouseError(f"cannot restore over {path}: it is in use ({exc})") from None
        progress(f"the current warehouse does not open ({exc}); it is replaced all the same")
        return None
