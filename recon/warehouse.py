"""The DuckDB warehouse: connection, versioned schema, and day-scoped writes.

The schema is a list of migrations; ``schema_version`` records which ones a
file has. Opening an older file applies the missing ones in order, inside one
transaction. Documented in ``docs/warehouse.md``; keep the two in step.

Money columns are ``DECIMAL(18,2)`` (yuan / major units); fee rates
``DECIMAL(12,8)``. Every canonical row keeps where it came from: ``file_id`` +
``line_no`` for statement rows, ``source_table`` + ``source_key`` for platform
rows.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow as pa

M = "DECIMAL(18,2)"


def unmatched_rows_sql(changed: str, gone: str = "SELECT NULL::VARCHAR WHERE false") -> list[str]:
    """Statements that keep ``unmatched_platform_rows`` / ``unmatched_channel_rows`` in step with the breaks.

    ``changed``: a query of the discrepancy_ids just written (their rows are copied again from the source
    tables); ``gone``: a query of those withdrawn (their rows are removed). The source row of a break is the
    one the matching reads for it: the platform order of the break's business date and ``platform_source``,
    the statement row of its ``file_id`` + ``line_no``. Only the days those breaks name are read.
    """
    ids = f"SELECT discrepancy_id FROM ({changed})"
    return [
        f"DELETE FROM unmatched_platform_rows WHERE discrepancy_id IN ({ids}) OR discrepancy_id IN ({gone})",
        f"DELETE FROM unmatched_channel_rows WHERE discrepancy_id IN ({ids}) OR discrepancy_id IN ({gone})",
        f"""
INSERT INTO unmatched_platform_rows
WITH b AS (
    SELECT discrepancy_id, business_date, channel, split_part(platform_source, ':', 1) AS source_table,
           substr(platform_source, length(split_part(platform_source, ':', 1)) + 2) AS source_key
    FROM discrepancies
    WHERE flow = 'information' AND type = 'missing_in_channel' AND discrepancy_id IN ({ids}))
SELECT b.discrepancy_id, po.business_date, po.source_table, po.source_key, po.order_type, po.order_no, po.refund_no,
       po.channel, po.channel_txn_id, po.merchant_id, po.amount, po.currency, po.status, po.event_time
FROM b JOIN platform_orders po
  ON po.business_date = b.business_date AND po.channel = b.channel AND po.source_table = b.source_table
 AND po.source_key = b.source_key
WHERE po.business_date IN (SELECT business_date FROM b)""",
        f"""
INSERT INTO unmatched_channel_rows
WITH b AS (
    SELECT discrepancy_id, file_id, line_no FROM discrepancies
    WHERE flow = 'information' AND type = 'missing_in_platform' AND discrepancy_id IN ({ids}))
SELECT b.discrepancy_id, ct.business_date, ct.channel, ct.file_id, ct.line_no, ct.txn_type, ct.channel_txn_id,
       ct.merchant_order_no, ct.channel_refund_id, ct.merchant_refund_no, ct.status, ct.currency, ct.amount, ct.fee,
       ct.txn_time
FROM b JOIN channel_transactions ct ON ct.file_id = b.file_id AND ct.line_no = b.line_no
WHERE ct.business_date IN (SELECT lf.business_date FROM loaded_files lf JOIN b USING (file_id))""",
    ]


MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "foundation", f"""
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    business_date DATE NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    status VARCHAR NOT NULL,            -- running | succeeded | failed
    stage VARCHAR,
    message VARCHAR,
    config_sha256 VARCHAR,
    summary JSON
);

-- Every statement file ever loaded. file_id is the file's sha256.
CREATE TABLE loaded_files (
    file_id VARCHAR PRIMARY KEY,
    channel VARCHAR NOT NULL,
    business_date DATE NOT NULL,
    kind VARCHAR NOT NULL,              -- trade | funds | bank
    format VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    size_bytes BIGINT NOT NULL,
    row_count BIGINT NOT NULL,
    quarantined_count BIGINT NOT NULL,
    gross_total {M},
    fee_total {M},
    net_total {M},
    declared_rows BIGINT,
    declared_amount {M},
    footer_ok BOOLEAN,
    footer_message VARCHAR,
    period_start DATE,
    period_end DATE,
    status VARCHAR NOT NULL,            -- active | superseded
    supersedes VARCHAR,
    loaded_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR
);

