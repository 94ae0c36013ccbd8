"""``recon settlement confirm BATCH`` (mark paid, lock) and ``recon settlement show [BATCH]``."""
from __future__ import annotations

from recon.config import load_config
from recon.money import fmt
from recon.warehouse import connect, transaction


def add_parser(sub) -> None:
    p = sub.add_parser("settlement", help="settlement batches: show them, confirm one as paid")
    ssub = p.add_subparsers(dest="settlement_command", required=True, metavar="ACTION")

    c = ssub.add_parser("confirm", help="mark a draft batch paid and lock it (reruns never change it)")
    c.add_argument("batch", metavar="BATCH", help="batch id, e.g. STL-20260608")
    c.add_argument("--config", required=True, help="the YAML config file")
    c.add_argument("--by", required=True, help="who confirms (recorded with the batch)")
    c.set_defaults(func=cmd_confirm)

    s = ssub.add_parser("show", help="list batches, or the lines of one batch")
    s.add_argument("batch", metavar="BATCH", nargs="?", help="batch id (omit to list all batches)")
    s.add_argument("--config", required=True, help="the YAML config file")
    s.set_defaults(func=cmd_show)


def cmd_confirm(args) -> int:
    from settlement.engine import confirm_batch

    cfg = load_config(args.config)
    con = connect(cfg.warehouse)
    try:
        with transaction(con):
            info = confirm_batch(con, args.batch, args.by)
    finally:
        con.close()
    print(f"{info['batch_id']} ({info['settlement_date']}) confirmed by {info['confirmed_by']} "
          f"at {info['confirmed_at']}; it is now locked")
    return 0


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]
    return "\n".join(out)


def cmd_show(args) -> int:
    from settlement.engine import batch_info, lines_of

    cfg = load_config(args.config)
    con = connect(cfg.warehouse, read_only=True)
    try:
        if not args.batch:
            rows = con.execute("""
                SELECT b.batch_id, CAST(b.settlement_date AS VARCHAR), b.status, coalesce(b.confirmed_by, ''),
                       count(l.merchant_id), coalesce(sum(l.trade_count), 0)
                FROM settlement_batches b LEFT JOIN settlement_lines l USING (batch_id)
                GROUP BY b.batch_id, b.settlement_date, b.status, b.confirmed_by
                ORDER BY b.settlement_date""").fetchall()
            if not rows:
                print("no settlement batches yet")
                return 0
            totals = {}
            for bid, ccy, payout in con.execute(
                    "SELECT batch_id, currency, sum(payout) FROM settlement_lines GROUP BY ALL ORDER BY ALL"
            ).fetchall():
                totals.setdefault(bid, []).append(f"{ccy} {fmt(payout)}")
            print(_table(["batch", "date", "status", "confirmed_by", "lines", "transactions", "payout"],
                         [[r[0], r[1], r[2], r[3], str(r[4]), str(r[5]), "; ".join(totals.get(r[0], []))]
                          for r in rows]))
            return 0
        info = batch_info(con, args.batch)
        status = info["status"] + (f" by {info['confirmed_by']} at {info['confirmed_at']}"
                                   if info["status"] == "confirmed" else "")
        print(f"{info['batch_id']}  settlement date {info['settlement_date']}  {status}")
        cols = ["merchant_id", "currency", "trade_count", "gross", "refunds", "fees", "adjustments", "net",
                "carried_in", "reserve_held", "reserve_released", "payout", "carried_forward"]
        lines = lines_of(con, [args.batch])
        print(_table(cols, [[str(ln[c]) if c in ("merchant_id", "currency", "trade_count") else fmt(ln[c])
                             for c in cols] for ln in lines]))
        held = con.execute("""
            SELECT count(*) FROM settlement_holds
            WHERE run_date = (SELECT max(run_date) FROM settlement_items WHERE batch_id = ?)""",
                           [args.batch]).fetchone()[0]
        if held:
            print(f"{held} transaction(s) held at the last run feeding this batch (see settlement_holds)")
    finally:
        con.close()
    return 0
