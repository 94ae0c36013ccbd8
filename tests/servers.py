"""Real local servers for tests: OpenSSH sshd (SFTP), a paramiko SFTP server, a fault-injecting TCP proxy,
and an HTTP(S) server. Everything listens on 127.0.0.1 only and is torn down by the fixture.

Use from any test module (the Airflow tests reuse them)::

    from tests.servers import sftp_server, http_server, https_server, ssh_server_factory  # noqa: F401 (fixtures)

    def test_x(sftp_server):
        (sftp_server.root / "in").mkdir()
        ...  # remote path of a file: sftp_server.remote("in/a.csv")

Fixtures
--------
``sftp_server`` (function scope)
    OpenSSH's ``/usr/sbin/sshd`` run in the foreground (``-D -e -f <generated sshd_config>``) on a free
    loopback port with a throwaway ed25519 host key and user key; the SFTP user is the current user (root in CI)
    with ``ForceCommand internal-sftp -d <root>`` (no shell, starts in ``root``). Only when sshd cannot start
    (not installed, not root, fails) a paramiko-based SFTP server is used instead; ``server.kind`` says which
    ("openssh" or "paramiko") and the fixture prints it and records it as the ``ssh_server`` user property.
    ``PAYRECON_TEST_SSH_SERVER=paramiko`` forces the fallback (to test it).
``paramiko_sftp_server``
    Always the paramiko server, with password auth ("sftp-user" / ``server.password``): password logins
    need a system account on sshd, which tests must not create.
``http_server`` / ``https_server``
    :class:`HttpServer`: ``server.route(path, *responses)`` queues :class:`Reply` objects (the last one repeats)
    or a callable ``(RecordedRequest) -> Reply``; ``server.requests`` records what arrived; ``https_server``
    has a throwaway CA (``server.ca_path``) and a certificate for 127.0.0.1.
:class:`FaultProxy`
    TCP proxy in front of any server: ``drop_after`` bytes server->client on the next ``faulty`` connections
    (a dropped connection mid-transfer), or ``blackhole`` (accepts, never answers: a connect/banner timeout).

No ``time.sleep``: readiness is a connect loop with a deadline that waits on the server process itself.
"""
from __future__ import annotations

import base64
import datetime as _dt
import errno
import hashlib
import http.server
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import paramiko
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

SSHD = "/usr/sbin/sshd"
LOOPBACK = "127.0.0.1"


# ----------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_banner(port: int, deadline_s: float = 10.0, proc: subprocess.Popen | None = None,
                    expect: bytes = b"SSH-") -> None:
    """Wait until something on ``port`` answers with ``expect``; fail early if ``proc`` exits."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as s:
                if expect and not s.recv(64).startswith(expect):
                    raise RuntimeError(f"port {port} answered, but not with {expect!r}")
                return
        except OSError as exc:
            last = exc
            # wait on the process (or a private event): a condition with a timeout, not a blind sleep
            if proc is not None:
                try:
                    proc.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    pass
            else:
                threading.Event().wait(0.05)
    raise RuntimeError(f"nothing listening on {LOOPBACK}:{port} after {deadline_s}s ({last})")


def ed25519_keypair(private_path: Path, comment: str = "payrecon-test") -> str:
    """Write an OpenSSH ed25519 private key (mode 600) and ``.pub``; return the public line."""
    key = ed25519.Ed25519PrivateKey.generate()
    private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()))
    private_path.chmod(0o600)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    line = f"{pub} {comment}"
    private_path.with_name(private_path.name + ".pub").write_text(line + "\n")
    return line


def sha256_fingerprint(public_line: str) -> str:
    """``SHA256:...`` of a public key line, computed independently of the code under test."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# ----------------------------------------------------------------------------- SSH servers
