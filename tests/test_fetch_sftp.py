"""SFTP fetching against a real OpenSSH sshd on 127.0.0.1 (paramiko server only where sshd cannot start).

Every fault test asserts the exact outcome and that the landing zone holds nothing partial.
"""
from __future__ import annotations

import hashlib
import logging
import time
from datetime import date, datetime
from pathlib import Path

import pytest

from loaders.fetch import FetchError, NotYetAvailable, TransientFetchError, fetch_statement
from loaders.fetch.landing import Landing
from tests.servers import (  # noqa: F401 (fixtures)
    start_ssh_server,
    ed25519_keypair,
    fault_proxy_factory,
    fetch_config,
    assert_nothing_landed,
    landing_leftovers,
    manifest,
    paramiko_sftp_server,
    sftp_server,
    sftp_source,
    sha256_fingerprint,
)

D = date(2026, 6, 5)
CONTENT = "交易时间,金额\n2026-06-05 10:00:00,100.00\n".encode("utf-8")


def put(server, rel: str, data: bytes) -> Path:
    p = server.root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def run(tmp_path, source, sleeps=None, **cfg_kw):
    cfg = fetch_config(tmp_path, source, **cfg_kw)
    ch = cfg.channels[0]
    return fetch_statement(cfg, ch, ch.statements[0], D, sleep=(sleeps.append if sleeps is not None else None))


def test_server_kind_is_reported(sftp_server, record_property):
    record_property("ssh_server", sftp_server.kind)
    print(f"SFTP tests ran against: {sftp_server.kind} {sftp_server.note}")
    if sftp_server.kind != "openssh":
        pytest.skip(f"paramiko fallback ran, not OpenSSH: {sftp_server.note}")
    import socket
    with socket.create_connection(("127.0.0.1", sftp_server.port), timeout=5) as s:
        banner = s.recv(64)
    assert banner.startswith(b"SSH-2.0-OpenSSH_"), banner          # the real thing answers


def test_key_auth_lands_original_with_manifest_and_is_idempotent(sftp_server, tmp_path):
    put(sftp_server, "out/ICBC_20260605.csv", CONTENT)
    put(sftp_server, "out/ICBC_20260604.csv", b"yesterday\n")           # another day: not fetched
    src = sftp_source(sftp_server, "out/ICBC_{yyyymmdd}*.csv")
    files = run(tmp_path, src)
    assert [f.original_name for f in files] == ["ICBC_20260605.csv"]
    f = files[0]
    assert f.path.read_bytes() == CONTENT
    assert f.sha256 == hashlib.sha256(CONTENT).hexdigest()
    assert f.path == tmp_path / "landing" / "objects" / f.sha256[:2] / f.sha256 / "ICBC_20260605.csv"
    assert not f.restatement
    [row] = manifest(tmp_path)
    assert row["channel"] == "bank_icbc" and row["business_date"] == "2026-06-05"
    assert row["source"] == f"sftp://127.0.0.1:{sftp_server.port}{sftp_server.root}/out/ICBC_20260605.csv"
    assert row["size_bytes"] == len(CONTENT) and row["sha256"] == f.sha256
    assert datetime.fromisoformat(row["fetched_at"]).tzinfo is not None

    again = run(tmp_path, src)                                           # identical: a no-op
    assert again[0].sha256 == f.sha256 and not again[0].restatement
    assert len(manifest(tmp_path)) == 1

    put(sftp_server, "out/ICBC_20260605.csv", CONTENT + b"2026-06-05 11:00:00,5.00\n")
    changed = run(tmp_path, src)                                         # different content: restatement
    assert changed[0].restatement and changed[0].sha256 != f.sha256
    assert [r["restatement"] for r in manifest(tmp_path)] == [False, True]
    assert f.path.read_bytes() == CONTENT                                # the first original is kept
    assert landing_leftovers(tmp_path / "landing") == []


