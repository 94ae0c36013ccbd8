"""The Excel workbooks: re-opened with openpyxl and checked against the warehouse."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from openpyxl import load_workbook

from recon.config import parse_config
from recon.warehouse import connect, transaction
from reports.excel import (
    DETAIL_COLS,
    DISCREPANCY_TYPES,
    write_discrepancy_report,
    write_settlement_report,
)

D = date(2026, 6, 5)

HOSTILE = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+1", "-2+3", "@SUM(A1:A9)", "\t=1+2", "\r=3+4",
           "=cmd|' /C calc'!A0"]


def cfg_dict(tmp: Path) -> dict:
    """The reports tests' settings, as a config file would hold them."""
    return {
        "warehouse": str(tmp / "wh.duckdb"), "output_dir": str(tmp / "out"), "landing_dir": str(tmp / "landing"),
        "internal_source": {"url": "sqlite://"},
        "channels": [
            {"name": "wechat", "statements": [{"kind": "trade", "format": "wechat_trade",
                                               "source": {"type": "folder", "path": "x"}}]},
            {"name": "alipay", "statements": [{"kind": "trade", "format": "alipay_trade",
                                               "source": {"type": "folder", "path": "x"}}]},
        ],
        "merchants": [{"id": "M001", "name": "Acme", "bank_account": "6222020200112233445",
                       "bank_name": "ICBC"}],
    }


def make_cfg(tmp: Path):
    return parse_config(cfg_dict(tmp))


def seed_day(con: duckdb.DuckDBPyConnection, day: date, *, hostile: bool = True, n_extra: int = 0) -> None:
    """One business day's worth of warehouse rows, written like the pipeline does (one transaction)."""
    ds = day.isoformat()
    with transaction(con):
        con.execute("INSERT INTO runs (run_id, business_date, started_at, finished_at, status) "
                    "VALUES (?, ?, now(), now(), 'succeeded')", [f"run-{ds}", day])
        for ch, ok, gross in (("wechat", True, "1000.00"), ("alipay", False, "2500.50")):
            con.execute("""INSERT INTO loaded_files (file_id, channel, business_date, kind, format, path, size_bytes,
                row_count, quarantined_count, gross_total, fee_total, net_total, declared_rows, declared_amount,
                footer_ok, footer_message, status, loaded_at)
                VALUES (?, ?, ?, 'trade', ?, ?, 100, 3, 1, ?, 6.00, ?::DECIMAL(18,2) - 6, 3, ?, ?, ?, 'active',
                        now())""",
                        [f"{ch}-{ds}", ch, day, f"{ch}_trade", f"/landing/{ch}/{ds}/=bill.csv", gross, gross,
                         gross, ok, None if ok else "declared 4 rows, found 3"])
            con.execute("""INSERT INTO channel_transactions (business_date, channel, file_id, line_no, txn_type,
                channel_txn_id, merchant_order_no, status, currency, amount, fee, net, card_no_masked, description)
                SELECT ?, ?, ?, i, 'payment', 'T' || i, 'O' || i, 'success', 'CNY', 10.00 * i, 0.06, 10.00 * i - 0.06,
                       '622202******1234', 'goods ' || i FROM range(1, 4) r(i)""", [day, ch, f"{ch}-{ds}"])
        rows = [
            # type, channel, platform, channel amount, status, detail
            ("missing_in_channel", "wechat", "100.00", None, "open", "no statement row"),
            ("missing_in_platform", "alipay", None, "55.50", "pending", "card 6222 0212 3456 7890 123 paid"),
            ("status_mismatch", "wechat", "20.00", "20.00", "open", "platform success, channel refunded"),
            ("amount_mismatch", "alipay", "300.00", "299.99", "open", "customer 13812345678 a@example.com"),
            ("amount_mismatch", "wechat", "10.00", "10.50", "resolved", "ID 110101199003071234"),
            ("fee_mismatch", "wechat", "0.60", "0.66", "auto_resolved", "fee rate"),
            ("currency_mismatch", "alipay", "12.00", "12.00", "open", "USD vs CNY"),
            ("duplicate", "wechat", None, "8.00", "open", "twice in statement"),
            ("long", "wechat", "1000.00", "1000.30", "open", "funds over"),
            ("short", "alipay", "2500.50", "2400.50", "open", "funds under"),
        ]
        for i, (typ, ch, pa, ca, status, detail) in enumerate(rows):
            text = HOSTILE[i % len(HOSTILE)] if hostile else f"K{i}"
            con.execute("""INSERT INTO discrepancies (discrepancy_id, business_date, channel, flow, type, match_key,
                platform_amount, channel_amount, difference, currency, status, first_seen_date, last_seen_date,
                platform_source, channel_source, detail, merchant_id, order_no)
                VALUES (?, ?, ?, ?, ?, ?, ?::DECIMAL(18,2), ?::DECIMAL(18,2),
                        coalesce(?::DECIMAL(18,2), 0) - coalesce(?::DECIMAL(18,2), 0), 'CNY', ?, ?, ?,
                        'payment_orders:' || ?, ?, ?, 'M001', ?)""",
                        [f"D-{ds}-{i:03}", day, ch, "funds" if typ in ("long", "short") else "information", typ,
                         text, pa, ca, ca, pa, status, day, day, i, f"/landing/{ch}.csv:{i + 2}",
                         (text + " " + detail) if hostile else detail, text])
        if n_extra:
            con.execute("""INSERT INTO discrepancies (discrepancy_id, business_date, channel, flow, type, match_key,
                platform_amount, channel_amount, difference, currency, status, first_seen_date, last_seen_date)
                SELECT 'X-' || ? || '-' || lpad(i::VARCHAR, 6, '0'), ?, 'wechat', 'information', 'amount_mismatch',
                       'k' || i, 1.00, 1.01, 0.01, 'CNY', 'open', ?, ?
                FROM range(?) r(i)""", [ds, day, day, day, n_extra])
        con.execute("""INSERT INTO quarantine (business_date, channel, file_id, path, line_no, field, reason, raw_text,
            quarantined_at) VALUES (?, 'alipay', ?, '/landing/alipay.csv', 7, 'amount', 'not a number: ''=1+1''',
            ?, now())""", [day, f"alipay-{ds}", "=1+1,@SUM(A1),card 4111111111111111" if hostile else "x,y"])


