"""Statements from an SFTP server, with paramiko.

One attempt = connect (TCP with ``connect_timeout``), SSH handshake, check the
server's host key against ``known_hosts`` or the pinned ``host_key_fingerprint``
*before* sending any credential, authenticate (key or password), list the
remote folder, and download every matching, complete file into the staging
folder under a temporary name; the size (and the published checksum, when
there is one) is verified before the file gets its final staged name.

* missing file / folder / done-marker / required checksum file -> :class:`NotYetAvailable`
* unknown or changed host key, authentication refused, permission denied,
  unusable key file -> :class:`FetchError` at once (no retry)
* connection refused / dropped / timed out, short transfer, checksum mismatch,
  file changing while read -> :class:`TransientFetchError`, retried with
  exponential backoff and jitter (``loaders.fetch.retry``)

Remote names are never used as local paths as such: ``landing.safe_name``
keeps the base name and refuses ``..``, hidden and empty names.
"""
from __future__ import annotations

import base64
import errno
import fnmatch
import hashlib
import io
import logging
import os
import posixpath
import random
import socket
import stat
import time
from datetime import date
from pathlib import Path
from typing import Callable

import paramiko

from loaders.fetch.base import FetchError, FetchOutcome, NotYetAvailable, StagedFile, TransientFetchError
from loaders.fetch.credentials import Credentials, resolve
from loaders.fetch.landing import safe_name
from loaders.fetch.retry import with_retries
from recon.config import SftpTransport, Statement, expand_path

log = logging.getLogger("loaders.fetch.sftp")

CHUNK = 32768
MAX_CHECKSUM_FILE = 64 * 1024
# known_hosts key type -> host key algorithms to prefer in the handshake
_ALGOS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64>`` as printed by ``ssh-keygen -lf``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _norm_fp(text: str) -> str:
    text = text.strip()
    if text.upper().startswith("SHA256:"):
        text = text[7:]
    return "SHA256:" + text.rstrip("=")


