"""``recon snapshot``: publish the analyst snapshot again from the live warehouse, without running anything.

The nightly run publishes it after each successful day. This is for the on-call engineer: after a
manual fix to the warehouse, after deleting the snapshot folder, or to rewrite every partition
(``--full``) when a change kept a day's row count and ``sum(amount)`` (which the incremental
publish does not notice).
"""
from __future__ import annotations

from recon.commands.run import parse_date
from recon.config import load_config
from recon.errors import UserError
from recon.warehouse import connect


def add_parser(sub) -> None:
    p = sub.add_parser("snapshot", help="publish the read-only analyst snapshot again from the warehouse")
    p.add_argument("--config", required=True, help="the YAML config file")
    p.add_argument("--date", type=parse_date,
                   help="business date whose partitions are always rewritten (default: the last successful run's)")
    p.add_argument("--full", action="store_true", help="rewrite every day's partitions, not only the changed days")
    p.set_defaults(func=cmd_snapshot)


def cmd_snapshot(args) -> int:
    from reports.snapshot import publish_snapshot

    cfg = load_config(args.config)
    d = args.date
    if d is None:
        con = connect(cfg.warehouse, read_only=True)   # refused (one line) while a run holds the warehouse
        try:
            d = con.execute("SELECT max(business_date) FROM runs WHERE status = 'succeeded'").fetchone()[0]
        finally:
            con.close()
        if d is None:
            raise UserError(f"no successful run in {cfg.warehouse} yet: nothing to publish (give --date to publish "
                            "what is there)")
    path = publish_snapshot(cfg, d, full=args.full)   # opens the warehouse read-only itself
    print(f"snapshot {path} ({'every day rewritten' if args.full else 'changed days rewritten'}; "
          f"business date {d})")
    return 0
