"""Business days around Chinese New Year and National Day, incl. adjusted working weekends.

Expected dates come from the State Council holiday notices: 2025 Spring Festival Jan 28-Feb 4 off,
Sun Jan 26 and Sat Feb 8 worked; 2025 National Day Oct 1-8 off, Sun Sep 28 and Sat Oct 11 worked;
2026 Spring Festival Feb 15-23 off, Sat Feb 14 and Sat Feb 28 worked.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from recon.config import Calendar
from recon.warehouse import connect
from settlement.calendar import BusinessCalendar, CalendarError, settlement_date
from tests.test_settlement import add_txn, assert_conservation, make_cfg, run

CN = BusinessCalendar(Calendar())


@pytest.mark.parametrize("trade,expected", [
    # 2026 Spring Festival
    (date(2026, 2, 12), date(2026, 2, 13)),   # Thu -> Fri
    (date(2026, 2, 13), date(2026, 2, 14)),   # Fri -> the adjusted working Saturday
    (date(2026, 2, 14), date(2026, 2, 24)),   # working Saturday -> first day after the holiday
    (date(2026, 2, 16), date(2026, 2, 24)),   # inside the holiday
    (date(2026, 2, 23), date(2026, 2, 24)),   # last holiday (a Monday)
    (date(2026, 2, 27), date(2026, 2, 28)),   # Fri -> the second adjusted working Saturday
    (date(2026, 2, 28), date(2026, 3, 2)),    # that Saturday -> Monday (Sunday is off)
    # 2025 Spring Festival
    (date(2025, 1, 24), date(2025, 1, 26)),   # Fri -> adjusted working Sunday
    (date(2025, 1, 27), date(2025, 2, 5)),
    (date(2025, 2, 7), date(2025, 2, 8)),     # Fri -> adjusted working Saturday
    # 2025 National Day (with Mid-Autumn)
    (date(2025, 9, 26), date(2025, 9, 28)),   # Fri -> adjusted working Sunday
    (date(2025, 9, 30), date(2025, 10, 9)),
    (date(2025, 10, 3), date(2025, 10, 9)),
    (date(2025, 10, 10), date(2025, 10, 11)),  # Fri -> adjusted working Saturday
    (date(2025, 10, 11), date(2025, 10, 13)),
])
def test_t_plus_1_around_chinese_holidays(trade, expected):
    assert settlement_date(CN, trade, "T+1") == expected


def test_t_plus_n_and_d_plus_n():
    assert settlement_date(CN, date(2026, 2, 12), "T+2") == date(2026, 2, 14)
    assert settlement_date(CN, date(2026, 2, 12), "T+3") == date(2026, 2, 24)
    assert settlement_date(CN, date(2026, 2, 16), "T+0") == date(2026, 2, 24)
    assert settlement_date(CN, date(2026, 2, 13), "T+0") == date(2026, 2, 13)
    assert settlement_date(CN, date(2026, 2, 16), "D+1") == date(2026, 2, 17)   # natural days ignore holidays


def test_country_none_is_weekends_only():
    cal = BusinessCalendar(Calendar(country="none"))
    assert settlement_date(cal, date(2026, 2, 13), "T+1") == date(2026, 2, 16)
    assert settlement_date(cal, date(2025, 9, 30), "T+1") == date(2025, 10, 1)


def test_config_overrides_win():
    cal = BusinessCalendar(Calendar(extra_holidays=(date(2026, 6, 8),), extra_workdays=(date(2026, 6, 6),)))
    assert settlement_date(cal, date(2026, 6, 5), "T+1") == date(2026, 6, 6)
    assert settlement_date(cal, date(2026, 6, 6), "T+1") == date(2026, 6, 9)
    with pytest.raises(CalendarError, match="both as extra_holidays and extra_workdays: 2026-06-08"):
        BusinessCalendar(Calendar(extra_holidays=(date(2026, 6, 8),), extra_workdays=(date(2026, 6, 8),)))


def test_years_the_package_does_not_know():
    with pytest.raises(CalendarError, match=r"knows the years 2004-\d{4} only, not 2099.*beyond_known_years"):
        settlement_date(CN, date(2099, 1, 2), "T+1")
    fallback = BusinessCalendar(Calendar(beyond_known_years="weekends", extra_holidays=(date(2099, 1, 5),)))
    assert settlement_date(fallback, date(2099, 1, 2), "T+1") == date(2099, 1, 6)   # Fri -> Tue (Mon listed)
    assert settlement_date(fallback, date(2026, 2, 13), "T+1") == date(2026, 2, 14)  # known years unchanged


def test_settlement_batches_across_spring_festival(tmp_path):
    cfg = make_cfg(tmp_path)
    con = connect(cfg.warehouse)
    days = [date(2026, 2, d) for d in range(12, 25)]
    for i, day in enumerate(days):
        add_txn(con, day, "payment", f"P{i}", "M001", "100.00")
    for day in days:
        run(con, cfg, day)
    got = con.execute("""
        SELECT b.batch_id, b.settlement_date, list(i.trade_date ORDER BY i.trade_date)
        FROM settlement_batches b JOIN settlement_items i USING (batch_id) GROUP BY ALL ORDER BY 1""").fetchall()
    assert got == [
        ("STL-20260213", date(2026, 2, 13), [date(2026, 2, 12)]),
        ("STL-20260214", date(2026, 2, 14), [date(2026, 2, 13)]),
        ("STL-20260224", date(2026, 2, 24), [date(2026, 2, d) for d in range(14, 24)]),
        ("STL-20260225", date(2026, 2, 25), [date(2026, 2, 24)]),
    ]
    payout = con.execute("SELECT payout FROM settlement_lines WHERE batch_id = 'STL-20260224'").fetchone()[0]
    assert payout == Decimal("994.00")   # 10 x (100.00 - 0.60)
    assert_conservation(con)


def test_a_month_before_the_package_runs_out_of_years_the_run_is_warned(monkeypatch):
    import settlement.calendar as calendar

    monkeypatch.setattr(calendar, "_cn_known_range", lambda: (2004, 2026))
    cal = BusinessCalendar(Calendar())
    assert cal.horizon_warning(date(2026, 11, 30)) is None            # + 31 days = 2026-12-31: still known
    warning = cal.horizon_warning(date(2026, 12, 1))
    assert "up to 2026 only" in warning and "2027 begins within 31 days of 2026-12-01" in warning
    assert "stop with an error" in warning and "or set calendar.beyond_known_years: weekends and type 2027's" in warning
    weekends = BusinessCalendar(Calendar(beyond_known_years="weekends"))
    warning = weekends.horizon_warning(date(2026, 12, 20))
    assert "Monday-Friday" in warning and "is out, or type 2027's official holidays" in warning   # already set
    assert "2027-01-04 is in 2027" in weekends.horizon_warning(date(2027, 1, 4))
    typed_in = BusinessCalendar(Calendar(beyond_known_years="weekends", extra_holidays=(date(2027, 1, 1),)))
    assert typed_in.horizon_warning(date(2026, 12, 20)) is None       # the operator has entered 2027
    assert BusinessCalendar(Calendar(country="none")).horizon_warning(date(2026, 12, 20)) is None


def test_settlement_carries_the_calendar_warning_in_its_summary(tmp_path, monkeypatch):
    import settlement.calendar as calendar
    from recon.warehouse import transaction
    from settlement.engine import settle_day

    monkeypatch.setattr(calendar, "_cn_known_range", lambda: (2004, 2026))
    monkeypatch.setattr(calendar, "HORIZON_DAYS", 400)                # the June test day, as if it were December
    cfg = make_cfg(tmp_path)
    con = connect(cfg.warehouse)
    add_txn(con, date(2026, 6, 5), "payment", "O1", "M001", "100.00")
    with transaction(con):
        summary = settle_day(con, cfg, date(2026, 6, 5))
    assert summary.settled == 1
    assert len(summary.warnings) == 1 and "2027 begins within 400 days of 2026-06-05" in summary.warnings[0]
    assert summary.to_dict()["warnings"] == summary.warnings