@dataclass
class SshServer:
    kind: str                         # "openssh" or "paramiko"
    port: int
    username: str
    root: Path                        # the SFTP user's start folder; put test files here
    client_key: Path                  # authorized private key
    known_hosts: Path                 # has this server's host key
    host_key_fingerprint: str
    host_public: str
    workdir: Path
    password: str | None = None       # paramiko server only
    host: str = LOOPBACK
    note: str = ""                    # why the fallback ran, when it did
    _stop: Callable[[], None] | None = field(default=None, repr=False)
    _start: Callable[[], None] | None = field(default=None, repr=False)

    def remote(self, rel: str) -> str:
        """The remote path of ``root/rel`` (absolute: both servers see the real folder)."""
        return str(self.root / rel)

    def stop(self) -> None:
        if self._stop:
            self._stop()

    def start(self) -> None:
        if self._start:
            self._start()

    def log(self) -> str:
        p = self.workdir / "sshd.log"
        return p.read_text(errors="replace") if p.exists() else ""


def _keys(workdir: Path) -> tuple[Path, str, Path, str]:
    host_key = workdir / "ssh_host_ed25519_key"
    host_pub = ed25519_keypair(host_key, "host")
    client_key = workdir / "id_ed25519"
    client_pub = ed25519_keypair(client_key, "client")
    return host_key, host_pub, client_key, client_pub


def start_openssh(workdir: Path, root: Path, denied: str = "") -> SshServer:
    """Start /usr/sbin/sshd on a free loopback port; raise RuntimeError if it cannot.

    ``denied``: SFTP requests the server refuses with "permission denied" (``internal-sftp -P``,
    e.g. ``"open"``): how a permission problem looks to the client even though the tests run as root.
    """
    if not os.path.exists(SSHD):
        raise RuntimeError(f"{SSHD} is not installed (Debian package openssh-server)")
    if os.geteuid() != 0:
        raise RuntimeError("sshd needs root to authenticate users (tests are not running as root)")
    import pwd
    user = pwd.getpwuid(os.geteuid()).pw_name
    host_key, host_pub, client_key, client_pub = _keys(workdir)
    (workdir / "authorized_keys").write_text(client_pub + "\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)     # privilege separation dir sshd insists on
    state: dict = {}

    def launch() -> None:
        last = None
        for _ in range(3):                                   # a free port can be taken between probe and bind
            port = state.get("port") or free_port()
            cfg = workdir / "sshd_config"
            cfg.write_text("\n".join([
                f"Port {port}", f"ListenAddress {LOOPBACK}", f"HostKey {host_key}", f"PidFile {workdir}/sshd.pid",
                f"AuthorizedKeysFile {workdir}/authorized_keys", "StrictModes no", "UsePAM no",
                "PubkeyAuthentication yes", "PasswordAuthentication yes", "KbdInteractiveAuthentication no",
                "PermitRootLogin yes", f"AllowUsers {user}", "PermitEmptyPasswords no",
                "AllowTcpForwarding no", "X11Forwarding no", "AllowAgentForwarding no", "PermitTunnel no",
                "MaxStartups 100", "LoginGraceTime 30", "LogLevel VERBOSE",
                "Subsystem sftp internal-sftp",
                f"ForceCommand internal-sftp -d {root}" + (f" -P {denied}" if denied else ""), ""]))
            log = open(workdir / "sshd.log", "ab")
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL)
            log.close()
            try:
                wait_for_banner(port, 10.0, proc)
            except RuntimeError as exc:
                last = exc
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
                if state.get("port"):
                    break
                continue
            state.update(proc=proc, port=port)
            return
        tail = (workdir / "sshd.log").read_text(errors="replace")[-600:]
        raise RuntimeError(f"sshd did not start: {last}; log: {tail}")

    def stop() -> None:
        proc = state.get("proc")
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    launch()
    kh = workdir / "known_hosts"
    kh.write_text(f"[{LOOPBACK}]:{state['port']} {' '.join(host_pub.split()[:2])}\n")
    return SshServer("openssh", state["port"], user, root, client_key, kh, sha256_fingerprint(host_pub),
                     host_pub, workdir, _stop=stop, _start=launch)


