"""Day-cut windows: which hours each side counts as business day D, and the per-channel parameters table.

A channel's business day D ends at its ``day_cut`` in its own time zone (``Channel.timezone``, else the
platform's). A cut at noon or later closes day D on the same date (UnionPay, 23:00: day D runs from
D-1 23:00 to D 23:00); an earlier cut closes it on the next date (midnight: D 00:00 to D+1 00:00; 02:00:
D 02:00 to D+1 02:00). The platform's day D is always D 00:00 to D+1 00:00 in the platform time zone
(``Config.timezone``): that is the window ``loaders.internal.day_window`` reads.

A row "at the cut-off" is one the other side may well have put on a neighbouring day: a platform row
whose time lies within ``CUTOFF_MARGIN`` of the channel's window edges or outside that window (UnionPay:
every platform row after 23:00), and a channel row within ``CUTOFF_MARGIN`` of the platform day's
edges or outside it. Such a row missing on the other side today is a timing difference (``pending``),
not yet a break (see ``docs/reconciliation.md``).
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta

import duckdb

from recon.config import Channel, Config

#: Clocks differ: a payment the platform stamps 23:59:58 can be in the channel's next file.
CUTOFF_MARGIN = timedelta(minutes=5)


def channel_window(cfg: Config, channel: Channel, d: date) -> tuple[datetime, datetime]:
    """The channel's business day ``d`` as aware datetimes [start, end) in the channel's zone."""
    zone = cfg.channel_zone(channel)
    end_day = d if channel.day_cut >= time(12, 0) else d + timedelta(days=1)
    end = datetime.combine(end_day, channel.day_cut, tzinfo=zone)
    start = datetime.combine(end_day - timedelta(days=1), channel.day_cut, tzinfo=zone)
    return start, end


def platform_window(cfg: Config, d: date) -> tuple[datetime, datetime]:
    """The platform's business day ``d`` as aware datetimes [start, end) in the platform zone."""
    start = datetime.combine(d, time(0), tzinfo=cfg.zone)
    return start, datetime.combine(d + timedelta(days=1), time(0), tzinfo=cfg.zone)


def _naive(dt: datetime, zone) -> datetime:
    return dt.astimezone(zone).replace(tzinfo=None)


def channel_params(con: duckdb.DuckDBPyConnection, cfg: Config, d: date, channels: list[str] | None = None,
                   batch_only: list[str] = ()) -> None:
    """TEMP TABLE channel_params: one row per configured channel with its contract and its windows for ``d``.

    ``channels`` restricts it (and so the whole reconciliation, which reads only the channels listed here)
    to those channels. TEMP TABLE ``batch_params``, the same rows plus those of the ``batch_only``
    channels, is what the settlement-batch check reads: a channel reconciled in key-hash buckets gets its
    whole-day batch check here, beside the channels reconciled whole.

    ``cut_lo_p``/``cut_hi_p``: the channel's window, narrowed by the margin, in platform local time (a
    platform row outside [cut_lo_p, cut_hi_p) is at the cut-off). ``day_lo_c``/``day_hi_c``: the platform
    day, narrowed by the margin, in channel local time (a channel row outside it is at the cut-off).
    """
    p_start, p_end = platform_window(cfg, d)
    rows = []
    chosen = [c for c in cfg.channels if channels is None or c.name in channels or c.name in batch_only]
    for c in chosen:
        zone = cfg.channel_zone(c)
        c_start, c_end = channel_window(cfg, c, d)
        rows.append((
            c.name, c.fee_rate, c.amount_tolerance,
            any(s.kind == "trade" for s in c.statements), any(s.kind == "funds" for s in c.statements),
            c.pending_days, c.settlement_lag_days,
            _naive(c_start, cfg.zone) + CUTOFF_MARGIN, _naive(c_end, cfg.zone) - CUTOFF_MARGIN,
            _naive(p_start, zone) + CUTOFF_MARGIN, _naive(p_end, zone) - CUTOFF_MARGIN,
            # the platform day itself (platform local), for platform-only checks (internal consistency)
            p_start.replace(tzinfo=None) + CUTOFF_MARGIN, p_end.replace(tzinfo=None) - CUTOFF_MARGIN,
        ))
    con.execute("""CREATE OR REPLACE TEMP TABLE batch_params (
        channel VARCHAR, fee_rate DECIMAL(12,8), tolerance DECIMAL(18,2), has_trade BOOLEAN, has_funds BOOLEAN,
        pending_days INTEGER, lag_days INTEGER, cut_lo_p TIMESTAMP, cut_hi_p TIMESTAMP,
        day_lo_c TIMESTAMP, day_hi_c TIMESTAMP, pday_lo TIMESTAMP, pday_hi TIMESTAMP)""")
    if rows:
        con.executemany("INSERT INTO batch_params VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    keyed = [c.name for c in chosen if channels is None or c.name in channels]
    con.execute("CREATE OR REPLACE TEMP TABLE channel_params AS SELECT * FROM batch_params "
                "WHERE list_contains(?, channel)", [keyed])
    expl = [(c.name, i, e.name, e.type, e.max_abs_difference)
            for c in chosen for i, e in enumerate(c.explanations)]
    con.execute("CREATE OR REPLACE TEMP TABLE channel_explanations (channel VARCHAR, ord INTEGER, name VARCHAR, "
                "type VARCHAR, max_abs DECIMAL(18,2))")
    if expl:
        con.executemany("INSERT INTO channel_explanations VALUES (?, ?, ?, ?, ?)", expl)
