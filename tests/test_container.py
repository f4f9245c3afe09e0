import io
import zlib
from fractions import Fraction

import pytest
from hypothesis import given, strategies as st

from neural_codecs import bitstream as bs
from neural_codecs.bitstream.container import (MAX_DIMENSION, encode_chunk, container_overhead)
from neural_codecs.bitstream.varint import encode_uvarint

MNIST_HEADER = bs.Header(kind=bs.CodecKind.PCZ, model_hash=bs.model_hash(b"some model"),
                         width=28, height=28, channels=1)


def _headers():
    return st.builds(
        bs.Header,
        kind=st.integers(0, 255),
        model_hash=st.none() | st.binary(min_size=8, max_size=8),
        width=st.none(),
        channels=st.none() | st.integers(0, 4096),
        fps=st.none() | st.builds(Fraction, st.integers(1, 1 << 32), st.integers(1, 1 << 32)),
        params=st.binary(max_size=50),
    )


@given(_headers(), st.none() | st.tuples(st.integers(0, MAX_DIMENSION), st.integers(0, MAX_DIMENSION)),
       st.lists(st.binary(max_size=300), max_size=20), st.booleans(), st.integers(1, 7))
def test_roundtrip_property(header, size, items, archive, batch_size):
    if size:
        header = bs.Header(**{**header.__dict__, "width": size[0], "height": size[1]})
    if archive:
        header = bs.Header(**{**header.__dict__, "archive": True, "count": len(items)})
    data = bs.pack_items(header, items, batch_size=batch_size,
                         extra_chunks=[bs.text_chunk("encoder", "test"), ("z", b"unknown ancillary")])
    h, got = bs.read_container(data)
    assert h == header
    assert got == items
    with bs.ContainerReader(data) as r:
        assert len(r) == len(items)
        for i in range(len(items)):
            assert r.item(i) == items[i]
        assert r.texts() == {"encoder": "test"}
    # Streaming from a non-seekable source gives the same.
    class Pipe(io.RawIOBase):
        def __init__(self, b): self.b = io.BytesIO(b)
        def readable(self): return True
        def seekable(self): return False
        def readinto(self, buf):
            chunk = self.b.read(len(buf)); buf[:len(chunk)] = chunk; return len(chunk)
    assert bs.ContainerReader(io.BufferedReader(Pipe(data))).read_items() == items


def test_mnist_overhead_at_most_32_bytes():
    # An MNIST digit at ~1.2 bits/pixel is ~118 bytes; larger ones need a 2-byte length.
    for payload in (0, 1, 60, 118, 127, 128, 200, 1000):
        overhead = container_overhead(MNIST_HEADER, [payload])
        assert overhead <= 32, (payload, overhead)
    assert container_overhead(MNIST_HEADER, [118]) == 30


def test_archive_overhead_per_item_is_small():
    header = bs.Header(kind=bs.CodecKind.PCZ, model_hash=bytes(8), width=28, height=28, channels=1,
                       count=10000, archive=True)
    overhead = container_overhead(header, [118] * 10000)
    assert overhead / 10000 < 1.1  # one length byte per item, one CRC per 65,536 items


def test_random_access_reads_only_one_chunk():
    items = [bytes([i]) * i for i in range(50)]
    header = bs.Header(count=50, archive=True)
    data = bs.pack_items(header, items, batch_size=8)
    # Corrupt the last chunk: items in earlier chunks still read by index, the full read fails.
    bad = bytearray(data)
    bad[-5] ^= 0xFF
    r = bs.ContainerReader(bytes(bad))
    assert r.item(3) == items[3]
    assert r.item(40) == items[40]
    with pytest.raises(bs.CRCMismatchError):
        r.item(49)
    with pytest.raises(bs.CRCMismatchError):
        r.read_items()
    with pytest.raises(IndexError):
        r.item(50)
    assert bs.ContainerReader(data).item(-1) == items[-1]


def test_streaming_writer_and_count_checks(tmp_path):
    header = bs.Header(kind=bs.CodecKind.NERV, width=64, height=64, channels=3, count=8, fps=Fraction(24000, 1001))
    with bs.atomic_output(tmp_path / "v.nerv") as f:
        w = bs.ContainerWriter(f, header, n_chunks=2)
        w.write_item(b"group 0")
        w.write_item(b"group 1")
        with pytest.raises(ValueError):
            w.write_item(b"one too many")
        w.close()
    with bs.ContainerReader(tmp_path / "v.nerv") as r:
        assert r.header.fps == Fraction(24000, 1001)
        assert [c.body for c in r.chunks()] == [b"group 0", b"group 1"]
    w = bs.ContainerWriter(io.BytesIO(), header, n_chunks=3)
    w.write_item(b"x")
    with pytest.raises(ValueError):
        w.close()


def _container(header_body: bytes, chunks=(), n_chunks=None):
    out = bs.SIGNATURE + encode_chunk("H", header_body)
    for t, b in chunks:
        out += encode_chunk(t, b)
    return out