def seed_carry_over(con: duckdb.DuckDBPyConnection, day: date) -> None:
    with transaction(con):
        for age, status in ((2, "open"), (5, "pending"), (12, "open"), (40, "open"), (3, "resolved")):
            first = day - timedelta(days=age)
            con.execute("""INSERT INTO discrepancies (discrepancy_id, business_date, channel, flow, type, match_key,
                platform_amount, channel_amount, difference, currency, status, first_seen_date, last_seen_date)
                VALUES (?, ?, 'wechat', 'information', 'missing_in_platform', ?, NULL, 5.00, 5.00, 'CNY', ?, ?, ?)""",
                        [f"C-{age}", first, f"carry-{age}", status, first, day])


def seed_settlement(con: duckdb.DuckDBPyConnection, day: date) -> str:
    batch = f"B{day:%Y%m%d}"
    with transaction(con):
        con.execute("INSERT INTO settlement_batches (batch_id, settlement_date, status, created_at) "
                    "VALUES (?, ?, 'draft', ?)",
                    [batch, day + timedelta(days=1), datetime(2026, 6, 6, 2, tzinfo=timezone.utc)])
        con.execute("""INSERT INTO settlement_lines (batch_id, merchant_id, currency, trade_count, gross, refunds, fees,
            adjustments, net, payout, carried_forward) VALUES
            (?, 'M001', 'CNY', 3, 60.00, 0.00, 0.36, 0.00, 59.64, 59.64, 0.00),
            (?, '=M002', 'CNY', 1, 5.00, 0.00, 0.03, 0.00, 4.97, 0.00, 4.97)""", [batch, batch])
        con.execute("""INSERT INTO settlement_items (batch_id, merchant_id, currency, trade_date, channel, txn_type,
            order_no, amount, fee, net) SELECT ?, 'M001', 'CNY', ?, 'wechat', 'payment', 'O' || i, 20.00, 0.12, 19.88
            FROM range(3) r(i)""", [batch, day])
    return batch


