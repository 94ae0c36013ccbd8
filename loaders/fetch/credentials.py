"""Where secrets come from: environment variables named in the config, or an Airflow Connection.

Nothing here logs a secret. :class:`Credentials` hides its secret fields from
``repr`` and offers :meth:`Credentials.scrub` to remove them from any text
(error messages, server answers) before that text is shown or stored.

Airflow: with ``airflow_conn_id`` set, the Connection is read with
``airflow.sdk.BaseHook.get_connection`` (or ``airflow.hooks.base.BaseHook``
on older versions) when Airflow is importable; otherwise the
``AIRFLOW_CONN_<ID>`` environment variable is parsed the way Airflow does
(a URI ``scheme://login:password@host:port/?extra=...``, or a JSON object).
Connection fields used: ``login`` (user), ``password`` (password, token or
secret), extras ``token``, ``secret``, ``private_key`` (PEM text),
``private_key_passphrase``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from loaders.fetch.base import FetchError


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    private_key_text: str | None = field(default=None, repr=False)
    private_key_passphrase: str | None = field(default=None, repr=False)

    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.token, self.secret, self.private_key_text,
                            self.private_key_passphrase) if s]

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``***`` (also URL-quoted forms)."""
        from urllib.parse import quote, quote_plus
        for s in sorted(self.secrets(), key=len, reverse=True):
            for form in {s, quote(s, safe=""), quote_plus(s)}:
                text = text.replace(form, "***")
        return text


@dataclass(frozen=True)
class ConnectionInfo:
    login: str | None
    password: str | None = field(repr=False)
    host: str | None
    port: int | None
    extra: dict = field(default_factory=dict, repr=False)


def _env(name: str | None, what: str) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if value is None:
        raise FetchError(f"{what}: environment variable {name} is not set")
    return value


def parse_connection_uri(conn_id: str, value: str) -> ConnectionInfo:
    """Parse an ``AIRFLOW_CONN_<ID>`` value (URI or JSON) without Airflow installed."""
    value = value.strip()
    if value.startswith("{"):
        try:
            d = json.loads(value)
        except ValueError:
            raise FetchError(f"Airflow connection {conn_id!r}: AIRFLOW_CONN_* is not valid JSON") from None
        extra = d.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra or "{}")
        return ConnectionInfo(d.get("login"), d.get("password"), d.get("host"), d.get("port"), extra)
    parts = urlsplit(value)
    if not parts.scheme:
        raise FetchError(f"Airflow connection {conn_id!r}: AIRFLOW_CONN_* is neither a URI nor JSON")
    extra: dict = {}
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        extra[k] = v
    if "__extra__" in extra:
        extra = json.loads(extra["__extra__"])
    try:
        port = parts.port
    except ValueError:
        raise FetchError(f"Airflow connection {conn_id!r}: bad port") from None
    return ConnectionInfo(unquote(parts.username) if parts.username else None,
                          unquote(parts.password) if parts.password else None,
                          parts.hostname, port, extra)


def airflow_connection(conn_id: str) -> ConnectionInfo:
    """The Airflow Connection ``conn_id``: via Airflow when importable, else from AIRFLOW_CONN_<ID>."""
    try:
        import airflow  # noqa: F401
    except ImportError:
        value = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
        if value is None:
            raise FetchError(f"Airflow connection {conn_id!r}: Airflow is not installed and "
                             f"AIRFLOW_CONN_{conn_id.upper()} is not set") from None
        return parse_connection_uri(conn_id, value)
    try:
        from airflow.sdk import BaseHook
    except ImportError:  # Airflow 2
        from airflow.hooks.base import BaseHook  # type: ignore[no-redef]
    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # the message names the conn id only
        raise FetchError(f"Airflow connection {conn_id!r}: {type(exc).__name__}") from None
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    return ConnectionInfo(conn.login, conn.password, conn.host, conn.port, dict(extra or {}))


def resolve(transport) -> Credentials:
    """The credentials for an ``SftpTransport`` or ``HttpTransport`` (secrets never logged)."""
    conn_id = getattr(transport, "airflow_conn_id", None)
    if conn_id:
        c = airflow_connection(conn_id)
        x = c.extra
        return Credentials(username=c.login or getattr(transport, "username", None),
                           password=c.password,
                           token=x.get("token") or c.password,
                           secret=x.get("secret") or c.password,
                           private_key_text=x.get("private_key"),
                           private_key_passphrase=x.get("private_key_passphrase"))
    return Credentials(
        username=getattr(transport, "username", None),
        password=_env(getattr(transport, "password_env", None), "password"),
        token=_env(getattr(transport, "token_env", None), "token"),
        secret=_env(getattr(transport, "secret_env", None), "signing secret"),
        private_key_passphrase=_env(getattr(transport, "private_key_passphrase_env", None),
                                    "private key passphrase"),
    )
