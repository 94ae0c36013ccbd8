"""`recon fetch` exit codes and output, credentials from env / Airflow Connections, and landing details."""
from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from loaders.fetch import fetch_statement
from loaders.base import zip_entry_name as entry_name
from loaders.fetch.credentials import airflow_connection, parse_connection_uri
from loaders.fetch.landing import Landing, safe_name
from loaders.fetch.retry import backoff_delay, with_retries
from loaders.fetch.base import TransientFetchError
from recon.cli import main
from tests.servers import (  # noqa: F401 (fixtures)
    Reply,
    fetch_config,
    http_server,
    landing_leftovers,
    paramiko_sftp_server,
    sftp_server,
    sftp_source,
)

CSV = b"a,b\n1,2\n"


def write_config(tmp_path: Path, channels: list[dict]) -> Path:
    raw = {"warehouse": str(tmp_path / "w.duckdb"), "output_dir": str(tmp_path / "out"),
           "landing_dir": str(tmp_path / "landing"), "internal_source": {"url": "sqlite:///:memory:"},
           "channels": channels}
    path = tmp_path / "recon.yml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def http_channel(name: str, url: str, **kw) -> dict:
    return {"name": name, "statements": [{"kind": "trade", "format": "wechat", **kw.pop("st", {}),
                                          "source": {"type": "http", "url": url, "retries": 0, "timeout": 5, **kw}}]}


def test_cli_exit_codes_and_lines(http_server, sftp_server, tmp_path, capsys):
    http_server.route("/a.csv", Reply(200, CSV))
    http_server.route("/empty", Reply(400, json.dumps({"code": "NO_STATEMENT_EXIST"})))
    (sftp_server.root / "b.csv").write_bytes(CSV + b"3,4\n")
    cfg = write_config(tmp_path, [
        http_channel("wechat", http_server.url("/a.csv")),
        http_channel("alipay", http_server.url("/empty")),
        {"name": "bank_icbc", "statements": [{"kind": "bank", "format": "icbc",
                                              "source": sftp_source(sftp_server, "b.csv")}]},
        http_channel("later", http_server.url("/not-yet.csv")),
        http_channel("maybe", http_server.url("/never.csv"), st={"optional": True}),
    ])
    base = ["fetch", "--config", str(cfg), "--date", "2026-06-05"]

    assert main(base + ["--channel", "wechat", "--channel", "alipay", "--channel", "bank_icbc"]) == 0
    out = capsys.readouterr().out.splitlines()
    import hashlib
    assert out[0].startswith("wechat trade (wechat): landed ") and out[0].endswith(
        f"sha256 {hashlib.sha256(CSV).hexdigest()}")
    assert out[1] == "alipay trade (wechat): no statement for this day (the channel says so)"
    assert out[2].startswith("bank_icbc bank (icbc): landed ") and "b.csv" in out[2]

    assert main(base + ["--channel", "later", "--channel", "maybe"]) == 75          # EX_TEMPFAIL
    out = capsys.readouterr().out
    assert "later trade (wechat): not yet available: " in out
    assert "maybe trade (wechat): not available (optional)" in out

    assert main(base + ["--channel", "maybe"]) == 0                                 # optional only: fine

    http_server.route("/a.csv", Reply(403, "forbidden"))
    assert main(base) == 1                                                          # errors beat "not yet"
    captured = capsys.readouterr()
    assert "wechat trade (wechat): error: download " in captured.err and "HTTP 403" in captured.err
    assert "Traceback" not in captured.err

    assert main(base + ["--channel", "nope"]) == 1
    assert "no channel named nope" in capsys.readouterr().err


def test_cli_wrong_host_key_is_an_error(sftp_server, tmp_path, capsys):
    (sftp_server.root / "b.csv").write_bytes(CSV)
    kh = tmp_path / "kh"
    kh.write_text("")
    cfg = write_config(tmp_path, [{"name": "bank_icbc", "statements": [
        {"kind": "bank", "format": "icbc", "source": sftp_source(sftp_server, "b.csv", known_hosts=str(kh))}]}])
    assert main(["fetch", "--config", str(cfg), "--date", "2026-06-05"]) == 1
    err = capsys.readouterr().err
    assert "bank_icbc bank (icbc): error: " in err and "not in known_hosts" in err
    assert landing_leftovers(tmp_path / "landing") == []


# ----------------------------------------------------------------------------- credentials
def test_airflow_conn_uri_parsed_without_airflow():
    c = parse_connection_uri("x", "sftp://us%40er:p%40ss%2Fw%3Ard@sftp.bank.cn:2222/?private_key_passphrase=kp")
    assert (c.login, c.password, c.host, c.port) == ("us@er", "p@ss/w:rd", "sftp.bank.cn", 2222)
    assert c.extra == {"private_key_passphrase": "kp"}
    j = parse_connection_uri("x", json.dumps({"conn_type": "http", "login": "u", "password": "p",
                                              "extra": {"token": "t"}}))
    assert (j.login, j.password, j.extra) == ("u", "p", {"token": "t"})
    assert "p@ss" not in repr(c)                                        # repr hides the password


