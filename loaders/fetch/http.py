"""Statements over HTTP(S): a direct URL, or the two-step bill API (ask for a download link, then download).

Built on ``urllib`` (no extra dependency) with an opener that speaks only
http/https (no ``file:``/``ftp:`` even through a redirect). TLS certificates
are verified unless ``verify_tls: false``; ``ca_bundle`` adds a private CA.
Credentials go in an ``Authorization`` header that is not repeated on
redirects and is sent to the download URL only when it has the API's origin;
they are never sent over plain http except to a loopback address.

Outcomes:

* the channel's "no statement for this day" (any of ``no_statement_codes``
  anywhere in a JSON answer, whatever the status) -> ``FetchOutcome(no_statement=True)``
* HTTP 404 -> :class:`NotYetAvailable` (``not_found: not_yet``, the default) or an error
* timeouts, connection errors, short bodies, 408/429/5xx -> :class:`TransientFetchError`, retried
  with exponential backoff and jitter
* 401/403, other 4xx, TLS verification failures, bad archives -> :class:`FetchError` at once

The download is kept as it arrived (``FetchOutcome.archives`` when it is a
gzip/ZIP archive, which is then unpacked with the limits of ``loaders.fetch.archive``).
"""
from __future__ import annotations

import base64
import email.message
import ipaddress
import json
import logging
import os
import random
import socket
import ssl
import time
import http.client
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlencode, urlsplit

from loaders.fetch import archive
from loaders.fetch.base import FetchError, FetchOutcome, NotYetAvailable, StagedFile, TransientFetchError
from loaders.fetch.credentials import Credentials, resolve
from loaders.fetch.landing import safe_name
from loaders.fetch.retry import with_retries
from loaders.fetch.signing import BUILTIN, SignRequest, load_signer
from recon.config import HttpTransport, Statement, expand_path

log = logging.getLogger("loaders.fetch.http")

CHUNK = 1 << 16
MAX_API_BODY = 4 << 20            # a bill API answer is small JSON
USER_AGENT = "payrecon-fetch/1"


