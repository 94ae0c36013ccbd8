"""``recon fetch``: run the fetch stage alone (land every statement of a day; docs/fetch.md).

Prints one line per statement and exits 0 when everything was landed (or the
channel said there is no statement), 75 (EX_TEMPFAIL: a scheduler should try
again later) when a required file is not published yet, 1 on errors. An
error line names the channel, statement and source, never a credential.
"""
from __future__ import annotations

import sys

from loaders.fetch import FetchError, NotYetAvailable, fetch_statement
from recon.commands.run import parse_date
from recon.config import load_config
from recon.errors import UserError

EX_TEMPFAIL = 75


def add_parser(sub) -> None:
    p = sub.add_parser("fetch", help="fetch and land the statement files of one business date (no loading)")
    p.add_argument("--config", required=True, help="the YAML config file")
    p.add_argument("--date", required=True, type=parse_date, help="business date T, YYYY-MM-DD")
    p.add_argument("--channel", action="append", help="only this channel (repeatable)")
    p.set_defaults(func=cmd_fetch)


def cmd_fetch(args) -> int:
    cfg = load_config(args.config)
    wanted = args.channel or []
    known = {c.name for c in cfg.channels}
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise UserError(f"no channel named {', '.join(unknown)} in the config (have: {', '.join(sorted(known))})")
    errors = waiting = 0
    for channel in cfg.channels:
        if wanted and channel.name not in wanted:
            continue
        for st in channel.statements:
            label = f"{channel.name} {st.kind} ({st.format})"
            try:
                files = fetch_statement(cfg, channel, st, args.date)
            except NotYetAvailable as exc:
                if st.optional:
                    print(f"{label}: not available (optional): {exc}")
                else:
                    waiting += 1
                    print(f"{label}: not yet available: {exc}")
                continue
            except FetchError as exc:
                errors += 1
                print(f"{label}: error: {exc}", file=sys.stderr)
                continue
            except OSError as exc:       # landing folder not writable, disk full, ...
                errors += 1
                print(f"{label}: error: {exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})",
                      file=sys.stderr)
                continue
            if not files:
                print(f"{label}: no statement for this day (the channel says so)")
            for f in files:
                note = " restatement" if f.restatement else ""
                print(f"{label}: landed {f.path} sha256 {f.sha256}{note}")
    if errors:
        return 1
    return EX_TEMPFAIL if waiting else 0
