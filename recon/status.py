"""``recon status``: what an on-call engineer asks first, in one read-only look.

Did last night finish, which days failed and were not rerun, how many breaks are open and how old, which
settlement batches are due but not confirmed, is the snapshot current, how big is the warehouse file and how
much of it is free, how much room the disks have, what is archived and what could be, when was the last
backup, does the business-day calendar know the coming month, did a stage of the last night run much slower than
the nights before. Each finding that needs a person is listed
under ``attention`` (``recon status --check`` exits 3 when there is one, for a monitor); ``notes`` are worth
knowing but are a setup choice, not tonight's work (they do not fail ``--check``).

Reads only: the warehouse read-only (while a run writes it, DuckDB's lock keeps us out and the status says
so), the snapshot's manifest and the backup and archive folders.
"""
from __future__ import annotations

import os
import shutil
import statistics
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb

from recon.archive import plan, stray_folders
from recon.backup import list_backups
from recon.compact import file_space, gib
from recon.config import Config
from recon.warehouse import SCHEMA_VERSION, current_version
from reports.snapshot import read_manifest
from settlement.calendar import BusinessCalendar

BACKUP_MAX_AGE = timedelta(hours=36)   # backup.nightly: one missed night is worth a look
FREE_SHARE_WORTH_COMPACTING = 0.5
GAP_WINDOW_DAYS = 31
#: Below this much free room on a disk the pipeline writes to, a night may fail half-way (a 10M-order day
#: writes about 1.5 GiB to the warehouse, its spill folder, the snapshot and the reports).
DISK_FREE_FLOOR = 2 * 2**30
#: A stage of the latest night that took this many times what the earlier nights' pace (seconds per statement
#: row, median) gives for its rows, and at least PACE_MIN_SECONDS more, is worth a look before it misses a deadline.
PACE_FACTOR = 1.5
PACE_MIN_SECONDS = 30.0
PACE_NIGHTS = 14
STAGES = ("load", "match", "settle")


def status(cfg: Config, today: date | None = None) -> dict:
    """The findings as a dict (JSON-ready apart from dates); ``attention`` lists what needs a person, ``notes``
    what is worth knowing."""
    today = today or datetime.now(cfg.zone).date()
    out: dict = {"warehouse": str(cfg.warehouse), "today": today, "attention": [], "notes": []}
    _warehouse(cfg, out, today)
    _calendar(cfg, out, today)
    return out


def _warehouse(cfg: Config, out: dict, today: date) -> None:
    path = Path(cfg.warehouse)
    _disks(cfg, out, path.stat().st_size if path.exists() else 0)
    if not path.exists():
        out["attention"].append(f"no warehouse at {path}: nothing has run yet")
        return
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        if "lock" in str(exc).lower():
            out["busy"] = True
            out["attention"].append("a run (or archive, compact, backup) is writing the warehouse now; ask again "
                                    "when it is done")
        else:
            out["attention"].append(f"the warehouse does not open: {exc}")
        return
    try:
        version = current_version(con)
        out["schema_version"] = version
        out["space"] = file_space(con, path)
        if version < 1:
            out["attention"].append("the warehouse has no schema: nothing has run yet")
            return
        _runs(con, out)
        if out["latest_reconciled_at"] is not None:     # a person reads times in the platform's zone
            out["latest_reconciled_at"] = out["latest_reconciled_at"].astimezone(cfg.zone)
        _pace(con, out)
        _breaks(con, out)
        _batches(con, out, today)
        if version >= 7:
            _archive(con, cfg, out)
    finally:
        con.close()
    if version < SCHEMA_VERSION:
        out["attention"].append(f"the warehouse has schema version {version}, this code {SCHEMA_VERSION}: the next "
                                "run migrates it")
    if out["space"].free_share >= FREE_SHARE_WORTH_COMPACTING:
        out["attention"].append(f"{out['space'].free_share:.0%} of the warehouse file is free: `recon compact` "
                                "gives it back to the disk")
    _snapshot(cfg, out)
    _backups(cfg, out)