def test_airflow_connection_without_airflow_installed_uses_env(monkeypatch):
    monkeypatch.setitem(sys.modules, "airflow", None)            # "import airflow" now raises ImportError
    monkeypatch.setenv("AIRFLOW_CONN_BANK_SFTP", "sftp://u:secret-pw@h:22")
    assert airflow_connection("bank_sftp").password == "secret-pw"
    monkeypatch.delenv("AIRFLOW_CONN_BANK_SFTP")
    from loaders.fetch import FetchError
    with pytest.raises(FetchError, match="AIRFLOW_CONN_BANK_SFTP is not set"):
        airflow_connection("bank_sftp")


@pytest.mark.airflow
def test_sftp_password_from_airflow_connection(paramiko_sftp_server, tmp_path, monkeypatch, capsys, caplog):
    pytest.importorskip("airflow")
    srv = paramiko_sftp_server
    monkeypatch.setenv("AIRFLOW_CONN_BANK_SFTP",
                       f"sftp://{srv.username}:{quote(srv.password, safe='')}@127.0.0.1:{srv.port}")
    (srv.root / "a.csv").write_bytes(CSV)
    src = sftp_source(srv, "a.csv", private_key=None, username=None, airflow_conn_id="bank_sftp")
    cfg = fetch_config(tmp_path, src)
    [f] = fetch_statement(cfg, cfg.channels[0], cfg.channels[0].statements[0], date(2026, 6, 5))
    assert f.path.read_bytes() == CSV
    text = (tmp_path / "landing" / "manifest.jsonl").read_text() + capsys.readouterr().out + caplog.text
    assert srv.password not in text


def test_missing_env_var_is_named_not_guessed(tmp_path, monkeypatch):
    from loaders.fetch import FetchError
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    cfg = fetch_config(tmp_path, {"type": "http", "url": "https://127.0.0.1:1/x", "auth": "token",
                                  "token_env": "NOPE_TOKEN"})
    with pytest.raises(FetchError, match="environment variable NOPE_TOKEN is not set"):
        fetch_statement(cfg, cfg.channels[0], cfg.channels[0].statements[0], date(2026, 6, 5))


# ----------------------------------------------------------------------------- small parts
@pytest.mark.parametrize("name,expected", [("a.csv", "a.csv"), ("dir/a.csv", "a.csv"), ("..\\..\\a.csv", "a.csv"),
                                           ("/etc/passwd", "passwd")])
def test_safe_name_keeps_only_a_base_name(name, expected):
    assert safe_name(name) == expected


@pytest.mark.parametrize("name", ["..", ".", "", "a/..", ".hidden", "dir/"])
def test_safe_name_refuses(name):
    with pytest.raises(ValueError):
        safe_name(name)


def test_backoff_is_exponential_capped_and_jittered():
    assert [backoff_delay(n, 1.0, 5.0, rng=lambda: 1.0) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_delay(3, 1.0, 5.0, rng=lambda: 0.0) == 0.0
    assert backoff_delay(2, 1.0, 60.0, rng=lambda: 0.5) == 2.0


def test_only_transient_faults_are_retried():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientFetchError("blip")
        return "ok"
    assert with_retries(flaky, retries=3, base=1, cap=4, what="t", sleep=sleeps.append, rng=lambda: 1.0) == "ok"
    assert sleeps == [1, 2]
    from loaders.fetch import FetchError

    def broken():
        calls.append(1)
        raise FetchError("auth")
    calls.clear()
    with pytest.raises(FetchError, match="auth"):
        with_retries(broken, retries=3, base=1, cap=4, what="t", sleep=sleeps.append)
    assert len(calls) == 1


def test_zip_names_utf8_without_flag_and_cp437_fallback():
    import zipfile
    info = zipfile.ZipInfo("x")
    info.flag_bits = 0
    info.filename = "账单.csv".encode("utf-8").decode("cp437")       # UTF-8 bytes, no flag (7-Zip on Linux)
    assert entry_name(info) == "账单.csv"
    info.filename = "账单.csv".encode("gbk").decode("cp437")         # GBK bytes (Windows in China)
    assert entry_name(info) == "账单.csv"


def test_landed_statement_entries_exclude_archives(tmp_path):
    from loaders.fetch.base import StagedFile
    from recon.config import Statement
    st = Statement(kind="trade", format="wechat", source={"type": "folder", "path": "x"})
    landing = Landing(tmp_path)
    with landing.staging() as s:
        (s / "a.gz").write_bytes(b"\x1f\x8b...")
        (s / "a").write_bytes(CSV)
        arch = landing.land(StagedFile(s / "a.gz", "a.gz", "https://h/a.gz"), "wechat", st, date(2026, 6, 5),
                            role="archive")
        landing.land(StagedFile(s / "a", "a", "https://h/a.gz#a", extracted_from="a.gz"), "wechat", st,
                     date(2026, 6, 5), extracted_from=arch.sha256)
    assert [e["original_name"] for e in landing.entries()] == ["a"]
    assert [e["original_name"] for e in landing.entries(include_archives=True)] == ["a.gz", "a"]
    assert landing.entries()[0]["extracted_from"] == arch.sha256
    assert not list((tmp_path / "tmp").iterdir())
