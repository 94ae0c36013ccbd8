"""The run configuration: one YAML file, validated on load.

Relative paths in the file are resolved against the file's own folder, so a
config and its sample data can be moved together. Errors name the key path
(``channels[1].day_cut``) and what was expected.
"""
from __future__ import annotations

import hashlib
import re
from datetime import date, time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(Exception):
    """The config file is missing, not YAML, or does not validate."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (expected an IANA name like Asia/Shanghai)")
    return value


# --------------------------------------------------------------------- transports
class FolderTransport(_Model):
    """Statement files that are already on disk (or a mounted share)."""

    type: Literal["folder"] = "folder"
    path: str = Field(description="file path or glob with {date:%Y%m%d}-style placeholders")


class SftpTransport(_Model):
    """Statement files on an SFTP server (docs/fetch.md).

    ``remote_path`` may hold date placeholders (see :func:`expand_path`) and a
    glob in its last component. The server's host key must be pinned: a
    ``known_hosts`` file or a ``host_key_fingerprint`` (``SHA256:...`` as
    printed by ``ssh-keygen -lf``); an unknown or changed key is refused.
    Secrets are never in the file: ``password_env`` / ``private_key_passphrase_env``
    name environment variables, or ``airflow_conn_id`` names an Airflow Connection.
    """

    type: Literal["sftp"]
    host: str
    port: int = 22
    username: str | None = None
    remote_path: str
    known_hosts: str | None = None
    host_key_fingerprint: str | None = None
    private_key: str | None = None
    password_env: str | None = None
    private_key_passphrase_env: str | None = None
    airflow_conn_id: str | None = None
    # ".ok" / ".done": a marker next to each file (name + suffix); anything else: a path template
    # (placeholders allowed) of one marker for the whole day, e.g. "/out/{yyyymmdd}/READY".
    done_marker: str | None = None
    checksum_suffix: str | None = None   # e.g. ".sha256" or ".md5": verified when the server publishes one
    checksum_required: bool = False      # True: a missing checksum file means "not there yet"
    connect_timeout: float = 15.0
    transfer_timeout: float = 300.0      # per file, whole transfer
    retries: int = 3                     # attempts after the first, for transient faults only
    backoff_base: float = 2.0            # seconds; attempt n waits up to base * 2**n (full jitter)
    backoff_max: float = 60.0

    @model_validator(mode="after")
    def _pinned(self) -> "SftpTransport":
        if not (self.known_hosts or self.host_key_fingerprint):
            raise ValueError("set known_hosts or host_key_fingerprint: the server's host key must be pinned")
        if self.retries < 0 or self.connect_timeout <= 0 or self.transfer_timeout <= 0:
            raise ValueError("retries must be >= 0 and timeouts > 0")
        return self


class HttpTransport(_Model):
    """A statement downloaded over HTTP(S) (docs/fetch.md).

    ``mode: direct`` downloads ``url``; ``mode: bill_api`` calls ``url`` (with
    ``params``, signed or authenticated) and downloads the URL found under
    ``download_url_field`` (a dotted path into the JSON answer). ``signer`` is
    ``"package.module:function"`` (default for auth hmac/rsa: the built-ins in
    ``loaders.fetch.signing``). Placeholders work in ``url`` and ``params``.
    """

    type: Literal["http"]
    url: str
    mode: Literal["direct", "bill_api"] = "direct"
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, str] = Field(default_factory=dict)
    auth: Literal["none", "token", "basic", "hmac", "rsa"] = "none"
    token_env: str | None = None
    username: str | None = None
    password_env: str | None = None
    secret_env: str | None = None
    signer: str | None = None
    airflow_conn_id: str | None = None
    download_url_field: str = "download_url"
    no_statement_codes: tuple[str, ...] = ("NO_STATEMENT_EXIST",)
    not_found: Literal["not_yet", "error"] = "not_yet"   # what an HTTP 404 means
    verify_tls: bool = True
    ca_bundle: str | None = None
    timeout: float = 60.0                # connect / each read
    transfer_timeout: float = 600.0      # whole download
    retries: int = 3
    backoff_base: float = 2.0
    backoff_max: float = 60.0
    archive: Literal["none", "gzip", "zip", "auto"] = "auto"
    archive_member: str | None = None    # glob of the ZIP entries to keep (default: every file)
    file_name: str | None = None         # name to land a download under (default: from the response/URL)
    max_download_bytes: int = 2 << 30
    max_uncompressed_bytes: int = 4 << 30
    max_archive_entries: int = 1000

    @model_validator(mode="after")
    def _sane(self) -> "HttpTransport":
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if self.retries < 0 or self.timeout <= 0 or self.transfer_timeout <= 0:
            raise ValueError("retries must be >= 0 and timeouts > 0")
        return self


Transport = Annotated[FolderTransport | SftpTransport | HttpTransport, Field(discriminator="type")]


# --------------------------------------------------------------------- channels
class Statement(_Model):
    """One statement file a channel publishes for each business day."""

    kind: Literal["trade", "funds", "bank"]
    format: str
    source: Transport
    optional: bool = False
    options: dict[str, Any] = Field(default_factory=dict)


class Explanation(_Model):
    """A known reason for a funds difference, recorded as explained, not open."""

    name: str
    type: Literal["long", "short"] | None = None
    max_abs_difference: Decimal = Decimal("0.00")


class Channel(_Model):
    name: str
    currency: str = "CNY"
    timezone: str | None = None
    day_cut: time = time(0, 0)
    fee_rate: Decimal | None = None
    amount_tolerance: Decimal = Decimal("0.00")
    pending_days: int = 3
    quarantine_policy: Literal["fail", "warn"] = "fail"
    settlement_lag_days: int = 1
    explanations: tuple[Explanation, ...] = ()
    statements: tuple[Statement, ...]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", v):
            raise ValueError("expected a lower-case identifier like 'wechat' or 'bank_icbc'")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None else _check_zone(v)

    @field_validator("currency")
    @classmethod
    def _ccy(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", v):
            raise ValueError("expected an ISO 4217 code like CNY")
        return v


# --------------------------------------------------------------------- platform
DEFAULT_QUERIES = {
    "orders": (
        "SELECT order_no, channel, channel_txn_id, merchant_id, amount, currency, status, paid_at "
        "FROM payment_orders WHERE paid_at >= :start AND paid_at < :end"
    ),
    "refunds": (
        "SELECT refund_no, order_no, channel, channel_refund_id, merchant_id, amount, currency, "
        "status, refunded_at FROM refund_orders WHERE refunded_at >= :start AND refunded_at < :end"
    ),
    "expected_funds": (
        "SELECT movement_id, channel, order_no, refund_no, direction, amount, currency, expected_at "
        "FROM expected_fund_movements WHERE expected_at >= :start AND expected_at < :end"
    ),
}


class InternalSource(_Model):
    """The platform's own database, read with SQLAlchemy.

    Each query takes ``:start`` and ``:end`` (the business day in the platform
    time zone, as naive local timestamps) and must return the columns of the
    default query it replaces.
    """

    url: str
    url_env: str | None = None
    queries: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_QUERIES))
    chunk_rows: int = 200_000

    @field_validator("queries")
    @classmethod
    def _queries(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = set(v) - set(DEFAULT_QUERIES)
        if unknown:
            raise ValueError(f"unknown query names {sorted(unknown)}; expected {sorted(DEFAULT_QUERIES)}")
        return {**DEFAULT_QUERIES, **v}


# --------------------------------------------------------------------- merchants
class Merchant(_Model):
    id: str
    name: str
    fee_rate: Decimal = Decimal("0")
    fee_fixed: Decimal = Decimal("0.00")
    fee_min: Decimal | None = None
    fee_max: Decimal | None = None
    fee_rounding: Literal["half_up", "half_even"] = "half_up"
    refund_fee_policy: Literal["kept", "pro_rata"] = "kept"
    cycle: str = "T+1"
    min_payout: Decimal = Decimal("0.00")
    reserve_rate: Decimal = Decimal("0")
    reserve_days: int = 0
    bank_account: str | None = None
    bank_name: str | None = None
    account_name: str | None = None

    @field_validator("cycle")
    @classmethod
    def _cycle(cls, v: str) -> str:
        if not re.fullmatch(r"[TD]\+\d{1,2}", v):
            raise ValueError("expected T+N (business days) or D+N (natural days), e.g. T+1")
        return v

    @field_validator("fee_rate", "reserve_rate")
    @classmethod
    def _rate(cls, v: Decimal) -> Decimal:
        if not Decimal("0") <= v < Decimal("1"):
            raise ValueError("expected a rate between 0 and 1, e.g. 0.006 for 0.6%")
        return v


class Calendar(_Model):
    country: Literal["CN", "none"] = "CN"
    extra_holidays: tuple[date, ...] = ()
    extra_workdays: tuple[date, ...] = ()
    # CN only: what to do for a year the installed chinesecalendar does not know yet.
    # "error" stops settlement with a clear message; "weekends" treats Mon-Fri as business days.
    beyond_known_years: Literal["error", "weekends"] = "error"


class Settlement(_Model):
    # The guard against paying a transaction twice compares each candidate with every transaction item
    # settled from this many days before the oldest candidate's trade date on (same trade date: always).
    # Each night reads those items' keys, so the cost grows with the window (docs/deploy.md): a platform
    # whose channels never restate older days can shorten it.
    duplicate_lookback_days: int = 90

    @field_validator("duplicate_lookback_days")
    @classmethod
    def _lookback(cls, v: int) -> int:
        if v < 1:
            raise ValueError("expected at least 1 day (the days a channel may report a transaction again)")
        return v


class Archive(_Model):
    # `recon archive move` moves a business day out of the warehouse only when it is this many days or more
    # before the latest reconciled day (and closed: docs/warehouse.md#archived-days). At least
    # settlement.duplicate_lookback_days: the guard against paying twice reads that window. Unset, or below the
    # channels' settlement_lag_days: the days a run reads back (Config.days_read_back).
    keep_days: int | None = None
    # True: the nightly DAG ends with an `archive` task (`recon archive move` after the snapshot is published).
    nightly: bool = False
    # With `nightly`: when at least this share of the warehouse file is free after the move (e.g. 0.5), the
    # task also rewrites the file without it (`recon compact`; docs/warehouse.md). Unset: never.
    compact_min_free: float | None = None

    @field_validator("keep_days")
    @classmethod
    def _keep(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("expected at least 1 day")
        return v

    @field_validator("compact_min_free")
    @classmethod
    def _share(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v < 1:
            raise ValueError("expected a share above 0 and below 1, e.g. 0.5")
        return v


class Backup(_Model):
    # `recon backup make` keeps this many backups of the warehouse in backup_dir, removing the oldest beyond.
    keep: int = 7
    # True: the nightly DAG ends with a `backup` task (after `publish`, and after `archive` when it runs).
    nightly: bool = False

    @field_validator("keep")
    @classmethod
    def _keep(cls, v: int) -> int:
        if v < 1:
            raise ValueError("expected at least 1 backup")
        return v


class Payout(_Model):
    layout: str = "generic_csv"         # generic_csv (uses `columns`) | cn_bank_batch
    columns: tuple[str, ...] = ("merchant_id", "account_name", "bank_account", "bank_name",
                                "currency", "amount", "memo")
    encoding: str = "utf-8"             # e.g. gbk for banks that want it


class Schedule(_Model):
    """When the nightly Airflow DAG runs and how it waits, retries and tells someone (docs/deploy.md).

    A run fires at ``cron`` (in the platform time zone) on D+1 and reconciles business date D.
    """

    cron: str = "30 10 * * *"
    file_deadline_minutes: float = 180        # a channel's file must be there this long after the wait starts
    poke_interval_seconds: float = 300
    notify_email: str | None = None           # sent through Airflow's SMTP connection `smtp_conn_id`
    notify_webhook: str | None = None         # a URL that gets a JSON POST for every failed task
    smtp_conn_id: str = "smtp_default"
    start_date: date | None = None            # first business date; set it and missed days are caught up in order
    retries: int = 3                          # transient faults only (timeouts, dropped connections, 5xx)
    retry_delay_seconds: float = 60           # doubled on each retry ...
    max_retry_delay_seconds: float = 1800     # ... up to this
    pool: str = "recon_warehouse"             # the one-slot Airflow pool every warehouse writer goes through
    # channel -> N: the nightly DAG reconciles that channel in N key-hash buckets, each its own task
    # (docs/deploy.md, "When one machine is not enough"); `recon run --split` does the same in one process
    buckets: dict[str, int] = {}

    @field_validator("buckets")
    @classmethod
    def _buckets(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {k: n for k, n in v.items() if n < 1}
        if bad:
            raise ValueError(f"a channel's number of buckets must be at least 1, got {bad}")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not (v.startswith("@") or len(v.split()) in (5, 6)):
            raise ValueError("expected a cron expression like '30 10 * * *' (minute hour day month weekday)")
        return v

    @field_validator("file_deadline_minutes", "poke_interval_seconds", "retry_delay_seconds",
                     "max_retry_delay_seconds")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("expected a positive number")
        return v


# --------------------------------------------------------------------- root
class Config(_Model):
    warehouse: Path
    output_dir: Path
    landing_dir: Path
    snapshot_dir: Path | None = None
    archive_dir: Path | None = None
    backup_dir: Path | None = None
    timezone: str = "Asia/Shanghai"
    duckdb_memory_limit: str = "4GB"
    duckdb_threads: int | None = None
    channels: tuple[Channel, ...]
    internal_source: InternalSource
    merchants: tuple[Merchant, ...] = ()
    calendar: Calendar = Calendar()
    settlement: Settlement = Settlement()
    archive: Archive = Archive()
    backup: Backup = Backup()
    payout: Payout = Payout()
    schedule: Schedule = Schedule()
    config_path: Path | None = None
    config_sha256: str | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_zone(v)

    @model_validator(mode="after")
    def _unique(self) -> "Config":
        names = [c.name for c in self.channels]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"channel names must be unique; repeated: {sorted(dup)}")
        ids = [m.id for m in self.merchants]
        dup = {n for n in ids if ids.count(n) > 1}
        if dup:
            raise ValueError(f"merchant ids must be unique; repeated: {sorted(dup)}")
        unknown = sorted(set(self.schedule.buckets) - set(names))
        if unknown:
            raise ValueError(f"schedule.buckets names channels that are not configured: {unknown} (have: {names})")
        lookback = self.settlement.duplicate_lookback_days
        if self.archive.keep_days is not None and self.archive.keep_days < lookback:
            raise ValueError(f"archive.keep_days ({self.archive.keep_days}) must be at least "
                             f"settlement.duplicate_lookback_days ({lookback}): the guard against paying twice "
                             "reads the settled items of that window")
        return self

    def channel(self, name: str) -> Channel:
        for c in self.channels:
            if c.name == name:
                return c
        raise ConfigError(f"no channel named {name!r} in the config (have: {[c.name for c in self.channels]})")

    def channel_zone(self, channel: Channel) -> ZoneInfo:
        return ZoneInfo(channel.timezone or self.timezone)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def snapshot_path(self) -> Path:
        return self.snapshot_dir or self.output_dir / "snapshot"

    @property
    def archive_path(self) -> Path:
        return self.archive_dir or self.output_dir / "archive"

    @property
    def backup_path(self) -> Path:
        return self.backup_dir or self.output_dir / "backups"

    @property
    def days_read_back(self) -> int:
        """How far before its business date a run reads the big per-day tables: the guard against paying twice
        (settled items) and the bank's settlement batches (a channel's trade date ``settlement_lag_days`` back)."""
        return max(self.settlement.duplicate_lookback_days, *(c.settlement_lag_days for c in self.channels))

    @property
    def archive_keep_days(self) -> int:
        return max(self.archive.keep_days or 0, self.days_read_back)


def _loc(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """Render a pydantic location as ``channels[wechat].day_cut``."""
    out, node = "", raw
    for part in loc:
        if isinstance(part, int):
            label = part
            if isinstance(node, list) and part < len(node) and isinstance(node[part], dict):
                label = node[part].get("id") or node[part].get("name") or part
            out += f"[{label}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        elif isinstance(part, str) and part in ("folder", "sftp", "http"):
            continue  # discriminator tag of a union, not a key in the file
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    def fix(p: Any) -> Any:
        if isinstance(p, str) and "://" not in p and not Path(p).is_absolute():
            return str(base / p)
        return p

    raw = dict(raw)
    for key in ("warehouse", "output_dir", "landing_dir", "snapshot_dir", "archive_dir", "backup_dir"):
        if key in raw and raw[key] is not None:
            raw[key] = fix(raw[key])
    for channel in raw.get("channels") or []:
        for st in (channel.get("statements") if isinstance(channel, dict) else None) or []:
            src = st.get("source") if isinstance(st, dict) else None
            if isinstance(src, dict) and src.get("type", "folder") == "folder" and "path" in src:
                st["source"] = {**src, "path": fix(src["path"])}
            for key in ("known_hosts", "private_key", "ca_bundle"):
                if isinstance(src, dict) and src.get(key):
                    st["source"] = {**st["source"], key: fix(src[key])}
    src = raw.get("internal_source")
    if isinstance(src, dict) and isinstance(src.get("url"), str) and src["url"].startswith("sqlite:///"):
        db = src["url"][len("sqlite:///"):]
        if db and db != ":memory:" and not Path(db).is_absolute():
            raw["internal_source"] = {**src, "url": "sqlite:///" + str((base / db).resolve())}
    return raw


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a config file; raises :class:`ConfigError` with key paths."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level")
    raw = _resolve_paths({**raw, **(overrides or {})}, path.resolve().parent)
    raw["config_path"] = str(path.resolve())
    raw["config_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return parse_config(raw, str(path))


def parse_config(raw: dict[str, Any], origin: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            lines.append(f"{_loc(err['loc'], raw)}: {msg}{shown}")
        raise ConfigError(f"config {origin}: " + "; ".join(lines)) from None


def expand_path(template: str, business_date: date, **extra: str) -> str:
    """Fill ``{date:%Y%m%d}``, ``{yyyymmdd}``, ``{yymmdd}``, ``{channel}`` placeholders."""
    values = {
        "date": business_date,
        "yyyymmdd": business_date.strftime("%Y%m%d"),
        "yymmdd": business_date.strftime("%y%m%d"),
        "yyyy_mm_dd": business_date.isoformat(),
        **extra,
    }
    return template.format(**values)
