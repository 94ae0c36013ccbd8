"""``recon compact``: rewrite the warehouse into a fresh file to give the space of deleted rows back to the disk.

Why and how it is safe: :mod:`recon.compact` and ``docs/warehouse.md#compacting-the-warehouse-file``.
"""
from __future__ import annotations

from recon.config import load_config


def add_parser(sub) -> None:
    p = sub.add_parser("compact", help="rewrite the warehouse file without the space deleted rows left "
                                       "(after `recon archive move`); no run may be writing meanwhile")
    p.add_argument("--config", required=True, help="the YAML config file")
    p.add_argument("--min-free", type=_share, default=0.0, metavar="SHARE",
                   help="compact only when at least this share of the file is free, e.g. 0.3 (default: any)")
    p.add_argument("--keep-old", action="store_true",
                   help="keep the original file as <warehouse>.before-compact")
    p.add_argument("--dry-run", action="store_true", help="only say how much of the file is free")
    p.set_defaults(func=cmd_compact)


def _share(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"a share from 0 to below 1, e.g. 0.3, not {text!r}")
    return v


def cmd_compact(args) -> int:
    from recon.compact import compact, space

    cfg = load_config(args.config)
    if args.dry_run:
        print(f"{cfg.warehouse}: {space(cfg.warehouse).describe()}")
        return 0
    result = compact(cfg.warehouse, min_free_share=args.min_free, keep_old=args.keep_old,
                     memory_limit=cfg.duckdb_memory_limit, threads=cfg.duckdb_threads, progress=print)
    if result["compacted"]:
        print(f"done in {result['seconds']:.1f} s: {result['after'].describe()}")
    return 0
