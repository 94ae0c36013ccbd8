"""The split run (load committed first, large channels reconciled in key-hash buckets, then the rest
reconciled, the buckets merged and the day settled) gives exactly the unsplit run's warehouse, day after day:
carry-over, day-cut breaks, a bank batch break carried and cleared, withdrawn breaks and settlement included.
And the merge refuses stale buckets."""
from __future__ import annotations

import json
import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from recon import cli
from recon.buckets import BucketError, bucket_dir, reconcile_bucket
from recon.config import load_config
from recon.generate import generate_world
from recon.pipeline import fetch_day, load_day, process_day, run_day
from recon.warehouse import connect

ORDERS, DAYS, SEED, RATE = 1200, 3, 5, 0.01

#: every table the reconciliation and settlement write; compared on every column but wall-clock timestamps
#: (TIMESTAMP WITH TIME ZONE: when a row was written) and ids that a sequence numbers in write order
TABLES = ("discrepancies", "matched_transactions", "discrepancy_members", "discrepancy_resolutions",
          "settlement_items", "settlement_lines", "settlement_holds", "settlement_batches",
          "unmatched_platform_rows", "unmatched_channel_rows")
SEQUENCE_IDS = {"resolution_id"}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("split-world")
    generate_world(out, orders=ORDERS, days=DAYS, seed=SEED, break_rate=RATE, chunk_rows=1000)
    return out


def _copy(world: Path, dest: Path):
    shutil.copytree(world, dest)
    # The bank's first lump sum (wechat's batch) 10.00 short on the second day and 10.00 long on the third:
    # a batch break carried one day, then cleared, on a channel the split runs reconcile in buckets.
    for day, delta in (("20260602", Decimal("-10.00")), ("20260603", Decimal("10.00"))):
        _shift_first_credit(dest / "channels" / "bank" / f"bank_statement_{day}.csv", delta)
    cfg = load_config(dest / "recon.yml")
    dates = [date.fromisoformat(d) for d in json.loads((dest / "world.json").read_text(encoding="utf-8"))["dates"]]
    return cfg, dates


def _shift_first_credit(path: Path, delta: Decimal) -> None:
    lines = path.read_bytes().decode("gbk").split("\n")
    first = next(i for i, ln in enumerate(lines) if ln[:4].isdigit())
    for i in range(first, len(lines)):
        f = lines[i].split(",")
        if len(f) > 7 and f[0][:4].isdigit():
            if i == first:
                f[6] = str(Decimal(f[6]) + delta)          # the credit
            f[7] = str(Decimal(f[7]) + delta)              # the running balance after it
            lines[i] = ",".join(f)
    path.write_bytes("\n".join(lines).encode("gbk"))


def state(cfg) -> dict[str, list]:
    root = str(Path(cfg.config_path).parent)          # file paths inside sources and notes: the copy's folder
    con = connect(cfg.warehouse, read_only=True)
    try:
        out = {}
        for table in TABLES:
            cols = [c for c, t, *_ in con.execute(f"DESCRIBE {table}").fetchall()
                    if t != "TIMESTAMP WITH TIME ZONE" and c not in SEQUENCE_IDS]
            rows = con.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
            out[table] = sorted((tuple(v.replace(root, "<world>") if isinstance(v, str) else v for v in r)
                                 for r in rows), key=repr)
        return out
    finally:
        con.close()


def splittable(cfg) -> dict[str, int]:
    """Two of the generated world's three channels, in 3 and 2 buckets (alipay stays whole)."""
    return {"wechat": 3, "unionpay": 2}


