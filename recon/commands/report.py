"""``recon report``: regenerate a day's workbooks from the warehouse, without re-running anything."""
from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import duckdb

from recon.config import load_config
from recon.errors import UserError
from recon.commands.run import parse_date
from recon.warehouse import WarehouseError, connect


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="regenerate the Excel reports of a business date from the warehouse")
    p.add_argument("--config", required=True, help="the YAML config file")
    p.add_argument("--date", required=True, type=parse_date, help="business date, YYYY-MM-DD")
    p.add_argument("--out", help="output folder (default <output_dir>/reports/<date>, where the run writes them)")
    p.add_argument("--batch", action="append", default=None,
                   help="settlement batch id (repeatable; default: the batches holding the date's trades)")
    p.add_argument("--no-settlement", action="store_true", help="only the discrepancy workbook")
    p.set_defaults(func=cmd_report)


def open_for_reading(cfg) -> tuple[duckdb.DuckDBPyConnection, str]:
    """The live warehouse read-only; while a run holds it, the published snapshot instead."""
    try:
        return connect(cfg.warehouse, read_only=True), str(cfg.warehouse)
    except (WarehouseError, duckdb.Error) as live_err:  # held by a run (another process, or this one)
        from reports.snapshot import snapshot_db_path

        snap = snapshot_db_path(cfg)
        if not snap.exists():
            raise UserError(f"{live_err}; and no snapshot has been published at {snap}") from None
        try:
            con = duckdb.connect(str(snap), read_only=True)
        except duckdb.Error as exc:
            raise UserError(f"{live_err}; and the snapshot {snap} cannot be opened: {exc}") from None
        print(f"recon report: the warehouse is busy (a run holds it); reading the published snapshot {snap}",
              file=sys.stderr)
        return con, str(snap)


def cmd_report(args) -> int:
    from reports.excel import write_discrepancy_report, write_settlement_report

    cfg = load_config(args.config)
    d: date = args.date
    con, source = open_for_reading(cfg)
    try:
        known = con.execute(
            "SELECT (SELECT count(*) FROM runs WHERE business_date = $d) "
            "+ (SELECT count(*) FROM loaded_files WHERE business_date = $d) "
            "+ (SELECT count(*) FROM discrepancies WHERE business_date = $d)", {"d": d}).fetchone()[0]
        if not known:
            raise UserError(f"nothing for business date {d} in {source}: run `recon run --date {d}` first")
        out_dir = Path(args.out) if args.out else Path(cfg.output_dir) / "reports" / d.isoformat()
        print(f"discrepancy report: {write_discrepancy_report(con, cfg, d, out_dir)}")
        if not args.no_settlement:
            if args.batch:
                batches = args.batch
            else:
                batches = [r[0] for r in con.execute(
                    "SELECT DISTINCT batch_id FROM settlement_items WHERE trade_date = ? ORDER BY 1", [d]).fetchall()]
                if not batches and con.execute(
                        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'archived_days' "
                        "AND table_catalog = current_database()").fetchone()[0] and con.execute(
                        "SELECT count(*) FROM archived_days WHERE business_date = ?", [d]).fetchone()[0]:
                    print(f"settlement reports: none; {d} is archived (its batches' workbooks need the snapshot or "
                          f"`recon archive restore --date {d}`)")
            for batch_id in batches:
                try:
                    print(f"settlement report: {write_settlement_report(con, cfg, batch_id, out_dir)}")
                except LookupError as exc:
                    raise UserError(str(exc)) from None
    finally:
        con.close()
    return 0