@pytest.fixture
def world(tmp_path: Path):
    cfg = make_cfg(tmp_path)
    con = connect(cfg.warehouse)
    seed_day(con, D)
    seed_carry_over(con, D)
    yield cfg, con
    con.close()


def _detail_rows(wb, title: str) -> list[tuple]:
    return [r for r in wb[title].iter_rows(min_row=2, values_only=True) if r and r[0] is not None
            and not str(r[0]).startswith(("Only the first", "No "))]


def test_sheets_formats_frozen_filters_and_resolution_columns(world, tmp_path):
    cfg, con = world
    path = write_discrepancy_report(con, cfg, D, tmp_path / "rep")
    assert path == tmp_path / "rep" / "recon_report_2026-06-05.xlsx"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    wb = load_workbook(path)
    assert wb.sheetnames == ["Summary", *DISCREPANCY_TYPES, "carry_over", "quarantine"]
    for title in [*DISCREPANCY_TYPES, "carry_over"]:
        ws = wb[title]
        header = [c.value for c in ws[1]]
        base = [c.name for c in DETAIL_COLS]
        assert header[:len(base) - 2] == base[:-2]
        assert header[0] == "discrepancy_id" and header[-2:] == ["action", "note"]
        assert ws.freeze_panes == "B2"
        assert ws.auto_filter.ref.startswith("A1:") and ws.auto_filter.ref[3] >= "W"
        assert ws.column_dimensions["A"].width >= 20
        for row in ws.iter_rows(min_row=2):
            if row[0].value is None or str(row[0].value).startswith("No "):
                continue
            by = {h: c for h, c in zip(header, row)}
            assert by["action"].value is None and by["note"].value is None
            for name in ("platform_amount", "channel_amount", "difference"):
                if by[name].value is not None:
                    assert by[name].number_format == "#,##0.00"
                    assert by[name].data_type == "n"
            assert by["business_date"].is_date and by["business_date"].number_format == "yyyy-mm-dd"
            assert by["currency"].value == "CNY"
            ls = by["long_short"].value
            if ls in ("long", "short"):
                colour = by["difference"].fill.fgColor.rgb
                assert colour.endswith("E2EFDA" if ls == "long" else "FCE4D6")
    # the carry-over sheet: only open/pending breaks from before D, with their age
    carry = {r[0]: r for r in _detail_rows(wb, "carry_over")}
    assert set(carry) == {"C-2", "C-5", "C-12", "C-40"}
    age_idx = [c.name for c in DETAIL_COLS].index("age_days")
    assert {k: v[age_idx] for k, v in carry.items()} == {"C-2": 2, "C-5": 5, "C-12": 12, "C-40": 40}
    assert len(wb["Summary"]._charts) == 1


def test_totals_equal_the_warehouse(world, tmp_path):
    cfg, con = world
    wb = load_workbook(write_discrepancy_report(con, cfg, D, tmp_path))
    header = [c.name for c in DETAIL_COLS]
    diff_sum, count = Decimal(0), 0
    for t in DISCREPANCY_TYPES:
        for r in _detail_rows(wb, t):
            count += 1
            assert r[header.index("type")] == t
            diff_sum += Decimal(str(r[header.index("difference")] or 0))
    want_count, want_sum = con.execute(
        "SELECT count(*), sum(difference) FROM discrepancies WHERE business_date = ?", [D]).fetchone()
    assert count == want_count and diff_sum == want_sum
    # Summary: the TOTAL row of the channel x type x status table, and the per-channel file totals
    rows = list(wb["Summary"].iter_rows(values_only=True))
    total = next(r for r in rows if r[0] == "TOTAL" and r[4] == "CNY")
    assert total[5] == want_count
    assert Decimal(str(total[8])) == want_sum
    want_abs = con.execute("SELECT sum(abs(difference)) FROM discrepancies WHERE business_date = ?", [D]).fetchone()[0]
    assert Decimal(str(total[9])) == want_abs
    long_total, short_total = con.execute("""
        SELECT sum(difference) FILTER (WHERE difference > 0), sum(difference) FILTER (WHERE difference < 0)
        FROM discrepancies WHERE business_date = ?""", [D]).fetchone()
    ls_total = [r for r in rows if r[0] == "TOTAL" and r[2] == "CNY"]
    assert ls_total and Decimal(str(ls_total[0][4])) == long_total and Decimal(str(ls_total[0][6])) == short_total
    file_totals = {r[0]: r for r in rows if r[0] in ("wechat", "alipay") and isinstance(r[1], int) and r[7] == "CNY"}
    for ch, gross in con.execute("SELECT channel, sum(gross_total) FROM loaded_files WHERE business_date = ? "
                                 "GROUP BY channel", [D]).fetchall():
        assert Decimal(str(file_totals[ch][4])) == gross
    # carried-over by age bucket: 4 open/pending breaks, one per bucket except 0-3 = C-2
    buckets = {r[2]: r[3] for r in rows if r[0] == "wechat" and isinstance(r[2], str) and r[2].endswith("days")}
    assert buckets == {"0-3 days": 1, "4-7 days": 1, "8-14 days": 1, "31+ days": 1}


