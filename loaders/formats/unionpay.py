"""UnionPay online payments (全渠道) reconciliation file ``INN{yyMMdd}88ZM_{merchantId}``.

Fixed width: 607-byte GBK records, CRLF, 42 fields separated by one space (widths in
``ZM_WIDTHS``). Amounts are integer fen; fee and settlement carry a C/D sign (C credit
to the merchant, D debit). The ``RD…`` summary report delivered in the same ZIP (or
beside a bare ZM file) is the file's own totals: counts, transaction amounts, fees and
net clearing amount, checked against the parsed records.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loaders.base import (
    MONEY, TRADE_SCHEMA, FileError, FooterCheck, ParsedFile, Quarantined, RowBuilder, RowError, mask_card, register,
)
from loaders.formats._tabular import (
    ARCHIVE_ERRORS, Errors, Source, as_bool, blank_to_null, footer_check, is_zip, map_values, msum, zip_members,
)

ZM_WIDTHS = [3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4, 32, 1, 21, 15, 1, 15,
             32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98]
RECORD = sum(ZM_WIDTHS) + len(ZM_WIDTHS) - 1      # 607
OFFSETS = []
_pos = 0
for _w in ZM_WIDTHS:
    OFFSETS.append((_pos, _pos + _w))
    _pos += _w + 1
# 交易类型 (field 20): 01 消费, 04 退货, 31 消费撤销 (a same-day reversal of a payment)
TXN_TYPES = {"01": ("payment", "success"), "04": ("refund", "success"), "31": ("refund", "revoked")}
ZM_NAME = re.compile(r"INN(\d{6})\d{2}ZM_(\w+)$")
RD_NAME = re.compile(r"RD\d{4}(\d{6})\d{2}_(\w+)$")
FEN = Decimal("0.01")


def _field(rec: bytes, n: int) -> str:
    a, b = OFFSETS[n - 1]
    return rec[a:b].decode("gb18030").strip()


def _fen(text: str, name: str) -> Decimal:
    if not text.isdigit():
        raise RowError(name, f"expected digits (fen), got {text!r}")
    return Decimal(int(text)) * FEN


def _signed(text: str, name: str, credit_positive: bool) -> Decimal:
    """``C000000473939`` / ``D000000002861``: merchant's view, C credit, D debit."""
    if len(text) < 2 or text[0] not in "CD":
        raise RowError(name, f"expected C or D and 12 digits, got {text!r}")
    value = _fen(text[1:].strip(), name)
    credit = text[0] == "C"
    return value if credit == credit_positive else -value


def _when(text: str, clearing: date | None) -> datetime:
    if len(text) != 10 or not text.isdigit():
        raise RowError("交易传输时间", f"expected MMDDhhmmss, got {text!r}")
    ref = clearing or date.today()
    best = None
    for year in (ref.year - 1, ref.year, ref.year + 1):
        try:
            t = datetime.strptime(f"{year}{text}", "%Y%m%d%H%M%S")
        except ValueError:
            continue
        if best is None or abs((t.date() - ref).days) < abs((best.date() - ref).days):
            best = t
    if best is None:
        raise RowError("交易传输时间", f"not a date/time: {text!r}")
    return best


def _sources(path: Path, opts: dict[str, Any]) -> tuple[Source, Source | None]:
    path = Path(path)
    if not path.exists():
        raise FileError(path, "no such file")
    if is_zip(path):
        members = zip_members(path)
        zm = [(n, i) for n, i in members if "ZM_" in n and "ZME_" not in n]
        rd = [(n, i) for n, i in members if Path(n).name.startswith("RD")]
        if not zm:
            raise FileError(path, f"ZIP has no ZM file (entries: {[n for n, _ in members]})")
        return (Source(path, zm[0][1], zm[0][0]), Source(path, rd[0][1], rd[0][0]) if rd else None)
    rd_path = opts.get("rd_path")
    if rd_path:
        return Source(path), Source(Path(rd_path))
    m = ZM_NAME.search(path.name)
    if m:
        for cand in sorted(path.parent.glob(f"RD*{m.group(1)}*_{m.group(2)}")):
            return Source(path), Source(cand)
    return Source(path), None