-- The channel's transaction details (information flow).
CREATE TABLE channel_transactions (
    business_date DATE NOT NULL,
    channel VARCHAR NOT NULL,
    file_id VARCHAR NOT NULL,
    line_no INTEGER NOT NULL,
    txn_type VARCHAR NOT NULL,          -- payment | refund
    channel_txn_id VARCHAR,
    merchant_order_no VARCHAR,
    channel_refund_id VARCHAR,
    merchant_refund_no VARCHAR,
    channel_merchant_id VARCHAR,
    status VARCHAR NOT NULL,            -- success | refunded | revoked | closed | failed | processing
    currency VARCHAR NOT NULL,
    amount {M} NOT NULL,                -- positive; a refund's amount is the refunded amount
    fee {M},
    net {M},
    txn_time TIMESTAMP,                 -- channel local time, as printed in the file
    card_no_masked VARCHAR,
    description VARCHAR
);

-- The channel's own account entries (funds flow), income and outgoing.
CREATE TABLE channel_funds_movements (
    business_date DATE NOT NULL,
    channel VARCHAR NOT NULL,
    file_id VARCHAR NOT NULL,
    line_no INTEGER NOT NULL,
    movement_id VARCHAR,
    channel_txn_id VARCHAR,
    reference VARCHAR,                  -- merchant order or refund number, when printed
    direction VARCHAR NOT NULL,         -- in | out
    amount {M} NOT NULL,                -- unsigned
    currency VARCHAR NOT NULL,
    booked_at TIMESTAMP,
    biz_type VARCHAR,
    memo VARCHAR
);

-- A bank account's statement lines: the lump-sum credits channels pay.
CREATE TABLE bank_statement_lines (
    business_date DATE NOT NULL,
    channel VARCHAR NOT NULL,           -- the config channel the statement is declared under
    file_id VARCHAR NOT NULL,
    line_no INTEGER NOT NULL,
    value_date DATE,
    counterparty VARCHAR,
    payer_channel VARCHAR,              -- which payment channel the credit is from, when known
    reference VARCHAR,
    direction VARCHAR NOT NULL,         -- in | out
    amount {M} NOT NULL,
    currency VARCHAR NOT NULL,
    memo VARCHAR
);

-- The platform's own records for the business date (payments and refunds).
CREATE TABLE platform_orders (
    business_date DATE NOT NULL,
    source_table VARCHAR NOT NULL,
    source_key VARCHAR NOT NULL,
    order_type VARCHAR NOT NULL,        -- payment | refund
    order_no VARCHAR NOT NULL,
    refund_no VARCHAR,
    channel VARCHAR NOT NULL,
    channel_txn_id VARCHAR,
    merchant_id VARCHAR,
    amount {M} NOT NULL,
    currency VARCHAR NOT NULL,
    status VARCHAR NOT NULL,            -- success | pending | failed | closed
    event_time TIMESTAMP NOT NULL       -- platform local time of payment / refund
);

-- What the platform expects to move through each channel's account.
CREATE TABLE platform_expected_funds (
    business_date DATE NOT NULL,
    source_table VARCHAR NOT NULL,
    source_key VARCHAR NOT NULL,
    channel VARCHAR NOT NULL,
    order_no VARCHAR,
    refund_no VARCHAR,
    direction VARCHAR NOT NULL,         -- in | out
    amount {M} NOT NULL,
    currency VARCHAR NOT NULL,
    expected_at TIMESTAMP
);

-- Rows that could not be loaded, with the reason. Nothing is dropped silently.
CREATE TABLE quarantine (
    business_date DATE,
    channel VARCHAR,
    file_id VARCHAR,
    path VARCHAR NOT NULL,
    line_no INTEGER,
    field VARCHAR,
    reason VARCHAR NOT NULL,
    raw_text VARCHAR,
    quarantined_at TIMESTAMPTZ NOT NULL
);

