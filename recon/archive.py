"""Archived days: old, closed business days moved out of the warehouse into Parquet, and back.

At ten million orders a day the warehouse grows by about 1.3 GB a night, and the snapshot's search for
changed days reads every day the warehouse keeps. A night reads nothing of an old, closed day, so such a
day can leave: ``recon archive move`` writes its rows of the big per-day tables (:data:`ARCHIVED`) to
``<archive_dir>/<table>/<day column>=YYYY-MM-DD/channel=NAME/data_0.parquet`` (the snapshot's layout; the
snapshot's own files of the day are linked when they hold the same rows), checks the files against the
warehouse row by row (count, ``sum(amount)`` and a hash of every row), then
deletes the rows and records the day in ``archived_days``, in one transaction per day. Runs, loaded files,
quarantine, breaks (with their audit, members and row copies), settlement batches, lines, reserves and
holds stay. The analyst snapshot keeps showing archived days (its partitions come from the archive).

A day is *closed*, and may move, when every one of these holds (:func:`plan` says which does not):

- it lies more than ``archive.keep_days`` before the latest reconciled day (at least, and by default,
  :attr:`Config.days_read_back`: the guard against paying twice reads the settled items of
  ``settlement.duplicate_lookback_days``, a bank credit the trade date ``settlement_lag_days`` back);
- its last run succeeded;
- none of its breaks is open or pending (an amount or fee mismatch's pair is in ``matched_transactions``
  until a person resolves the break and the pair settles);
- every matched transaction of it has been settled, and every batch holding its items is confirmed:
  its money has been paid, and no rerun may rewrite it;
- no transaction of a later day that still waits for settlement has a guard window reaching back to it.

Runs of a business date whose guard window reaches an archived day are refused
(:func:`refuse_if_archived`); ``recon archive restore`` brings a day back.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import duckdb

from recon.config import Config
from recon.errors import UserError
from recon.warehouse import transaction
from reports.snapshot import LAYOUT, PARQUET_DIR, PARTITIONED, export_days, read_manifest, table_columns
from settlement.engine import key_join

#: The big per-day tables whose rows an archived day moves out: table -> its day column. The snapshot's
#: partitioned tables, but for the batch-break members (they belong to breaks, which stay).
ARCHIVED: dict[str, str] = {t: c for t, c in PARTITIONED.items() if t != "discrepancy_members"}


@dataclass(frozen=True)
class DayState:
    """A business day still in the warehouse, and why it must stay (``blockers``; empty: closed)."""
    business_date: date
    blockers: tuple[str, ...]

    @property
    def closed(self) -> bool:
        return not self.blockers


def latest_reconciled(con: duckdb.DuckDBPyConnection) -> date | None:
    return con.execute("SELECT max(business_date) FROM runs WHERE status = 'succeeded'").fetchone()[0]


def plan(con: duckdb.DuckDBPyConnection, cfg: Config, before: date | None = None) -> list[DayState]:
    """Every day still in the warehouse before ``before`` (default: the age limit), closed or not, and why."""
    latest = latest_reconciled(con)
    if latest is None:
        return []
    keep, lookback = cfg.archive_keep_days, cfg.settlement.duplicate_lookback_days
    limit = latest - timedelta(days=keep)                 # closed days lie before it
    before = before or limit
    days = [r[0] for r in con.execute(
        "SELECT DISTINCT business_date FROM runs WHERE business_date < ? "
        "AND business_date NOT IN (SELECT business_date FROM archived_days) ORDER BY 1", [before]).fetchall()]
    if not days:
        return []
    blockers: dict[date, list[str]] = {d: [] for d in days}
    for d in days:
        if d >= limit:
            blockers[d].append(f"within {keep} day(s) of the latest reconciled day {latest} (archive.keep_days)")
    p = {"days": days}
    for d, status, run_id in con.execute(
            "SELECT business_date, arg_max(status, started_at), arg_max(run_id, started_at) FROM runs "
            "WHERE business_date IN (SELECT unnest($days::DATE[])) GROUP BY 1", p).fetchall():
        if status != "succeeded":
            blockers[d].append(f"its last run {run_id} is {status}")
    for d, n in con.execute(
            "SELECT business_date, count(*) FROM discrepancies WHERE status IN ('open', 'pending') "
            "AND business_date IN (SELECT unnest($days::DATE[])) GROUP BY 1", p).fetchall():
        blockers[d].append(f"{n} break(s) still open or pending")
    for d, n, batches in con.execute(
            "SELECT i.trade_date, count(*), string_agg(DISTINCT i.batch_id, ', ' ORDER BY i.batch_id) "
            "FROM settlement_items i JOIN settlement_batches b USING (batch_id) "
            "WHERE b.status <> 'confirmed' AND i.trade_date IN (SELECT unnest($days::DATE[])) GROUP BY 1",
            p).fetchall():
        blockers[d].append(f"{n} settlement item(s) in batches not confirmed yet ({batches})")
    for d, n in _unsettled(con, days, lookback):
        blockers[d].append(f"{n} matched transaction(s) not settled yet")
    waiting = _oldest_waiting(con)
    if waiting is not None:
        reach = waiting - timedelta(days=lookback)
        for d in days:
            if d >= reach and d != waiting:
                blockers[d].append(f"a transaction of {waiting} still waits for settlement, and its guard against "
                                   f"paying twice reads the settled items back to {reach}")
    return [DayState(d, tuple(blockers[d])) for d in days]


def _unsettled(con: duckdb.DuckDBPyConnection, days: list[date], lookback: int) -> list[tuple[date, int]]:
    """Matched transactions of ``days`` with no settled item (same trade date first, then the guard's window)."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _archive_unsettled AS
        SELECT m.business_date, m.channel, m.txn_type, m.order_no, m.refund_no FROM matched_transactions m
        ANTI JOIN (SELECT * FROM settlement_items
                   WHERE item_kind = 'transaction' AND trade_date IN (SELECT unnest($days::DATE[]))) i
          ON i.trade_date = m.business_date AND {key_join('m', 'i')}
        WHERE m.business_date IN (SELECT unnest($days::DATE[]))""", {"days": days})
    try:
        return con.execute(f"""
            SELECT u.business_date, count(*) FROM _archive_unsettled u
            ANTI JOIN (SELECT * FROM settlement_items WHERE item_kind = 'transaction' AND trade_date >= $lo
                         AND order_no IN (SELECT order_no FROM _archive_unsettled)) i
              ON {key_join('u', 'i')}
            GROUP BY 1 ORDER BY 1""", {"lo": min(days) - timedelta(days=lookback)}).fetchall()
    finally:
        con.execute("DROP TABLE _archive_unsettled")


def _oldest_waiting(con: duckdb.DuckDBPyConnection) -> date | None:
    """The oldest trade date of a held transaction that is still a matched pair and that no batch has settled
    since (a hold whose pair a restated file withdrew waits for nothing)."""
    return con.execute(f"""
        WITH held_dates AS (SELECT DISTINCT trade_date FROM settlement_holds)
        SELECT min(h.trade_date) FROM settlement_holds h
        SEMI JOIN (SELECT * FROM matched_transactions WHERE business_date IN (FROM held_dates)) m
          ON m.business_date = h.trade_date AND {key_join('h', 'm')}
        ANTI JOIN (SELECT * FROM settlement_items WHERE item_kind = 'transaction'
                   AND trade_date IN (FROM held_dates)) i
          ON i.trade_date = h.trade_date AND {key_join('h', 'i')}""").fetchone()[0]


def refuse_if_archived(con: duckdb.DuckDBPyConnection, cfg: Config, d: date) -> None:
    """A run of ``d`` reads the days from :attr:`Config.days_read_back` before it on (the guard reads every
    settled item from there, later days' too): none may be archived."""
    back = cfg.days_read_back
    hit = con.execute("SELECT max(business_date) FROM archived_days WHERE business_date >= ?",
                      [d - timedelta(days=back)]).fetchone()[0]
    if hit is None:
        return
    if hit == d:
        raise UserError(f"business date {d} is archived: restore it first (`recon archive restore --date {d}`)")
    raise UserError(f"business date {d} cannot be run: its run reads the days from {d - timedelta(days=back)} on "
                    "(the guard against paying twice, settlement.duplicate_lookback_days, and the channels' "
                    f"settlement_lag_days), and {hit} is archived; restore it first "
                    f"(`recon archive restore --date {hit}`)")


# ----------------------------------------------------------------------------- move
Progress = Callable[[str], None]


def move(con: duckdb.DuckDBPyConnection, cfg: Config, before: date | None = None,
         progress: Progress = lambda _m: None) -> tuple[list[dict], list[DayState]]:
    """Archive every closed day before ``before``; returns (what each archived day moved, the days kept)."""
    states = plan(con, cfg, before)
    moved = []
    for st in states:
        if st.closed:
            moved.append(archive_day(con, cfg, st.business_date))
            progress(f"{st.business_date}: {moved[-1]['rows']} rows archived to {moved[-1]['archive_dir']}")
    if moved:
        con.execute("CHECKPOINT")     # the deleted rows' blocks become free for the next nights' rows
    return moved, [st for st in states if not st.closed]


def archive_day(con: duckdb.DuckDBPyConnection, cfg: Config, d: date) -> dict:
    """Write day ``d``'s rows to Parquet, check them, then delete them and record the day (one transaction).

    Files are written under a staging folder and renamed into place before the transaction; if the
    process dies between the two, the day is simply not archived (the next attempt replaces the files).
    """
    root = Path(cfg.archive_path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{d.isoformat()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    columns = table_columns(con, con.execute('SELECT current_database()').fetchone()[0])
    manifest = read_manifest(Path(cfg.snapshot_path))
    prints: dict[str, dict] = {}
    try:
        for t, day_col in ARCHIVED.items():
            live = _fingerprint(con, f"SELECT * FROM {t} WHERE {day_col} = DATE '{d.isoformat()}'", columns[t])
            if live["rows"]:
                _write_day(con, cfg, manifest, t, day_col, columns[t], d, live, staging)
            prints[t] = {**live, "columns": [c for c, _ty in columns[t]]}
        for t, day_col in ARCHIVED.items():
            src, dest = staging / t / f"{day_col}={d.isoformat()}", root / t / f"{day_col}={d.isoformat()}"
            if dest.exists():
                shutil.rmtree(dest)   # left by an attempt that died before recording the day
            if src.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rows = sum(p["rows"] for p in prints.values())
    with transaction(con):
        con.execute("""
            INSERT INTO archived_days
            SELECT $d, $at, $dir, $rows, $fp,
                   coalesce((SELECT list(DISTINCT batch_id ORDER BY batch_id) FROM settlement_items
                             WHERE trade_date = $d), [])""",
                    {"d": d, "at": datetime.now(timezone.utc), "dir": str(root), "rows": rows,
                     "fp": json.dumps(prints)})
        for t, day_col in ARCHIVED.items():
            con.execute(f"DELETE FROM {t} WHERE {day_col} = ?", [d])
    return {"business_date": d, "rows": rows, "archive_dir": str(root),
            "tables": {t: p["rows"] for t, p in prints.items()}}


def _write_day(con: duckdb.DuckDBPyConnection, cfg: Config, manifest: dict, t: str, day_col: str,
               columns: list[list[str]], d: date, live: dict, staging: Path) -> None:
    """Day ``d`` of table ``t`` as Parquet under ``staging``, checked row by row against ``live``.

    The published snapshot usually holds the very same partition (same layout, same columns, same day
    fingerprint): its files are linked (or copied) instead of exported again, which is most of an archive's
    cost. Whatever the source, the files must read back to the warehouse's rows, count, sum and hash.
    """
    part = manifest.get("partitions", {}).get(t, {})
    published = Path(cfg.snapshot_path) / PARQUET_DIR / t / f"{day_col}={d.isoformat()}"
    reuse = (manifest.get("layout") == LAYOUT and part.get("columns") == columns and published.is_dir()
             and part.get("days", {}).get(d.isoformat()) == [live["rows"], live["amount"]])
    for source in (["snapshot"] if reuse else []) + ["warehouse"]:
        shutil.rmtree(staging / t, ignore_errors=True)
        if source == "snapshot":
            _link_tree(published, staging / t / published.name)
        else:
            export_days(con, t, day_col, columns, [d.isoformat()], staging / t)
        written = _fingerprint(con, _parquet_sql(staging, t, day_col, d), columns)
        if written == live:
            return
    raise UserError(f"archive of {d}: {t} in {staging / t} does not match the warehouse ({written} against "
                    f"{live}); nothing was archived")


def _link_tree(src: Path, dest: Path) -> None:
    """Hard links of ``src``'s Parquet files under ``dest`` (copies across file systems). The snapshot
    replaces its files by renaming new ones into place, never by writing into them, so a link stays intact."""
    for f in sorted(src.rglob("*.parquet")):
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)


@dataclass(frozen=True)
class StrayFolder:
    """A folder under ``archive_dir`` that no ``archived_days`` record names."""

    path: Path
    rows_in_warehouse: bool     # the warehouse still holds the rows: the folder is a spare copy

    def describe(self) -> str:
        if self.rows_in_warehouse:
            return f"{self.path}: no record names it, and the warehouse still holds its rows; safe to delete"
        return (f"{self.path}: no record names it, and the warehouse does NOT hold its rows; keep it and find out "
                "why (a warehouse restored from a backup older than the archive?)")


def stray_folders(con: duckdb.DuckDBPyConnection, cfg: Config) -> list[StrayFolder]:
    """Folders an archive attempt left when it died between its files and its transaction (a day's table
    folder renamed into place, or a staging folder of a killed process). Listed, never deleted here: only a
    look at the warehouse tells a spare copy from the only one."""
    root = Path(cfg.archive_path).resolve()
    if not root.is_dir():
        return []
    out = [StrayFolder(p, True) for p in sorted(root.glob(".staging-*")) if p.is_dir()]
    archived = {r[0].isoformat() for r in con.execute("SELECT business_date FROM archived_days").fetchall()}
    for t, day_col in ARCHIVED.items():
        for folder in sorted((root / t).glob(f"{day_col}=*")):
            day = folder.name.split("=", 1)[1]
            if day in archived:
                continue
            try:
                held = con.execute(f"SELECT count(*) > 0 FROM {t} WHERE {day_col} = ?::DATE", [day]).fetchone()[0]
            except duckdb.ConversionException:
                held = False
            out.append(StrayFolder(folder, bool(held)))
    return out


# ----------------------------------------------------------------------------- restore
def restore_day(con: duckdb.DuckDBPyConnection, cfg: Config, d: date) -> dict:
    """Bring archived day ``d`` back into the warehouse (checked against its fingerprints), in one transaction."""
    rec = con.execute("SELECT archive_dir, fingerprints FROM archived_days WHERE business_date = ?", [d]).fetchone()
    if rec is None:
        raise UserError(f"business date {d} is not archived")
    root, prints = Path(rec[0]), json.loads(rec[1])
    columns = table_columns(con, con.execute('SELECT current_database()').fetchone()[0])
    with transaction(con):
        for t, day_col in ARCHIVED.items():
            want = prints.get(t, {"rows": 0})
            if not want["rows"]:
                continue
            folder = root / t / f"{day_col}={d.isoformat()}"
            if not any(folder.glob("*/*.parquet")):
                raise UserError(f"restore of {d}: the archive of {t} is missing ({folder}); nothing was restored")
            con.execute(f"INSERT INTO {t} BY NAME {_parquet_sql(root, t, day_col, d)}")
            got = _fingerprint(con, f"SELECT * FROM {t} WHERE {day_col} = DATE '{d.isoformat()}'", columns[t])
            same_columns = want.get("columns") == [c for c, _ty in columns[t]]
            if (got["rows"], got["amount"]) != (want["rows"], want["amount"]) or (
                    same_columns and got["hash"] != want["hash"]):
                raise UserError(f"restore of {d}: {t} from {folder} does not match what was archived "
                                f"({got} against {want}); nothing was restored")
        con.execute("DELETE FROM archived_days WHERE business_date = ?", [d])
    for t, day_col in ARCHIVED.items():
        shutil.rmtree(root / t / f"{day_col}={d.isoformat()}", ignore_errors=True)
    return {"business_date": d, "rows": sum(p["rows"] for p in prints.values())}


# ----------------------------------------------------------------------------- helpers
def _parquet_sql(root: Path, table: str, day_col: str, d: date) -> str:
    glob = str(root / table / f"{day_col}={d.isoformat()}" / "*" / "*.parquet").replace("'", "''")
    return (f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true, "
            f"hive_types = {{'{day_col}': DATE, 'channel': VARCHAR}})")


def _fingerprint(con: duckdb.DuckDBPyConnection, sql: str, columns: list[list[str]]) -> dict:
    """Rows, ``sum(amount)`` (the snapshot's fingerprint of a day) and a hash of every row, over ``sql``."""
    cols = ", ".join(f'"{c}"::{ty}' for c, ty in columns)
    n, amount, digest = con.execute(
        f"SELECT count(*), coalesce(sum(amount), 0)::VARCHAR, coalesce(sum(hash({cols})::HUGEINT), 0)::VARCHAR "
        f"FROM ({sql}) x").fetchone()
    return {"rows": n, "amount": amount, "hash": digest}