def _clearing_date(name: str | None, rd_text: str | None) -> date | None:
    if rd_text:
        m = re.search(r"清算日期[:：]\s*(\d{8})", rd_text)
        if m:
            return datetime.strptime(m.group(1), "%Y%m%d").date()
    if name:
        m = ZM_NAME.search(Path(name).name)
        if m:
            return datetime.strptime(m.group(1), "%y%m%d").date()
    return None


NUM = re.compile(r"-?[\d,]+\.\d{2}|-?\d+")


def rd_totals(text: str) -> dict[str, Any] | None:
    """The first 总计 line of the RD report: count, 交易金额 借/贷, 费用 借/贷, 资金清算差额 借/贷."""
    for line in text.splitlines():
        if line.strip().startswith("总计"):
            nums = NUM.findall(line.split("总计", 1)[1])
            if len(nums) < 7:
                return None
            vals = [Decimal(v.replace(",", "")) for v in nums[1:7]]
            return {"count": int(nums[0]), "txn_debit": vals[0], "txn_credit": vals[1], "fee_debit": vals[2],
                    "fee_credit": vals[3], "net_debit": vals[4], "net_credit": vals[5]}
    return None


def _records(arr: np.ndarray, nums: np.ndarray, types: dict, ccy: str, clearing: date | None):
    """Full-length records (an n x RECORD byte matrix), converted column-wise: (table, quarantined, sums)."""
    n = len(arr)
    errs = Errors(n)

    def col(k: int, name: str) -> pa.Array:
        a, b = OFFSETS[k - 1]
        raw = np.ascontiguousarray(arr[:, a:b])
        binary = pa.Array.from_buffers(pa.binary(b - a), n, [None, pa.py_buffer(raw.tobytes())])
        try:
            text = pc.cast(pc.cast(binary, pa.binary()), pa.string())
        except pa.ArrowInvalid:                        # non-ASCII (GBK) values: decode once per distinct value
            values = pc.cast(binary, pa.binary())
            enc = pc.dictionary_encode(values)
            decoded, bad = [], []
            for j, v in enumerate(enc.dictionary.to_pylist()):
                try:
                    decoded.append(v.decode("gb18030"))
                except UnicodeDecodeError:
                    decoded.append("")
                    bad.append(j)
            text = pc.take(pa.array(decoded, pa.string()), enc.indices)
            if bad:
                errs.mark(as_bool(pc.is_in(enc.indices, value_set=pa.array(bad, enc.indices.type))), name,
                          "not valid GBK")
        return pc.utf8_trim_whitespace(text)

    def fen(text: pa.Array, name: str) -> pa.Array:
        ok = as_bool(pc.match_substring_regex(text, r"^\d{1,14}$"))
        errs.mark(~ok, name, lambda i: f"expected digits (fen), got {text[i].as_py()!r}")
        digits = pc.utf8_lpad(pc.if_else(pa.array(ok), text, "0"), 3, "0")
        # integer fen -> "yuan.ff" text -> exact decimal (no arithmetic, no float)
        return pc.cast(pc.binary_join_element_wise(pc.utf8_slice_codeunits(digits, 0, -2), ".",
                                                   pc.utf8_slice_codeunits(digits, -2), ""), MONEY)

    def signed(text: pa.Array, name: str, credit_positive: bool) -> pa.Array:
        sign = pc.utf8_slice_codeunits(text, 0, 1)
        ok = as_bool(pc.is_in(sign, value_set=pa.array(["C", "D"])))
        errs.mark(~ok, name, lambda i: f"expected C or D and 12 digits, got {text[i].as_py()!r}")
        value = fen(pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(text, 1, 20)), name)
        positive = pc.equal(sign, "C" if credit_positive else "D")
        return pc.if_else(positive, value, pc.cast(pc.negate(value), MONEY))

    code = col(20, "交易类型")
    kind = map_values(code, {k: v[0] for k, v in types.items()})
    status = map_values(code, {k: v[1] for k, v in types.items()})
    code1 = col(1, "交易代码")
    errs.mark(as_bool(pc.is_null(kind)), "交易类型",
              lambda i: f"unknown 交易类型 {code[i].as_py()!r} (交易代码 {code1[i].as_py()})")
    refund = pc.equal(kind, "refund")
    amount = fen(col(7, "交易金额"), "交易金额")
    fee = signed(col(16, "商户手续费"), "商户手续费", credit_positive=False)     # D: the merchant pays
    net = signed(col(17, "结算金额"), "结算金额", credit_positive=True)
    expect = pc.cast(pc.subtract(pc.if_else(refund, pc.cast(pc.negate(amount), MONEY), amount), fee), MONEY)
    differs = as_bool(pc.not_equal(net, expect))
    nets, amounts, fees = net.to_pylist, amount.to_pylist, fee.to_pylist
    if differs.any():
        nl, al, fl = nets(), amounts(), fees()
        errs.mark(differs, "结算金额", lambda i: f"结算金额 {nl[i]} is not 交易金额 {al[i]} less 手续费 {fl[i]}")
    when_text = col(5, "交易传输时间")
    ref = clearing or date.today()
    month = pc.cast(pc.utf8_slice_codeunits(pc.if_else(pc.match_substring_regex(when_text, r"^\d{10}$"),
                                                        when_text, "0000000000"), 0, 2), pa.int64())
    year = pc.if_else(pc.greater(pc.subtract(month, ref.month), 6), str(ref.year - 1),
                      pc.if_else(pc.less(pc.subtract(month, ref.month), -6), str(ref.year + 1), str(ref.year)))
    when = pc.strptime(pc.binary_join_element_wise(year, when_text, ""), format="%Y%m%d%H%M%S", unit="us",
                       error_is_null=True)
    errs.mark(as_bool(pc.is_null(when)), "交易传输时间",
              lambda i: f"expected MMDDhhmmss, got {when_text[i].as_py()!r}")
    query_id, orig = col(10, "查询流水号"), col(27, "原交易查询流水号")
    blank = pa.scalar(None, pa.string())
    cards = pc.dictionary_encode(col(6, "账号"))
    masked = pc.take(pa.array([mask_card(c) for c in cards.dictionary.to_pylist()], pa.string()), cards.indices)
    cols = {"line_no": pa.array(nums, pa.int32()), "txn_type": kind, "status": status,
            "channel_txn_id": pc.if_else(pc.and_(refund, pc.not_equal(orig, "")), orig, query_id),
            "channel_refund_id": pc.if_else(refund, query_id, blank),
            "merchant_order_no": blank_to_null(col(12, "商户订单号")),
            "channel_merchant_id": blank_to_null(col(28, "商户代码")),
            "currency": pa.array([ccy] * n, pa.string()), "amount": amount, "fee": fee, "net": net,
            "txn_time": when, "card_no_masked": masked}
    for f in TRADE_SCHEMA:
        if f.name not in cols:
            cols[f.name] = pa.nulls(n, f.type)
    table = pa.table({f.name: cols[f.name] for f in TRADE_SCHEMA}, schema=TRADE_SCHEMA)
    quarantine = []
    if errs.bad.any():
        for i, (fld, reason) in sorted(errs.items.items()):
            quarantine.append(Quarantined(int(nums[i]), fld, reason, arr[i].tobytes().decode("gb18030", "replace")))
        table = table.filter(pa.array(~errs.bad))
    keep = ~errs.bad
    signed_gross = pc.if_else(refund, pc.cast(pc.negate(amount), MONEY), amount)
    sums = {"gross": msum(signed_gross, keep), "fee": msum(fee, keep), "net": msum(net, keep)}
    return table, quarantine, sums


