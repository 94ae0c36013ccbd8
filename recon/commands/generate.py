"""``recon generate``: a consistent multi-day world (statements, platform database, config, ground truth)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from recon.commands.run import parse_date
from recon.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="write a generated world: channel statements, platform DB, config, "
                                        "ground truth of every injected break")
    p.add_argument("--orders", type=int, required=True, help="platform orders per day (over three channels)")
    p.add_argument("--days", type=int, default=1, help="consecutive business days (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same bytes")
    p.add_argument("--out", required=True, help="output folder (its generated files are replaced)")
    p.add_argument("--break-rate", type=float, default=0.0005,
                   help="share of each day's orders broken per discrepancy type (default 0.0005)")
    p.add_argument("--refund-rate", type=float, default=0.02, help="share of orders refunded (default 0.02)")
    p.add_argument("--start", type=parse_date, default=None, help="first business date (default 2026-06-01)")
    p.add_argument("--chunk-rows", type=int, default=500_000, help="orders generated per chunk (memory bound)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    from recon.generate import DEFAULT_START, generate_world

    if args.orders < 1:
        raise UserError("--orders must be at least 1")
    if args.days < 1:
        raise UserError("--days must be at least 1")
    if not 0 <= args.break_rate <= 0.05 or not 0 <= args.refund_rate <= 0.5:
        raise UserError("--break-rate must be within 0..0.05 and --refund-rate within 0..0.5")
    if args.chunk_rows < 1000:
        raise UserError("--chunk-rows must be at least 1000")
    out = Path(args.out).resolve()
    t0 = time.perf_counter()
    say = (lambda m: None) if args.quiet else (lambda m: print(f"[generate] {m}", flush=True))
    meta = generate_world(out, orders=args.orders, days=args.days, seed=args.seed, break_rate=args.break_rate,
                          refund_rate=args.refund_rate, start=args.start or DEFAULT_START,
                          chunk_rows=args.chunk_rows, progress=say)
    print(f"generated {args.days} day(s) x {args.orders} orders in {time.perf_counter() - t0:.1f} s: "
          f"{len(meta['files'])} statement files, {meta['ground_truth_rows']} ground truth rows", file=sys.stdout)
    print(f"   config:       {out / 'recon.yml'}")
    print(f"   ground truth: {out / 'ground_truth.csv'}")
    print(f"   run it:       recon run --config {out / 'recon.yml'} --from {meta['dates'][0]} --to {meta['dates'][-1]}")
    return 0
