"""gzip and ZIP bodies unpacked safely, with limits.

* ZIP entry names that would escape the target folder (absolute, drive
  letters, ``..``), symlink entries and encrypted entries refuse the whole
  archive (zip-slip);
* the number of entries and the total uncompressed size are bounded, counted
  while inflating (the sizes an archive declares can lie: zip bombs);
* entry names without the UTF-8 flag are decoded as UTF-8 when valid, else as
  GBK/GB18030 (what Chinese channels' tools write), else CP437;
* a truncated or corrupt archive is a :class:`FetchError` (not retried: the
  bytes arrived complete, as the server published them).

Every output is written under a temporary name and renamed when complete, so
a failure leaves no partial member behind.
"""
from __future__ import annotations

import fnmatch
import gzip
import os
import re
import stat
import zipfile
import zlib
from pathlib import Path

from loaders.base import zip_entry_name
from loaders.fetch.base import FetchError
from loaders.fetch.landing import safe_name

CHUNK = 1 << 20


def detect(path: Path) -> str | None:
    """``"gzip"``, ``"zip"`` or None, from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    return None


def _copy_limited(src, dst_path: Path, budget: int, what: str) -> int:
    """Copy a stream to ``dst_path`` (temp name, then rename); refuse more than ``budget`` bytes."""
    tmp = dst_path.with_name(f".part-{dst_path.name}")
    written = 0
    try:
        with open(tmp, "wb") as out:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                if written > budget:
                    raise FetchError(f"{what}: uncompressed size exceeds the limit "
                                     f"({budget} bytes left of max_uncompressed_bytes); refusing (zip bomb?)")
                out.write(chunk)
        os.replace(tmp, dst_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


def gunzip(src: Path, out_dir: Path, name: str, max_bytes: int, what: str) -> Path:
    """Inflate ``src`` into ``out_dir/name``; bounded by ``max_bytes``."""
    dst = out_dir / safe_name(name)
    try:
        with gzip.open(src, "rb") as g:
            _copy_limited(g, dst, max_bytes, what)
    except EOFError:
        raise FetchError(f"{what}: truncated gzip (the stream ends before its end marker)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        if isinstance(exc, FetchError):
            raise
        raise FetchError(f"{what}: corrupt gzip: {exc}") from None
    return dst


_DRIVE = re.compile(r"^[A-Za-z]:")


def check_entry(name: str, info: zipfile.ZipInfo, what: str) -> None:
    """Refuse names that escape the folder (zip-slip), symlinks and encrypted entries."""
    norm = name.replace("\\", "/")
    parts = norm.split("/")
    if norm.startswith("/") or _DRIVE.match(norm) or ".." in parts or "\x00" in norm:
        raise FetchError(f"{what}: ZIP entry {name!r} points outside the target folder (zip-slip); "
                         "refusing the archive")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise FetchError(f"{what}: ZIP entry {name!r} is a symbolic link; refusing the archive")
    if info.flag_bits & 0x1:
        raise FetchError(f"{what}: ZIP entry {name!r} is encrypted; refusing the archive")


def unzip(src: Path, out_dir: Path, *, max_bytes: int, max_entries: int, member_glob: str | None,
          what: str) -> list[tuple[Path, str]]:
    """Extract the wanted file entries flat into ``out_dir``; returns ``(path, local name)`` pairs."""
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FetchError(f"{what}: not a readable ZIP archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            raise FetchError(f"{what}: ZIP has {len(infos)} entries, more than max_archive_entries "
                             f"{max_entries}; refusing (zip bomb?)")
        names = [(info, zip_entry_name(info)) for info in infos]
        for info, name in names:                       # check everything before writing anything
            check_entry(name, info, what)
        declared = sum(i.file_size for i in infos)
        if declared > max_bytes:
            raise FetchError(f"{what}: ZIP declares {declared} bytes uncompressed, more than "
                             f"max_uncompressed_bytes {max_bytes}; refusing (zip bomb?)")
        budget, seen = max_bytes, set()
        for info, name in names:
            if info.is_dir():
                continue
            base = name.replace("\\", "/").rsplit("/", 1)[-1]
            if member_glob and not (fnmatch.fnmatch(name, member_glob) or fnmatch.fnmatch(base, member_glob)):
                continue
            try:
                local = safe_name(base)
            except ValueError:
                raise FetchError(f"{what}: ZIP entry {name!r} has no usable file name") from None
            if local in seen:
                raise FetchError(f"{what}: two ZIP entries would both land as {local!r}")
            seen.add(local)
            try:
                with zf.open(info) as member:
                    budget -= _copy_limited(member, out_dir / local, budget, what)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise FetchError(f"{what}: corrupt ZIP entry {name!r}: {exc}") from None
    if not seen:
        raise FetchError(f"{what}: the ZIP archive holds no file"
                         + (f" matching {member_glob!r}" if member_glob else ""))
    return [(out_dir / n, n) for n in sorted(seen)]