class _RootedSftp(paramiko.SFTPServerInterface):
    """Read-mostly SFTP over the real file system, confined to one folder."""

    def __init__(self, server, *args, root: str = "/", denied: str = "", **kwargs):
        super().__init__(server, *args, **kwargs)
        self.root = os.path.realpath(root)
        self.denied = set(filter(None, denied.split(",")))

    def _path(self, path: str) -> str:
        if not path.startswith("/"):
            path = os.path.join(self.root, path)
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise PermissionError(errno.EACCES, "outside the SFTP root")
        return real

    @staticmethod
    def _err(exc: OSError) -> int:
        return paramiko.SFTPServer.convert_errno(exc.errno)

    def canonicalize(self, path):
        return self.root if path in (".", "") else os.path.normpath(os.path.join(self.root, path))

    def list_folder(self, path):
        try:
            p = self._path(path)
            out = []
            for name in os.listdir(p):
                attr = paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(p, name)))
                attr.filename = name
                out.append(attr)
            return out
        except OSError as exc:
            return self._err(exc)

    def stat(self, path):
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._path(path)))
        except OSError as exc:
            return self._err(exc)

    lstat = stat

    def open(self, path, flags, attr):
        try:
            if "open" in self.denied or flags & (os.O_WRONLY | os.O_RDWR):
                return paramiko.SFTP_PERMISSION_DENIED
            f = open(self._path(path), "rb")
        except OSError as exc:
            return self._err(exc)
        handle = paramiko.SFTPHandle(flags)
        handle.readfile = f
        handle.filename = path
        return handle


class _SshIface(paramiko.ServerInterface):
    def __init__(self, username: str, password: str | None, client_pub: str):
        self.username, self.password = username, password
        self.client_blob = base64.b64decode(client_pub.split()[1])

    def get_allowed_auths(self, username):
        return "publickey,password" if self.password else "publickey"

    def check_auth_password(self, username, password):
        ok = self.password is not None and username == self.username and password == self.password
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_auth_publickey(self, username, key):
        ok = username == self.username and key.asbytes() == self.client_blob
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


def start_paramiko(workdir: Path, root: Path, password: str | None = None, note: str = "",
                   denied: str = "") -> SshServer:
    host_key, host_pub, client_key, client_pub = _keys(workdir)
    host = paramiko.Ed25519Key(filename=str(host_key))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOOPBACK, 0))
    listener.listen(50)
    port = listener.getsockname()[1]
    stopping = threading.Event()
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while not stopping.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            t = paramiko.Transport(sock)
            t.add_server_key(host)
            t.set_subsystem_handler("sftp", paramiko.SFTPServer, _RootedSftp, root=str(root), denied=denied)
            transports.append(t)
            try:
                t.start_server(server=_SshIface("sftp-user", password, client_pub))
            except (paramiko.SSHException, OSError, EOFError):
                t.close()

    thread = threading.Thread(target=serve, daemon=True, name="paramiko-sftp")
    thread.start()

    def stop() -> None:
        stopping.set()
        try:
            listener.shutdown(socket.SHUT_RDWR)     # wakes the accept() in the serving thread
        except OSError:
            pass
        listener.close()
        for t in transports:
            t.close()
        thread.join(5)

    kh = workdir / "known_hosts"
    kh.write_text(f"[{LOOPBACK}]:{port} {' '.join(host_pub.split()[:2])}\n")
    return SshServer("paramiko", port, "sftp-user", root, client_key, kh, sha256_fingerprint(host_pub),
                     host_pub, workdir, password=password, note=note, _stop=stop)


def start_ssh_server(workdir: Path, root: Path, denied: str = "") -> SshServer:
    """OpenSSH when it can start, else the paramiko server (``kind`` and ``note`` say which and why)."""
    workdir.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    if os.environ.get("PAYRECON_TEST_SSH_SERVER") == "paramiko":      # to exercise the fallback on purpose
        return start_paramiko(workdir, root, note="PAYRECON_TEST_SSH_SERVER=paramiko", denied=denied)
    try:
        return start_openssh(workdir, root, denied=denied)
    except RuntimeError as exc:
        for p in workdir.iterdir():
            if p.is_file():
                p.unlink()
        return start_paramiko(workdir, root, note=f"OpenSSH sshd could not start: {exc}", denied=denied)