def _line_blocks(fh, label: str, block_bytes: int) -> Iterator[bytes]:
    """The stream in blocks of whole lines (each ends with a newline, except maybe the file's last).

    Raw reads: ``readlines`` on a ZIP member goes through ``zipfile``'s Python ``readline`` once per
    record (UnionPay, 2M records: ~5 of the parse's ~11 CPU-s).
    """
    carry = b""
    while True:
        try:
            data = fh.read(block_bytes)
        except ARCHIVE_ERRORS as exc:
            raise FileError(label, f"cannot read: {exc}") from None
        if not data:
            if carry:
                yield carry
            return
        buf = carry + data if carry else data
        cut = buf.rfind(b"\n") + 1
        if cut == 0:                 # no line end yet: read on
            carry = buf
            continue
        carry = buf[cut:]
        yield buf[:cut] if carry else buf


def _full_records(chunk: bytes, a: np.ndarray) -> np.ndarray | None:
    """The block as an n x RECORD matrix (a view, no copy) when every line in it is a full-length record
    with the same line end (CRLF or LF); else None. Counting line ends is a C loop over the bytes."""
    n = chunk.count(b"\n")
    stride = chunk.find(b"\n") + 1
    if n == 0 or stride not in (RECORD + 1, RECORD + 2) or len(chunk) != n * stride:
        return None
    rows = a.reshape(n, stride)
    if not (rows[:, -1] == 10).all():          # n line ends, one at the end of each row: no other
        return None
    before = rows[:, stride - 2]              # the byte before the line end
    if not ((before == 13).all() if stride == RECORD + 2 else (before != 13).all()):
        return None
    return rows[:, :RECORD]


