"""Business days for settlement: weekends, Chinese public holidays and their
adjusted working weekends (``chinesecalendar``), plus config overrides.

``chinese_calendar`` only knows the years it ships (1.11: 2004-2026). For a
date outside that range the calendar raises :class:`CalendarError` naming the
year, unless the config says ``calendar.beyond_known_years: weekends``, in
which case Monday-Friday are business days for that year (``extra_holidays`` /
``extra_workdays`` still apply, so a known schedule can be typed into the
config until the package is upgraded).
"""
from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

from recon.config import Calendar


#: How far past a run's date the calendar should know its years: the coming month's settlement dates.
HORIZON_DAYS = 31


class CalendarError(ValueError):
    """A date the business-day calendar cannot classify."""


def _cn_is_workday(day: date) -> bool | None:
    """chinese_calendar's answer, or None when it does not know the year."""
    import chinese_calendar

    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


@lru_cache(maxsize=None)
def _cn_known_range() -> tuple[int, int]:
    import chinese_calendar

    years = [d.year for d in chinese_calendar.holidays]
    return min(years), max(years)


class BusinessCalendar:
    def __init__(self, cfg: Calendar | None = None):
        cfg = cfg or Calendar()
        self.country = cfg.country
        self.extra_holidays = frozenset(cfg.extra_holidays)
        self.extra_workdays = frozenset(cfg.extra_workdays)
        self.beyond_known_years = cfg.beyond_known_years
        overlap = self.extra_holidays & self.extra_workdays
        if overlap:
            raise CalendarError(
                "calendar: dates listed both as extra_holidays and extra_workdays: "
                + ", ".join(d.isoformat() for d in sorted(overlap))
            )

    def is_business_day(self, day: date) -> bool:
        if day in self.extra_workdays:
            return True
        if day in self.extra_holidays:
            return False
        if self.country == "CN":
            answer = _cn_is_workday(day)
            if answer is not None:
                return answer
            if self.beyond_known_years == "error":
                lo, hi = _cn_known_range()
                raise CalendarError(
                    f"calendar: the installed chinesecalendar package knows the years {lo}-{hi} only, "
                    f"not {day.year} (date {day.isoformat()}); upgrade chinesecalendar, or set "
                    "calendar.beyond_known_years: weekends (Mon-Fri) and list the official holidays "
                    "in calendar.extra_holidays / extra_workdays"
                )
        return day.weekday() < 5  # Monday-Friday

    def horizon_warning(self, day: date, days: int | None = None) -> str | None:
        """A warning, a month ahead, that the installed chinesecalendar stops knowing the years before the
        settlement dates of the coming runs do (each December until a release with the next year is
        installed); None when it knows them, or the config has typed that year's holidays in."""
        if self.country != "CN":
            return None
        days = HORIZON_DAYS if days is None else days
        _, last = _cn_known_range()
        if (day + timedelta(days=days)).year <= last:
            return None
        nxt = last + 1
        if self.beyond_known_years == "weekends" and any(d.year == nxt for d in self.extra_holidays):
            return None
        then = ("Monday-Friday will be business days in it, with no public holidays"
                if self.beyond_known_years == "weekends" else
                "settlement will stop with an error at the first date in it")
        when = (f"{day.isoformat()} is in {day.year}" if day.year > last
                else f"{nxt} begins within {days} days of {day.isoformat()}")
        how = "type" if self.beyond_known_years == "weekends" else "set calendar.beyond_known_years: weekends and type"
        return (f"calendar: the installed chinesecalendar knows the years up to {last} only, and {when}: "
                f"{then}. Upgrade chinesecalendar once a release with {nxt} is out, or {how} {nxt}'s official "
                "holidays and adjusted working days into calendar.extra_holidays / extra_workdays")

    def next_business_day(self, day: date) -> date:
        """The first business day strictly after ``day``."""
        d = day + timedelta(days=1)
        for _ in range(366):
            if self.is_business_day(d):
                return d
            d += timedelta(days=1)
        raise CalendarError(f"calendar: no business day within a year after {day.isoformat()}")

    def add_business_days(self, day: date, n: int) -> date:
        """T+n: the n-th business day after ``day``; T+0 is ``day`` itself if it is a business
        day, else the next one."""
        if n == 0:
            return day if self.is_business_day(day) else self.next_business_day(day)
        d = day
        for _ in range(n):
            d = self.next_business_day(d)
        return d


def parse_cycle(cycle: str) -> tuple[str, int]:
    """'T+1' -> ('T', 1); 'D+2' -> ('D', 2)."""
    kind, n = cycle.split("+")
    return kind, int(n)


def settlement_date(cal: BusinessCalendar, trade_date: date, cycle: str) -> date:
    """T+N business days or D+N natural days after the trade date."""
    kind, n = parse_cycle(cycle)
    if kind == "T":
        return cal.add_business_days(trade_date, n)
    return trade_date + timedelta(days=n)


def next_settlement_date(cal: BusinessCalendar, after: date, cycle: str) -> date:
    """The first possible settlement date strictly after ``after`` for this kind of cycle."""
    kind, _ = parse_cycle(cycle)
    if kind == "T":
        return cal.next_business_day(after)
    return after + timedelta(days=1)
