"""``recon sql``: query the published analyst snapshot, read-only (never the live warehouse)."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb

from recon.config import load_config
from recon.errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser("sql", help="run a query against (or open a prompt on) the published snapshot, read-only")
    p.add_argument("--config", required=True, help="the YAML config file")
    p.add_argument("query", nargs="?", help="SQL to run; without it, an interactive prompt")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    p.add_argument("--python-prompt", action="store_true",
                   help="use the built-in prompt even when the duckdb CLI is installed")
    p.set_defaults(func=cmd_sql)


def snapshot_file(cfg) -> Path:
    from reports.snapshot import snapshot_db_path

    path = snapshot_db_path(cfg)
    if not path.exists():
        raise UserError(f"no snapshot published yet at {path}: the pipeline publishes it after each successful run")
    return path


def run_query(con: duckdb.DuckDBPyConnection, query: str, fmt: str, out) -> int:
    """Run ``query`` and print its result; returns the number of rows printed."""
    try:
        rel = con.sql(query)
        if rel is None:
            return 0
        names = rel.columns
        # Every value as text, rendered by DuckDB (exact decimals, time zones, nested types).
        rows = rel.project("COLUMNS(*)::VARCHAR").fetchall()
    except duckdb.Error as exc:
        raise UserError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(names)
        w.writerows(["" if v is None else v for v in r] for r in rows)
    elif fmt == "json":
        for r in rows:
            out.write(json.dumps(dict(zip(names, r)), ensure_ascii=False) + "\n")
    else:
        shown = [["NULL" if v is None else v for v in r] for r in rows]
        widths = [max([len(n), *(len(r[i]) for r in shown)]) for i, n in enumerate(names)]
        out.write(" | ".join(n.ljust(w) for n, w in zip(names, widths)) + "\n")
        out.write("-+-".join("-" * w for w in widths) + "\n")
        for r in shown:
            out.write(" | ".join(v.ljust(w) for v, w in zip(r, widths)) + "\n")
        out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
    return len(rows)


def prompt(con: duckdb.DuckDBPyConnection, path: Path, fmt: str) -> int:
    print(f"snapshot {path} (read-only). End statements with ';'. .tables lists tables and views; .quit exits.")
    buf: list[str] = []
    while True:
        try:
            line = input("recon> " if not buf else "   ..> ")
        except EOFError:
            print()
            return 0
        if not buf and line.strip() in (".quit", ".exit", "\\q"):
            return 0
        if not buf and line.strip() == ".tables":
            line = "SELECT table_name, table_type FROM information_schema.tables ORDER BY 1;"
        buf.append(line)
        if line.rstrip().endswith(";"):
            query, buf = "\n".join(buf), []
            try:
                run_query(con, query, fmt, sys.stdout)
            except UserError as exc:
                print(f"error: {exc}")


def cmd_sql(args) -> int:
    cfg = load_config(args.config)
    path = snapshot_file(cfg)
    if args.query is None and not args.python_prompt and sys.stdin.isatty() and shutil.which("duckdb"):
        return subprocess.call(["duckdb", "-readonly", str(path)])
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise UserError(f"cannot open the snapshot {path}: {exc}") from None
    try:
        if args.query is None:
            return prompt(con, path, args.format)
        run_query(con, args.query, args.format, sys.stdout)
        return 0
    finally:
        con.close()
