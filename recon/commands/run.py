"""``recon run`` (one day or a range, every stage) and ``recon demo`` (the bundled samples)."""
from __future__ import annotations

import argparse
import shutil
from datetime import date, timedelta
from pathlib import Path

from recon.config import Config, load_config
from recon.errors import UserError

DEMO_DATE = date(2026, 6, 5)


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def parse_split(text: str) -> tuple[str, int]:
    channel, _, n = text.partition("=")
    if not channel or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"expected CHANNEL=N with N at least 1, e.g. wechat=4; got {text!r}")
    return channel, int(n)


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run every stage for one business date (or a range, in order)")
    p.add_argument("--config", required=True, help="the YAML config file")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--date", type=parse_date, help="business date T, YYYY-MM-DD")
    g.add_argument("--from", dest="date_from", type=parse_date, help="first business date of a range")
    p.add_argument("--to", dest="date_to", type=parse_date, help="last business date of a range (with --from)")
    p.add_argument("--quiet", action="store_true", help="only the final summary")
    p.add_argument("--split", action="append", default=[], metavar="CHANNEL=N", type=parse_split,
                   help="reconcile CHANNEL in N key-hash buckets, as the nightly DAG does with schedule.buckets "
                        "(repeatable; same results as unsplit)")
    p.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="run the whole pipeline on the bundled samples into a fresh folder")
    d.add_argument("--out", default="out/demo", help="output folder (emptied first; default out/demo)")
    d.set_defaults(func=cmd_demo)


def _progress(quiet: bool):
    def show(stage: str, message: str) -> None:
        if not quiet:
            print(f"[{stage:6}] {message}", flush=True)
    return show


def days(first: date, last: date) -> list[date]:
    if last < first:
        raise UserError(f"--to {last} is before --from {first}")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def run_dates(cfg: Config, dates: list[date], quiet: bool = False, split: dict[str, int] | None = None) -> int:
    from recon.pipeline import run_day

    for channel in split or {}:
        cfg.channel(channel)
    for d in dates:
        result = run_day(cfg, d, progress=_progress(quiet), split=split)
        print_summary(result)
    return 0


def print_summary(result) -> None:
    rows = sum(f.rows for f in result.files)
    print(f"\n== {result.business_date}: {len(result.files)} files, {rows} statement rows, "
          f"{sum(result.platform_rows.values())} platform rows, {result.matched} matched")
    breaks = result.breaks or {}
    print("   discrepancies: " + (", ".join(f"{k} {v}" for k, v in sorted(breaks.items())) or "none"))
    lines = result.settlement.get("lines", [])
    print(f"   settlement: {len(lines)} line(s), {result.settlement.get('held', 0)} transaction(s) held")
    for ln in lines:
        print(f"     {ln['batch_id']} {ln['merchant_id']} {ln['currency']}: gross {ln['gross']:,.2f}  refunds "
              f"{ln['refunds']:,.2f}  fees {ln['fees']:,.2f}  net {ln['net']:,.2f}  payout {ln['payout']:,.2f}")
    for name, path in result.outputs.items():
        print(f"   {name}: {path}")


def cmd_run(args) -> int:
    cfg = load_config(args.config)
    if args.date:
        dates = [args.date]
    else:
        if not args.date_to:
            raise UserError("--from needs --to")
        dates = days(args.date_from, args.date_to)
    return run_dates(cfg, dates, args.quiet, dict(args.split))


def cmd_demo(args) -> int:
    from recon.demo import write_demo_config

    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    config_path = write_demo_config(out)
    cfg = load_config(config_path)
    run_dates(cfg, [DEMO_DATE])
    print(f"\nExcel report:  {out / 'reports' / DEMO_DATE.isoformat() / f'recon_report_{DEMO_DATE}.xlsx'}")
    print(f"DuckDB file:   {cfg.warehouse}")
    print(f"Config:        {config_path}")
    print(f"Try:           recon sql --config {config_path} \"SELECT * FROM v_daily_summary\"")
    return 0