def test_split_days_equal_the_unsplit_days(world, tmp_path):
    cfg, dates = _copy(world, tmp_path / "unsplit")
    for d in dates:
        run_day(cfg, d)
    unsplit = state(cfg)
    assert unsplit["discrepancies"] and unsplit["matched_transactions"] and unsplit["settlement_items"]
    assert len({r[1] for r in unsplit["discrepancies"]}) > 1          # breaks on several business dates
    # the bank credits every channel's batch in one sum: the split channels' batch checks (whole days, in
    # the main pass) and their keyed checks (in buckets) both have something to find
    con = connect(cfg.warehouse, read_only=True)
    batch = con.execute("SELECT channel, type, status FROM discrepancies WHERE match_key LIKE 'batch:%'").fetchall()
    members = con.execute("SELECT count(*) FROM discrepancy_members WHERE channel = 'wechat'").fetchone()[0]
    payers = {c for (c,) in con.execute("SELECT payer_channel FROM bank_statement_lines WHERE direction = 'in'")
              .fetchall()}
    con.close()
    assert payers >= {"wechat", "unionpay", "alipay"}, payers
    assert batch == [("wechat", "short", "auto_resolved")] and members > 0, (batch, members)

    cfg2, _ = _copy(world, tmp_path / "split")
    split = splittable(cfg2)
    for d in dates:
        result = run_day(cfg2, d, split=split)
        assert result.files and result.matched and result.seconds.keys() >= {"fetch", "load", "match", "settle"}
        assert result.seconds["match"] > result.seconds["buckets"] > 0      # the buckets are part of matching
    assert state(cfg2) == unsplit
    # every bucket of every day left its counts; its Parquet slices were removed once merged and committed
    for d in dates:
        for ch, n in split.items():
            base = bucket_dir(cfg2) / f"business_date={d}" / f"channel={ch}"
            assert sorted(p.name for p in base.iterdir()) == ["summary"]
            assert sorted(p.name for p in (base / "summary").iterdir()) == [f"bucket={b}.json" for b in range(n)]


def test_every_channel_split_equals_the_unsplit_run(world, tmp_path):
    """No channel left for the main pass: it runs only the batch checks, the buckets do the rest."""
    cfg, dates = _copy(world, tmp_path / "whole")
    cfg2, _ = _copy(world, tmp_path / "all-split")
    for d in dates[:2]:
        run_day(cfg, d)
        run_day(cfg2, d, split={"wechat": 2, "alipay": 2, "unionpay": 1})
    assert state(cfg2) == state(cfg)


def test_the_split_run_reports_the_unsplit_counts(world, tmp_path):
    cfg, dates = _copy(world, tmp_path / "a")
    whole = run_day(cfg, dates[0])
    cfg2, _ = _copy(world, tmp_path / "b")
    part = run_day(cfg2, dates[0], split=splittable(cfg2))
    assert (part.matched, part.breaks, part.platform_rows) == (whole.matched, whole.breaks, whole.platform_rows)
    assert [(f.path.replace("/b/", "/a/"), f.rows) for f in part.files] == [(f.path, f.rows) for f in whole.files]


def test_a_bucket_that_read_an_earlier_load_is_refused(world, tmp_path):
    cfg, dates = _copy(world, tmp_path / "stale")
    d = dates[0]
    files = fetch_day(cfg, d)
    load_day(cfg, d, files)
    reconcile_bucket(cfg, d, "wechat", 0, 1, bucket_dir(cfg))
    again = load_day(cfg, d, files)                   # the day loaded again after the bucket ran
    with pytest.raises(BucketError, match=f"holds the data of run {again.run_id}.*bucket 0.*reconcile the buckets"):
        process_day(cfg, d, split={"wechat": 1}, bucket_out=bucket_dir(cfg))
    con = connect(cfg.warehouse, read_only=True)
    statuses = con.execute("SELECT status, stage FROM runs ORDER BY started_at").fetchall()
    assert con.execute("SELECT count(*) FROM matched_transactions").fetchone()[0] == 0   # rolled back
    con.close()
    assert statuses == [("loaded", "load"), ("loaded", "load"), ("failed", "match")]
    reconcile_bucket(cfg, d, "wechat", 0, 1, bucket_dir(cfg))       # redone: now it merges
    assert process_day(cfg, d, split={"wechat": 1}, bucket_out=bucket_dir(cfg)).matched > 0