def test_glob_matches_several_files_and_skips_hidden_uploads(sftp_server, tmp_path):
    put(sftp_server, "out/20260605/part1.csv", b"a\n")
    put(sftp_server, "out/20260605/part2.csv", b"b\n")
    put(sftp_server, "out/20260605/.part3.csv", b"upload in progress")
    put(sftp_server, "out/20260605/notes.txt", b"x")
    files = run(tmp_path, sftp_source(sftp_server, "out/{yyyymmdd}/part*.csv"))
    assert [(f.original_name, f.path.read_bytes()) for f in files] == [("part1.csv", b"a\n"), ("part2.csv", b"b\n")]


def test_symlinked_file_is_fetched_as_its_target(sftp_server, tmp_path):
    put(sftp_server, "archive/ICBC_20260605.csv", CONTENT)
    (sftp_server.root / "out").mkdir()
    (sftp_server.root / "out" / "latest_20260605.csv").symlink_to(sftp_server.root / "archive" / "ICBC_20260605.csv")
    (sftp_server.root / "out" / "dangling_20260605.csv").symlink_to(sftp_server.root / "nowhere.csv")
    files = run(tmp_path, sftp_source(sftp_server, "out/*_{yyyymmdd}.csv"))
    assert [(f.original_name, f.path.read_bytes()) for f in files] == [("latest_20260605.csv", CONTENT)]


def test_pinned_fingerprint_accepts_the_right_key(sftp_server, tmp_path):
    put(sftp_server, "f.csv", CONTENT)
    src = sftp_source(sftp_server, "f.csv", known_hosts=None, host_key_fingerprint=sftp_server.host_key_fingerprint)
    assert run(tmp_path, src)[0].path.read_bytes() == CONTENT


def test_wrong_pinned_fingerprint_refuses_without_retry(sftp_server, tmp_path):
    put(sftp_server, "f.csv", CONTENT)
    other = sha256_fingerprint(ed25519_keypair(tmp_path / "other"))
    sleeps: list[float] = []
    src = sftp_source(sftp_server, "f.csv", known_hosts=None, host_key_fingerprint=other)
    with pytest.raises(FetchError) as e:
        run(tmp_path, src, sleeps)
    assert not isinstance(e.value, TransientFetchError)
    assert "does not match the pinned host_key_fingerprint" in str(e.value)
    assert sftp_server.host_key_fingerprint in str(e.value)              # tells what the server offered
    assert sleeps == []
    assert_nothing_landed(tmp_path)


def test_changed_host_key_in_known_hosts_refuses(sftp_server, tmp_path):
    put(sftp_server, "f.csv", CONTENT)
    other = ed25519_keypair(tmp_path / "other").split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sftp_server.port} {other[0]} {other[1]}\n")
    sleeps: list[float] = []
    with pytest.raises(FetchError, match="host key CHANGED") as e:
        run(tmp_path, sftp_source(sftp_server, "f.csv", known_hosts=str(kh)), sleeps)
    assert not e.value.transient and sleeps == []
    assert_nothing_landed(tmp_path)


def test_unknown_host_refuses(sftp_server, tmp_path):
    put(sftp_server, "f.csv", CONTENT)
    kh = tmp_path / "known_hosts"
    line = sftp_server.known_hosts.read_text().split(" ", 1)[1]
    kh.write_text(f"[127.0.0.1]:1 {line}")                               # the right key, another host:port
    with pytest.raises(FetchError, match="not in known_hosts"):
        run(tmp_path, sftp_source(sftp_server, "f.csv", known_hosts=str(kh)), [])
    assert_nothing_landed(tmp_path)


def test_wrong_user_key_fails_at_once(sftp_server, tmp_path):
    put(sftp_server, "f.csv", CONTENT)
    ed25519_keypair(tmp_path / "intruder")
    sleeps: list[float] = []
    with pytest.raises(FetchError, match="authentication refused") as e:
        run(tmp_path, sftp_source(sftp_server, "f.csv", private_key=str(tmp_path / "intruder")), sleeps)
    assert not e.value.transient and sleeps == []
    assert_nothing_landed(tmp_path)


