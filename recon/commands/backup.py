"""``recon backup make|list|restore``: consistent, checked copies of the warehouse file, and putting one back.

Why and how: :mod:`recon.backup` and ``docs/deploy.md`` (runbook).
"""
from __future__ import annotations

from pathlib import Path

from recon.config import load_config


def add_parser(sub) -> None:
    p = sub.add_parser("backup", help="copy the warehouse into backup_dir (checked), list the copies, or restore one")
    bsub = p.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    for name, text, func in (
            ("make", "copy the warehouse into backup_dir, keeping the newest backup.keep copies", cmd_make),
            ("list", "list the backups in backup_dir, oldest first", cmd_list)):
        b = bsub.add_parser(name, help=text)
        b.add_argument("--config", required=True, help="the YAML config file")
        b.set_defaults(func=func)
    r = bsub.add_parser("restore", help="put a backup in the warehouse's place (the current file is kept beside it)")
    r.add_argument("--config", required=True, help="the YAML config file")
    r.add_argument("--from", dest="source", required=True, type=Path, help="the backup file")
    r.set_defaults(func=cmd_restore)


def cmd_make(args) -> int:
    from recon.backup import make

    make(load_config(args.config), progress=print)
    return 0


def cmd_list(args) -> int:
    from recon.backup import list_backups

    cfg = load_config(args.config)
    found = list_backups(cfg)
    for b in found:
        print(f"{b.taken_at:%Y-%m-%d %H:%M:%S} UTC  {b.bytes / 2 ** 30:.2f} GiB  {b.path}")
    if not found:
        print(f"no backup in {cfg.backup_path}")
    return 0


def cmd_restore(args) -> int:
    from recon.backup import restore

    restore(load_config(args.config), args.source, progress=print)
    return 0