def test_no_cell_is_a_formula(world, tmp_path):
    cfg, con = world
    batch = seed_settlement(con, D)
    for path in (write_discrepancy_report(con, cfg, D, tmp_path), write_settlement_report(con, cfg, batch, tmp_path)):
        wb = load_workbook(path)
        for ws in wb.worksheets:
            for row in ws.iter_rows():
                for c in row:
                    assert c.data_type != "f", f"{path.name} {ws.title}!{c.coordinate} is a formula: {c.value!r}"


def test_formula_injection_is_written_as_quoted_text(world, tmp_path):
    cfg, con = world
    path = write_discrepancy_report(con, cfg, D, tmp_path)
    wb = load_workbook(path)
    seen = set()
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for c in row:
                if isinstance(c.value, str) and c.value[:1] in ("=", "+", "-", "@", "\t", "\r", "\n"):
                    assert c.data_type == "s", f"{ws.title}!{c.coordinate}"
                    assert c.quotePrefix, f"{ws.title}!{c.coordinate} has no quote prefix: {c.value!r}"
                    seen.add(c.value[:1])
    # every hostile prefix reached the workbook (a CR may be read back as a line feed)
    assert {"=", "+", "-", "@", "\t"} <= seen and ({"\r", "\n"} & seen)
    # and the raw XML stores them as strings: no <f> element anywhere
    import zipfile
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.startswith("xl/worksheets/"):
                assert b"<f>" not in z.read(name) and b"<f " not in z.read(name)


def test_personal_data_is_masked(world, tmp_path):
    cfg, con = world
    batch = seed_settlement(con, D)
    texts = []
    for path in (write_discrepancy_report(con, cfg, D, tmp_path), write_settlement_report(con, cfg, batch, tmp_path)):
        for ws in load_workbook(path).worksheets:
            texts += [str(v) for row in ws.iter_rows(values_only=True) for v in row if v is not None]
    blob = "\n".join(texts)
    for secret in ("6222 0212 3456 7890 123", "6222021234567890123", "13812345678", "a@example.com",
                   "110101199003071234", "4111111111111111", "6222020200112233445"):
        assert secret not in blob
    assert "622202*********0123" in blob      # card in free text: first 6, last 4
    assert "138****5678" in blob
    assert "a***@example.com" in blob
    assert "411111******1111" in blob          # quarantined raw text
    assert "622202*********3445" in blob      # merchant bank account on the settlement workbook


def test_row_limit_continues_on_further_sheets(tmp_path):
    cfg = make_cfg(tmp_path)
    con = connect(cfg.warehouse)
    seed_day(con, D, hostile=False, n_extra=9)  # 11 amount_mismatch rows
    path = write_discrepancy_report(con, cfg, D, tmp_path, row_limit=5, max_sheets_per_type=10)
    wb = load_workbook(path)
    parts = [t for t in wb.sheetnames if t.startswith("amount_mismatch")]
    assert parts == ["amount_mismatch", "amount_mismatch (2)", "amount_mismatch (3)"]
    ids = [r[0] for t in parts for r in _detail_rows(wb, t)]
    assert all(wb[t].max_row <= 5 for t in parts)
    want = [r[0] for r in con.execute("SELECT discrepancy_id FROM discrepancies WHERE business_date = ? "
                                      "AND type = 'amount_mismatch'", [D]).fetchall()]
    assert sorted(ids) == sorted(want) and len(ids) == 11
    for t in parts:
        assert wb[t].freeze_panes == "B2" and wb[t].auto_filter.ref.startswith("A1:")
        assert [c.value for c in wb[t][1]][0] == "discrepancy_id"
    notes = [r[0] for r in wb["Summary"].iter_rows(values_only=True) if r and isinstance(r[0], str)]
    assert any("amount_mismatch (3)" in n for n in notes)
    assert not list(tmp_path.glob("*.csv"))
    con.close()


