"""``recon backup``: checked copies of the warehouse, the newest ``backup.keep`` kept, and a restore that
puts one back (after which rerunning the later days gives the warehouse it replaced)."""
from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest
import yaml

from recon import cli
from recon.backup import list_backups, make, restore
from recon.config import load_config
from recon.errors import UserError
from recon.generate import generate_world
from recon.pipeline import run_day
from recon.resolution import resolve
from recon.warehouse import SCHEMA_VERSION, WarehouseError, connect
from settlement.engine import confirm_batch
from tests.lock_holder import held_by_another_process

COMPARED = ("discrepancies", "matched_transactions", "settlement_items", "settlement_lines", "settlement_batches",
            "settlement_holds", "channel_transactions", "platform_orders")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Three generated days; the first two run."""
    out = tmp_path_factory.mktemp("backup-world")
    generate_world(out, orders=300, days=3, seed=11, break_rate=0.01, chunk_rows=1000)
    raw = yaml.safe_load((out / "recon.yml").read_text(encoding="utf-8"))
    raw["backup"] = {"keep": 2}
    (out / "recon.yml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    cfg = load_config(out / "recon.yml")
    for d in _days(out)[:2]:
        run_day(cfg, d, report=False)
    return out


def _days(world: Path) -> list[date]:
    return [date.fromisoformat(d) for d in json.loads((world / "world.json").read_text(encoding="utf-8"))["dates"]]


def _copy(world: Path, dest: Path):
    shutil.copytree(world, dest)
    return load_config(dest / "recon.yml")


def _state(path: Path) -> dict[str, tuple]:
    """Every table's row count and hash of every row."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = "
                                            "current_database() ORDER BY 1").fetchall()]
        return {t: con.execute(f'SELECT count(*), sum(hash(x)::HUGEINT) FROM "{t}" x').fetchone() for t in tables}
    finally:
        con.close()


def _rows(path: Path, table: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()
                if r[0] not in ("resolved_at", "created_at", "loaded_at", "updated_at", "confirmed_at", "run_id")]
        return sorted(con.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall(), key=repr)
    finally:
        con.close()


def test_backups_are_checked_copies_and_only_the_newest_are_kept(world, tmp_path, capsys):
    cfg = _copy(world, tmp_path / "w")
    state = _state(cfg.warehouse)
    made = [make(cfg) for _ in range(3)]
    assert all(m["tables"] == len(state) for m in made)
    assert made[0]["latest_reconciled"] == _days(world)[1]
    kept = list_backups(cfg)
    assert [b.path for b in kept] == [m["path"] for m in made[1:]]          # backup.keep = 2: the oldest went
    assert made[0]["removed"] == [] and made[2]["removed"] == [made[0]["path"]]
    assert all(_state(b.path) == state for b in kept)
    assert sorted(p.name for p in cfg.backup_path.iterdir()) == sorted(b.path.name for b in kept)   # no .partial
    assert cli.main(["backup", "list", "--config", str(cfg.config_path)]) == 0
    out = capsys.readouterr().out
    assert all(str(b.path) in out for b in kept)


def test_a_restore_puts_the_backup_back_and_rerunning_the_later_day_gives_what_it_replaced(world, tmp_path, capsys):
    days = _days(world)
    cfg = _copy(world, tmp_path / "w")
    taken = make(cfg)["path"]
    backed_up = _state(cfg.warehouse)
    run_day(cfg, days[2], report=False)
    after_day3 = {t: _rows(cfg.warehouse, t) for t in COMPARED}
    con = connect(cfg.warehouse)                # then finance confirms a batch and writes a break off
    batch = con.execute("SELECT min(batch_id) FROM settlement_batches WHERE status = 'draft'").fetchone()[0]
    confirm_batch(con, batch, "finance")
    (open_break,) = con.execute("SELECT min(discrepancy_id) FROM discrepancies WHERE status = 'open'").fetchone()
    resolve(con, open_break, by="finance", note="written off", action="write_off", today=days[2])
    con.close()
    conf = str(cfg.config_path)
    assert cli.main(["backup", "restore", "--config", conf, "--from", str(taken)]) == 0
    out = capsys.readouterr().out
    assert f"latest reconciled day in the backup: {days[1]}; run every later business date again" in out
    assert f"had reconciled up to {days[2]}: `recon run --config {conf} --from {days[2]} --to {days[2]}`" in out
    assert f"not in the backup (their payouts may have been sent: check with the bank before confirming them " \
           f"again): {batch}" in out
    assert "1 resolution(s) recorded in the replaced warehouse after the backup" in out
    assert _state(cfg.warehouse) == backed_up
    (previous,) = cfg.warehouse.parent.glob(cfg.warehouse.name + ".before-restore-*")
    assert f"the previous file is kept as {previous}" in out
    for t in ("matched_transactions", "settlement_items", "channel_transactions", "platform_orders"):
        assert _rows(previous, t) == after_day3[t], t
    assert not cfg.warehouse.with_name(cfg.warehouse.name + ".restoring").exists()
    run_day(cfg, days[2], report=False)
    assert {t: _rows(cfg.warehouse, t) for t in COMPARED} == after_day3


def test_a_restore_refuses_what_is_not_a_warehouse_it_can_open(world, tmp_path):
    cfg = _copy(world, tmp_path / "w")
    state = _state(cfg.warehouse)
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database\n", encoding="utf-8")
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    newer = tmp_path / "newer.duckdb"
    shutil.copyfile(cfg.warehouse, newer)
    con = duckdb.connect(str(newer))
    con.execute("INSERT INTO schema_version (version, name) VALUES (?, 'from the future')", [SCHEMA_VERSION + 1])
    con.close()
    for src, message in ((tmp_path / "missing.duckdb", "no such file"), (text, "not a DuckDB database"),
                         (empty, "not a payrecon warehouse"),
                         (newer, f"schema version {SCHEMA_VERSION + 1} is newer than this code")):
        with pytest.raises(UserError, match=message):
            restore(cfg, src)
    assert _state(cfg.warehouse) == state


def test_a_warehouse_in_use_is_neither_backed_up_nor_replaced(world, tmp_path):
    cfg = _copy(world, tmp_path / "w")
    taken = make(cfg)["path"]
    with held_by_another_process(cfg.warehouse):
        with pytest.raises(WarehouseError, match="cannot open warehouse"):
            make(cfg)
        with pytest.raises(WarehouseError, match="is in use"):
            restore(cfg, taken)
    assert [b.path for b in list_backups(cfg)] == [taken]
    assert sorted(p.name for p in cfg.warehouse.parent.iterdir() if p.name.startswith(cfg.warehouse.name)) \
        == [cfg.warehouse.name]


def test_a_broken_warehouse_file_is_replaced_by_the_backup(world, tmp_path):
    cfg = _copy(world, tmp_path / "w")
    taken = make(cfg)["path"]
    state = _state(cfg.warehouse)
    cfg.warehouse.write_bytes(b"\0" * 8192)                  # the disk lost it
    messages = []
    restore(cfg, taken, progress=messages.append)
    assert _state(cfg.warehouse) == state
    assert any("the current warehouse does not open" in m for m in messages), messages
    restore(cfg, taken)                                        # a second restore keeps both replaced files
    assert len(list(cfg.warehouse.parent.glob(cfg.warehouse.name + ".before-restore-*"))) == 2
    cfg.warehouse.unlink()
    restore(cfg, taken)                                        # no file at all: simply put in place
    assert _state(cfg.warehouse) == state
    con = connect(cfg.warehouse)
    con.close()