class _NoStatement(Exception):
    pass


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe for logs and the manifest."""
    p = urlsplit(url)
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{p.port}" if p.port else ""
    return f"{p.scheme}://{host}{port}{p.path}"


def _origin(url: str) -> tuple[str, str, int | None]:
    p = urlsplit(url)
    return p.scheme, (p.hostname or "").lower(), p.port or (443 if p.scheme == "https" else 80)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _find_codes(node: Any, codes: set[str]) -> str | None:
    if isinstance(node, str):
        return node if node in codes else None
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        for v in node:
            hit = _find_codes(v, codes)
            if hit:
                return hit
    return None


def _dig(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _summary(doc: Any) -> str:
    """The code/message fields of an error answer, short."""
    if isinstance(doc, dict):
        keys = ("code", "sub_code", "return_code", "err_code", "message", "msg", "sub_msg", "return_msg",
                "err_code_des", "error", "error_description")
        found = {}
        for k in keys:
            v = doc.get(k)
            if v is not None and not isinstance(v, (dict, list)):
                found[k] = v
        if not found:                      # one level down (Alipay nests under *_response)
            for v in doc.values():
                if isinstance(v, dict):
                    return _summary(v)
        return ", ".join(f"{k}={v}" for k, v in found.items())[:300]
    return ""


class HttpFetcher:
    def __init__(self, transport: HttpTransport, sleep: Callable[[float], None] | None = None,
                 rng: Callable[[], float] = random.random):
        self.transport = transport
        self.sleep = sleep
        self.rng = rng
        self.attempts = 0
        self._opener = self._build_opener()

    # ------------------------------------------------------------------ plumbing
    def _ssl_context(self) -> ssl.SSLContext:
        t = self.transport
        if not t.verify_tls:
            log.warning("TLS certificate verification is OFF for %s (verify_tls: false)", public_url(t.url))
            return ssl._create_unverified_context()   # noqa: S323 - explicit opt-out in the config
        try:
            return ssl.create_default_context(cafile=t.ca_bundle) if t.ca_bundle else ssl.create_default_context()
        except (OSError, ssl.SSLError) as exc:
            raise FetchError(f"ca_bundle {t.ca_bundle}: cannot load: {exc}") from None

    def _build_opener(self) -> urllib.request.OpenerDirector:
        opener = urllib.request.OpenerDirector()
        for handler in (urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(context=self._ssl_context()),
                        urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPRedirectHandler(),
                        urllib.request.HTTPErrorProcessor(), urllib.request.UnknownHandler()):
            opener.add_handler(handler)
        return opener

    def _open(self, req: urllib.request.Request, what: str):
        """Open ``req``; map low-level failures to transient / permanent errors. HTTPError passes through."""
        try:
            return self._opener.open(req, timeout=self.transport.timeout)
        except urllib.error.HTTPError:
            raise
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise FetchError(f"{what}: TLS certificate verification failed ({reason.verify_message}); "
                                 "refusing (set ca_bundle for a private CA)") from None
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise TransientFetchError(f"{what}: timed out after {self.transport.timeout}s") from None
            if isinstance(reason, OSError):
                raise TransientFetchError(f"{what}: cannot connect: {reason.strerror or reason}") from None
            raise FetchError(f"{what}: {reason}") from None
        except (socket.timeout, TimeoutError):
            raise TransientFetchError(f"{what}: timed out after {self.transport.timeout}s") from None
        except ssl.SSLCertVerificationError as exc:
            raise FetchError(f"{what}: TLS certificate verification failed ({exc.verify_message})") from None
        except (http.client.HTTPException, ConnectionError, ssl.SSLError, OSError) as exc:
            raise TransientFetchError(f"{what}: connection failed: {type(exc).__name__}: {exc}") from None

    def _http_error(self, exc: urllib.error.HTTPError, what: str) -> Exception:
        t = self.transport
        try:
            body = exc.read(64 * 1024)
        except (OSError, http.client.HTTPException):
            body = b""
        doc = None
        try:
            doc = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            pass
        if doc is not None and _find_codes(doc, set(t.no_statement_codes)):
            return _NoStatement(_find_codes(doc, set(t.no_statement_codes)))
        detail = _summary(doc) if doc is not None else body[:200].decode("utf-8", "replace").strip()
        status = exc.code
        msg = f"{what}: HTTP {status} {exc.reason}" + (f" ({detail})" if detail else "")
        if status in (408, 425, 429) or status >= 500:
            return TransientFetchError(msg)
        if status == 404 and t.not_found == "not_yet":
            return NotYetAvailable(msg + ": not published yet")
        if status in (401, 403):
            return FetchError(msg + ": authentication or permission refused; not retrying")
        return FetchError(msg)

    # ------------------------------------------------------------------ entry point
    def fetch(self, statement: Statement, business_date: date, staging: Path, channel: str = "") -> FetchOutcome:
        t = self.transport
        creds = resolve(t)
        url = expand_path(t.url, business_date, channel=channel)
        params = {k: expand_path(v, business_date, channel=channel) for k, v in t.params.items()}
        default_name = expand_path(t.file_name, business_date, channel=channel) if t.file_name else \
            f"{channel or 'statement'}_{business_date:%Y%m%d}"
        scheme, host, _ = _origin(url)
        if t.auth != "none" and scheme != "https" and not _is_loopback(host):
            raise FetchError(f"{public_url(url)}: refusing to send credentials over plain http; use https")
        what = f"{t.mode} {public_url(url)}"
        self.attempts = 0

        def attempt() -> FetchOutcome:
            self.attempts += 1
            folder = staging / f"attempt{self.attempts}"
            folder.mkdir()
            try:
                return self._attempt(creds, url, params, default_name, folder, what)
            except _NoStatement as exc:
                log.info("%s: the channel says there is no statement for this day (%s)", what, exc)
                return FetchOutcome(no_statement=True)
            except (FetchError, NotYetAvailable) as exc:
                raise type(exc)(creds.scrub(str(exc))) from None
            finally:
                for p in folder.rglob(".part-*"):
                    p.unlink(missing_ok=True)

        return with_retries(attempt, retries=t.retries, base=t.backoff_base, cap=t.backoff_max,
                            what=what, sleep=self.sleep, rng=self.rng)

    # ------------------------------------------------------------------ one attempt
    def _auth(self, creds: Credentials, req: SignRequest) -> SignRequest:
        t = self.transport
        if t.auth == "token":
            if not creds.token:
                raise FetchError("auth token: no token (set token_env or the Airflow connection)")
            req.headers["Authorization"] = f"Bearer {creds.token}"
        elif t.auth == "basic":
            if not (creds.username and creds.password):
                raise FetchError("auth basic: username and password_env (or an Airflow connection) needed")
            raw = f"{creds.username}:{creds.password}".encode()
            req.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        elif t.auth in ("hmac", "rsa"):
            if not creds.secret:
                raise FetchError(f"auth {t.auth}: no signing secret (set secret_env or the Airflow connection)")
            signer = load_signer(t.signer or BUILTIN[t.auth])
            out = signer(req, creds.secret)
            req = out if isinstance(out, SignRequest) else req
        elif t.signer:                    # auth: none with a custom signer (e.g. an app id only)
            out = load_signer(t.signer)(req, creds.secret or "")
            req = out if isinstance(out, SignRequest) else req
        return req

    def _request(self, sreq: SignRequest, secret_headers: set[str]) -> urllib.request.Request:
        data = None
        url = sreq.url
        if sreq.method == "GET" and sreq.params:
            url += ("&" if "?" in url else "?") + urlencode(sreq.params)
        elif sreq.method == "POST":
            data = urlencode(sreq.params).encode()
        req = urllib.request.Request(url, data=data, method=sreq.method)
        req.add_header("User-Agent", USER_AGENT)
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        for k, v in sreq.headers.items():
            if k in secret_headers or k.lower() == "authorization":
                req.add_unredirected_header(k, v)   # not repeated on a redirect
            else:
                req.add_header(k, v)
        return req

    def _attempt(self, creds: Credentials, url: str, params: dict[str, str], default_name: str,
                 folder: Path, what: str) -> FetchOutcome:
        t = self.transport
        auth_headers: dict[str, str] = {}
        if t.mode == "bill_api":
            sreq = self._auth(creds, SignRequest(t.method, url, dict(params), {}))
            auth_headers = {k: v for k, v in sreq.headers.items() if k.lower() == "authorization"}
            try:
                with self._open(self._request(sreq, set(auth_headers)), what) as resp:
                    body = self._read_small(resp, what)
            except urllib.error.HTTPError as exc:
                raise self._http_error(exc, what) from None
            try:
                doc = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise FetchError(f"{what}: the bill API answer is not JSON") from None
            code = _find_codes(doc, set(t.no_statement_codes))
            if code:
                raise _NoStatement(code)
            link = _dig(doc, t.download_url_field)
            if not isinstance(link, str) or not link:
                raise FetchError(f"{what}: the answer has no {t.download_url_field!r}"
                                 + (f" ({_summary(doc)})" if _summary(doc) else ""))
            link = urllib.request.urljoin(url, link)
            if urlsplit(link).scheme not in ("http", "https"):
                raise FetchError(f"{what}: refusing download link with scheme {urlsplit(link).scheme!r}")
            same_origin = _origin(link) == _origin(url)
            dl = SignRequest("GET", link, {}, dict(auth_headers) if same_origin else {})
        else:
            sreq = self._auth(creds, SignRequest("GET", url, dict(params), {}))
            dl = sreq
            link = url
        return self._download(dl, link, default_name, folder, f"download {public_url(link)}")

    def _read_small(self, resp, what: str) -> bytes:
        try:
            body = resp.read(MAX_API_BODY + 1)
        except (socket.timeout, TimeoutError):
            raise TransientFetchError(f"{what}: read timed out after {self.transport.timeout}s") from None
        except (http.client.HTTPException, ConnectionError, ssl.SSLError) as exc:
            raise TransientFetchError(f"{what}: connection lost reading the answer: {type(exc).__name__}") \
                from None
        if len(body) > MAX_API_BODY:
            raise FetchError(f"{what}: the answer is larger than {MAX_API_BODY} bytes")
        return body

    def _name(self, resp, link: str, default_name: str) -> str:
        if self.transport.file_name:
            return safe_name(default_name)
        candidates = []
        cd = resp.headers.get("Content-Disposition")
        if cd:
            m = email.message.Message()
            m["content-disposition"] = cd
            fn = m.get_filename()
            if fn:
                candidates.append(fn)
        path = urlsplit(link).path
        if path and not path.endswith("/"):
            candidates.append(unquote(path.rsplit("/", 1)[-1]))
        for c in candidates + [default_name]:
            try:
                return safe_name(c)
            except ValueError:
                continue
        return safe_name(default_name)

    def _download(self, sreq: SignRequest, link: str, default_name: str, folder: Path, what: str) -> FetchOutcome:
        t = self.transport
        secret = {k for k in sreq.headers if k.lower() == "authorization"}
        try:
            resp = self._open(self._request(sreq, secret), what)
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, what) from None
        deadline = time.monotonic() + t.transfer_timeout
        with resp:
            name = self._name(resp, link, default_name)
            expected = resp.headers.get("Content-Length")
            expected = int(expected) if expected and expected.isdigit() else None
            if expected is not None and expected > t.max_download_bytes:
                raise FetchError(f"{what}: {expected} bytes is more than max_download_bytes {t.max_download_bytes}")
            (folder / "dl").mkdir()
            final = folder / "dl" / name
            tmp = folder / "dl" / f".part-{name}"
            got = 0
            try:
                with open(tmp, "wb") as out:
                    while True:
                        chunk = resp.read(CHUNK)
                        if not chunk:
                            break
                        got += len(chunk)
                        if got > t.max_download_bytes:
                            raise FetchError(f"{what}: more than max_download_bytes {t.max_download_bytes}")
                        if time.monotonic() > deadline:
                            raise TransientFetchError(f"{what}: transfer timed out after {t.transfer_timeout}s")
                        out.write(chunk)
            except http.client.IncompleteRead as exc:
                got += len(exc.partial)
                raise TransientFetchError(f"{what}: connection closed after {got} of {expected} bytes") from None
            except (socket.timeout, TimeoutError):
                raise TransientFetchError(f"{what}: read timed out after {t.timeout}s ({got} bytes)") from None
            except (http.client.HTTPException, ConnectionError, ssl.SSLError) as exc:
                raise TransientFetchError(f"{what}: connection lost after {got} bytes: {type(exc).__name__}") \
                    from None
            if expected is not None and got != expected:
                raise TransientFetchError(f"{what}: got {got} bytes, Content-Length said {expected}")
            os.replace(tmp, final)
        log.info("%s: downloaded %s (%d bytes)", what, name, got)
        return self._unpack(final, name, public_url(link), folder, what)

    def _unpack(self, path: Path, name: str, source: str, folder: Path, what: str) -> FetchOutcome:
        t = self.transport
        kind = archive.detect(path) if t.archive == "auto" else (None if t.archive == "none" else t.archive)
        original = StagedFile(path, name, source)
        if kind is None:
            return FetchOutcome([original])
        out = folder / "x"
        out.mkdir()
        if kind == "gzip":
            member = name[:-3] if name.lower().endswith(".gz") else \
                name[:-5] if name.lower().endswith(".gzip") else name
            p = archive.gunzip(path, out, member, t.max_uncompressed_bytes, what)
            return FetchOutcome([StagedFile(p, p.name, f"{source}#{p.name}", extracted_from=name)],
                                archives=[original])
        members = archive.unzip(path, out, max_bytes=t.max_uncompressed_bytes, max_entries=t.max_archive_entries,
                                member_glob=t.archive_member, what=what)
        return FetchOutcome([StagedFile(p, n, f"{source}#{n}", extracted_from=name) for p, n in members],
                            archives=[original])