def test_row_limit_caps_with_a_note_and_a_full_csv_export(tmp_path):
    cfg = make_cfg(tmp_path)
    con = connect(cfg.warehouse)
    seed_day(con, D, hostile=True, n_extra=20)  # 22 amount_mismatch rows
    path = write_discrepancy_report(con, cfg, D, tmp_path, row_limit=4, max_sheets_per_type=2)
    wb = load_workbook(path)
    parts = [t for t in wb.sheetnames if t.startswith("amount_mismatch")]
    assert parts == ["amount_mismatch", "amount_mismatch (2)"]
    assert all(wb[t].max_row <= 4 for t in parts)
    last = list(wb[parts[-1]].iter_rows(values_only=True))[-1][0]
    export = tmp_path / "recon_report_2026-06-05_amount_mismatch.csv"
    assert "of 22 rows" in last and export.name in last
    import csv
    with export.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 22
    assert sum(Decimal(r["difference"]) for r in rows) == con.execute(
        "SELECT sum(difference) FROM discrepancies WHERE business_date = ? AND type = 'amount_mismatch'",
        [D]).fetchone()[0]
    # the CSV is injection-safe too: dangerous text gets a leading apostrophe, and free text is masked
    for r in rows:
        for v in r.values():
            assert not v.startswith(("=", "+", "@", "\t", "\r")) or v == ""
    assert not any("13812345678" in v for r in rows for v in r.values())
    # a later run of the same day that fits removes the stale export
    write_discrepancy_report(con, cfg, D, tmp_path)
    assert not export.exists()
    con.close()


def test_settlement_workbook(world, tmp_path):
    cfg, con = world
    batch = seed_settlement(con, D)
    path = write_settlement_report(con, cfg, batch, tmp_path)
    wb = load_workbook(path)
    assert wb.sheetnames[:4] == ["Batch", "lines", "held_carried", "items"]
    lines = list(wb["lines"].iter_rows(min_row=2, values_only=True))
    assert [r[0] for r in lines] == ["=M002", "M001"] and lines[1][1] == "Acme"
    assert wb["lines"]["A2"].quotePrefix and wb["lines"]["A2"].data_type == "s"
    head = [c.value for c in wb["held_carried"][1]]
    held = [r for r in wb["held_carried"].iter_rows(min_row=2, values_only=True)]
    assert [r[0] for r in held] == ["=M002"]
    assert Decimal(str(held[0][head.index("carried_forward")])) == Decimal("4.97")
    batch_rows = list(wb["Batch"].iter_rows(values_only=True))
    cny = next(r for r in batch_rows if r[0] == "CNY")
    payout, carried = con.execute("SELECT sum(payout), sum(carried_forward) FROM settlement_lines "
                                  "WHERE batch_id = ?", [batch]).fetchone()
    assert Decimal(str(cny[8])) == payout and Decimal(str(cny[9])) == carried
    assert wb["lines"]["E2"].number_format == "#,##0.00"
    assert len(list(wb["items"].iter_rows(min_row=2))) == 3
    with pytest.raises(LookupError):
        write_settlement_report(con, cfg, "nope", tmp_path)


def test_report_reads_a_read_only_warehouse(tmp_path):
    cfg = make_cfg(tmp_path)
    con = connect(cfg.warehouse)
    seed_day(con, D)
    con.close()
    ro = connect(cfg.warehouse, read_only=True)
    path = write_discrepancy_report(ro, cfg, D, tmp_path / "ro")
    ro.close()
    assert load_workbook(path, read_only=True).sheetnames[0] == "Summary"


