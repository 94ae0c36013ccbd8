"""Loading integrity: same file is a no-op, a different file restates, wrong day refused, quarantine policy."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from loaders.base import FileError
from recon.config import load_config
from recon.demo import SAMPLES, write_demo_config
from recon.pipeline import fetch_day, process_day, run_day
from recon.warehouse import connect
from tests.conftest import DEMO_DATE

WECHAT = SAMPLES / "channels" / "wechat" / "tradebill_all_20260605.csv"


def config_with_own_wechat_bill(tmp_path: Path, policy: str = "fail"):
    """The demo config, but the WeChat trade bill is read from a folder the test controls."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    shutil.copy(WECHAT, folder / WECHAT.name)
    path = write_demo_config(tmp_path / "out")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    wechat = raw["channels"][0]
    wechat["quarantine_policy"] = policy
    wechat["statements"][0]["source"]["path"] = str(folder / "tradebill_all_{yyyymmdd}.csv")
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return load_config(path), folder / WECHAT.name


def rows(cfg, sql):
    con = connect(cfg.warehouse, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_same_file_twice_is_a_no_op_and_a_new_file_restates_the_day(tmp_path):
    cfg, bill = config_with_own_wechat_bill(tmp_path)
    first = run_day(cfg, DEMO_DATE)
    again = process_day(cfg, DEMO_DATE)
    assert all(f.skipped for f in again.files) and not any(f.skipped for f in first.files)
    # The channel restates: P005 now carries the amount the platform has, fee and totals adjusted.
    edit(bill, "`121.00,`0.00,`0,`0,`0.00,`0.00,`,`,`demo goods,`,`0.73000,`0.60%,`121.00",
         "`120.00,`0.00,`0,`0,`0.00,`0.00,`,`,`demo goods,`,`0.72000,`0.60%,`120.00")
    edit(bill, "`9,`941.00,`20.00,`0.00,`5.73000,`1041.00", "`9,`940.00,`20.00,`0.00,`5.72000,`1040.00")
    restated = run_day(cfg, DEMO_DATE)
    wechat = next(f for f in restated.files if f.channel == "wechat" and f.kind == "trade")
    assert wechat.restated is not None and not wechat.skipped
    assert rows(cfg, "SELECT status, count(*) FROM loaded_files WHERE channel = 'wechat' AND kind = 'trade' "
                     "GROUP BY 1 ORDER BY 1") == [("active", 1), ("superseded", 1)]
    assert rows(cfg, "SELECT count(*) FROM channel_transactions WHERE channel = 'wechat'") == [(9,)]
    types = {t for (t,) in rows(cfg, "SELECT type FROM discrepancies WHERE match_key = 'payment:P005' "
                                     "AND status IN ('open', 'pending')")}
    assert "amount_mismatch" not in types


def test_a_file_for_another_day_is_refused(tmp_path):
    cfg, _ = config_with_own_wechat_bill(tmp_path)
    alipay = next((SAMPLES / "channels" / "alipay").glob("*_20260605_业务明细.csv"))
    other_day = tmp_path / "alipay" / alipay.name.replace("20260605", "20260606")
    other_day.parent.mkdir()
    shutil.copy(alipay, other_day)
    raw = yaml.safe_load(Path(cfg.config_path).read_text(encoding="utf-8"))
    raw["channels"][1]["statements"][0]["source"]["path"] = str(other_day.parent / "*_{yyyymmdd}_业务明细.csv")
    Path(cfg.config_path).write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    cfg = load_config(cfg.config_path)
    day6 = DEMO_DATE.replace(day=6)
    fetch_day(cfg, day6, channels=["alipay"])
    with pytest.raises(FileError, match=r"covers 2026-06-05 to 2026-06-06, not the business date 2026-06-06"):
        process_day(cfg, day6)
    assert rows(cfg, "SELECT count(*) FROM loaded_files") == [(0,)]


BAD_AMOUNT = ("`100.00,`0.00,`0,`0,`0.00,`0.00,`,`,`demo goods,`,`0.60000,`0.60%,`100.00",
              "`1O0.00,`0.00,`0,`0,`0.00,`0.00,`,`,`demo goods,`,`0.60000,`0.60%,`100.00")


def test_a_bad_row_under_policy_fail_fails_the_run_but_its_quarantine_is_kept(tmp_path):
    cfg, bill = config_with_own_wechat_bill(tmp_path, policy="fail")
    edit(bill, *BAD_AMOUNT)
    fetch_day(cfg, DEMO_DATE)
    with pytest.raises(FileError) as err:
        process_day(cfg, DEMO_DATE)
    assert "tradebill_all_20260605.csv, line 2, field 应结订单金额" in str(err.value)
    assert rows(cfg, "SELECT count(*) FROM channel_transactions") == [(0,)]
    assert rows(cfg, "SELECT line_no, field, raw_text LIKE '%1O0.00%' FROM quarantine") == [(2, "应结订单金额", True)]


def test_a_bad_row_under_policy_warn_loads_the_rest_and_flags_the_file(tmp_path):
    cfg, bill = config_with_own_wechat_bill(tmp_path, policy="warn")
    edit(bill, *BAD_AMOUNT)
    result = run_day(cfg, DEMO_DATE)
    wechat = next(f for f in result.files if f.channel == "wechat" and f.kind == "trade")
    assert (wechat.rows, wechat.quarantined, wechat.footer_ok) == (8, 1, False)
    assert rows(cfg, "SELECT count(*) FROM quarantine") == [(1,)]
    # P001's payment could not be loaded, so the platform's P001 is missing in the channel today.
    assert ("missing_in_channel",) in rows(cfg, "SELECT type FROM discrepancies WHERE match_key = 'payment:P001'")
