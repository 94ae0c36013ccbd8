"""``recon status``: the warehouse's state for on-call in one read-only look (:mod:`recon.status`)."""
from __future__ import annotations

import json

from recon.config import load_config

ATTENTION_EXIT = 3


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="last runs, failed or missing days, open breaks, batches due, snapshot, "
                                      "file and disk space, archive, backups and calendar (reads only)")
    p.add_argument("--config", required=True, help="the YAML config file")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--check", action="store_true",
                   help=f"exit {ATTENTION_EXIT} when something needs a person (for a monitor)")
    p.set_defaults(func=cmd_status)


def cmd_status(args) -> int:
    from recon.status import render, status

    found = status(load_config(args.config))
    if args.json:
        space = found.pop("space", None)
        if space is not None:
            found["space"] = {"file_bytes": space.file_bytes, "used_bytes": space.used_bytes,
                              "free_share": round(space.free_share, 4)}
        print(json.dumps(found, default=str, indent=1))
    else:
        print(render(found))
    return ATTENTION_EXIT if args.check and found["attention"] else 0