def _runs(con: duckdb.DuckDBPyConnection, out: dict) -> None:
    latest = con.execute("SELECT business_date, finished_at FROM runs WHERE status = 'succeeded' "
                         "ORDER BY business_date DESC, finished_at DESC LIMIT 1").fetchone()
    out["latest_reconciled"] = latest[0] if latest else None
    out["latest_reconciled_at"] = latest[1] if latest else None
    last = con.execute("SELECT business_date, status, stage, message, started_at FROM runs "
                       "ORDER BY started_at DESC LIMIT 1").fetchone()
    out["last_run"] = dict(zip(("business_date", "status", "stage", "message", "started_at"), last)) if last else None
    # a day whose latest run did not succeed: failed, or 'running' in no live process (killed)
    out["unfinished_days"] = [dict(zip(("business_date", "status", "stage", "message"), r)) for r in con.execute("""
        SELECT business_date, status, stage, message FROM (
            SELECT *, row_number() OVER (PARTITION BY business_date ORDER BY started_at DESC) AS nth FROM runs)
        WHERE nth = 1 AND status <> 'succeeded' ORDER BY business_date""").fetchall()]
    for d in out["unfinished_days"]:
        out["attention"].append(f"{d['business_date']}: its last run ended '{d['status']}' in {d['stage'] or '?'}"
                                + (f" ({d['message'][:200]})" if d["message"] else "")
                                + "; run the day again once nothing is running")
    out["missing_days"] = [r[0] for r in con.execute(f"""
        WITH done AS (SELECT DISTINCT business_date AS d FROM runs WHERE status = 'succeeded')
        SELECT g.d::DATE FROM (SELECT max(d) AS hi FROM done) h,
             generate_series(h.hi - INTERVAL {GAP_WINDOW_DAYS} DAY, h.hi, INTERVAL 1 DAY) g(d)
        WHERE g.d::DATE >= (SELECT min(d) FROM done) AND g.d::DATE NOT IN (SELECT d FROM done)
          AND g.d::DATE NOT IN (SELECT business_date FROM runs WHERE status <> 'succeeded')
        ORDER BY 1""").fetchall()]
    if out["missing_days"]:
        out["attention"].append("never reconciled, between reconciled days: "
                                + ", ".join(str(d) for d in out["missing_days"][:10])
                                + (" …" if len(out["missing_days"]) > 10 else ""))


def _pace(con: duckdb.DuckDBPyConnection, out: dict) -> None:
    """A note when a stage of the latest business day ran much slower, per statement row, than the nights before
    (the stages' seconds as the analyst view ``v_runs`` reads them from each run's summary): a trend to look at
    while the nights still finish."""
    nights = con.execute(f"""
        SELECT business_date, statement_rows, {", ".join(f"{s}_seconds" for s in STAGES)}
        FROM v_runs WHERE status = 'succeeded'
        QUALIFY row_number() OVER (PARTITION BY business_date ORDER BY started_at DESC) = 1
        ORDER BY business_date DESC LIMIT {PACE_NIGHTS + 1}""").fetchall()
    if len(nights) < 4 or not nights[0][1]:
        return
    day, rows = nights[0][:2]
    for i, stage in enumerate(STAGES, start=2):
        paces = [n[i] / n[1] for n in nights[1:] if n[1] and n[i] is not None]
        took = nights[0][i]
        if took is None or len(paces) < 3:
            continue
        usual = statistics.median(paces) * rows
        if usual <= 0:                                   # stages recorded as 0.000 s: no pace to compare with
            continue
        if took >= PACE_FACTOR * usual and took - usual >= PACE_MIN_SECONDS:
            out["notes"].append(
                f"{stage} took {took:.0f} s on {day}, {took / usual:.1f}× what the {len(paces)} nights before it "
                f"give for its {rows:,.0f} statement rows ({usual:.0f} s): see what grew (v_runs, docs/deploy.md)")