-- Pairs that matched in the information flow (the input of settlement).
CREATE TABLE matched_transactions (
    business_date DATE NOT NULL,
    channel VARCHAR NOT NULL,
    match_key VARCHAR NOT NULL,
    txn_type VARCHAR NOT NULL,          -- payment | refund
    order_no VARCHAR NOT NULL,
    refund_no VARCHAR,
    merchant_id VARCHAR,
    amount {M} NOT NULL,
    currency VARCHAR NOT NULL,
    channel_fee {M},
    event_time TIMESTAMP,
    platform_source VARCHAR,
    channel_source VARCHAR
);

-- Breaks. One row per break; the id is stable across reruns and days.
CREATE TABLE discrepancies (
    discrepancy_id VARCHAR PRIMARY KEY,
    business_date DATE NOT NULL,
    channel VARCHAR NOT NULL,
    flow VARCHAR NOT NULL,              -- information | funds
    type VARCHAR NOT NULL,
    match_key VARCHAR NOT NULL,
    platform_amount {M},
    channel_amount {M},
    difference {M},                     -- channel - platform, signed
    currency VARCHAR,
    status VARCHAR NOT NULL,            -- open | pending | auto_resolved | resolved
    first_seen_date DATE NOT NULL,
    last_seen_date DATE NOT NULL,
    resolved_date DATE,
    resolution_note VARCHAR,
    platform_source VARCHAR,            -- source_table:source_key
    channel_source VARCHAR,             -- file path:line
    detail VARCHAR,
    merchant_id VARCHAR,
    order_no VARCHAR
);

CREATE TABLE settlement_batches (
    batch_id VARCHAR PRIMARY KEY,
    settlement_date DATE NOT NULL,
    status VARCHAR NOT NULL,            -- draft | confirmed
    created_at TIMESTAMPTZ NOT NULL,
    confirmed_at TIMESTAMPTZ,
    confirmed_by VARCHAR
);

CREATE TABLE settlement_lines (
    batch_id VARCHAR NOT NULL,
    merchant_id VARCHAR NOT NULL,
    currency VARCHAR NOT NULL,
    trade_count INTEGER NOT NULL,
    gross {M} NOT NULL,
    refunds {M} NOT NULL,
    fees {M} NOT NULL,
    adjustments {M} NOT NULL,
    net {M} NOT NULL,
    payout {M} NOT NULL,
    carried_forward {M} NOT NULL,
    PRIMARY KEY (batch_id, merchant_id, currency)
);

CREATE TABLE settlement_items (
    batch_id VARCHAR NOT NULL,
    merchant_id VARCHAR NOT NULL,
    currency VARCHAR NOT NULL,
    trade_date DATE NOT NULL,
    channel VARCHAR NOT NULL,
    txn_type VARCHAR NOT NULL,
    order_no VARCHAR NOT NULL,
    refund_no VARCHAR,
    amount {M} NOT NULL,
    fee {M} NOT NULL,
    net {M} NOT NULL
);
"""),
    (2, "settlement", f"""
-- Settlement (issue 6). Documented in docs/warehouse.md#settlement and docs/settlement.md.
ALTER TABLE settlement_batches ADD COLUMN updated_at TIMESTAMPTZ;

-- item_kind: transaction (a matched payment/refund, settled once) | adjustment (a late correction
-- of a transaction already in a confirmed batch: amount/fee/net are the signed deltas).
-- run_date: the settle_day business date that wrote the item (reruns of that date replace it
-- while its batch is a draft). amount is positive for transactions; net is signed.
ALTER TABLE settlement_items ADD COLUMN item_kind VARCHAR DEFAULT 'transaction';
ALTER TABLE settlement_items ADD COLUMN run_date DATE;
ALTER TABLE settlement_items ADD COLUMN match_key VARCHAR;
ALTER TABLE settlement_items ADD COLUMN event_time TIMESTAMP;
ALTER TABLE settlement_items ADD COLUMN note VARCHAR;

-- Balances around net: net + carried_in + reserve_released - reserve_held = payout + carried_forward.
ALTER TABLE settlement_lines ADD COLUMN carried_in {M} DEFAULT 0;
ALTER TABLE settlement_lines ADD COLUMN reserve_held {M} DEFAULT 0;
ALTER TABLE settlement_lines ADD COLUMN reserve_released {M} DEFAULT 0;
ALTER TABLE settlement_lines ADD COLUMN adjustment_count INTEGER DEFAULT 0;

