"""``recon buckets``: one channel's day reconciled bucket by bucket, by hand (the ``recon_buckets`` DAG's steps).

``reconcile`` runs one key-hash bucket on a read-only warehouse and writes its Parquet slice (any machine
that can read the warehouse file); ``merge`` applies every bucket of the channel in one transaction. For the
whole split run in one command, see ``recon run --split CHANNEL=N``. docs/deploy.md explains when to split.
"""
from __future__ import annotations

import json

from recon.commands.run import parse_date
from recon.config import load_config


def add_parser(sub) -> None:
    p = sub.add_parser("buckets", help="reconcile one channel's day in key-hash buckets, or merge them")
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")
    for name, text in (("reconcile", "reconcile one bucket (read-only warehouse; writes Parquet)"),
                       ("merge", "merge every bucket of the channel into the warehouse, in one transaction")):
        s = steps.add_parser(name, help=text)
        s.add_argument("--config", required=True, help="the YAML config file")
        s.add_argument("--date", type=parse_date, required=True, help="business date, YYYY-MM-DD")
        s.add_argument("--channel", required=True, help="the configured channel")
        if name == "reconcile":
            s.add_argument("--bucket", type=int, required=True, help="this bucket's number, 0 .. N-1")
        s.add_argument("--of", dest="buckets", type=int, required=True, help="N, the number of buckets")
        s.set_defaults(func=cmd_buckets)


def cmd_buckets(args) -> int:
    from recon.buckets import bucket_dir, merge_buckets, reconcile_bucket

    cfg = load_config(args.config)
    cfg.channel(args.channel)
    if args.step == "reconcile":
        out = reconcile_bucket(cfg, args.date, args.channel, args.bucket, args.buckets, bucket_dir(cfg))
    else:
        out = merge_buckets(cfg, args.date, args.channel, args.buckets, bucket_dir(cfg))
    print(json.dumps(out, indent=1, sort_keys=True))
    return 0