@pytest.fixture
def sftp_server(tmp_path_factory, request):
    """A running SFTP server (OpenSSH preferred); see the module docstring."""
    base = tmp_path_factory.mktemp("sshd")
    server = start_ssh_server(base / "etc", base / "home")
    request.node.user_properties.append(("ssh_server", server.kind))
    print(f"[servers] SFTP server: {server.kind} on {LOOPBACK}:{server.port} {server.note}")
    if server.kind != "openssh":
        import warnings
        warnings.warn(f"paramiko SFTP server used instead of OpenSSH: {server.note}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def paramiko_sftp_server(tmp_path_factory, request):
    """The paramiko SFTP server with password auth (user ``sftp-user``, ``server.password``)."""
    base = tmp_path_factory.mktemp("pmk")
    (base / "etc").mkdir()
    (base / "home").mkdir()
    secret = "pw-" + base64.urlsafe_b64encode(os.urandom(12)).decode()
    server = start_paramiko(base / "etc", base / "home", password=secret, note="password auth test")
    request.node.user_properties.append(("ssh_server", server.kind))
    print(f"[servers] SFTP server: paramiko on {LOOPBACK}:{server.port} (password auth)")
    try:
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------------------------- TCP fault proxy
class FaultProxy:
    """``127.0.0.1:<port>`` -> ``target``; can drop connections after N bytes or hold them silently."""

    def __init__(self, target_port: int, target_host: str = LOOPBACK):
        self.target = (target_host, target_port)
        self.drop_after: int | None = None     # bytes server->client before cutting the connection
        self.faulty = 0                        # how many of the next connections get the fault
        self.blackhole = False                 # accept and never answer
        self.connections = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(50)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fault-proxy")
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._socks.append(client)
                if self.blackhole:
                    continue
                limit = None
                if self.faulty > 0 and self.drop_after is not None:
                    self.faulty -= 1
                    limit = self.drop_after
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, limit), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: max(0, limit - sent)])
                    with self._lock:
                        self.dropped += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for s in self._socks:
                try:
                    s.close()
                except OSError:
                    pass


@pytest.fixture
def fault_proxy_factory():
    made: list[FaultProxy] = []

    def make(port: int) -> FaultProxy:
        p = FaultProxy(port)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


# ----------------------------------------------------------------------------- HTTP(S)
@dataclass
class Reply:
    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    truncate_to: int | None = None     # send Content-Length of the whole body, then only this many bytes
    stall: threading.Event | None = None  # wait for this event (or 30 s) before answering


@dataclass
class RecordedRequest:
    method: str
    path: str                          # with the query string
    headers: dict[str, str]
    body: bytes

    @property
    def query(self) -> dict[str, str]:
        from urllib.parse import parse_qsl, urlsplit
        return dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))