-- Rolling reserve: held by batch_id, due on due_date, released into released_batch_id.
CREATE TABLE settlement_reserves (
    batch_id VARCHAR NOT NULL,
    merchant_id VARCHAR NOT NULL,
    currency VARCHAR NOT NULL,
    amount {M} NOT NULL,
    due_date DATE NOT NULL,
    released_batch_id VARCHAR,
    PRIMARY KEY (batch_id, merchant_id, currency)
);

-- Matched transactions a settle_day run did not settle, and why (snapshot per run_date).
CREATE TABLE settlement_holds (
    run_date DATE NOT NULL,
    trade_date DATE NOT NULL,
    channel VARCHAR NOT NULL,
    txn_type VARCHAR NOT NULL,
    order_no VARCHAR NOT NULL,
    refund_no VARCHAR,
    merchant_id VARCHAR,
    currency VARCHAR NOT NULL,
    amount {M} NOT NULL,
    reason VARCHAR NOT NULL,            -- discrepancy | unknown_merchant | no_merchant
    discrepancy_ids VARCHAR             -- comma-separated, for reason = discrepancy
);
"""),
    (3, "reconciliation workflow", f"""
-- Reconciliation workflow (issue 5). Documented in docs/warehouse.md#reconciliation-workflow
-- and docs/reconciliation.md.
-- Who/what/how a break was resolved (the audit table below has the full history).
ALTER TABLE discrepancies ADD COLUMN resolved_by VARCHAR;          -- a person, or 'system'
ALTER TABLE discrepancies ADD COLUMN resolution_action VARCHAR;    -- write_off | platform_corrected | ...
ALTER TABLE discrepancies ADD COLUMN resolved_at TIMESTAMPTZ;
ALTER TABLE discrepancies ADD COLUMN resolved_by_file VARCHAR;     -- file_id of the statement that cleared it
ALTER TABLE discrepancies ADD COLUMN resolved_by_source VARCHAR;   -- path:line or source_table:source_key
-- Timing: a break at the day cut is 'pending' until pending_until (exclusive), then 'open'.
ALTER TABLE discrepancies ADD COLUMN timing BOOLEAN DEFAULT false;
ALTER TABLE discrepancies ADD COLUMN pending_until DATE;
-- Where the unmatched statement row is (carry-over finds it again through these).
ALTER TABLE discrepancies ADD COLUMN file_id VARCHAR;
ALTER TABLE discrepancies ADD COLUMN line_no INTEGER;
-- Ageing, as of the latest business date reconciled (frozen at resolved_date once resolved).
ALTER TABLE discrepancies ADD COLUMN age_days INTEGER;
ALTER TABLE discrepancies ADD COLUMN age_bucket VARCHAR;
ALTER TABLE discrepancies ADD COLUMN aged_as_of DATE;

-- Append-only audit of every status change and every resolution (by a person or by the system).
CREATE SEQUENCE discrepancy_resolution_seq;
CREATE TABLE discrepancy_resolutions (
    resolution_id BIGINT PRIMARY KEY DEFAULT nextval('discrepancy_resolution_seq'),
    discrepancy_id VARCHAR NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    recorded_by VARCHAR NOT NULL,       -- the person (--by) or 'system'
    action VARCHAR NOT NULL,            -- person: write_off | platform_corrected | channel_corrected |
                                        --   refund_issued | other; system: auto_resolved | explained |
                                        --   pending_expired | still_found | reopened
    note VARCHAR,
    old_status VARCHAR,
    new_status VARCHAR NOT NULL,
    business_date DATE,                 -- the run's business date (system rows)
    file_id VARCHAR,                    -- the statement file involved, when one is
    origin VARCHAR NOT NULL             -- cli | import:<workbook name> | run
);

-- The members of a many-to-one (settlement batch) break: the transactions behind the lump sum.
CREATE TABLE discrepancy_members (
    discrepancy_id VARCHAR NOT NULL,
    business_date DATE NOT NULL,        -- the run that wrote the break
    channel VARCHAR NOT NULL,
    trade_date DATE NOT NULL,
    txn_type VARCHAR NOT NULL,          -- payment | refund
    match_key VARCHAR,
    order_no VARCHAR,
    refund_no VARCHAR,
    amount {M} NOT NULL,
    fee {M},
    expected_net {M} NOT NULL,          -- signed: payments +, refunds -
    source VARCHAR                      -- path:line of the statement row
);
"""),
    (4, "matched pair outcome", """