def _record_blocks(zm: Source, out: RowBuilder, types: dict, ccy: str, clearing: date | None,
                   sums: dict[str, Decimal], block_bytes: int = 64 << 20):
    """Stream the ZM file: yield (line numbers, records as an n x RECORD byte matrix), a block at a time.

    Records of another length go one by one through :func:`_odd_record` into ``out``;
    memory holds one block of the file, not the whole file. Lines are found with numpy; a block of
    full-length records only (the usual case) is viewed as the matrix without copying a record.
    """
    line_no = 0
    with zm.open() as fh:
        for chunk in _line_blocks(fh, zm.label, block_bytes):
            a = np.frombuffer(chunk, dtype=np.uint8)
            full_block = _full_records(chunk, a)
            if full_block is not None:
                yield line_no + 1 + np.arange(len(full_block)), full_block
                line_no += len(full_block)
                continue
            ends = np.flatnonzero(a == 10)
            if not chunk.endswith(b"\n"):
                ends = np.append(ends, len(a))          # the file's last line has no line end
            starts = np.concatenate(([0], ends[:-1] + 1))
            cr = (ends > starts) & (a[np.maximum(ends - 1, 0)] == 13)
            lens = ends - starts - cr
            nums = line_no + 1 + np.arange(len(ends))
            line_no += len(ends)
            full = lens == RECORD
            for i in np.flatnonzero(~full):
                rec = chunk[starts[i]:starts[i] + lens[i]]
                if rec.strip():
                    _odd_record(rec, int(nums[i]), out, types, ccy, clearing, sums)
            good = np.flatnonzero(full)
            if len(good):
                recs = b"".join(chunk[p:p + RECORD] for p in starts[good].tolist())
                yield nums[good], np.frombuffer(recs, dtype=np.uint8).reshape(len(good), RECORD)


