"""``recon resolve``, ``recon import-resolutions`` and ``recon discrepancies`` (the resolution workflow)."""
from __future__ import annotations

import argparse
import csv
import sys
from datetime import datetime

from recon.config import load_config
from recon.errors import UserError
from recon.money import fmt
from recon.resolution import ACTIONS, LIST_COLUMNS, STATUSES, import_resolutions, list_discrepancies, resolve
from recon.warehouse import connect


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of days, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more days, got {value}")
    return value


def add_parser(sub) -> None:
    r = sub.add_parser("resolve", help="resolve one discrepancy (recorded in the audit table)")
    r.add_argument("discrepancy_id", metavar="ID", help="the discrepancy id (first column of the report)")
    r.add_argument("--note", required=True, help="what was found / done")
    r.add_argument("--by", required=True, help="who resolves it")
    r.add_argument("--action", default="other", choices=ACTIONS, help="what kind of resolution (default: other)")
    r.add_argument("--config", required=True, help="the YAML config file")
    r.set_defaults(func=cmd_resolve)

    i = sub.add_parser("import-resolutions",
                       help="apply the action/note columns finance filled in on a discrepancy report workbook")
    i.add_argument("workbook", metavar="FILE.xlsx")
    i.add_argument("--by", required=True, help="who resolves them (recorded with every row)")
    i.add_argument("--config", required=True, help="the YAML config file")
    i.set_defaults(func=cmd_import)

    d = sub.add_parser("discrepancies", help="list discrepancies (default: the open ones, oldest first)")
    d.add_argument("--config", required=True, help="the YAML config file")
    d.add_argument("--status", action="append", choices=STATUSES,
                   help="status to list (repeatable; default: open)")
    d.add_argument("--channel", help="only this channel")
    d.add_argument("--older-than", type=_non_negative, metavar="N", help="only breaks open more than N days")
    d.add_argument("--limit", type=_non_negative, help="at most this many rows")
    d.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")
    d.set_defaults(func=cmd_list)


def _today(cfg):
    return datetime.now(cfg.zone).date()


def cmd_resolve(args) -> int:
    cfg = load_config(args.config)
    con = connect(cfg.warehouse)
    try:
        row = resolve(con, args.discrepancy_id, by=args.by, note=args.note, action=args.action,
                      today=_today(cfg))
    finally:
        con.close()
    print(f"{row['discrepancy_id']}: resolved by {row['resolved_by']} on {row['resolved_date']} "
          f"({row['resolution_action']}): {row['resolution_note']}")
    return 0


def cmd_import(args) -> int:
    cfg = load_config(args.config)
    con = connect(cfg.warehouse)
    try:
        report = import_resolutions(con, args.workbook, by=args.by, today=_today(cfg))
    finally:
        con.close()
    for did, action in report.applied:
        print(f"resolved {did} ({action})")
    for problem in report.problems:
        print(f"not applied: {problem}", file=sys.stderr)
    print(f"{len(report.applied)} resolution(s) applied, {len(report.problems)} row(s) with problems "
          f"(sheets read: {', '.join(report.sheets)})")
    return 1 if report.problems else 0


def cmd_list(args) -> int:
    cfg = load_config(args.config)
    if args.channel and args.channel not in [c.name for c in cfg.channels]:
        raise UserError(f"no channel named {args.channel!r} in the config")
    con = connect(cfg.warehouse, read_only=True)
    try:
        rows = list_discrepancies(con, statuses=tuple(args.status or ["open"]), channel=args.channel,
                                  older_than=args.older_than, limit=args.limit)
    finally:
        con.close()
    if args.csv:
        w = csv.writer(sys.stdout)
        w.writerow(LIST_COLUMNS)
        w.writerows([["" if r[c] is None else r[c] for c in LIST_COLUMNS] for r in rows])
        return 0
    shown = ("discrepancy_id", "business_date", "channel", "type", "status", "match_key", "difference", "age_days",
             "age_bucket")
    table = [[fmt(r[c]) if c == "difference" else ("" if r[c] is None else str(r[c])) for c in shown] for r in rows]
    widths = [max([len(h)] + [len(t[i]) for t in table]) for i, h in enumerate(shown)]
    print("  ".join(h.ljust(w) for h, w in zip(shown, widths)))
    for t in table:
        print("  ".join(v.rjust(w) if shown[i] in ("difference", "age_days") else v.ljust(w)
                        for i, (v, w) in enumerate(zip(t, widths))))
    print(f"{len(rows)} discrepanc{'y' if len(rows) == 1 else 'ies'}")
    return 0
