"""A carried break's row is paired from its copy (``unmatched_platform_rows`` / ``unmatched_channel_rows``), not
looked up again among every earlier day's rows; migration 6 fills the copies of a warehouse's existing breaks."""
from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from recon.config import load_config
from recon.generate import generate_world
from recon.pipeline import run_day
from recon.warehouse import SCHEMA_VERSION, connect

COPIES = ("unmatched_platform_rows", "unmatched_channel_rows")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unmatched-world")
    generate_world(out, orders=800, days=3, seed=11, break_rate=0.01, chunk_rows=1000)
    return out


def _days(world: Path) -> list[date]:
    return [date.fromisoformat(d) for d in json.loads((world / "world.json").read_text(encoding="utf-8"))["dates"]]


def _copy(world: Path, dest: Path):
    shutil.copytree(world, dest)
    return load_config(dest / "recon.yml")


def _rows(cfg, sql: str) -> list[tuple]:
    con = connect(cfg.warehouse, read_only=True)
    try:
        return sorted(con.execute(sql).fetchall(), key=repr)
    finally:
        con.close()


def test_every_missing_break_has_its_row_and_no_other_break_does(world, tmp_path):
    cfg = _copy(world, tmp_path / "w")
    for d in _days(world):
        run_day(cfg, d, report=False)
    platform = _rows(cfg, "SELECT x.type, x.platform_amount, u.amount, "
                          "u.source_table || ':' || u.source_key = x.platform_source "
                          "FROM discrepancies x FULL JOIN unmatched_platform_rows u USING (discrepancy_id) "
                          "WHERE x.type = 'missing_in_channel' OR u.discrepancy_id IS NOT NULL")
    channel = _rows(cfg, "SELECT x.type, x.channel_amount, u.amount, "
                         "u.file_id = x.file_id AND u.line_no = x.line_no "
                         "FROM discrepancies x FULL JOIN unmatched_channel_rows u USING (discrepancy_id) "
                         "WHERE x.type = 'missing_in_platform' OR u.discrepancy_id IS NOT NULL")
    assert len(platform) > 10 and len(channel) > 5
    assert all(t == "missing_in_channel" and p_amt == u_amt and same for t, p_amt, u_amt, same in platform)
    assert all(t == "missing_in_platform" and c_amt == u_amt and same for t, c_amt, u_amt, same in channel)


def test_a_carried_row_pairs_from_its_copy_without_its_day_in_the_source_tables(world, tmp_path):
    """The day-cut breaks of day 1 clear on day 2 as before, even with day 1's platform and statement rows gone
    from the big tables: day 2 reads only its own day there (what kept a night's cost from growing with history)."""
    days = _days(world)
    whole = _copy(world, tmp_path / "whole")
    pruned = _copy(world, tmp_path / "pruned")
    for cfg in (whole, pruned):
        run_day(cfg, days[0], report=False)
    con = connect(pruned.warehouse)
    con.execute("DELETE FROM platform_orders WHERE business_date = ?", [days[0]])
    con.execute("DELETE FROM channel_transactions WHERE business_date = ?", [days[0]])
    con.close()
    for cfg in (whole, pruned):
        run_day(cfg, days[1], report=False)
    sql = ("SELECT discrepancy_id, business_date, type, status, resolved_date, resolved_by_file FROM discrepancies "
           "WHERE business_date = '{d}'")
    cleared = _rows(whole, sql.format(d=days[0]) + " AND status = 'auto_resolved'")
    assert cleared, "the world has day-cut breaks that day 2 clears"
    assert _rows(pruned, sql.format(d=days[0])) == _rows(whole, sql.format(d=days[0]))
    pairs = "SELECT * FROM matched_transactions WHERE business_date = '{d}'".format(d=days[1])
    assert _rows(pruned, pairs) == _rows(whole, pairs)


def test_migration_6_copies_the_rows_of_the_existing_breaks(world, tmp_path):
    days = _days(world)
    cfg = _copy(world, tmp_path / "w")
    for d in days[:2]:
        run_day(cfg, d, report=False)
    written = {t: _rows(cfg, f"SELECT * FROM {t}") for t in COPIES}
    assert all(written.values())
    con = connect(cfg.warehouse)                      # back to schema 5, as a warehouse of stop 14's release
    for t in (*COPIES, "archived_days"):              # the tables of migrations 6 and 7
        con.execute(f"DROP TABLE {t}")
    con.execute("DELETE FROM schema_version WHERE version > 5")
    con.close()
    assert SCHEMA_VERSION == 7
    connect(cfg.warehouse).close()                    # opening it for writing migrates it
    assert {t: _rows(cfg, f"SELECT * FROM {t}") for t in COPIES} == written
    run_day(cfg, days[2], report=False)
    assert _rows(cfg, "SELECT count(*) FROM unmatched_platform_rows")[0][0] > len(written["unmatched_platform_rows"])