def test_wrong_password_fails_and_never_shows_it(sftp_server, tmp_path, monkeypatch, caplog):
    secret = "Sup3r-s3cret-pa55word"
    monkeypatch.setenv("ICBC_SFTP_PASSWORD", secret)
    put(sftp_server, "f.csv", CONTENT)
    src = sftp_source(sftp_server, "f.csv", private_key=None, password_env="ICBC_SFTP_PASSWORD")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FetchError, match="authentication refused") as e:
        run(tmp_path, src, [])
    assert secret not in str(e.value) and secret not in repr(e.value)
    assert secret not in caplog.text
    assert_nothing_landed(tmp_path)


def test_password_auth_and_secret_appears_nowhere(paramiko_sftp_server, tmp_path, monkeypatch, caplog, capsys):
    from recon.cli import main
    srv = paramiko_sftp_server
    monkeypatch.setenv("BANK_SFTP_PW", srv.password)
    put(srv, "out/b_20260605.csv", CONTENT)
    src = sftp_source(srv, "out/b_{yyyymmdd}.csv", private_key=None, password_env="BANK_SFTP_PW")
    caplog.set_level(logging.DEBUG)
    files = run(tmp_path, src)
    assert files[0].path.read_bytes() == CONTENT
    # the CLI too
    import yaml
    cfg_file = tmp_path / "recon.yml"
    raw = {"warehouse": str(tmp_path / "w.duckdb"), "output_dir": str(tmp_path / "out"),
           "landing_dir": str(tmp_path / "landing"), "internal_source": {"url": "sqlite:///:memory:"},
           "channels": [{"name": "bank_icbc", "statements": [{"kind": "bank", "format": "icbc_csv",
                                                              "source": src}]}]}
    cfg_file.write_text(yaml.safe_dump(raw))
    assert main(["fetch", "--config", str(cfg_file), "--date", "2026-06-05"]) == 0
    out = capsys.readouterr()
    assert f"sha256 {files[0].sha256}" in out.out
    text = out.out + out.err + caplog.text + (tmp_path / "landing" / "manifest.jsonl").read_text()
    assert srv.password not in text
    assert "BANK_SFTP_PW" not in (tmp_path / "landing" / "manifest.jsonl").read_text()


def test_file_missing_then_appearing(sftp_server, tmp_path):
    src = sftp_source(sftp_server, "out/ICBC_{yyyymmdd}.csv")
    sleeps: list[float] = []
    with pytest.raises(NotYetAvailable, match="does not exist"):       # folder not there yet
        run(tmp_path, src, sleeps)
    (sftp_server.root / "out").mkdir()
    with pytest.raises(NotYetAvailable, match="no file matches"):
        run(tmp_path, src, sleeps)
    assert sleeps == []                                                 # "not yet" is not retried here
    assert_nothing_landed(tmp_path)
    put(sftp_server, "out/ICBC_20260605.csv", CONTENT)
    assert run(tmp_path, src)[0].path.read_bytes() == CONTENT


def test_done_marker_missing_means_not_yet(sftp_server, tmp_path):
    put(sftp_server, "out/ICBC_20260605.csv", CONTENT)
    src = sftp_source(sftp_server, "out/ICBC_{yyyymmdd}.csv", done_marker=".ok")
    with pytest.raises(NotYetAvailable, match=r"no done-marker ICBC_20260605\.csv\.ok"):
        run(tmp_path, src, [])
    assert_nothing_landed(tmp_path)
    put(sftp_server, "out/ICBC_20260605.csv.ok", b"")
    files = run(tmp_path, src)
    assert [f.original_name for f in files] == ["ICBC_20260605.csv"]   # the marker is not a statement


