"""HTTP(S) fetching against a local server on 127.0.0.1: the two-step bill API, direct URLs, gzip and ZIP.

Every fault test asserts the exact outcome and that the landing zone holds nothing partial.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import io
import json
import logging
import threading
import zipfile
from datetime import date

import pytest

from loaders.fetch import FetchError, NotYetAvailable, TransientFetchError, fetch_statement
from loaders.fetch.landing import Landing
from loaders.fetch.signing import SignRequest
from tests.servers import (HttpServer, Reply, assert_nothing_landed, fetch_config, http_server,  # noqa: F401
                           https_server, landing_leftovers, manifest)

D = date(2026, 6, 5)
CSV = "交易时间,公众账号ID,商户号,总金额\n`2026-06-05 10:00:00,`wx1,`1900000001,`100.00\n".encode("utf-8")
TOKEN = "tok-9f8e7d6c5b4a-secret"


def src(url: str, **kw) -> dict:
    d = {"type": "http", "url": url, "timeout": 5, "transfer_timeout": 30, "retries": 2,
         "backoff_base": 0.5, "backoff_max": 2}
    d.update(kw)
    return d


def run(tmp_path, source, sleeps=None):
    cfg = fetch_config(tmp_path, source, channel="wechat", kind="trade", fmt="wechat")
    ch = cfg.channels[0]
    return fetch_statement(cfg, ch, ch.statements[0], D, sleep=(sleeps.append if sleeps is not None else None))


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zipped(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def bill_api(server: HttpServer, download_path: str, body: bytes, token: str | None = TOKEN, **headers):
    """A WeChat-like bill API: GET /v3/bill/tradebill?bill_date=... -> {"download_url": ...}."""
    def api(req):
        if token and req.headers.get("Authorization") != f"Bearer {token}":
            return Reply(401, json.dumps({"code": "SIGN_ERROR", "message": "bad token"}),
                         {"Content-Type": "application/json"})
        if req.query.get("bill_date") != "2026-06-05":
            return Reply(400, json.dumps({"code": "PARAM_ERROR", "message": "bill_date"}))
        return Reply(200, json.dumps({"hash_type": "SHA1", "download_url": server.url(download_path)}),
                     {"Content-Type": "application/json"})
    server.route("/v3/bill/tradebill", api)
    server.route(download_path, Reply(200, body, headers))


def api_src(server, **kw):
    return src(server.url("/v3/bill/tradebill"), mode="bill_api", auth="token", token_env="WX_TOKEN",
               params={"bill_date": "{yyyy_mm_dd}"}, **kw)


# ----------------------------------------------------------------------------- happy paths
def test_direct_url_lands_file_and_manifest_has_no_credentials(http_server, tmp_path):
    http_server.route("/bills/20260605.csv", Reply(200, CSV))
    files = run(tmp_path, src(http_server.url("/bills/{yyyymmdd}.csv?access_key=abc123")))
    assert [(f.original_name, f.path.read_bytes()) for f in files] == [("20260605.csv", CSV)]
    [row] = manifest(tmp_path)
    assert row["source"] == http_server.url("/bills/20260605.csv")        # no query string: no credentials
    assert row["sha256"] == hashlib.sha256(CSV).hexdigest() and row["size_bytes"] == len(CSV)
    assert http_server.requests[0].query == {"access_key": "abc123"}
    assert run(tmp_path, src(http_server.url("/bills/{yyyymmdd}.csv")))[0].sha256 == row["sha256"]
    assert len(manifest(tmp_path)) == 1                                   # identical re-fetch: no-op


def test_bill_api_token_then_gzip_download_keeps_archive_and_statement(http_server, tmp_path, monkeypatch, caplog,
                                                                        capsys):
    monkeypatch.setenv("WX_TOKEN", TOKEN)
    bill_api(http_server, "/download/trade_20260605.csv.gz", gz(CSV))
    caplog.set_level(logging.DEBUG)
    files = run(tmp_path, api_src(http_server))
    assert [(f.original_name, f.path.read_bytes()) for f in files] == [("trade_20260605.csv", CSV)]
    rows = manifest(tmp_path)
    arch = [r for r in rows if r.get("role") == "archive"]
    stmt = [r for r in rows if r.get("role", "statement") == "statement"]
    assert len(arch) == 1 and len(stmt) == 1
    assert (arch[0]["original_name"] == "trade_20260605.csv.gz"
            and arch[0]["sha256"] == hashlib.sha256(gz(CSV)).hexdigest())
    assert stmt[0]["extracted_from"] == arch[0]["sha256"]
    archived = tmp_path / "landing" / "objects" / arch[0]["sha256"][:2] / arch[0]["sha256"] / "trade_20260605.csv.gz"
    assert archived.read_bytes() == gz(CSV)                                # the original as it arrived
    assert [e["original_name"] for e in Landing(tmp_path / "landing").entries()] == ["trade_20260605.csv"]
    assert http_server.hits("/download/trade_20260605.csv.gz")[0].headers.get("Authorization") == f"Bearer {TOKEN}"
    everything = json.dumps(rows) + caplog.text + capsys.readouterr().out
    assert TOKEN not in everything


def test_credentials_not_sent_to_another_origin(http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("WX_TOKEN", TOKEN)
    other = HttpServer()
    try:
        other.route("/dl/bill.csv", Reply(200, CSV))
        http_server.route("/v3/bill/tradebill", Reply(200, json.dumps({"download_url": other.url("/dl/bill.csv")})))
        files = run(tmp_path, api_src(http_server))
        assert files[0].path.read_bytes() == CSV
        assert "Authorization" not in other.requests[0].headers
        assert http_server.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    finally:
        other.close()


def test_basic_auth_and_wrong_password(http_server, tmp_path, monkeypatch):
    secret = "b4sic-Pa55-word"
    monkeypatch.setenv("BANK_PW", "not-the-" + secret)

    def dl(req):
        want = "Basic " + base64.b64encode(f"acct:{secret}".encode()).decode()
        return Reply(200, CSV) if req.headers.get("Authorization") == want else Reply(401, "unauthorized")
    http_server.route("/stmt.csv", dl)
    source = src(http_server.url("/stmt.csv"), auth="basic", username="acct", password_env="BANK_PW")
    sleeps: list[float] = []
    with pytest.raises(FetchError, match="HTTP 401.*not retrying") as e:
        run(tmp_path, source, sleeps)
    assert not e.value.transient and sleeps == [] and len(http_server.requests) == 1
    assert secret not in str(e.value)
    assert_nothing_landed(tmp_path)
    monkeypatch.setenv("BANK_PW", secret)
    assert run(tmp_path, source)[0].path.read_bytes() == CSV


def test_wrong_token_fails_clearly_without_the_token(http_server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WX_TOKEN", "wrong-" + TOKEN)
    bill_api(http_server, "/download/x.csv", CSV)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FetchError, match=r"HTTP 401 .*SIGN_ERROR") as e:
        run(tmp_path, api_src(http_server), [])
    assert TOKEN not in str(e.value) and TOKEN not in caplog.text
    assert_nothing_landed(tmp_path)


def test_hmac_signed_query(http_server, tmp_path, monkeypatch):
    key = "hmac-key-0123456789abcdef"
    monkeypatch.setenv("WX_KEY", key)

    def api(req):                                  # the server checks the signature on its own
        q = dict(req.query)
        sign = q.pop("sign", "")
        text = "&".join(f"{k}={q[k]}" for k in sorted(q) if q[k]) + "&key=" + key
        good = hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest().upper()
        if sign != good or q.get("sign_type") != "HMAC-SHA256":
            return Reply(400, json.dumps({"return_code": "FAIL", "return_msg": "SIGN_ERROR"}))
        return Reply(200, json.dumps({"data": {"url": "/dl/a.csv"}}))
    http_server.route("/pay/downloadbill", api)
    http_server.route("/dl/a.csv", Reply(200, CSV))
    source = src(http_server.url("/pay/downloadbill"), mode="bill_api", auth="hmac", secret_env="WX_KEY",
                 params={"appid": "wx1", "mch_id": "1900000001", "bill_date": "{yyyymmdd}", "nonce_str": "n1"},
                 download_url_field="data.url")
    assert run(tmp_path, source)[0].path.read_bytes() == CSV
    assert key not in http_server.requests[0].path


def test_rsa_signed_query(http_server, tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    monkeypatch.setenv("ALIPAY_KEY", pem)

    def api(req):
        q = dict(req.query)
        sig = base64.b64decode(q.pop("sign"))
        text = "&".join(f"{k}={q[k]}" for k in sorted(q) if q[k])
        key.public_key().verify(sig, text.encode(), padding.PKCS1v15(), hashes.SHA256())   # raises if bad
        resp = {"alipay_data_dataservice_bill_downloadurl_query_response":
                {"code": "10000", "bill_download_url": http_server.url("/dl/alipay.csv")}}
        return Reply(200, json.dumps(resp))
    http_server.route("/gateway.do", api)
    http_server.route("/dl/alipay.csv", Reply(200, CSV))
    source = src(http_server.url("/gateway.do"), mode="bill_api", auth="rsa", secret_env="ALIPAY_KEY",
                 params={"app_id": "2021", "method": "alipay.data.dataservice.bill.downloadurl.query",
                         "biz_content": '{"bill_type":"trade","bill_date":"{yyyy_mm_dd}"}'.replace("{", "{{")
                         .replace("}", "}}").replace("{{yyyy_mm_dd}}", "{yyyy_mm_dd}")},
                 download_url_field="alipay_data_dataservice_bill_downloadurl_query_response.bill_download_url")
    assert run(tmp_path, source)[0].path.read_bytes() == CSV
    assert http_server.requests[0].query["sign_type"] == "RSA2"
    assert '"bill_date":"2026-06-05"' in http_server.requests[0].query["biz_content"]


def add_app_header(req: SignRequest, secret: str) -> None:
    """A custom signer, named in the config as tests.test_fetch_http:add_app_header."""
    req.headers["X-App-Signature"] = hashlib.sha256((secret + req.params["day"]).encode()).hexdigest()


def test_pluggable_signer(http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("APP_SECRET", "app-secret-xyz")
    http_server.route("/bill", Reply(200, json.dumps({"download_url": "/f/x.csv"})))
    http_server.route("/f/x.csv", Reply(200, CSV))
    source = src(http_server.url("/bill"), mode="bill_api", auth="hmac", secret_env="APP_SECRET",
                 signer="tests.test_fetch_http:add_app_header", params={"day": "{yyyymmdd}"})
    run(tmp_path, source)
    want = hashlib.sha256(b"app-secret-xyz20260605").hexdigest()
    assert http_server.requests[0].headers["X-App-Signature"] == want


def test_gbk_zip_entry_names_decoded(http_server, tmp_path):
    name = "微信支付账单_20260605.csv"
    raw = name.encode("gbk")
    placeholder = "A" * len(raw)
    data = zipped({placeholder: CSV, "readme.txt": b"x"})
    data = data.replace(placeholder.encode(), raw)            # a GBK name without the UTF-8 flag, as Alipay ships
    http_server.route("/bill.zip", Reply(200, data))
    files = run(tmp_path, src(http_server.url("/bill.zip"), archive_member="*账单*.csv"))
    assert [(f.original_name, f.path.read_bytes()) for f in files] == [(name, CSV)]
    rows = manifest(tmp_path)
    assert {r["original_name"] for r in rows} == {"bill.zip", name}


# ----------------------------------------------------------------------------- outcomes and faults
def test_500_then_200_is_retried(http_server, tmp_path):
    http_server.route("/bill.csv", Reply(500, "oops"), Reply(200, CSV))
    sleeps: list[float] = []
    files = run(tmp_path, src(http_server.url("/bill.csv")), sleeps)
    assert files[0].path.read_bytes() == CSV
    assert len(http_server.requests) == 2 and len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5


def test_always_503_gives_up_and_leaves_nothing(http_server, tmp_path):
    http_server.route("/bill.csv", Reply(503, "busy"))
    sleeps: list[float] = []
    with pytest.raises(TransientFetchError, match="HTTP 503.*gave up after 3 attempts"):
        run(tmp_path, src(http_server.url("/bill.csv")), sleeps)
    assert len(http_server.requests) == 3 and len(sleeps) == 2
    assert_nothing_landed(tmp_path)


def test_no_statement_for_the_day_is_a_valid_empty_day(http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("WX_TOKEN", TOKEN)
    http_server.route("/v3/bill/tradebill", Reply(400, json.dumps(
        {"code": "NO_STATEMENT_EXIST", "message": "要查询的对账单不存在"}), {"Content-Type": "application/json"}))
    sleeps: list[float] = []
    assert run(tmp_path, api_src(http_server), sleeps) == []
    assert sleeps == [] and len(http_server.requests) == 1
    assert_nothing_landed(tmp_path)


def test_other_4xx_fails_clearly(http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("WX_TOKEN", TOKEN)
    http_server.route("/v3/bill/tradebill", Reply(400, json.dumps({"code": "PARAM_ERROR", "message": "bad date"})))
    sleeps: list[float] = []
    with pytest.raises(FetchError, match=r"HTTP 400 .*code=PARAM_ERROR, message=bad date") as e:
        run(tmp_path, api_src(http_server), sleeps)
    assert not e.value.transient and sleeps == []
    assert_nothing_landed(tmp_path)


def test_404_means_not_yet(http_server, tmp_path):
    with pytest.raises(NotYetAvailable, match="HTTP 404"):
        run(tmp_path, src(http_server.url("/bills/{yyyymmdd}.csv")), [])
    assert_nothing_landed(tmp_path)


def test_truncated_gzip_is_refused_and_nothing_lands(http_server, tmp_path):
    http_server.route("/bill.csv.gz", Reply(200, gz(CSV * 50)[:-20]))    # complete body, broken gzip
    sleeps: list[float] = []
    with pytest.raises(FetchError, match="truncated gzip") as e:
        run(tmp_path, src(http_server.url("/bill.csv.gz")), sleeps)
    assert not e.value.transient and sleeps == []
    assert_nothing_landed(tmp_path)


def test_short_body_is_retried(http_server, tmp_path):
    http_server.route("/bill.csv", Reply(200, CSV * 100, truncate_to=100), Reply(200, CSV * 100))
    sleeps: list[float] = []
    files = run(tmp_path, src(http_server.url("/bill.csv")), sleeps)
    assert files[0].path.read_bytes() == CSV * 100 and len(sleeps) == 1


def test_short_body_every_time_leaves_nothing(http_server, tmp_path):
    http_server.route("/bill.csv", Reply(200, CSV * 100, truncate_to=100))
    with pytest.raises(TransientFetchError, match="got 100 bytes, Content-Length said 9400"):
        run(tmp_path, src(http_server.url("/bill.csv"), retries=1), [])
    assert_nothing_landed(tmp_path)


@pytest.mark.parametrize("evil", ["../../etc/cron.d/x.csv", "/abs/x.csv", "C:\\temp\\x.csv", "ok/../../x.csv"])
def test_zip_slip_refused(http_server, tmp_path, evil):
    http_server.route("/bill.zip", Reply(200, zipped({"good.csv": CSV, evil: b"pwned"})))
    with pytest.raises(FetchError, match="zip-slip") as e:
        run(tmp_path, src(http_server.url("/bill.zip")), [])
    assert not e.value.transient
    assert_nothing_landed(tmp_path)
    assert not list(tmp_path.rglob("x.csv"))


def test_oversized_zip_refused(http_server, tmp_path):
    http_server.route("/bill.zip", Reply(200, zipped({"big.csv": b"0" * 5_000_000})))
    with pytest.raises(FetchError, match="more than max_uncompressed_bytes 1000000"):
        run(tmp_path, src(http_server.url("/bill.zip"), max_uncompressed_bytes=1_000_000), [])
    assert_nothing_landed(tmp_path)


def test_gzip_bomb_stopped_while_inflating(http_server, tmp_path):
    http_server.route("/bill.csv.gz", Reply(200, gz(b"\0" * 20_000_000)))   # ~20 KB on the wire
    with pytest.raises(FetchError, match="exceeds the limit"):
        run(tmp_path, src(http_server.url("/bill.csv.gz"), max_uncompressed_bytes=1_000_000), [])
    assert_nothing_landed(tmp_path)


def test_too_many_zip_entries_refused(http_server, tmp_path):
    http_server.route("/bill.zip", Reply(200, zipped({f"f{i}.csv": b"x" for i in range(20)})))
    with pytest.raises(FetchError, match="20 entries, more than max_archive_entries 10"):
        run(tmp_path, src(http_server.url("/bill.zip"), max_archive_entries=10), [])
    assert_nothing_landed(tmp_path)


def test_oversized_download_refused(http_server, tmp_path):
    http_server.route("/bill.csv", Reply(200, CSV * 1000))
    with pytest.raises(FetchError, match="max_download_bytes"):
        run(tmp_path, src(http_server.url("/bill.csv"), max_download_bytes=1000), [])
    assert_nothing_landed(tmp_path)


def test_read_timeout_is_transient(http_server, tmp_path):
    release = threading.Event()
    http_server.route("/slow.csv", Reply(200, CSV, stall=release))
    sleeps: list[float] = []
    try:
        with pytest.raises(TransientFetchError, match="timed out"):
            run(tmp_path, src(http_server.url("/slow.csv"), timeout=0.3, retries=1), sleeps)
    finally:
        release.set()
    assert len(sleeps) == 1
    assert_nothing_landed(tmp_path)


def test_download_link_with_other_scheme_refused(http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("WX_TOKEN", TOKEN)
    http_server.route("/v3/bill/tradebill", Reply(200, json.dumps({"download_url": "file:///etc/passwd"})))
    with pytest.raises(FetchError, match="refusing download link with scheme 'file'"):
        run(tmp_path, api_src(http_server), [])
    assert_nothing_landed(tmp_path)


def test_credentials_never_sent_over_plain_http_to_a_remote_host(tmp_path, monkeypatch):
    monkeypatch.setenv("WX_TOKEN", TOKEN)
    with pytest.raises(FetchError, match="refusing to send credentials over plain http"):
        run(tmp_path, src("http://bills.example.invalid/x", auth="token", token_env="WX_TOKEN"), [])


def test_tls_verified_by_default_and_ca_bundle_accepted(https_server, tmp_path):
    https_server.route("/bill.csv", Reply(200, CSV))
    sleeps: list[float] = []
    with pytest.raises(FetchError, match="certificate verification failed") as e:
        run(tmp_path / "a", src(https_server.url("/bill.csv")), sleeps)
    assert not e.value.transient and sleeps == []
    assert_nothing_landed(tmp_path / "a")
    files = run(tmp_path / "b", src(https_server.url("/bill.csv"), ca_bundle=str(https_server.ca_path)))
    assert files[0].path.read_bytes() == CSV
    assert manifest(tmp_path / "b")[0]["source"].startswith("https://127.0.0.1:")


def test_tls_verification_can_be_switched_off_explicitly(https_server, tmp_path, caplog):
    https_server.route("/bill.csv", Reply(200, CSV))
    caplog.set_level(logging.WARNING)
    assert run(tmp_path, src(https_server.url("/bill.csv"), verify_tls=False))[0].path.read_bytes() == CSV
    assert "verification is OFF" in caplog.text