def _host_id(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _keep_prefetch_errors(rf: paramiko.SFTPFile) -> None:
    """Keep a dropped connection inside the download, not as a traceback in the log.

    paramiko's prefetch sends the read requests from a thread of its own; when the connection drops meanwhile,
    that thread dies with the error, and Python prints its traceback beside the download's own clean report
    ("connection lost while downloading ..."). The error is kept instead as the file's saved exception, which
    paramiko raises on the next read, as it does with an error the server sends back.
    """
    requests = getattr(rf, "_prefetch_thread", None)
    if requests is None:          # another paramiko: its prefetch as it is
        return

    def guarded(*args):
        try:
            requests(*args)
        except (EOFError, OSError, paramiko.SSHException) as exc:
            rf._saved_exception = exc

    rf._prefetch_thread = guarded


class SftpFetcher:
    def __init__(self, transport: SftpTransport, sleep: Callable[[float], None] | None = None,
                 rng: Callable[[], float] = random.random):
        self.transport = transport
        self.sleep = sleep
        self.rng = rng
        self.attempts = 0            # connection attempts made by the last fetch (for logs and tests)

    # ------------------------------------------------------------------ entry point
    def fetch(self, statement: Statement, business_date: date, staging: Path, channel: str = "") -> FetchOutcome:
        t = self.transport
        creds = resolve(t)
        remote = expand_path(t.remote_path, business_date, channel=channel)
        day_marker = None
        if t.done_marker and not t.done_marker.startswith("."):
            day_marker = expand_path(t.done_marker, business_date, channel=channel)
        what = f"sftp {t.host}:{t.port} {remote}"
        self.attempts = 0

        def attempt() -> FetchOutcome:
            self.attempts += 1
            try:
                return self._attempt(creds, remote, day_marker, staging)
            except (FetchError, NotYetAvailable) as exc:
                raise type(exc)(creds.scrub(str(exc))) from None

        return with_retries(attempt, retries=t.retries, base=t.backoff_base, cap=t.backoff_max,
                            what=what, sleep=self.sleep, rng=self.rng)

    # ------------------------------------------------------------------ one attempt
    def _attempt(self, creds: Credentials, remote: str, day_marker: str | None, staging: Path) -> FetchOutcome:
        t = self.transport
        transport = self._connect(creds)
        try:
            try:
                sftp = paramiko.SFTPClient.from_transport(transport)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise TransientFetchError(f"{self._where()}: cannot open the SFTP session: {exc}") from None
            sftp.get_channel().settimeout(t.transfer_timeout)
            return self._collect(sftp, remote, day_marker, staging)
        finally:
            transport.close()

    def _where(self) -> str:
        return f"sftp {self.transport.host}:{self.transport.port}"

    def _connect(self, creds: Credentials) -> paramiko.Transport:
        t = self.transport
        try:
            sock = socket.create_connection((t.host, t.port), timeout=t.connect_timeout)
        except socket.timeout:
            raise TransientFetchError(f"{self._where()}: connect timed out after {t.connect_timeout}s") from None
        except OSError as exc:
            raise TransientFetchError(f"{self._where()}: cannot connect: {exc.strerror or exc}") from None
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = t.connect_timeout
            transport.handshake_timeout = t.connect_timeout
            transport.auth_timeout = t.connect_timeout
            known = self._known_keys()
            if known:                         # ask for the key type we can check, like OpenSSH does
                opts = transport.get_security_options()
                wanted = [a for k in known for a in _ALGOS.get(k, (k,))]
                opts.key_types = tuple(dict.fromkeys(
                    [a for a in wanted if a in opts.key_types] + list(opts.key_types)))
            try:
                transport.start_client(timeout=t.connect_timeout)
            except paramiko.SSHException as exc:
                raise TransientFetchError(f"{self._where()}: SSH handshake failed: {exc}") from None
            except (OSError, EOFError) as exc:
                raise TransientFetchError(f"{self._where()}: connection lost during the handshake: {exc}") from None
            try:          # start_client returns silently when its timeout passes before the key exchange ends
                server_key = transport.get_remote_server_key()
            except paramiko.SSHException:
                raise TransientFetchError(f"{self._where()}: SSH handshake timed out after "
                                          f"{t.connect_timeout}s (no banner or key exchange)") from None
            self._check_host_key(server_key, known)
            self._authenticate(transport, creds)
            return transport
        except BaseException:
            transport.close()
            raise

    def _known_keys(self) -> dict[str, paramiko.PKey] | None:
        t = self.transport
        if not t.known_hosts:
            return None
        try:
            keys = paramiko.HostKeys(t.known_hosts)
        except (OSError, paramiko.SSHException) as exc:
            raise FetchError(f"{self._where()}: cannot read known_hosts {t.known_hosts}: {exc}") from None
        entry = keys.lookup(_host_id(t.host, t.port))
        return dict(entry) if entry else {}

    def _check_host_key(self, key: paramiko.PKey, known: dict[str, paramiko.PKey] | None) -> None:
        t = self.transport
        got = fingerprint(key)
        if t.host_key_fingerprint and _norm_fp(t.host_key_fingerprint) != got:
            raise FetchError(f"{self._where()}: host key {key.get_name()} {got} does not match the pinned "
                             f"host_key_fingerprint {_norm_fp(t.host_key_fingerprint)}; refusing to connect "
                             "(the server was replaced, or someone is in the middle)")
        if known is None:
            return
        if not known:
            raise FetchError(f"{self._where()}: host {_host_id(t.host, t.port)} is not in known_hosts "
                             f"{t.known_hosts}; refusing an unknown server (its key is {key.get_name()} {got}: "
                             "verify it out of band, then add it)")
        expected = known.get(key.get_name())
        if expected is None or expected != key:
            raise FetchError(f"{self._where()}: host key CHANGED: server offers {key.get_name()} {got}, "
                             f"known_hosts {t.known_hosts} has "
                             + ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in known.values())
                             + "; refusing to connect")

    def _load_key(self, creds: Credentials) -> paramiko.PKey | None:
        t = self.transport
        try:
            if creds.private_key_text:
                for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
                    try:
                        return cls.from_private_key(io.StringIO(creds.private_key_text),
                                                    password=creds.private_key_passphrase)
                    except paramiko.SSHException:
                        continue
                raise FetchError(f"{self._where()}: the private key from the Airflow connection is not readable")
            if t.private_key:
                return paramiko.PKey.from_path(t.private_key, creds.private_key_passphrase)
        except FileNotFoundError:
            raise FetchError(f"{self._where()}: private_key {t.private_key} does not exist") from None
        except paramiko.PasswordRequiredException:
            raise FetchError(f"{self._where()}: private_key {t.private_key} is encrypted; "
                             "set private_key_passphrase_env") from None
        except (paramiko.SSHException, ValueError, OSError) as exc:
            raise FetchError(f"{self._where()}: cannot read private_key {t.private_key}: "
                             f"{type(exc).__name__}") from None
        return None

    def _authenticate(self, transport: paramiko.Transport, creds: Credentials) -> None:
        if not creds.username:
            raise FetchError(f"{self._where()}: no username (set username or the Airflow connection's login)")
        key = self._load_key(creds)
        if key is None and not creds.password:
            raise FetchError(f"{self._where()}: no private_key and no password configured")
        try:
            if key is not None:
                try:
                    transport.auth_publickey(creds.username, key)
                except paramiko.AuthenticationException:
                    if not creds.password:
                        raise
            if not transport.is_authenticated() and creds.password:
                transport.auth_password(creds.username, creds.password)
        except paramiko.AuthenticationException:
            raise FetchError(f"{self._where()}: authentication refused for user {creds.username!r} "
                             f"({'key' if key is not None else 'password'}); not retrying") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransientFetchError(f"{self._where()}: connection lost during authentication: "
                                      f"{type(exc).__name__}") from None
        if not transport.is_authenticated():
            raise FetchError(f"{self._where()}: authentication refused for user {creds.username!r}")

    # ------------------------------------------------------------------ listing + download
    def _sftp_error(self, exc: BaseException, path: str, missing_means_not_yet: bool = True):
        code = getattr(exc, "errno", None)
        if isinstance(exc, FileNotFoundError) or code == errno.ENOENT:
            if missing_means_not_yet:
                return NotYetAvailable(f"{self._where()}: {path} does not exist (yet)")
        if isinstance(exc, PermissionError) or code == errno.EACCES:
            return FetchError(f"{self._where()}: permission denied on {path}")
        return TransientFetchError(f"{self._where()}: {path}: connection lost or server error: "
                                   f"{type(exc).__name__}: {exc}")

    def _collect(self, sftp: paramiko.SFTPClient, remote: str, day_marker: str | None,
                 staging: Path) -> FetchOutcome:
        t = self.transport
        folder, pattern = posixpath.split(remote)
        folder = folder or "."
        try:
            listing = sftp.listdir_attr(folder)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._sftp_error(exc, folder) from None
        entries = {a.filename: a for a in listing}
        for name, a in list(entries.items()):          # a symlink counts as what it points to ("latest.csv")
            if stat.S_ISLNK(a.st_mode or 0) and fnmatch.fnmatchcase(name, pattern):
                try:
                    target = sftp.stat(posixpath.join(folder, name))
                except (OSError, EOFError, paramiko.SSHException):
                    continue                           # dangling link: not a file (yet)
                target.filename = name
                entries[name] = target
        suffixes = tuple(s for s in (t.checksum_suffix,
                                     t.done_marker if t.done_marker and t.done_marker.startswith(".") else None)
                         if s)
        names = sorted(n for n, a in entries.items()
                       if fnmatch.fnmatchcase(n, pattern) and stat.S_ISREG(a.st_mode or 0)
                       and (pattern.startswith(".") or not n.startswith("."))   # like a shell glob: uploads
                       # in progress are often hidden (".name.part"); never pick those up
                       and not (suffixes and n.endswith(suffixes)))
        if not names:
            raise NotYetAvailable(f"{self._where()}: no file matches {remote} (yet)")
        if day_marker:
            try:
                sftp.stat(day_marker)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                err = self._sftp_error(exc, day_marker)
                if isinstance(err, NotYetAvailable):
                    raise NotYetAvailable(f"{self._where()}: done-marker {day_marker} is not there yet") from None
                raise err from None
        plan = []
        for name in names:
            if t.done_marker and t.done_marker.startswith(".") and name + t.done_marker not in entries:
                raise NotYetAvailable(f"{self._where()}: {posixpath.join(folder, name)} has no done-marker "
                                      f"{name + t.done_marker} yet")
            expected = None
            if t.checksum_suffix:
                if name + t.checksum_suffix in entries:
                    expected = self._read_checksum(sftp, posixpath.join(folder, name + t.checksum_suffix))
                elif t.checksum_required:
                    raise NotYetAvailable(f"{self._where()}: checksum file {name + t.checksum_suffix} "
                                          "is not there yet")
            try:
                local = safe_name(name)
            except ValueError:
                raise FetchError(f"{self._where()}: refusing unsafe remote file name {name!r}") from None
            plan.append((name, local, entries[name], expected))
        locals_ = [p[1] for p in plan]
        if len(set(locals_)) != len(locals_):
            raise FetchError(f"{self._where()}: remote names {names} collide once made safe")
        staged = []
        for name, local, attr, expected in plan:
            path = posixpath.join(folder, name)
            staged.append(self._download(sftp, path, local, attr, expected, staging))
        return FetchOutcome(staged)

    def _algorithm(self) -> str:
        suffix = (self.transport.checksum_suffix or "").lower().lstrip(".")
        for algo in ("sha256", "sha512", "sha1", "md5"):
            if algo in suffix:
                return algo
        return "sha256"

    def _read_checksum(self, sftp: paramiko.SFTPClient, path: str) -> str:
        try:
            with sftp.open(path, "rb") as f:
                text = f.read(MAX_CHECKSUM_FILE).decode("ascii", "replace")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._sftp_error(exc, path) from None
        token = (text.split() or [""])[0].lower()
        width = hashlib.new(self._algorithm()).digest_size * 2
        if len(token) != width or any(c not in "0123456789abcdef" for c in token):
            raise FetchError(f"{self._where()}: checksum file {path} does not start with a "
                             f"{self._algorithm()} hex digest")
        return token

    def _download(self, sftp: paramiko.SFTPClient, path: str, local: str, attr, expected: str | None,
                  staging: Path) -> StagedFile:
        t = self.transport
        tmp = staging / f".part-{local}"
        digest = hashlib.new(self._algorithm())
        size = attr.st_size
        deadline = time.monotonic() + t.transfer_timeout
        got = 0
        try:
            try:
                with sftp.open(path, "rb") as rf, open(tmp, "wb") as out:
                    _keep_prefetch_errors(rf)
                    rf.prefetch(size)
                    while True:
                        chunk = rf.read(CHUNK)
                        if not chunk:
                            break
                        got += len(chunk)
                        digest.update(chunk)
                        out.write(chunk)
                        if time.monotonic() > deadline:
                            raise TransientFetchError(f"{self._where()}: transfer of {path} timed out after "
                                                      f"{t.transfer_timeout}s ({got} of {size} bytes)")
                after = sftp.stat(path)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                err = self._sftp_error(exc, path, missing_means_not_yet=False)
                if isinstance(err, TransientFetchError):
                    err = TransientFetchError(f"{self._where()}: connection lost while downloading {path} "
                                              f"({got} of {size} bytes): {type(exc).__name__}")
                raise err from None
            if got != size:
                raise TransientFetchError(f"{self._where()}: {path}: got {got} bytes, the server listed {size}")
            if after.st_size != size or (after.st_mtime or 0) != (attr.st_mtime or 0):
                raise TransientFetchError(f"{self._where()}: {path} changed while it was read "
                                          "(still being written?)")
            if expected and digest.hexdigest() != expected:
                raise TransientFetchError(f"{self._where()}: {path}: {self._algorithm()} {digest.hexdigest()} "
                                          f"does not match the published {expected}")
            final = staging / local
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("%s: downloaded %s (%d bytes)", self._where(), path, got)
        where = path if path.startswith("/") else "/~/" + path
        return StagedFile(final, local, f"sftp://{t.host}:{t.port}{where}")