def test_a_bucket_that_predates_a_persons_resolution_is_refused(world, tmp_path):
    """A break resolved between the buckets and the merge: merging the buckets' older copy would undo it."""
    from recon.resolution import resolve

    cfg, dates = _copy(world, tmp_path / "resolved")
    run_day(cfg, dates[0])
    d = dates[1]
    files = fetch_day(cfg, d)
    load_day(cfg, d, files)
    reconcile_bucket(cfg, d, "wechat", 0, 1, bucket_dir(cfg))
    con = connect(cfg.warehouse)
    (bid,) = con.execute("SELECT discrepancy_id FROM discrepancies WHERE channel = 'wechat' AND status = 'open' "
                         "AND flow = 'information' ORDER BY 1 LIMIT 1").fetchone()
    resolve(con, bid, by="ana", note="refunded by hand", action="refund_issued", today=d)
    con.close()
    with pytest.raises(BucketError, match="resolved meanwhile.*reconcile the buckets again"):
        process_day(cfg, d, split={"wechat": 1}, bucket_out=bucket_dir(cfg))
    reconcile_bucket(cfg, d, "wechat", 0, 1, bucket_dir(cfg))
    process_day(cfg, d, split={"wechat": 1}, bucket_out=bucket_dir(cfg))
    con = connect(cfg.warehouse, read_only=True)
    assert con.execute("SELECT status, resolved_by FROM discrepancies WHERE discrepancy_id = ?", [bid]).fetchone() \
        == ("resolved", "ana")
    con.close()


def _carried_world(root: Path):
    """Day 1: W5 paid, not in the channel's file (a missing_in_channel break). Day 2: the channel prints W5 with
    its own id only (no merchant order number): only the carried platform row maps that id to W5."""
    from tests.recon_world import World

    w = World(root, [{"name": "wechat"}])
    for i in range(12):
        w.pay(f"A{i}", "wechat", f"{10 + i}.00", "2026-06-01 09:00:00")
        w.pay(f"B{i}", "wechat", f"{30 + i}.00", "2026-06-02 09:00:00")
    w.pay("W5", "wechat", "55.00", "2026-06-01 10:00:00")
    d1 = [w.trade_file("wechat", date(2026, 6, 1),
                       [{"order": f"A{i}", "amount": f"{10 + i}.00", "at": "2026-06-01 09:00:01"} for i in range(12)])]
    d2 = [w.trade_file("wechat", date(2026, 6, 2),
                       [{"order": f"B{i}", "amount": f"{30 + i}.00", "at": "2026-06-02 09:00:01"} for i in range(12)]
                       + [{"order": "W5", "with_order": False, "amount": "55.00", "at": "2026-06-02 09:30:00"}])]
    w.run(date(2026, 6, 1), d1)
    return w, d2


def _split_run(w, d: date, files, buckets: int, out: Path) -> None:
    """The World's day as a split run: load and commit, the buckets read-only, then the merge."""
    from loaders.internal import load_platform
    from loaders.load import load_file, parse_fetched
    from recon.buckets import apply_buckets
    from recon.matching import reconcile_day
    from recon.warehouse import transaction

    w._platform_db()
    with transaction(w.con):
        for f in files:
            load_file(w.con, f, parse_fetched(f, {}), d, "fail")
        load_platform(w.con, w.cfg, d)
    w.con.close()
    for b in range(buckets):
        reconcile_bucket(w.cfg, d, "wechat", b, buckets, out)
    w.con = connect(w.cfg.warehouse)
    with transaction(w.con):
        reconcile_day(w.con, w.cfg, d, channels=[], batch_only=["wechat"])
        apply_buckets(w.con, d, "wechat", buckets, out)


def _same_folder(breaks):          # two worlds differ only in their folder's name
    return {k: {c: v.replace("/split/", "/whole/") if isinstance(v, str) else v for c, v in r.items()}
            for k, r in breaks.items()}


def test_a_channel_id_mapped_only_by_a_carried_order_pairs_inside_its_bucket(tmp_path):
    d = date(2026, 6, 2)
    whole, files = _carried_world(tmp_path / "whole")
    whole.run(d, files)
    expected = whole.breaks()
    assert expected[("missing_in_channel", "payment:W5")]["status"] == "auto_resolved"
    matched = whole.matched(d)
    assert "payment:W5" in matched

    w, files = _carried_world(tmp_path / "split")
    _split_run(w, d, files, 3, tmp_path / "buckets")
    assert _same_folder(w.breaks()) == _same_folder(expected)
    assert w.matched(d) == matched