class HttpServer:
    """A threaded HTTP(S) server on 127.0.0.1 with scripted replies per path."""

    def __init__(self, tls_dir: Path | None = None):
        self.requests: list[RecordedRequest] = []
        self._routes: dict[str, list | Callable] = {}
        self._lock = threading.Lock()
        self._stalls: list[threading.Event] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):     # keep test output clean
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
                with server._lock:
                    server.requests.append(req)
                reply = server._next(req)
                if reply.stall is not None:
                    reply.stall.wait(30)
                data = reply.body.encode() if isinstance(reply.body, str) else reply.body
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                if reply.truncate_to is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                if reply.truncate_to is not None:
                    self.wfile.write(data[: reply.truncate_to])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_POST = _handle

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                    super().handle_error(request, client_address)   # a client that hung up is expected here

        self.httpd = Server((LOOPBACK, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.scheme = "http"
        self.ca_path: Path | None = None
        if tls_dir is not None:
            self.ca_path, cert, key = make_tls_cert(tls_dir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="http-server")
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.port}{path}"

    def route(self, path: str, *replies: Reply | Callable[[RecordedRequest], Reply]) -> None:
        """Replies for ``path`` (without query): in order, the last one repeating; or one callable."""
        with self._lock:
            if len(replies) == 1 and callable(replies[0]) and not isinstance(replies[0], Reply):
                self._routes[path] = replies[0]
            else:
                self._routes[path] = list(replies)
            for r in replies:
                if isinstance(r, Reply) and r.stall is not None:
                    self._stalls.append(r.stall)

    def _next(self, req: RecordedRequest) -> Reply:
        path = req.path.split("?", 1)[0]
        with self._lock:
            route = self._routes.get(path)
            if route is None:
                return Reply(404, b"not found")
            if callable(route):
                fn = route
            else:
                return route.pop(0) if len(route) > 1 else route[0]
        return fn(req)

    def hits(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def close(self) -> None:
        for e in self._stalls:
            e.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def make_tls_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1; returns (ca.pem, cert.pem, key.pem)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payrecon test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=5))
          .not_valid_after(now + _dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


@pytest.fixture
def http_server():
    server = HttpServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def https_server(tmp_path_factory):
    server = HttpServer(tls_dir=tmp_path_factory.mktemp("tls"))
    try:
        yield server
    finally:
        server.close()


__all__ = ["FaultProxy", "HttpServer", "fetch_config", "sftp_source", "landing_leftovers", "RecordedRequest", "Reply",
           "SshServer", "fault_proxy_factory",
           "free_port", "http_server", "https_server", "make_tls_cert", "paramiko_sftp_server", "sftp_server",
           "sha256_fingerprint", "start_openssh", "start_paramiko", "start_ssh_server"]


# ----------------------------------------------------------------------------- config helpers
def fetch_config(tmp_path: Path, source: dict, channel: str = "bank_icbc", kind: str = "bank",
                 fmt: str = "icbc_csv", optional: bool = False):
    """A minimal validated Config with one channel whose one statement comes from ``source``."""
    from recon.config import parse_config
    raw = {"warehouse": str(tmp_path / "warehouse.duckdb"), "output_dir": str(tmp_path / "out"),
           "landing_dir": str(tmp_path / "landing"), "internal_source": {"url": "sqlite:///:memory:"},
           "channels": [{"name": channel, "statements": [
               {"kind": kind, "format": fmt, "source": source, "optional": optional}]}]}
    return parse_config(raw)


def sftp_source(server: SshServer, rel_path: str, **overrides) -> dict:
    """An ``sftp`` source block for ``server`` (key auth, known_hosts, short timeouts for tests)."""
    src = {"type": "sftp", "host": server.host, "port": server.port, "username": server.username,
           "remote_path": server.remote(rel_path), "known_hosts": str(server.known_hosts),
           "private_key": str(server.client_key), "connect_timeout": 5, "transfer_timeout": 30,
           "retries": 2, "backoff_base": 0.5, "backoff_max": 2}
    src.update(overrides)
    return {k: v for k, v in src.items() if v is not None}


def landing_leftovers(landing: Path) -> list[str]:
    """Files in a landing zone outside manifest-listed objects: temp files, partial downloads, staging."""
    import json
    listed = set()
    manifest = landing / "manifest.jsonl"
    if manifest.exists():
        for ln in manifest.read_text(encoding="utf-8").splitlines():
            e = json.loads(ln)
            listed.add(str(landing / "objects" / e["sha256"][:2] / e["sha256"] / e["original_name"]))
    out = []
    if landing.exists():
        for p in landing.rglob("*"):
            if p.is_file() and p != manifest and str(p) not in listed:
                out.append(str(p.relative_to(landing)))
    return sorted(out)


def manifest(tmp_path) -> list[dict]:
    """The landing zone's manifest rows under ``tmp_path/landing``."""
    import json

    m = tmp_path / "landing" / "manifest.jsonl"
    return [json.loads(x) for x in m.read_text(encoding="utf-8").splitlines()] if m.exists() else []


def assert_nothing_landed(tmp_path):
    """No manifest row, no temporary leftover, no object: a failed fetch left nothing behind."""
    assert manifest(tmp_path) == []
    assert landing_leftovers(tmp_path / "landing") == []
    assert not list((tmp_path / "landing").glob("objects/*/*/*"))