def test_day_done_marker_template(sftp_server, tmp_path):
    put(sftp_server, "out/20260605/a.csv", CONTENT)
    src = sftp_source(sftp_server, "out/{yyyymmdd}/*.csv", done_marker=sftp_server.remote("out/{yyyymmdd}/READY"))
    with pytest.raises(NotYetAvailable, match="done-marker"):
        run(tmp_path, src, [])
    assert_nothing_landed(tmp_path)
    put(sftp_server, "out/20260605/READY", b"")
    assert [f.original_name for f in run(tmp_path, src)] == ["a.csv"]


def test_published_checksum_verified(sftp_server, tmp_path):
    put(sftp_server, "out/a.csv", CONTENT)
    put(sftp_server, "out/a.csv.sha256", f"{hashlib.sha256(CONTENT).hexdigest()}  a.csv\n".encode())
    files = run(tmp_path, sftp_source(sftp_server, "out/a.csv", checksum_suffix=".sha256"))
    assert [f.original_name for f in files] == ["a.csv"]


def test_checksum_mismatch_is_retried_then_fails_leaving_nothing(sftp_server, tmp_path):
    put(sftp_server, "out/a.csv", CONTENT)
    put(sftp_server, "out/a.csv.md5", (hashlib.md5(b"something else").hexdigest() + "\n").encode())
    sleeps: list[float] = []
    with pytest.raises(TransientFetchError, match=r"md5 .* does not match the published .*gave up after 3 attempts"):
        run(tmp_path, sftp_source(sftp_server, "out/a.csv", checksum_suffix=".md5"), sleeps)
    assert len(sleeps) == 2 and all(0 <= s <= 2 for s in sleeps)
    assert_nothing_landed(tmp_path)


def test_required_checksum_missing_means_not_yet(sftp_server, tmp_path):
    put(sftp_server, "out/a.csv", CONTENT)
    with pytest.raises(NotYetAvailable, match="checksum file a.csv.sha256"):
        run(tmp_path, sftp_source(sftp_server, "out/a.csv", checksum_suffix=".sha256", checksum_required=True), [])
    assert_nothing_landed(tmp_path)


def via(proxy, server) -> dict:
    """Connect through the proxy: another port, so pin the key by fingerprint instead of known_hosts."""
    return {"port": proxy.port, "known_hosts": None, "host_key_fingerprint": server.host_key_fingerprint}


BIG = bytes(range(256)) * 8192          # 2 MiB: the drop happens well inside the transfer


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_connection_dropped_mid_transfer_is_retried(sftp_server, fault_proxy_factory, tmp_path):
    put(sftp_server, "out/big.csv", BIG)
    proxy = fault_proxy_factory(sftp_server.port)
    proxy.drop_after, proxy.faulty = 256 * 1024, 1                      # cut the first connection after 256 KiB
    sleeps: list[float] = []
    files = run(tmp_path, sftp_source(sftp_server, "out/big.csv", **via(proxy, sftp_server)), sleeps)
    assert proxy.dropped == 1 and proxy.connections == 2 and len(sleeps) == 1
    assert files[0].path.read_bytes() == BIG
    assert landing_leftovers(tmp_path / "landing") == []


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_connection_dropped_every_time_leaves_nothing(sftp_server, fault_proxy_factory, tmp_path):
    put(sftp_server, "out/big.csv", BIG)
    proxy = fault_proxy_factory(sftp_server.port)
    proxy.drop_after, proxy.faulty = 256 * 1024, 99
    sleeps: list[float] = []
    with pytest.raises(TransientFetchError, match="connection lost while downloading .*gave up after 3 attempts"):
        run(tmp_path, sftp_source(sftp_server, "out/big.csv", **via(proxy, sftp_server)), sleeps)
    assert proxy.dropped == 3 and len(sleeps) == 2
    assert_nothing_landed(tmp_path)


def test_connect_timeout_when_server_never_answers(sftp_server, fault_proxy_factory, tmp_path):
    proxy = fault_proxy_factory(sftp_server.port)
    proxy.blackhole = True
    sleeps: list[float] = []
    t0 = time.monotonic()
    with pytest.raises(TransientFetchError, match="gave up after 2 attempts"):
        run(tmp_path, sftp_source(sftp_server, "f.csv", **via(proxy, sftp_server), connect_timeout=0.5, retries=1),
            sleeps)
    assert time.monotonic() - t0 < 10 and len(sleeps) == 1 and proxy.connections == 2
    assert_nothing_landed(tmp_path)