def test_filled_in_resolution_columns_re_import(world, tmp_path):
    """The round trip finance does: fill action/note on the workbook, import it (recon.resolution)."""
    from recon.resolution import import_resolutions

    cfg, con = world
    path = write_discrepancy_report(con, cfg, D, tmp_path)
    wb = load_workbook(path)
    ws = wb["amount_mismatch"]
    header = [c.value for c in ws[1]]
    row = next(r for r in ws.iter_rows(min_row=2) if r[header.index("status")].value == "open")
    target = row[0].value
    row[header.index("action")].value = "write_off"
    row[header.index("note")].value = "=not a formula, agreed with channel"
    row[header.index("note")].data_type = "s"
    wb.save(path)
    report = import_resolutions(con, path, by="finance.alice", today=D)
    assert report.applied == [(target, "write_off")] and not report.problems
    assert "amount_mismatch" in report.sheets and "carry_over" in report.sheets
    status, note = con.execute("SELECT status, resolution_note FROM discrepancies WHERE discrepancy_id = ?",
                               [target]).fetchone()
    assert status == "resolved" and note.startswith("=not a formula")
    # the regenerated workbook shows who resolved it, and the resolution columns stay blank
    wb = load_workbook(write_discrepancy_report(con, cfg, D, tmp_path))
    ws = wb["amount_mismatch"]
    header = [c.value for c in ws[1]]
    got = next(r for r in ws.iter_rows(min_row=2, values_only=True) if r[0] == target)
    assert got[header.index("resolved_by")] == "finance.alice"
    assert got[header.index("resolution_action")] == "write_off"
    assert got[header.index("action")] is None and got[header.index("note")] is None
    assert ws.cell(row=[r[0].value for r in ws.iter_rows()].index(target) + 1,
                   column=header.index("resolution_note") + 1).quotePrefix


def _sheet_xml(path: Path) -> dict[str, bytes]:
    import zipfile
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist() if n.startswith("xl/")}


def test_fast_rows_write_the_same_xml_as_openpyxl(world, tmp_path, monkeypatch):
    """TableWriter renders its rows' XML itself; every sheet must be byte-identical to openpyxl's."""
    import reports._xlsx as xlsx
    from openpyxl import Workbook

    import reports.excel as excel

    class Frozen(datetime):   # the Summary says when it was generated, to the minute: the same for both
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 6, 6, 1, 2, tzinfo=timezone.utc)

    monkeypatch.setattr(excel, "datetime", Frozen)
    cfg, con = world
    seed_settlement(con, D)
    odd = [None, "", "  padded ", "#N/A", "a & b < c > d", "line\r\nbreak", "\x01ctl", "=1+2", "x" * 40_000,
           True, False, 0, -7, 2 ** 40, Decimal("-1234567.89"), Decimal("0.00"), 1.5, date(1900, 2, 1),
           datetime(2026, 6, 5, 13, 14, 15), datetime(2026, 6, 5, 1, 2, 3, tzinfo=timezone.utc),
           timedelta(hours=1), "card 6222021234567890123 a@example.com", "微信支付 退款 😀 é"]
    kinds = ["text", "free", "account", "money", "int", "date", "datetime", "id"]
    out = {}
    for fast in (False, True):
        monkeypatch.setattr(xlsx, "FAST_ROWS", fast)
        d = tmp_path / f"fast-{fast}"
        reports = [write_discrepancy_report(con, cfg, D, d),
                   write_settlement_report(con, cfg, f"B{D:%Y%m%d}", d)]
        wb = Workbook(write_only=True)
        cols = [xlsx.Col(f"c{i}", k) for i, k in enumerate(kinds)]
        w = xlsx.TableWriter(wb, "odd", cols, total_rows=len(odd), row_style=lambda r: {1: xlsx.LONG_FILL})
        for i, v in enumerate(odd):
            w.append(tuple(odd[(i + j) % len(odd)] for j in range(len(kinds))))
        w.close()
        wb.save(d / "odd.xlsx")
        out[fast] = [_sheet_xml(p) for p in (*reports, d / "odd.xlsx")]
    for slow, fast in zip(out[False], out[True]):
        assert slow.keys() == fast.keys()
        for name in slow:
            assert slow[name] == fast[name], name
