import pytest
from hypothesis import given, strategies as st

from neural_codecs.bitstream.errors import MalformedError, TruncatedError
from neural_codecs.bitstream.varint import (MAX_VARINT, decode_svarint, decode_uvarint, encode_svarint,
                              encode_uvarint)


@given(st.integers(0, MAX_VARINT))
def test_uvarint_roundtrip(v):
    b = encode_uvarint(v)
    assert decode_uvarint(b + b"junk") == (v, len(b))
    assert len(b) == max(1, (v.bit_length() + 6) // 7)


@given(st.integers(-(1 << 62), (1 << 62) - 1))
def test_svarint_roundtrip(v):
    b = encode_svarint(v)
    assert decode_svarint(b) == (v, len(b))


def test_known_bytes():
    assert encode_uvarint(0) == b"\x00"
    assert encode_uvarint(127) == b"\x7f"
    assert encode_uvarint(128) == b"\x80\x01"
    assert encode_uvarint(300) == b"\xac\x02"
    assert [encode_svarint(v) for v in (0, -1, 1, -2)] == [b"\x00", b"\x01", b"\x02", b"\x03"]


def test_rejects_bad_encodings():
    with pytest.raises(TruncatedError):
        decode_uvarint(b"\x80")
    with pytest.raises(TruncatedError):
        decode_uvarint(b"")
    with pytest.raises(MalformedError):
        decode_uvarint(b"\x80\x00")  # non-canonical zero
    with pytest.raises(MalformedError):
        decode_uvarint(b"\xff" * 9 + b"\x01")  # too long
    with pytest.raises(ValueError):
        encode_uvarint(-1)
    with pytest.raises(ValueError):
        encode_uvarint(MAX_VARINT + 1)