def test_server_down_then_restarted(sftp_server, tmp_path):
    if sftp_server.kind != "openssh":
        pytest.skip("restart needs the OpenSSH server")
    put(sftp_server, "out/a.csv", CONTENT)
    src = sftp_source(sftp_server, "out/a.csv", retries=1)
    sftp_server.stop()
    sleeps: list[float] = []
    with pytest.raises(TransientFetchError, match="cannot connect"):
        run(tmp_path, src, sleeps)
    assert len(sleeps) == 1
    assert_nothing_landed(tmp_path)
    sftp_server.start()
    assert run(tmp_path, src)[0].path.read_bytes() == CONTENT


def test_remote_names_never_become_local_paths(sftp_server, tmp_path):
    # a real file whose name holds backslashes and dots: only its last part may be used locally
    put(sftp_server, "out/a\\..\\..\\evil.csv", CONTENT)
    files = run(tmp_path, sftp_source(sftp_server, "out/*evil.csv"))
    assert [f.original_name for f in files] == ["evil.csv"]
    landing = (tmp_path / "landing").resolve()
    assert files[0].path.resolve().is_relative_to(landing / "objects")
    assert not (tmp_path / "evil.csv").exists() and not (tmp_path.parent / "evil.csv").exists()


def test_sftp_config_requires_a_pinned_host_key(tmp_path):
    from recon.config import ConfigError
    with pytest.raises(ConfigError, match="known_hosts or host_key_fingerprint"):
        fetch_config(tmp_path, {"type": "sftp", "host": "127.0.0.1", "username": "u", "remote_path": "/x"})


def test_landing_keeps_only_complete_files(sftp_server, tmp_path):
    """After a fetch, the staging area is gone: no temp or part files anywhere under the landing zone."""
    put(sftp_server, "out/a.csv", CONTENT)
    run(tmp_path, sftp_source(sftp_server, "out/a.csv"))
    landing = Landing(tmp_path / "landing")
    assert [e["original_name"] for e in landing.entries()] == ["a.csv"]
    assert list((tmp_path / "landing" / "tmp").iterdir()) == []


def test_permission_denied_fails_at_once_and_leaves_nothing(tmp_path_factory, tmp_path):
    """The server lists the file but refuses to open it: a configuration problem, not retried."""
    base = tmp_path_factory.mktemp("sshd-denied")
    server = start_ssh_server(base / "etc", base / "home", denied="open")
    try:
        put(server, "out/ICBC_20260605.csv", CONTENT)
        sleeps: list[float] = []
        with pytest.raises(FetchError, match=r"permission denied on .*ICBC_20260605\.csv") as err:
            run(tmp_path, sftp_source(server, "out/ICBC_{yyyymmdd}*.csv"), sleeps=sleeps)
        assert not isinstance(err.value, TransientFetchError) and sleeps == []
        assert_nothing_landed(tmp_path)
    finally:
        server.stop()


def test_a_connection_lost_in_the_prefetch_thread_is_kept_for_the_next_read():
    """paramiko's prefetch thread dies with the error when the connection drops (a stray traceback in the log,
    seen above only when the timing is right): it is kept as the file's saved exception instead."""
    import paramiko

    from loaders.fetch.sftp import _keep_prefetch_errors

    class File:
        _saved_exception = None

        def __init__(self, error):
            self.error = error

        def _prefetch_thread(self, chunks, max_requests):
            raise self.error

    for error in (EOFError("connection lost"), paramiko.SSHException("closed"), OSError("reset")):
        f = File(error)
        _keep_prefetch_errors(f)
        f._prefetch_thread([(0, 32768)], None)          # what paramiko's thread runs: nothing escapes
        assert f._saved_exception is error