def test_typed_errors():
    good = bs.pack_items(MNIST_HEADER, [b"payload"])
    cases = {
        b"": bs.TruncatedError,
        b"\x89PNG\r\n\x1a\n": bs.BadSignatureError,
        good[:2]: bs.TruncatedError,
        bs.SIGNATURE[:3] + b"\x02" + good[4:]: bs.UnsupportedVersionError,
        good[:-1]: bs.TruncatedError,
        good + b"\0": bs.MalformedError,
        _container(bytes([0, 0]) + encode_uvarint(1), [("Q", b"")]): bs.UnknownCriticalChunkError,
        _container(bytes([0, 0]) + encode_uvarint(2), [("D", b"x")]): bs.TruncatedError,
        _container(bytes([0, 0x80]) + encode_uvarint(0)): bs.MalformedError,  # reserved flag
        _container(bytes([0, 0]) + encode_uvarint(0) + b"\0"): bs.MalformedError,  # trailing header byte
        _container(bytes([0, 0]) + encode_uvarint(1), [("H", bytes([0, 0, 0]))]): bs.MalformedError,
        _container(bytes([0, 0x40]) + encode_uvarint(0)): bs.MalformedError,  # archive without count
        _container(bytes([0, 0x02]) + encode_uvarint(0) + encode_uvarint(1 << 40) + b"\1"): bs.AbsurdSizeError,
        _container(bytes([0, 0]) + encode_uvarint(1 << 31)): bs.TruncatedError,  # chunk count vs file size
        _container(bytes([0, 0]) + encode_uvarint(1 << 33)): bs.AbsurdSizeError,
        bs.SIGNATURE + b"H" + encode_uvarint(1 << 40): bs.AbsurdSizeError,  # header length
        bs.SIGNATURE + b"H" + b"\x80\x00": bs.MalformedError,
        bs.SIGNATURE + b"\x01": bs.MalformedError,  # chunk type not a letter
        _container(bytes([0, 0]) + encode_uvarint(1), [("B", encode_uvarint(1 << 20))]): bs.AbsurdSizeError,
        _container(bytes([0, 0]) + encode_uvarint(1), [("B", b"\x02\x01\x01a")]): bs.MalformedError,
    }
    for data, err in cases.items():
        with pytest.raises(err):
            bs.read_container(data, name="f.pcz")
        try:
            bs.read_container(data, name="f.pcz")
        except bs.BitstreamError as e:
            assert str(e).startswith("f.pcz: ") and "\n" not in str(e)


def test_crc_covers_type_and_length():
    data = bytearray(bs.pack_items(MNIST_HEADER, [b"abc"]))
    # The D chunk starts 7 bytes + body before the end; change its type to 'B' with a fixed CRC body.
    i = len(data) - 4 - 3 - 2
    assert chr(data[i]) == "D"
    data[i] = ord("E")
    with pytest.raises(bs.CRCMismatchError):
        bs.read_container(bytes(data))


def test_unknown_critical_allowed_when_codec_knows_it():
    data = bs.write_container(bs.Header(), [("W", b"weights"), ("D", b"x")])
    with pytest.raises(bs.UnknownCriticalChunkError):
        bs.read_container(data)
    h, items = bs.read_container(data, extra_critical="W")
    assert items == [b"x"]


def test_absurd_chunk_length_checked_before_reading():
    # A chunk declaring 2**40 bytes in a short file: refused without allocating.
    data = _container(bytes([0, 0]) + encode_uvarint(1)) + b"D" + encode_uvarint(1 << 40)
    with pytest.raises(bs.AbsurdSizeError):
        bs.read_container(data)
    data = _container(bytes([0, 0]) + encode_uvarint(1)) + b"D" + encode_uvarint(1 << 30)
    with pytest.raises(bs.TruncatedError):
        bs.read_container(data)


def test_model_hash_check():
    h = bs.Header(model_hash=bs.model_hash(b"A"))
    h.require_model(bs.model_hash(b"A"))
    with pytest.raises(bs.ModelMismatchError, match="needs model"):
        h.require_model(bs.model_hash(b"B"), name="x.pcz")
    with pytest.raises(bs.ModelMismatchError):
        bs.Header().require_model(bs.model_hash(b"A"))


def test_header_validation():
    with pytest.raises(ValueError):
        bs.Header(width=3)
    with pytest.raises(ValueError):
        bs.Header(width=MAX_DIMENSION + 1, height=1)
    with pytest.raises(ValueError):
        bs.Header(model_hash=b"short")
    with pytest.raises(ValueError):
        bs.Header(archive=True)
    with pytest.raises(ValueError):
        encode_chunk("1", b"")


def test_manual_crc_layout():
    """The byte layout FORMAT.md documents, checked by hand for one small file."""
    h = bs.Header(kind=1, width=2, height=3, channels=1)
    data = bs.pack_items(h, [b"\x07"])
    body = bytes([1, 0x06, 1, 2, 3, 1])
    head = b"H" + bytes([len(body)])
    expect = bs.SIGNATURE + head + body + zlib.crc32(head + body).to_bytes(4, "big")
    expect += b"D\x01\x07" + zlib.crc32(b"D\x01\x07").to_bytes(4, "big")
    assert data == expect
    assert bs.SIGNATURE == b"\x8eNC\x01"
