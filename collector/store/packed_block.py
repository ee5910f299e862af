"""One packed block: the raw rows of one series in one minute, column by column, compressed.

A block holds the rows exactly as ``raw:m`` stores them (the same milli-unit
integers, REALs and text):

- the times, and each all-integer field, as deltas, zigzag-coded: the first in
  8 bytes, the others split into byte planes, only as many as the largest delta
  needs (none for a value that repeats); the high bytes of small numbers are
  zeros that compress to almost nothing;
- a REAL field as its 8-byte values in byte planes; a presence mask where some
  rows lack the field; any other field (text, mixed types) as JSON;
- all of it compressed with raw DEFLATE.

Field columns are named by their position in ``raw:m`` (fields are only ever
appended), and times are counted from the minute's start, which the block's key
holds; so a block carries no names and no absolute time. :func:`decode` of
:func:`encode` gives back the very rows packed (tested property).
"""

from __future__ import annotations

import json
import struct
import zlib
from array import array
from collections.abc import Sequence
from itertools import accumulate

VERSION = 1
_NONE, _INT, _REAL, _JSON = 0, 1, 2, 3
_MASKED = 4
_HEAD = struct.Struct("<BHH")  # version, rows, field columns
_LEN = struct.Struct("<I")  # bytes of a JSON column
_HEAD_INT = struct.Struct("<QB")  # an integer column's first zigzag delta, byte planes that follow
_SMALL = 2 ** 53  # integers kept as deltas: what raw:m stores (milli-units below 2**53)


def _zigzag(values: Sequence[int], prev: int) -> array:
    out = array("Q")
    for v in values:
        d = v - prev
        prev = v
        out.append((d << 1) ^ (d >> 63))
    return out


def _ints(values: Sequence[int], base: int = 0) -> bytes:
    """Deltas from ``base``, zigzag-coded: the first in 8 bytes, the others in as many byte
    planes as the largest needs (none when they repeat)."""
    z = _zigzag(values, base)
    if not z:
        return b""
    rest = z[1:]
    width = (max(rest, default=0).bit_length() + 7) // 8
    return _HEAD_INT.pack(z[0], width) + _planes(rest, width)


def _unints(data: bytes, at: int, n: int, base: int = 0) -> tuple[list[int], int]:
    """(values, the offset after them) of :func:`_ints` at ``data[at:]``."""
    if n == 0:
        return [], at
    first, width = _HEAD_INT.unpack_from(data, at)
    at += _HEAD_INT.size
    z = [first, *_unplanes(data[at:at + width * (n - 1)], n - 1, "Q", width).tolist()]
    values = list(accumulate(((v >> 1) ^ -(v & 1) for v in z), initial=base))[1:]
    return values, at + width * (n - 1)


def _planes(a: array, width: int = 8) -> bytes:
    raw = a.tobytes()
    return b"".join(raw[i::8] for i in range(width))


def _unplanes(data: bytes, n: int, code: str, width: int = 8) -> array:
    out = bytearray(8 * n)
    for i in range(width):
        out[i::8] = data[i * n:(i + 1) * n]
    return array(code, bytes(out))


def _column(values: Sequence[object]) -> bytes:
    """One field column: a kind byte, then the mask and payload the kind says."""
    present = [v is not None for v in values]
    have = [v for v in values if v is not None]
    if not have:
        return bytes([_NONE])
    mask = b"" if all(present) else bytes(present)
    flag = _MASKED if mask else 0
    if all(type(v) is int and -_SMALL < v < _SMALL for v in have):
        return bytes([_INT | flag]) + mask + _ints(have)  # type: ignore[arg-type]
    if all(type(v) is float for v in have):
        return bytes([_REAL | flag]) + mask + _planes(array("d", have))  # type: ignore[arg-type]
    text = json.dumps(list(values), separators=(",", ":")).encode()
    return bytes([_JSON]) + _LEN.pack(len(text)) + text


def encode(times: Sequence[int], columns: Sequence[Sequence[object]], base: int) -> bytes:
    """One block from ``times`` (ascending ns, at or after ``base``) and a value list per field
    column (each as long as ``times``)."""
    parts = [_HEAD.pack(VERSION, len(times), len(columns)), _ints(times, base)]
    parts += [_column(values) for values in columns]
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    return deflate.compress(b"".join(parts)) + deflate.flush()


def decode(block: bytes, base: int) -> tuple[list[int], list[list[object]]]:
    """(times, a value list per field column) of a block :func:`encode` made with ``base``."""
    data = zlib.decompress(block, -15)
    version, n, k = _HEAD.unpack_from(data)
    if version != VERSION:
        raise ValueError(f"packed block: version {version} is not {VERSION}")
    times, at = _unints(data, _HEAD.size, n, base)
    columns: list[list[object]] = []
    for _ in range(k):
        kind = data[at]
        at += 1
        if kind == _NONE:
            columns.append([None] * n)
            continue
        if kind == _JSON:
            (size,) = _LEN.unpack_from(data, at)
            at += _LEN.size
            columns.append(list(json.loads(data[at:at + size])))
            at += size
            continue
        mask = data[at:at + n] if kind & _MASKED else b""
        at += len(mask)
        have = sum(mask) if mask else n
        got: list[object]
        if kind & 3 == _INT:
            got, at = _unints(data, at, have)  # type: ignore[assignment]
        else:
            got = _unplanes(data[at:at + 8 * have], have, "d").tolist()
            at += 8 * have
        if mask:
            it = iter(got)
            got = [next(it) if m else None for m in mask]
        columns.append(got)
    return times, columns