def _breaks(con: duckdb.DuckDBPyConnection, out: dict) -> None:
    row = con.execute("""
        SELECT count(*) FILTER (WHERE status = 'open'), count(*) FILTER (WHERE status = 'pending'),
               min(first_seen_date) FILTER (WHERE status IN ('open', 'pending'))
        FROM discrepancies""").fetchone()
    out["breaks"] = dict(zip(("open", "pending", "oldest_first_seen"), row))
    # per currency: sums of different currencies mean nothing together
    out["breaks"]["abs_difference"] = dict(con.execute("""
        SELECT coalesce(currency, '?'), sum(abs(difference)) FROM discrepancies
        WHERE status IN ('open', 'pending') AND difference IS NOT NULL GROUP BY 1 ORDER BY 1""").fetchall())


def _batches(con: duckdb.DuckDBPyConnection, out: dict, today: date) -> None:
    due = con.execute("SELECT batch_id, settlement_date FROM settlement_batches WHERE status = 'draft' "
                      "AND settlement_date <= ? ORDER BY settlement_date, batch_id", [today]).fetchall()
    out["batches_due"] = [{"batch_id": b, "settlement_date": d} for b, d in due]
    if due:
        out["attention"].append(f"{len(due)} settlement batch(es) due by {today} and not confirmed: "
                                + ", ".join(b for b, _ in due[:5]) + (" …" if len(due) > 5 else ""))


def _archive(con: duckdb.DuckDBPyConnection, cfg: Config, out: dict) -> None:
    n, lo, hi, rows = con.execute("SELECT count(*), min(business_date), max(business_date), "
                                  "coalesce(sum(row_count), 0) FROM archived_days").fetchone()
    folder = Path(cfg.archive_path)
    size = sum(f.stat().st_size for f in folder.rglob("*.parquet")) if folder.is_dir() else 0
    out["archive"] = {"days": n, "oldest": lo, "newest": hi, "rows": rows, "bytes": size,
                      "ready": [d.business_date for d in plan(con, cfg) if d.closed]}
    strays = stray_folders(con, cfg)
    out["archive"]["stray_folders"] = [str(f.path) for f in strays]
    for f in strays:
        if not f.rows_in_warehouse:                      # the only copy of its rows: nobody may tidy it away
            out["attention"].append(f"archive folder {f.describe()}")


def _calendar(cfg: Config, out: dict, today: date) -> None:
    """The settlement calendar must know the coming month's dates (each December: next year's holidays)."""
    if warning := BusinessCalendar(cfg.calendar).horizon_warning(today):
        out["attention"].append(warning)


def _disks(cfg: Config, out: dict, warehouse_bytes: int) -> None:
    """Free room on each disk the pipeline writes to. Too little when under :data:`DISK_FREE_FLOOR`, or, on the
    warehouse's disk, under the warehouse file's size (a backup or ``recon compact`` needs a whole copy)."""
    places = {"warehouse": Path(cfg.warehouse).parent, "output": Path(cfg.output_dir),
              "landing": Path(cfg.landing_dir), "backups": Path(cfg.backup_path)}
    disks: dict[int, dict] = {}
    for role, folder in places.items():
        while not folder.exists() and folder != folder.parent:   # not made yet: the disk it will be made on
            folder = folder.parent
        disk = disks.setdefault(os.stat(folder).st_dev, {"folders": [], "path": str(folder)})
        disk["folders"].append(role)
        if "free" not in disk:
            usage = shutil.disk_usage(folder)
            disk.update(free=usage.free, total=usage.total)
    out["disks"] = list(disks.values())
    if cfg.backup.nightly and any({"warehouse", "backups"} <= set(d["folders"]) for d in out["disks"]):
        out["notes"].append(f"the backups ({cfg.backup_path}) are on the warehouse's disk: losing that disk loses "
                            "both; point backup_dir at another disk or copy the backups off the machine")
    for disk in out["disks"]:
        need = max(DISK_FREE_FLOOR, warehouse_bytes if "warehouse" in disk["folders"] else 0)
        if disk["free"] < need:
            out["attention"].append(
                f"the disk of {', '.join(disk['folders'])} ({disk['path']}) has {gib(disk['free'])} free, under "
                f"{gib(need)}" + (" (the warehouse file's size: a backup or `recon compact` would not fit)"
                                  if need == warehouse_bytes else "") + ": free some room before the next night")