-- matched_transactions also keeps the pairs that disagree (held by their open break until a person
-- resolves it); outcome says which: matched | amount_mismatch | fee_mismatch | currency_mismatch.
ALTER TABLE matched_transactions ADD COLUMN outcome VARCHAR DEFAULT 'matched';
"""),
    (5, "matched pair statement row as file_id + line_no", """
-- matched_transactions names its statement row by file_id + line_no (the key of channel_transactions, as in
-- discrepancies) instead of the 'path:line' text: a path of ~140 characters on every one of millions of rows
-- was the table's widest column (10M pairs: a third of the time to write the table and half of its Parquet
-- export). The path is loaded_files.path.
ALTER TABLE matched_transactions ADD COLUMN file_id VARCHAR;
ALTER TABLE matched_transactions ADD COLUMN line_no INTEGER;
-- (a path loaded twice, before and after a restatement: the active file, else the latest)
UPDATE matched_transactions m SET file_id = lf.file_id
FROM (SELECT path, first(file_id ORDER BY status = 'active' DESC, loaded_at DESC) AS file_id
      FROM loaded_files GROUP BY path) lf
WHERE lf.path = regexp_extract(m.channel_source, '^(.*):[0-9]+$', 1);
UPDATE matched_transactions SET line_no = CAST(regexp_extract(channel_source, ':([0-9]+)$', 1) AS INTEGER)
WHERE regexp_matches(channel_source, ':[0-9]+$');
ALTER TABLE matched_transactions DROP COLUMN channel_source;
"""),
    (6, "unmatched rows of carried breaks", f"""
-- The row behind each missing_in_channel break (a platform order) and each missing_in_platform break (a
-- statement row), copied when the break is written. Later days pair a carried break's row from here, by
-- discrepancy_id, instead of finding it again in platform_orders / channel_transactions: that lookup read
-- every earlier day that still had an open break, so a night's cost grew with the warehouse's history.
-- Columns: those of the source row the matching reads (same names and types). Kept while the break exists
-- (resolved ones too: a rerun of an earlier day may pair them again); removed with it.
CREATE TABLE unmatched_platform_rows (
    discrepancy_id VARCHAR NOT NULL,
    business_date DATE NOT NULL,
    source_table VARCHAR NOT NULL,
    source_key VARCHAR NOT NULL,
    order_type VARCHAR NOT NULL,
    order_no VARCHAR NOT NULL,
    refund_no VARCHAR,
    channel VARCHAR NOT NULL,
    channel_txn_id VARCHAR,
    merchant_id VARCHAR,
    amount {M} NOT NULL,
    currency VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    event_time TIMESTAMP NOT NULL
);
CREATE TABLE unmatched_channel_rows (
    discrepancy_id VARCHAR NOT NULL,
    business_date DATE NOT NULL,
    channel VARCHAR NOT NULL,
    file_id VARCHAR NOT NULL,
    line_no INTEGER NOT NULL,
    txn_type VARCHAR NOT NULL,
    channel_txn_id VARCHAR,
    merchant_order_no VARCHAR,
    channel_refund_id VARCHAR,
    merchant_refund_no VARCHAR,
    status VARCHAR NOT NULL,
    currency VARCHAR NOT NULL,
    amount {M} NOT NULL,
    fee {M},
    txn_time TIMESTAMP
);
""" + ";\n".join(unmatched_rows_sql("SELECT discrepancy_id FROM discrepancies")) + ";\n"),
    (7, "archived days", """