def test_a_break_the_rerun_no_longer_finds_is_withdrawn_by_the_merge(tmp_path):
    """Day 1 reconciled with a wrong amount on the channel's side; the channel restates the file and day 1 is
    run again: the amount break is withdrawn (deleted, audited), split as unsplit."""
    from tests.recon_world import World

    d = date(2026, 6, 1)
    worlds = {}
    for name in ("whole", "split"):
        w = World(tmp_path / name, [{"name": "wechat"}])
        for i in range(8):
            w.pay(f"A{i}", "wechat", f"{10 + i}.00", "2026-06-01 09:00:00")
        rows = [{"order": f"A{i}", "amount": f"{10 + i}.00", "at": "2026-06-01 09:00:01"} for i in range(8)]
        wrong = [dict(r, amount="99.00") if r["order"] == "A3" else r for r in rows]
        if name == "whole":
            w.run(d, [w.trade_file("wechat", d, wrong)])
            assert ("amount_mismatch", "payment:A3") in w.breaks()
            w.run(d, [w.trade_file("wechat", d, rows)])
        else:
            _split_run(w, d, [w.trade_file("wechat", d, wrong)], 2, tmp_path / "b1")
            assert ("amount_mismatch", "payment:A3") in w.breaks()
            _split_run(w, d, [w.trade_file("wechat", d, rows)], 2, tmp_path / "b2")
        worlds[name] = w
    assert worlds["split"].breaks() == {} == worlds["whole"].breaks()
    for w in worlds.values():
        (bid,) = w.con.execute("SELECT DISTINCT discrepancy_id FROM discrepancy_resolutions").fetchone()
        assert [a[1] for a in w.audit(bid)] == ["withdrawn"]
    assert worlds["split"].matched(d) == worlds["whole"].matched(d)


def test_cli_run_split_and_the_bucket_steps(world, tmp_path, capsys):
    cfg, dates = _copy(world, tmp_path / "cli")
    config = str(tmp_path / "cli" / "recon.yml")
    d = dates[0].isoformat()
    assert cli.main(["run", "--config", config, "--date", d, "--split", "wechat=2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"== {d}:" in printed and " 0 files" not in printed
    whole = state(cfg)
    # the recon_buckets DAG's steps by hand: wechat's day again, in 3 buckets, merged
    for b in range(3):
        assert cli.main(["buckets", "reconcile", "--config", config, "--date", d, "--channel", "wechat",
                         "--bucket", str(b), "--of", "3"]) == 0
    assert cli.main(["buckets", "merge", "--config", config, "--date", d, "--channel", "wechat", "--of", "3"]) == 0
    merged = json.loads(capsys.readouterr().out.split("\n}\n")[-2] + "\n}")
    assert merged["rows"]["matched_transactions"] > 0 and merged["matched"] > 0
    assert state(cfg) == whole
    for bad in (["--split", "wechat=0"], ["--split", "nosuch=2"]):
        code = None
        try:
            code = cli.main(["run", "--config", config, "--date", d, *bad])
        except SystemExit as exc:                      # argparse refuses N < 1 itself
            code = exc.code
        assert code not in (0, None)
    err = capsys.readouterr().err
    assert "CHANNEL=N" in err and "no channel named 'nosuch'" in err
    # a merge again (its slices were removed when it committed) and a bucket out of range: one clear line each
    assert cli.main(["buckets", "merge", "--config", config, "--date", d, "--channel", "wechat", "--of", "3"]) == 1
    assert cli.main(["buckets", "reconcile", "--config", config, "--date", d, "--channel", "wechat",
                     "--bucket", "3", "--of", "3"]) == 1
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert "recon buckets: error: cannot merge channel wechat for " + d + ": bucket files missing" in err
    assert "recon buckets: error: bucket 3 of 3: expected at least 1 bucket and a bucket number in 0..2" in err
