"""``recon archive plan|move|restore``: move old, closed business days out of the warehouse into Parquet, and back.

What a closed day is, and what moves, is in :mod:`recon.archive` and ``docs/warehouse.md#archived-days``.
"""
from __future__ import annotations

from recon.commands.run import parse_date
from recon.config import load_config
from recon.errors import UserError
from recon.warehouse import SCHEMA_VERSION, connect, current_version


def add_parser(sub) -> None:
    p = sub.add_parser("archive", help="move old, closed business days out of the warehouse into Parquet, and back")
    asub = p.add_subparsers(dest="archive_command", required=True, metavar="ACTION")
    for name, text in (("plan", "list the days that could move, and why the others stay (changes nothing)"),
                       ("move", "archive every closed day before --before (default: archive.keep_days)")):
        a = asub.add_parser(name, help=text)
        a.add_argument("--config", required=True, help="the YAML config file")
        a.add_argument("--before", type=parse_date,
                       help="only days before this date, YYYY-MM-DD (default: archive.keep_days before the latest "
                            "reconciled day)")
        a.set_defaults(func=cmd_plan if name == "plan" else cmd_move)
    r = asub.add_parser("restore", help="bring an archived day back into the warehouse")
    r.add_argument("--config", required=True, help="the YAML config file")
    r.add_argument("--date", required=True, type=parse_date, help="the archived business date, YYYY-MM-DD")
    r.set_defaults(func=cmd_restore)


def _print_kept(kept) -> None:
    for st in kept:
        print(f"{st.business_date}  stays: " + "; ".join(st.blockers))


def cmd_plan(args) -> int:
    from recon.archive import plan, stray_folders

    cfg = load_config(args.config)
    con = connect(cfg.warehouse, read_only=True)
    try:
        if current_version(con) < SCHEMA_VERSION:        # read-only: not migrated yet, no archived_days table
            raise UserError(f"warehouse {cfg.warehouse} has schema version {current_version(con)}, this code "
                            f"{SCHEMA_VERSION}: the next run (or `recon archive move`) migrates it first")
        states = plan(con, cfg, args.before)
        archived = con.execute("SELECT business_date, row_count, archive_dir FROM archived_days ORDER BY 1").fetchall()
        strays = stray_folders(con, cfg)
    finally:
        con.close()
    for d, rows, folder in archived:
        print(f"{d}  archived ({rows:,} rows in {folder})")
    for st in states:
        if st.closed:
            print(f"{st.business_date}  closed: `recon archive move` would archive it")
    _print_kept([st for st in states if not st.closed])
    if not states:
        print("no day in the warehouse lies before "
              + (str(args.before) if args.before else f"the age limit (archive.keep_days = {cfg.archive_keep_days})"))
    for stray in strays:
        print("left by an archive attempt that did not finish: " + stray.describe())
    return 0


def cmd_move(args) -> int:
    from recon.archive import move
    from recon.compact import file_space

    cfg = load_config(args.config)
    con = connect(cfg.warehouse)
    try:
        moved, kept = move(con, cfg, args.before, progress=print)
        con.execute("CHECKPOINT")
        room = file_space(con, cfg.warehouse)
    finally:
        con.close()
    _print_kept(kept)
    print(f"{len(moved)} day(s) archived, {sum(m['rows'] for m in moved):,} rows; {len(kept)} day(s) kept")
    print(f"warehouse file: {room.describe()}" + (
        "; later runs reuse the free part, `recon compact` gives it back to the disk" if room.free_blocks else ""))
    return 0


def cmd_restore(args) -> int:
    from recon.archive import restore_day

    cfg = load_config(args.config)
    con = connect(cfg.warehouse)
    try:
        info = restore_day(con, cfg, args.date)
    finally:
        con.close()
    print(f"{info['business_date']}: {info['rows']:,} rows restored into {cfg.warehouse}")
    return 0