-- Business days whose rows of the big per-day tables were moved out to Parquet (`recon archive`,
-- recon/archive.py, docs/warehouse.md#archived-days). Their breaks, runs, files, batches and lines stay.
-- fingerprints: per table, the rows, sum(amount) and a hash of every row as archived (restore checks them);
-- batch_ids: the settlement batches that held the day's items (their item lists are then incomplete here).
CREATE TABLE archived_days (
    business_date DATE PRIMARY KEY,
    archived_at TIMESTAMPTZ NOT NULL,
    archive_dir VARCHAR NOT NULL,
    row_count BIGINT NOT NULL,
    fingerprints JSON NOT NULL,
    batch_ids VARCHAR[] NOT NULL
);
"""),
]

SCHEMA_VERSION = max(v for v, _, _ in MIGRATIONS)


class WarehouseError(Exception):
    pass


def connect(path: str | Path, *, read_only: bool = False, memory_limit: str | None = None,
            threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, creating or migrating its schema unless read-only."""
    path = Path(path)
    if read_only and not path.exists():
        raise WarehouseError(f"warehouse {path} does not exist yet: run `recon run` first")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        raise WarehouseError(f"cannot open warehouse {path}: {exc}") from None
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if not read_only:
        from recon.views import create_views   # views import nothing from the project

        migrate(con)
        create_views(con)
    return con


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()[0]
    if not exists:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply missing migrations in one transaction; returns the version reached."""
    have = current_version(con)
    if have > SCHEMA_VERSION:
        raise WarehouseError(
            f"warehouse schema version {have} is newer than this code ({SCHEMA_VERSION}): upgrade payrecon"
        )
    if have == SCHEMA_VERSION:
        return have
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ DEFAULT now())"
        )
        for version, name, sql in MIGRATIONS:
            if version > have:
                con.execute(sql)
                con.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, name])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All-or-nothing: commit on success, roll back on any exception."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextmanager
def unordered_writes(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Let DuckDB write rows in any order for the block (``preserve_insertion_order = false``, this session only).

    The order rows are stored in means nothing to the pipeline: every read whose order matters says
    ORDER BY, and an ``INSERT … ORDER BY`` (settlement items, clustered by merchant) keeps its order
    whatever the setting. Without the promise DuckDB appends from both threads at once: at ten
    million orders the day's inserts cost a quarter less (a whole run 124 -> 116 s).

    If a statement in the block failed, DuckDB refuses everything but ROLLBACK in that
    transaction, even a SET: the block's own error is raised, and the setting stays until the
    caller resets it after the rollback (``RESET SESSION preserve_insertion_order``).
    """
    before = con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0]
    con.execute("SET SESSION preserve_insertion_order = false")
    failed = True
    try:
        yield con
        failed = False
    finally:
        try:
            con.execute(f"SET SESSION preserve_insertion_order = {'true' if before else 'false'}")
        except duckdb.TransactionException:
            if not failed:
                raise


@contextmanager
def arrow_view(con: duckdb.DuckDBPyConnection, name: str, table) -> Iterator[str]:
    """Expose an Arrow table (or record batch reader) to SQL as ``name`` for the block's duration.

    Inside an open transaction DuckDB keeps the object alive until COMMIT: for big inserts use
    :func:`insert_arrow`.
    """
    con.register(name, table)
    try:
        yield name
    finally:
        con.execute("SELECT 1").fetchall()   # finish any pending result before unregistering
        con.unregister(name)


def insert_arrow(con: duckdb.DuckDBPyConnection, sql: str, table: pa.Table, params: list | None = None,
                 name: str = "_arrow_rows") -> None:
    """Run ``sql`` (an INSERT … FROM ``name``) over an Arrow table scanned once, as a stream.

    Inside an open transaction, DuckDB keeps a registered object alive until COMMIT, even
    after ``unregister``: loading a day's statements through :func:`arrow_view` held every
    parsed file in memory to the end of the run (4 GiB at ten million orders). Registered as
    a record batch stream instead, each batch is released once DuckDB has read it, so only
    what the caller still holds stays in memory.
    """
    stream = pa.RecordBatchReader.from_batches(table.schema, iter(table.to_batches()))
    del table
    with arrow_view(con, name, stream):
        con.execute(sql, params or []).fetchall()


def archived_batch_days(con: duckdb.DuckDBPyConnection, batch_id: str) -> list:
    """The archived days whose settlement items belonged to ``batch_id`` (empty in a published snapshot,
    whose ``settlement_items`` still holds every day)."""
    tables = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_catalog = current_database()").fetchall()}
    if "archived_days" not in tables or "snapshot_info" in tables:
        return []
    return [r[0] for r in con.execute("SELECT business_date FROM archived_days WHERE list_contains(batch_ids, ?) "
                                      "ORDER BY 1", [batch_id]).fetchall()]
