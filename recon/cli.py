"""``recon``: the command line. Each sub-command lives in its own module under ``recon.commands``."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from recon.errors import UserError

COMMAND_MODULES = [
    "recon.commands.run",
    "recon.commands.fetch",
    "recon.commands.settlement",
    "recon.commands.report",
    "recon.commands.sql",
    "recon.commands.snapshot",
    "recon.commands.generate",
    "recon.commands.resolve",
    "recon.commands.check_file",
    "recon.commands.buckets",
    "recon.commands.archive",
    "recon.commands.compact",
    "recon.commands.backup",
    "recon.commands.status",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recon", description="Payment reconciliation and settlement")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from loaders.base import FileError
    from loaders.fetch.base import FetchError
    from recon.config import ConfigError
    from recon.warehouse import WarehouseError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError, FileError, FetchError, WarehouseError) as exc:
        print(f"recon {args.command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1) or 1
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:          # a bug, not bad input: still one line, the traceback on request
        if os.environ.get("RECON_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"recon {args.command}: internal error: {type(exc).__name__}: {first} "
              "(set RECON_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