def _odd_record(rec: bytes, line_no: int, out: RowBuilder, types: dict, ccy: str, clearing: date | None,
                sums: dict[str, Decimal]) -> None:
    """A record of unusual length: short ones padded (trailing blanks trimmed by some tools), the rest refused."""
    try:
        raw_text = rec.decode("gb18030")
    except UnicodeDecodeError:
        out.reject(line_no, rec.decode("gb18030", "replace"), None, "record is not valid GBK")
        return
    if len(rec) < OFFSETS[32][1] or len(rec) > RECORD:
        out.reject(line_no, raw_text, None, f"record is {len(rec)} bytes, expected {RECORD}")
        return
    rec = rec + b" " * (RECORD - len(rec))

    def build() -> dict[str, Any]:
        kind = types.get(_field(rec, 20))
        if kind is None:
            raise RowError("交易类型", f"unknown 交易类型 {_field(rec, 20)!r} (交易代码 {_field(rec, 1)})")
        txn_type, status = kind
        amount = _fen(_field(rec, 7), "交易金额")
        fee = _signed(_field(rec, 16), "商户手续费", credit_positive=False)   # D: the merchant pays
        net = _signed(_field(rec, 17), "结算金额", credit_positive=True)
        expect = (amount if txn_type == "payment" else -amount) - fee
        if net != expect:
            raise RowError("结算金额", f"结算金额 {net} is not 交易金额 {amount} less 手续费 {fee}")
        query_id, orig = _field(rec, 10), _field(rec, 27)
        refund = txn_type == "refund"
        return {"txn_type": txn_type, "status": status,
                "channel_txn_id": (orig or query_id) if refund else query_id,
                "channel_refund_id": query_id if refund else None,
                "merchant_order_no": _field(rec, 12) or None, "channel_merchant_id": _field(rec, 28) or None,
                "currency": ccy, "amount": amount, "fee": fee, "net": net,
                "txn_time": _when(_field(rec, 5), clearing), "card_no_masked": mask_card(_field(rec, 6))}

    row = out.try_add(line_no, raw_text, build)
    if row:
        sums["gross"] += row["amount"] if row["txn_type"] == "payment" else -row["amount"]
        sums["fee"] += row["fee"]
        sums["net"] += row["net"]


def _detect(head: bytes) -> bool:
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    return len(first) == RECORD and first[:1] == b"S" and first[3:4] == b" "


@register("unionpay_zm", "trade", detect=_detect,
          description="UnionPay 全渠道 ZM fixed-width file (+ RD summary), ZIP or bare")
def parse_zm(path: Path, opts: dict[str, Any]) -> ParsedFile:
    """UnionPay 全渠道 ZM fixed-width file (+ RD summary), ZIP or bare."""
    zm, rd = _sources(path, opts)
    rd_text = None
    if rd is not None:
        raw = rd.read_all()
        try:
            rd_text = raw.decode("gb18030")
        except UnicodeDecodeError:
            raise FileError(rd.label, "RD summary report is not GBK text") from None
    clearing = _clearing_date(zm.member_name or zm.path.name, rd_text)
    types = {**TXN_TYPES, **{k: tuple(v) for k, v in (opts.get("txn_types") or {}).items()}}
    ccy = opts.get("currency", "CNY")
    out = RowBuilder(TRADE_SCHEMA)
    sums = {"gross": Decimal("0.00"), "fee": Decimal("0.00"), "net": Decimal("0.00")}
    tables: list[pa.Table] = []
    quarantine: list[Quarantined] = []
    for good_no, good in _record_blocks(zm, out, types, ccy, clearing, sums):
        # the common case (full-length records), column-wise in Arrow
        t, q, s3 = _records(good, good_no, types, ccy, clearing)
        tables.append(t)
        quarantine += q
        for k in sums:
            sums[k] += s3[k]
    tables.insert(0, out.table())
    quarantine += out.quarantine
    quarantine.sort(key=lambda q: q.line_no or 0)
    table = pa.concat_tables(tables)
    if tables[0].num_rows and len(tables) > 1:    # odd-length records interleave with the blocks
        table = table.take(pc.sort_indices(table.column("line_no")))
    parsed_rows = table.num_rows
    footer = FooterCheck(None, "no RD summary report beside the ZM file")
    if rd_text is not None:
        t = rd_totals(rd_text)
        if t is None:
            raise FileError(rd.label, "RD summary report has no 总计 line with 7 figures")
        footer = footer_check([
            ("交易金额", t["txn_credit"] - t["txn_debit"], sums["gross"]),
            ("rows", t["count"], parsed_rows + len(quarantine)),
            ("费用", t["fee_debit"] - t["fee_credit"], sums["fee"]),
            ("资金清算差额", t["net_credit"] - t["net_debit"], sums["net"]),
        ], len(quarantine))
    period = (clearing, clearing + timedelta(days=1)) if clearing else None
    return ParsedFile(path, "unionpay_zm", "trade", table, quarantine, footer, period,
                      empty_day=parsed_rows == 0 and not quarantine,
                      meta={"entry": zm.member_name, "rd": rd.member_name or str(rd.path) if rd else None,
                            "clearing_date": clearing.isoformat() if clearing else None})
