"""Unsigned LEB128 variable-length integers, canonical form only.

Seven bits per byte, least significant group first; the high bit of a byte says another byte
follows. Only the shortest encoding of each value is accepted (no trailing ``0x80 0x00``), so
every value has exactly one byte string and golden files stay byte-exact. At most 9 bytes
(values below 2**63).
"""
from __future__ import annotations

from .errors import MalformedError, TruncatedError

MAX_VARINT_BYTES = 9
MAX_VARINT = (1 << 63) - 1


def encode_uvarint(value: int) -> bytes:
    if value < 0 or value > MAX_VARINT:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode one varint at ``buf[pos:]``; return ``(value, next_pos)``."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            raise TruncatedError("data ends inside a variable-length integer")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise MalformedError("non-canonical variable-length integer")
            return value, pos + i + 1
    raise MalformedError("variable-length integer longer than 9 bytes")


def encode_svarint(value: int) -> bytes:
    """Signed integer as a zigzag varint: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ..."""
    return encode_uvarint(2 * value if value >= 0 else -2 * value - 1)


def decode_svarint(buf, pos: int = 0) -> tuple[int, int]:
    u, pos = decode_uvarint(buf, pos)
    return (u >> 1) if not u & 1 else -((u + 1) >> 1), pos
