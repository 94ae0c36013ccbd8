"""Compacting the warehouse file: give the space of deleted rows back to the disk.

DuckDB reuses the blocks that deleted rows free (archived days, the results a rerun replaced) but never
shrinks its file: a warehouse that held ninety days and now keeps ten is still ninety days big on disk.
The only way to shrink it is to copy the database into a fresh file. :func:`compact` does that while it
holds the warehouse's write lock, so no run can write in the meantime:

1. ``CHECKPOINT``, and measure the file (``pragma_database_size``): with less free space than asked for,
   nothing happens;
2. ``COPY FROM DATABASE`` into ``<warehouse>.compacting`` beside it (the disk must hold the used part once
   more; checked first);
3. every table of the copy is compared with the original (rows and a hash of every row), every sequence's
   position too (a resolution id must never be handed out twice), and the schema objects' definitions;
4. the original is kept as ``<warehouse>.before-compact`` (a hard link) and the copy renamed over the
   warehouse's name in one atomic step, *before* the lock on the original is released: a run that starts
   afterwards opens the copy, none can open the original in between;
5. the copy is opened once more and its schema version checked; then the original is removed, unless
   ``keep_old`` asks to keep it. A failure anywhere before the rename leaves the warehouse as it was
   (the half-written copy is removed); a copy that cannot be opened after it is swapped back.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import duckdb

from recon.warehouse import SCHEMA_VERSION, WarehouseError, connect, current_version

COPY_ALIAS = "payrecon_compacted"


@dataclass(frozen=True)
class FileSpace:
    """How much of the warehouse file holds data (``pragma_database_size``, after a checkpoint)."""

    file_bytes: int
    block_size: int
    used_blocks: int
    free_blocks: int

    @property
    def free_share(self) -> float:
        """Free blocks as a share of all blocks (0.0 for an empty file); a ratio for a person, not money."""
        total = self.used_blocks + self.free_blocks
        return self.free_blocks / total if total else 0.0

    @property
    def used_bytes(self) -> int:
        return self.used_blocks * self.block_size

    def describe(self) -> str:
        return (f"{gib(self.file_bytes)} on disk, {gib(self.used_bytes)} in use, "
                f"{self.free_share:.0%} free ({self.free_blocks:,} of {self.used_blocks + self.free_blocks:,} blocks)")


def gib(n: int) -> str:
    return f"{n / 2 ** 30:.2f} GiB"


def file_space(con: duckdb.DuckDBPyConnection, path: Path) -> FileSpace:
    name = con.execute("SELECT current_database()").fetchone()[0]
    block_size, used, free = con.execute(
        "SELECT block_size, used_blocks, free_blocks FROM pragma_database_size() WHERE database_name = ?",
        [name]).fetchone()
    return FileSpace(path.stat().st_size, block_size, used, free)


def space(path: str | Path) -> FileSpace:
    """The warehouse file's space, read-only (after the last writer's checkpoint)."""
    path = Path(path)
    con = connect(path, read_only=True)
    try:
        return file_space(con, path)
    finally:
        con.close()


def compact(path: str | Path, *, min_free_share: float = 0.0, keep_old: bool = False,
            memory_limit: str | None = None, threads: int | None = None,
            progress: Callable[[str], None] = lambda _m: None) -> dict:
    """Rewrite the warehouse at ``path`` into a fresh file when at least ``min_free_share`` of it is free.

    Returns what happened: ``compacted`` (bool), ``before`` and ``after`` (:class:`FileSpace`),
    ``seconds``, ``tables`` (how many were checked), ``kept`` (the original's path when ``keep_old``).
    """
    path = Path(path).resolve()                 # a symlinked warehouse: compact its file, keep the link
    tmp, old = path.with_name(path.name + ".compacting"), path.with_name(path.name + ".before-compact")
    started = time.monotonic()
    # the write lock: no run can open the warehouse until we are done
    con = connect(path, memory_limit=memory_limit, threads=threads)
    swapped = False
    try:
        con.execute("CHECKPOINT")
        before = file_space(con, path)
        progress(f"{path}: {before.describe()}")
        if before.free_share < min_free_share or before.free_blocks == 0:
            why = "nothing is free" if before.free_blocks == 0 else f"less than {min_free_share:.0%} is free"
            progress(f"not compacted: {why}")
            return {"compacted": False, "before": before, "after": before, "seconds": time.monotonic() - started,
                    "tables": 0, "kept": None}
        check_room(path.parent, before, f"compact {path}")
        _remove_leftovers(tmp, old, progress)
        tables = copy_database(con, tmp)
        progress(f"copied and checked {tables} tables")
        swap_in(path, tmp, old)
        swapped = True
    except BaseException:
        if not swapped:
            discard(tmp)
        raise
    finally:
        con.close()                             # releases the lock on the original (now only `old`)
    return _finish(path, old, before, tables, keep_old, started, progress)


def check_room(folder: Path, used: FileSpace, what: str) -> None:
    """A WarehouseError when ``folder``'s disk cannot hold a copy of the used part of the warehouse."""
    free = shutil.disk_usage(folder).free
    need = used.used_bytes + (64 << 20)
    if free < need:
        raise WarehouseError(f"cannot {what}: the copy needs about {gib(need)} in {folder} and the disk has "
                             f"{gib(free)} free")


def _remove_leftovers(tmp: Path, old: Path, progress: Callable[[str], None]) -> None:
    """Remove, saying so, a half-made copy of a compaction that died and the original an earlier ``--keep-old``
    kept (a warehouse that opened and ran since then; the one spare copy is the one this compaction keeps)."""
    if tmp.exists() or _wal(tmp).exists():
        progress(f"removed {tmp}: the unfinished copy of a compaction that did not end")
    discard(tmp)
    if old.exists():
        kept = datetime.fromtimestamp(old.stat().st_mtime, timezone.utc)
        progress(f"removed {old} ({gib(old.stat().st_size)}, last written {kept:%Y-%m-%d %H:%M} UTC): the original "
                 "an earlier `recon compact --keep-old` kept")
        old.unlink()


def _wal(p: Path) -> Path:
    return p.with_name(p.name + ".wal")


def discard(tmp: Path) -> None:
    tmp.unlink(missing_ok=True)
    _wal(tmp).unlink(missing_ok=True)


def swap_in(path: Path, new: Path, old: Path) -> None:
    """Put ``new`` in the warehouse's place, keeping the current file as ``old``. Called while the current
    file's write lock is held: a run that starts afterwards opens ``new``; none can open the current one in
    between, because its name moves in one atomic rename."""
    if path.exists():
        os.link(path, old)                      # the original stays reachable under its backup name
    os.replace(new, path)                       # atomic: the warehouse's name now means the new file


def copy_database(con: duckdb.DuckDBPyConnection, tmp: Path) -> int:
    """Copy the whole database of ``con`` into a new file ``tmp`` and check the copy (:func:`_verify`); returns
    the number of tables checked. Raises :class:`WarehouseError` when the copy differs."""
    name = con.execute("SELECT current_database()").fetchone()[0]
    con.execute(f"ATTACH '{_sql_text(tmp)}' AS {COPY_ALIAS}")
    try:
        con.execute(f'COPY FROM DATABASE "{name}" TO {COPY_ALIAS}')
        con.execute(f"CHECKPOINT {COPY_ALIAS}")
        return _verify(con, name)
    finally:
        con.execute(f"DETACH {COPY_ALIAS}")


def _sql_text(p: Path) -> str:
    return str(p).replace("'", "''")


def _verify(con: duckdb.DuckDBPyConnection, name: str) -> int:
    """Raise when the copy differs from the original in a schema object, a sequence or a table's rows."""
    for what, sql in (
        ("schema objects",
         "SELECT 'table ' || table_name, sql FROM duckdb_tables() WHERE database_name = ? UNION ALL "
         "SELECT 'view ' || view_name, sql FROM duckdb_views() WHERE database_name = ? AND NOT internal"),
        ("sequences",
         "SELECT sequence_name, coalesce(last_value, start_value - increment_by)::VARCHAR "
         "FROM duckdb_sequences() WHERE database_name = ? AND ? IS NOT NULL"),
    ):
        mine = sorted(con.execute(sql, [name, name]).fetchall())
        copy = sorted(con.execute(sql, [COPY_ALIAS, COPY_ALIAS]).fetchall())
        if mine != copy:
            diff = sorted(set(mine) ^ set(copy))[:3]
            raise WarehouseError(f"the copy's {what} differ from the warehouse's, e.g. {diff}: "
                                 "the warehouse is unchanged")
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' ORDER BY 1",
        [name]).fetchall()]
    for t in tables:
        fp = "SELECT count(*), coalesce(sum(hash(x)::HUGEINT), 0)::VARCHAR FROM {}.main.\"{}\" x"
        mine = con.execute(fp.format(f'"{name}"', t)).fetchone()
        copy = con.execute(fp.format(COPY_ALIAS, t)).fetchone()
        if mine != copy:
            raise WarehouseError(f"the copy of table {t} differs from the warehouse's ({mine[0]:,} rows there, "
                                 f"{copy[0]:,} in the copy): the warehouse is unchanged")
    return len(tables)


def _finish(path: Path, old: Path, before: FileSpace, tables: int, keep_old: bool, started: float,
            progress: Callable[[str], None]) -> dict:
    """Open the swapped-in copy once; swap the original back if it does not open at the current schema."""
    try:
        con = connect(path, read_only=True)
        try:
            version = current_version(con)
            after = file_space(con, path)
        finally:
            con.close()
        if version != SCHEMA_VERSION:
            raise WarehouseError(f"the compacted copy has schema version {version}, expected {SCHEMA_VERSION}")
    except Exception:
        os.replace(old, path)
        raise
    progress(f"compacted: {gib(before.file_bytes)} -> {gib(after.file_bytes)}")
    if keep_old:
        progress(f"the original is kept as {old}")
    else:
        old.unlink()
    return {"compacted": True, "before": before, "after": after, "seconds": time.monotonic() - started,
            "tables": tables, "kept": old if keep_old else None}