def _snapshot(cfg: Config, out: dict) -> None:
    manifest = read_manifest(Path(cfg.snapshot_path))
    published = date.fromisoformat(manifest["business_date"]) if manifest.get("business_date") else None
    out["snapshot"] = {"business_date": published, "published_at": manifest.get("published_at")}
    latest = out.get("latest_reconciled")
    if latest and (published is None or published < latest):
        out["attention"].append(f"the analyst snapshot shows {published or 'nothing'}, the warehouse {latest}: "
                                "`recon snapshot` publishes it")


def _backups(cfg: Config, out: dict) -> None:
    found = list_backups(cfg)
    newest = found[-1] if found else None
    out["backups"] = {"count": len(found), "latest": newest.taken_at if newest else None,
                      "bytes": sum(b.bytes for b in found)}
    if cfg.backup.nightly:
        age = datetime.now(timezone.utc) - newest.taken_at if newest else None
        if age is None or age > BACKUP_MAX_AGE:
            out["attention"].append("no backup of the warehouse " + (
                f"for {age.total_seconds() / 3600:.0f} hours" if age else "yet")
                + f" (backup.nightly; {cfg.backup_path})")


def render(s: dict) -> str:
    """The findings for a person, one line each."""
    lines = [f"warehouse {s['warehouse']}" + (f" (schema {s['schema_version']}): {s['space'].describe()}"
                                              if "space" in s else "")]
    if "latest_reconciled" in s:
        lines.append(f"latest reconciled business date: {s['latest_reconciled'] or 'none'}"
                     + (f" (finished {s['latest_reconciled_at']:%Y-%m-%d %H:%M %Z})" if s["latest_reconciled_at"]
                        else ""))
        lr = s["last_run"]
        if lr:
            lines.append(f"last run: {lr['business_date']} {lr['status']}"
                         + (f" in {lr['stage']}" if lr["status"] != "succeeded" and lr["stage"] else ""))
        b = s["breaks"]
        money = ", ".join(f"{c} {v}" for c, v in b["abs_difference"].items())
        lines.append(f"breaks: {b['open']:,} open, {b['pending']:,} pending"
                     + (f", the oldest first seen {b['oldest_first_seen']}" if b["oldest_first_seen"] else "")
                     + (f"; differences in absolute value: {money}" if money else ""))
        lines.append(f"settlement batches due and not confirmed: {len(s['batches_due'])}")
    if "archive" in s:
        a = s["archive"]
        lines.append(f"archive: {a['days']} day(s)" + (f" ({a['oldest']} … {a['newest']}, {a['rows']:,} rows, "
                                                       f"{gib(a['bytes'])})" if a["days"] else "")
                     + (f"; {len(a['ready'])} more closed and old enough to move (`recon archive move`)"
                        if a["ready"] else "")
                     + (f"; {len(a['stray_folders'])} folder(s) no record names (`recon archive plan`)"
                        if a["stray_folders"] else ""))
    for disk in s.get("disks", []):
        lines.append(f"disk of {', '.join(disk['folders'])}: {gib(disk['free'])} free of {gib(disk['total'])}")
    if "snapshot" in s:
        lines.append(f"analyst snapshot: {s['snapshot']['business_date'] or 'not published'}")
    if "backups" in s:
        bk = s["backups"]
        lines.append(f"backups: {bk['count']}" + (f", the latest taken {bk['latest']:%Y-%m-%d %H:%M} UTC "
                                                  f"({gib(bk['bytes'])} in all)" if bk["latest"] else ""))
    lines += ["note: " + n for n in s.get("notes", [])]
    lines += ["attention: " + a for a in s["attention"]] or ["attention: nothing"]
    return "\n".join(lines)
