"""``recon check-file PATH [--format NAME] [--json]``: parse one statement file, touch nothing, say what is in it.

Exit codes: 0 the file parsed and its own totals agree (or it has none); 1 a file-level
problem (unreadable, unknown format, totals that disagree with the rows). Quarantined
rows are listed but do not by themselves make the exit code non-zero.
"""
from __future__ import annotations

import json
import sys

from recon.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("check-file", help="parse one statement file without the warehouse and report it")
    p.add_argument("path", help="the statement file (CSV, gzip, ZIP, xlsx, fixed width)")
    p.add_argument("--format", dest="fmt", metavar="NAME", help="format name (default: detected from the file)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--encoding", help="force the file's encoding (default: UTF-8 with/without BOM, else GBK)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a parser option (repeatable); VALUE is read as JSON when it parses, else as text")
    p.add_argument("--options-json", help="all parser options as one JSON object (e.g. for the generic format)")
    p.add_argument("--max-errors", type=int, default=20, help="quarantined rows to list in text output")
    p.set_defaults(func=cmd_check_file)


def _options(args) -> dict:
    opts: dict = {}
    if args.options_json:
        try:
            opts.update(json.loads(args.options_json))
        except json.JSONDecodeError as exc:
            raise UserError(f"--options-json is not JSON: {exc}") from None
        if not isinstance(opts, dict):
            raise UserError("--options-json must be a JSON object")
    for item in args.option:
        if "=" not in item:
            raise UserError(f"--option expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            opts[key] = json.loads(value)
        except json.JSONDecodeError:
            opts[key] = value
    if args.encoding:
        opts["encoding"] = args.encoding
    return opts


def cmd_check_file(args) -> int:
    from loaders.base import FileError
    from loaders.check import check_file

    try:
        report = check_file(args.path, args.fmt, _options(args))
    except FileError as exc:
        if args.json:
            print(json.dumps({"path": args.path, "format": args.fmt, "rows": 0, "totals": {}, "footer_ok": None,
                              "errors": [], "error": str(exc)}, ensure_ascii=False))
        raise
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        _print_text(report, args.max_errors)
    if report["footer_ok"] is False:
        print(f"recon check-file: error: {args.path}: the file's own totals disagree with its rows: "
              f"{report['footer_message']}", file=sys.stderr)
        return 1
    return 0


def _print_text(r: dict, max_errors: int) -> None:
    fmt = r["format"] + (" (detected)" if r["detected"] else "")
    print(f"file:      {r['path']}")
    print(f"format:    {fmt}, kind {r['kind']}")
    if r["period"]:
        print(f"period:    {r['period'][0]} to {r['period'][1]} (end exclusive)")
    print(f"rows:      {r['rows']} parsed, {r['quarantined']} quarantined" + (" (no statement for this day)"
                                                                          if r["empty_day"] else ""))
    if r["totals"]:
        for ccy, t in r["totals"].items():
            print(f"totals:    {ccy}  gross {t['gross']}  fees {t['fees']}  net {t['net']}")
    else:
        print("totals:    none")
    state = {True: "OK", False: "MISMATCH", None: "not checked"}[r["footer_ok"]]
    print(f"footer:    {state}: {r['footer_message']}")
    if r["errors"]:
        print("quarantined rows:")
        for e in r["errors"][:max_errors]:
            where = f"line {e['line']}" + (f", field {e['field']}" if e["field"] else "")
            print(f"  {where}: {e['reason']}")
            print(f"      {e['raw'][:200]}")
        if len(r["errors"]) > max_errors:
            print(f"  ... and {len(r['errors']) - max_errors} more (--json lists all)")
