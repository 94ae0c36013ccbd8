"""The resolution workflow end to end: `recon resolve`, the Excel round trip, `recon discrepancies`."""
from __future__ import annotations

from datetime import date

import pytest
from openpyxl import load_workbook

from recon import cli
from recon.resolution import ResolutionError, import_resolutions, resolve
from reports.excel import write_discrepancy_report
from tests.recon_world import World

D1, D2 = date(2026, 6, 1), date(2026, 6, 2)


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path, [{"name": "wechat"}])
    for no, amount in (("W1", "10.00"), ("W2", "20.00"), ("W3", "30.00"), ("W4", "40.00"), ("W5", "50.00")):
        w.pay(no, "wechat", amount, "2026-06-01 10:00:00")
    # the channel has W1 only, plus one order the platform does not know
    w.run(D1, [w.trade_file("wechat", D1, [{"order": "W1", "amount": "10.00", "at": "2026-06-01 10:00:01"},
                                           {"order": "Z9", "amount": "9.00", "at": "2026-06-01 12:00:00"}])])
    return w


def ids(w) -> dict[str, str]:
    return {k[1]: v["discrepancy_id"] for k, v in w.breaks().items()}


def test_resolve_validates_and_records_who_when_what(world):
    w = world
    i = ids(w)
    with pytest.raises(ResolutionError, match="no discrepancy with id 'Dnope'"):
        resolve(w.con, "Dnope", by="alice", note="x")
    with pytest.raises(ResolutionError, match="unknown action 'pay back'"):
        resolve(w.con, i["payment:W2"], by="alice", note="x", action="pay back")
    with pytest.raises(ResolutionError, match="needs a note"):
        resolve(w.con, i["payment:W2"], by="alice", note="  ")
    with pytest.raises(ResolutionError, match="reserved"):
        resolve(w.con, i["payment:W2"], by="system", note="x")
    row = resolve(w.con, i["payment:W2"], by="alice", note="platform fixed the order", action="Platform corrected",
                  today=D2)
    assert row == {"discrepancy_id": i["payment:W2"], "status": "resolved", "resolved_by": "alice",
                   "resolution_action": "platform_corrected", "resolution_note": "platform fixed the order",
                   "resolved_date": D2}
    assert w.audit(i["payment:W2"]) == [("alice", "platform_corrected", "open", "resolved", None, None)]
    assert w.con.execute("SELECT origin FROM discrepancy_resolutions").fetchall() == [("cli",)]


def test_the_excel_report_round_trip_applies_good_rows_and_reports_bad_ones_per_row(world, tmp_path):
    w = world
    i = ids(w)
    resolve(w.con, i["payment:W5"], by="bob", note="done earlier", today=D2)
    path = write_discrepancy_report(w.con, w.cfg, D1, tmp_path / "reports")
    wb = load_workbook(path)
    ws = wb["missing_in_channel"]
    header = [c.value for c in ws[1]]
    col = {h: header.index(h) + 1 for h in ("discrepancy_id", "action", "note")}
    assert col["discrepancy_id"] == 1
    rows = {ws.cell(r, 1).value: r for r in range(2, ws.max_row + 1) if ws.cell(r, 1).value}
    fill = {i["payment:W2"]: ("write off", "customer never paid"),        # spelled loosely: normalised
            i["payment:W3"]: ("pay back", "?"),                           # bad action
            i["payment:W5"]: ("other", "again"),                          # already resolved
            i["payment:W4"]: (None, None)}                                # left blank: ignored
    for did, (action, note) in fill.items():
        ws.cell(rows[did], col["action"]).value = action
        ws.cell(rows[did], col["note"]).value = note
    ws.cell(rows[i["payment:W4"]], 1).value = "Dunknown"                  # an id that does not exist ...
    ws.cell(rows[i["payment:W4"]], col["action"]).value = "refund_issued"  # ... with an action
    w2 = wb["missing_in_platform"]
    w2.cell(2, col["action"]).value = "channel_corrected"
    wb.save(path)

    report = import_resolutions(w.con, path, by="carol", today=D2)
    assert sorted(report.applied) == sorted([(i["payment:W2"], "write_off"), (i["payment:Z9"], "channel_corrected")])
    problems = {(p.discrepancy_id, p.message.split(" (")[0].split(" on ")[0]) for p in report.problems}
    assert problems == {(i["payment:W3"], "unknown action 'pay back'"),
                        (i["payment:W5"], f"discrepancy {i['payment:W5']} is already resolved by bob"),
                        ("Dunknown", "no discrepancy with id 'Dunknown'")}
    assert all(p.sheet == "missing_in_channel" and p.row >= 2 for p in report.problems)
    b = w.breaks()
    assert b[("missing_in_channel", "payment:W2")]["resolved_by"] == "carol"
    assert b[("missing_in_channel", "payment:W2")]["resolution_note"] == "customer never paid"
    assert b[("missing_in_channel", "payment:W3")]["status"] == "open"
    assert w.con.execute("SELECT DISTINCT origin FROM discrepancy_resolutions WHERE recorded_by = 'carol'"
                         ).fetchall() == [(f"import:{path.name}",)]
    # importing the same workbook again applies nothing new: every filled row is now resolved or invalid
    again = import_resolutions(w.con, path, by="carol", today=D2)
    assert again.applied == [] and len(again.problems) == 5


def test_a_file_that_is_not_a_report_is_refused_with_one_message(world, tmp_path):
    (tmp_path / "x.xlsx").write_bytes(b"not a workbook")
    with pytest.raises(ResolutionError, match="cannot read as an Excel workbook"):
        import_resolutions(world.con, tmp_path / "x.xlsx", by="carol")


def test_cli_resolve_list_and_import(world, tmp_path, capsys):
    w = world
    i = ids(w)
    w.con.close()
    cfg = str(w.config_file())
    assert cli.main(["discrepancies", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "5 discrepancies" in out and "payment:Z9" in out
    assert cli.main(["discrepancies", "--config", cfg, "--status", "open", "--older-than", "0"]) == 0
    assert "0 discrepancies" in capsys.readouterr().out
    assert cli.main(["resolve", i["payment:W3"], "--note", "refund sent", "--by", "dave", "--action",
                     "refund_issued", "--config", cfg]) == 0
    assert "resolved by dave" in capsys.readouterr().out
    assert cli.main(["resolve", i["payment:W3"], "--note", "x", "--by", "dave", "--config", cfg]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already resolved by dave" in err[0]
    assert cli.main(["discrepancies", "--config", cfg, "--status", "resolved", "--csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("discrepancy_id,") and len(lines) == 2 and lines[1].startswith(i["payment:W3"])
    assert cli.main(["import-resolutions", str(tmp_path / "missing.xlsx"), "--by", "x", "--config", cfg]) == 1
    assert "no such file" in capsys.readouterr().err
