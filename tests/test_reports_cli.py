"""`recon report` and `recon sql`: through the real CLI entry point."""
from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import os
import subprocess
import sys

import pytest
import yaml
from openpyxl import load_workbook

from recon.cli import main
from recon.warehouse import connect
from reports.snapshot import publish_snapshot
from tests.test_reports_excel import D, make_cfg, seed_day, seed_settlement
from tests.test_snapshot import ROOT, _Lines


def write_config(tmp: Path) -> Path:
    cfg = make_cfg(tmp)
    raw = json.loads(cfg.model_dump_json(exclude={"config_path", "config_sha256"}))
    path = tmp / "recon.yml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture
def setup(tmp_path):
    path = write_config(tmp_path)
    cfg = make_cfg(tmp_path)
    con = connect(cfg.warehouse)
    seed_day(con, D)
    batch = seed_settlement(con, D)
    return path, cfg, con, batch


def test_report_regenerates_from_a_closed_warehouse(setup, capsys):
    path, cfg, con, batch = setup
    before = con.execute("SELECT count(*) FROM discrepancies").fetchone()[0]
    con.close()
    assert main(["report", "--config", str(path), "--date", D.isoformat()]) == 0
    out_dir = cfg.output_dir / "reports" / D.isoformat()
    wb = load_workbook(out_dir / "recon_report_2026-06-05.xlsx")
    assert wb.sheetnames[0] == "Summary"
    assert (out_dir / f"settlement_{batch}.xlsx").exists()
    assert str(out_dir / "recon_report_2026-06-05.xlsx") in capsys.readouterr().out
    ro = connect(cfg.warehouse, read_only=True)  # nothing was written to the warehouse
    assert ro.execute("SELECT count(*) FROM discrepancies").fetchone()[0] == before
    ro.close()


HOLDER = """
import sys
from recon.warehouse import connect
con = connect(sys.argv[1])
con.execute("BEGIN TRANSACTION")
print("holding", flush=True)
sys.stdin.readline()
con.execute("ROLLBACK")
con.close()
"""


def test_report_falls_back_to_the_snapshot_while_a_run_holds_the_warehouse(setup, tmp_path, capsys):
    path, cfg, con, _batch = setup
    publish_snapshot(cfg, D, con=con)
    con.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(cfg.warehouse)], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _Lines(proc).expect("holding")
        out = tmp_path / "fallback"
        assert main(["report", "--config", str(path), "--date", D.isoformat(), "--out", str(out),
                     "--no-settlement"]) == 0
        assert "published snapshot" in capsys.readouterr().err
        assert (out / "recon_report_2026-06-05.xlsx").exists()
        assert not list(out.glob("settlement_*"))
        proc.stdin.write("done\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_report_for_an_unknown_date_is_a_one_line_error(setup, capsys):
    path, _cfg, con, _batch = setup
    con.close()
    assert main(["report", "--config", str(path), "--date", "2030-01-01"]) == 1
    err = capsys.readouterr().err
    assert "nothing for business date 2030-01-01" in err and "Traceback" not in err


def test_sql_queries_the_snapshot_read_only(setup, capsys):
    path, cfg, con, _batch = setup
    assert main(["sql", "--config", str(path), "SELECT 1"]) == 1
    assert "no snapshot published yet" in capsys.readouterr().err
    publish_snapshot(cfg, D, con=con)
    assert main(["sql", "--config", str(path), "--format", "csv",
                 "SELECT channel, sum(difference) AS diff FROM v_discrepancies GROUP BY 1 ORDER BY 1"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    want = con.execute("SELECT channel, sum(difference) FROM discrepancies GROUP BY 1 ORDER BY 1").fetchall()
    assert [(r["channel"], Decimal(r["diff"])) for r in rows] == want
    # TIMESTAMPTZ columns print as text (no pytz needed), in the table format
    assert main(["sql", "--config", str(path), "SELECT batch_id, created_at FROM v_settlements LIMIT 1"]) == 0
    out = capsys.readouterr().out
    assert "created_at" in out and "2026-06-06" in out and "(1 row)" in out
    # writes are refused: the snapshot is read-only
    assert main(["sql", "--config", str(path), "DELETE FROM discrepancies"]) == 1
    assert "read-only" in capsys.readouterr().err.lower()
    con.close()


def test_sql_prompt_reads_statements_until_semicolon(setup, monkeypatch, capsys):
    path, cfg, con, _batch = setup
    publish_snapshot(cfg, D, con=con)
    con.close()
    lines = iter(["SELECT count(*) AS n", "FROM discrepancies;", "SELEC oops;", ".quit"])
    monkeypatch.setattr("builtins.input", lambda _prompt="": next(lines))
    assert main(["sql", "--config", str(path), "--python-prompt"]) == 0
    out = capsys.readouterr().out
    assert "\nn \n--\n10\n(1 row)\n" in out and "error: Parser Error" in out
