"""The config contract: validated on load, errors name the key path and what was expected."""
from __future__ import annotations

from datetime import date, time
from decimal import Decimal

import pytest
import yaml

from recon.config import ConfigError, expand_path, load_config
from recon.demo import SAMPLES


def write(tmp_path, raw) -> str:
    p = tmp_path / "c.yml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return str(p)


def sample_raw():
    return yaml.safe_load((SAMPLES / "recon.yml").read_text(encoding="utf-8"))


def test_the_sample_config_loads_with_exact_rates_and_resolved_paths():
    cfg = load_config(SAMPLES / "recon.yml")
    wechat = cfg.channel("wechat")
    assert wechat.fee_rate == Decimal("0.006") and wechat.day_cut == time(0, 0)
    assert [m.id for m in cfg.merchants] == ["M001", "M002"]
    assert cfg.warehouse.is_absolute() and cfg.warehouse.name == "warehouse.duckdb"
    assert wechat.statements[0].source.path.startswith(str(SAMPLES))
    assert cfg.internal_source.url.startswith("sqlite:////")
    assert "FROM payment_orders" in cfg.internal_source.queries["orders"]


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["channels"][0].update(day_cut="25:00"), "channels[wechat].day_cut: "),
    (lambda r: r["channels"][1].update(currency="rmb"), "channels[alipay].currency: expected an ISO 4217 code"),
    (lambda r: r.update(timezone="Mars/Base"), "timezone: unknown time zone 'Mars/Base'"),
    (lambda r: r["merchants"][0].update(cycle="T1"), "merchants[M001].cycle: expected T+N"),
    (lambda r: r["merchants"][1].update(fee_rate="1.5"), "merchants[M002].fee_rate: expected a rate between 0 and 1"),
    (lambda r: r["channels"][0]["statements"][0].update(kind="trades"), "channels[wechat].statements[0].kind: "),
    (lambda r: r["channels"][0]["statements"][0]["source"].update(type="ftp"), "channels[wechat].statements[0].source"),
    (lambda r: r.pop("internal_source"), "internal_source: Field required"),
    (lambda r: r.update(colour="blue"), "colour: Extra inputs are not permitted"),
    (lambda r: r.update(settlement={"duplicate_lookback_days": 0}),
     "settlement.duplicate_lookback_days: expected at least 1 day"),
    (lambda r: r.update(archive={"keep_days": 30}),
     "archive.keep_days (30) must be at least settlement.duplicate_lookback_days (90)"),
    (lambda r: r.update(archive={"keep_days": 0}), "archive.keep_days: expected at least 1 day"),
    (lambda r: r.update(archive={"compact_min_free": 1}),
     "archive.compact_min_free: expected a share above 0 and below 1"),
    (lambda r: r.update(backup={"keep": 0}), "backup.keep: expected at least 1 backup"),
    (lambda r: r["channels"].append(dict(r["channels"][0])), "channel names must be unique; repeated: ['wechat']"),
])
def test_a_bad_config_names_the_key_path(tmp_path, mutate, message):
    raw = sample_raw()
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, raw))
    assert message in str(err.value)
    assert str(tmp_path / "c.yml") in str(err.value)


def test_unreadable_and_non_yaml_configs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("channels: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_date_placeholders():
    d = date(2026, 6, 5)
    assert (expand_path("x/{date:%Y%m%d}/{yymmdd}_{yyyy_mm_dd}_{channel}", d, channel="up")
            == "x/20260605/260605_2026-06-05_up")
