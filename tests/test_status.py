"""``recon status``: on a generated world with a failed day, a day never run, breaks, batches due, an old
snapshot, archived days and backups, it names each finding that needs a person; nothing when all is well."""
from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml

from recon import cli, status as status_module
from recon.backup import make
from recon.config import load_config
from recon.generate import generate_world
from recon.pipeline import run_day
from recon.status import status
from settlement.calendar import _cn_known_range
from settlement.engine import confirm_batch
from tests.lock_holder import held_by_another_process


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("status-world")
    generate_world(out, orders=300, days=4, seed=3, break_rate=0.01, chunk_rows=1000)
    return out


def _days(world: Path) -> list[date]:
    return [date.fromisoformat(d) for d in json.loads((world / "world.json").read_text(encoding="utf-8"))["dates"]]


def _copy(world: Path, dest: Path, **edits):
    shutil.copytree(world, dest)
    raw = yaml.safe_load((dest / "recon.yml").read_text(encoding="utf-8"))
    raw.update(edits)
    (dest / "recon.yml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_config(dest / "recon.yml")


def _calendar_typed_in(world: Path) -> dict:
    """The world's calendar with next year's holidays typed in, as a team does each December until chinesecalendar
    knows the year: the status then has no calendar warning, whatever today's date."""
    raw = yaml.safe_load((world / "recon.yml").read_text(encoding="utf-8"))["calendar"]
    return {**raw, "extra_holidays": [f"{_cn_known_range()[1] + 1}-01-01"]}


def test_status_names_what_needs_a_person(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(status_module, "DISK_FREE_FLOOR", 0)    # this test is not about the machine's disk
    days = _days(world)
    cfg = _copy(world, tmp_path / "w", backup={"nightly": True}, calendar=_calendar_typed_in(world))
    run_day(cfg, days[0])
    (bank,) = (tmp_path / "w" / "channels" / "bank").glob(f"*{days[1]:%Y%m%d}*")
    good = bank.read_bytes()
    bank.write_bytes(b"\x00not a statement\x00" * 10)              # day 2's bank file arrives broken
    with pytest.raises(Exception):
        run_day(cfg, days[1], report=False)
    run_day(cfg, days[3], report=False)                             # day 3 never runs; day 4 runs, unpublished
    today = days[3] + timedelta(days=30)
    found = status(cfg, today=today)
    text = "\n".join(found["attention"])
    assert f"{days[1]}: its last run ended 'failed' in " in text and "run the day again" in text
    assert [d["business_date"] for d in found["unfinished_days"]] == [days[1]]
    assert found["missing_days"] == [days[2]]
    assert f"never reconciled, between reconciled days: {days[2]}" in text
    assert f"the analyst snapshot shows {days[0]}, the warehouse {days[3]}" in text
    assert "settlement batch(es) due by" in text and "no backup of the warehouse yet (backup.nightly" in text
    assert found["breaks"]["open"] > 0 and found["breaks"]["abs_difference"]
    assert found["latest_reconciled"] == days[3]

    bank.write_bytes(good)                                          # the team works through it
    for d in days[1:3]:
        run_day(cfg, d, report=False)
    run_day(cfg, days[3])
    con = duckdb.connect(str(cfg.warehouse))
    for (b,) in con.execute("SELECT batch_id FROM settlement_batches WHERE status = 'draft' "
                            "ORDER BY settlement_date").fetchall():
        confirm_batch(con, b, "finance")
    con.close()
    make(cfg)
    found = status(cfg, today=today)
    assert found["attention"] == [], found["attention"]
    assert found["notes"] == [f"the backups ({cfg.backup_path}) are on the warehouse's disk: losing that disk loses "
                              "both; point backup_dir at another disk or copy the backups off the machine"]
    assert found["unfinished_days"] == [] and found["missing_days"] == [] and found["backups"]["count"] == 1
    conf = str(cfg.config_path)
    assert cli.main(["status", "--config", conf, "--check"]) == 0
    out = capsys.readouterr().out
    assert f"latest reconciled business date: {days[3]}" in out and "attention: nothing" in out
    assert "note: the backups (" in out
    assert cli.main(["status", "--config", conf, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latest_reconciled"] == str(days[3])


def test_status_while_a_run_writes_and_before_any_run(world, tmp_path, capsys):
    cfg = _copy(world, tmp_path / "w")
    assert cli.main(["status", "--config", str(cfg.config_path), "--check"]) == 3
    assert f"attention: no warehouse at {cfg.warehouse}: nothing has run yet" in capsys.readouterr().out
    run_day(cfg, _days(world)[0])
    with held_by_another_process(cfg.warehouse):
        found = status(cfg)
    assert found.get("busy") and any("is writing the warehouse now" in a for a in found["attention"])


def test_status_warns_of_the_calendar_a_full_disk_and_an_unrecorded_archive_folder(world, tmp_path, monkeypatch):
    cfg = _copy(world, tmp_path / "w")
    day = _days(world)[0]
    run_day(cfg, day, report=False)
    last = _cn_known_range()[1]
    december = date(last, 12, 10)
    found = status(cfg, today=december)
    assert any(f"knows the years up to {last} only, and {last + 1} begins within 31 days of {december}" in a
               for a in found["attention"]), found["attention"]
    assert not any("chinesecalendar" in a for a in status(cfg, today=date(last, 11, 1))["attention"])
    assert all(d["free"] > 0 and d["total"] >= d["free"] for d in found["disks"])
    assert {r for d in found["disks"] for r in d["folders"]} == {"warehouse", "output", "landing", "backups"}

    # a folder of rows the warehouse does not hold, which no record names: the only copy of those rows
    lost = Path(cfg.archive_path) / "channel_transactions" / "business_date=2020-01-01"
    lost.mkdir(parents=True)
    (lost / "data_0.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(status_module, "DISK_FREE_FLOOR", 2**62)   # more than any disk has
    found = status(cfg, today=day)
    text = "\n".join(found["attention"])
    assert f"archive folder {lost.resolve()}: no record names it, and the warehouse does NOT hold its rows" in text
    assert "free some room before the next night" in text
    assert found["archive"]["stray_folders"] == [str(lost.resolve())] and found["archive"]["ready"] == []
    rendered = status_module.render(found)
    assert "1 folder(s) no record names" in rendered and "disk of warehouse" in rendered


def test_status_notes_a_stage_that_ran_much_slower_than_the_nights_before(world, tmp_path):
    cfg = _copy(world, tmp_path / "w")
    days = _days(world)
    for d in days:
        run_day(cfg, d, report=False)
    assert not any(" took " in n for n in status(cfg, today=days[-1])["notes"])      # the nights' usual pace
    con = duckdb.connect(str(cfg.warehouse))
    con.execute("""UPDATE runs SET summary = json_merge_patch(summary, '{"seconds": {"match": 500}}')
                   WHERE business_date = ? AND status = 'succeeded'""", [days[-1]])
    rows = con.execute("SELECT summary->>'$.rows' FROM runs WHERE business_date = ? AND status = 'succeeded'",
                       [days[-1]]).fetchone()[0]
    con.close()
    notes = [n for n in status(cfg, today=days[-1])["notes"] if " took " in n]
    assert len(notes) == 1 and notes[0].startswith(f"match took 500 s on {days[-1]}, ") and \
        f"what the 3 nights before it give for its {int(rows):,} statement rows" in notes[0], notes
