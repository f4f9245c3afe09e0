"""The common container: one file format for every codec of the library.

Layout (``FORMAT.md`` has every byte)::

    signature   8E 4E 43 vv        magic "\\x8eNC" + format version byte
    'H' chunk   the header: codec kind, flags, chunk count, model hash, media description
    chunk ...   exactly as many as the header says; then end of file

    chunk = type (1 ASCII letter) | length (varint) | body | CRC-32 of type+length+body (4 bytes BE)

Upper-case types are *critical* (a reader that does not know one must fail), lower-case types are
*ancillary* (skipped when unknown), as in PNG. The payload of a codec travels in *items*: a ``D``
chunk holds one item, a ``B`` chunk holds many (a length table, then the items back to back), so
an archive of 10,000 MNIST digits pays one CRC, not 10,000. Items can be read one after another
(streaming) or by index (random access, reading only the chunk that holds the item).

This module knows bytes and chunks only -- never pixels, circuits or networks.
"""
from __future__ import annotations

import enum
import io
import os
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Iterable, Iterator, Sequence

from .errors import (
    BadSignatureError,
    BitstreamError,
    CRCMismatchError,
    MalformedError,
    ModelMismatchError,
    TruncatedError,
    UnknownCriticalChunkError,
    UnsupportedVersionError,
)
from .safeio import check_size
from .varint import MAX_VARINT_BYTES, decode_uvarint, encode_uvarint

MAGIC = b"\x8eNC"
VERSION = 1
SIGNATURE = MAGIC + bytes([VERSION])

MODEL_HASH_LEN = 8

# Chunk types defined by this version of the container.
HEADER = "H"  # critical, first chunk, exactly once
ITEM = "D"  # critical, one item
BATCH = "B"  # critical, many items
TEXT = "t"  # ancillary, key NUL value (UTF-8)
CONTAINER_TYPES = frozenset({HEADER, ITEM, BATCH, TEXT})

# Limits a reader enforces before it allocates anything.
MAX_HEADER_BODY = 1 << 16
MAX_DIMENSION = 1 << 20  # width, height
MAX_CHANNELS = 1 << 12
MAX_COUNT = 1 << 32  # frames / items
MAX_FPS_TERM = 1 << 32
MAX_CHUNKS = 1 << 32
DEFAULT_MAX_CHUNK = 1 << 31  # bytes in one chunk body (2 GiB)
MIN_CHUNK_BYTES = 6  # type + 1-byte length + CRC

# Header flag bits.
F_MODEL = 0x01
F_SIZE = 0x02
F_CHANNELS = 0x04
F_COUNT = 0x08
F_FPS = 0x10
F_PARAMS = 0x20
F_ARCHIVE = 0x40
F_RESERVED = 0x80


class CodecKind(enum.IntEnum):
    """The codec a container belongs to (header byte 0)."""

    GENERIC = 0  # no codec: tests, demos, tools
    PCZ = 1
    NERV = 2
    SPLIT = 3


def kind_name(kind: int) -> str:
    try:
        return CodecKind(kind).name.lower()
    except ValueError:
        return f"unknown({kind})"


def is_critical(chunk_type: str) -> bool:
    return chunk_type.isupper()


def model_hash(data: bytes) -> bytes:
    """Content hash naming a model: the first 8 bytes of SHA-256 of ``data``, the model's
    canonical bytes (``FORMAT.md`` §15; ``neural_codecs.codec.modelfile`` builds them)."""
    import hashlib

    return hashlib.sha256(data).digest()[:MODEL_HASH_LEN]


@dataclass(frozen=True)
class Header:
    """What a container says about its media and the model it needs.

    Every field but ``kind`` is optional and costs nothing when absent. ``params`` holds a codec's
    private, codec-defined parameters (hyper-parameters, pixel format, ...).
    """

    kind: int = CodecKind.GENERIC
    model_hash: bytes | None = None
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    count: int | None = None  # frames of a video, items of an archive
    fps: Fraction | None = None
    params: bytes = b""
    archive: bool = False  # the file holds `count` independent media items (a data set in one file)

    def __post_init__(self):
        if not 0 <= int(self.kind) <= 255:
            raise ValueError("kind must fit in one byte")
        if self.model_hash is not None and len(self.model_hash) != MODEL_HASH_LEN:
            raise ValueError(f"model_hash must be {MODEL_HASH_LEN} bytes")
        if (self.width is None) != (self.height is None):
            raise ValueError("width and height go together")
        for name, limit in (("width", MAX_DIMENSION), ("height", MAX_DIMENSION),
                            ("channels", MAX_CHANNELS), ("count", MAX_COUNT)):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= limit:
                raise ValueError(f"{name} {v} out of range 0..{limit}")
        if self.fps is not None:
            fps = Fraction(self.fps)
            if fps <= 0 or fps.numerator > MAX_FPS_TERM or fps.denominator > MAX_FPS_TERM:
                raise ValueError(f"fps {self.fps} out of range")
            object.__setattr__(self, "fps", fps)
        if self.archive and self.count is None:
            raise ValueError("an archive header needs count (the number of items)")
        if len(self.params) > MAX_HEADER_BODY - 64:
            raise ValueError("params too long")
        object.__setattr__(self, "params", bytes(self.params))

    def require_model(self, expected: bytes, name: str | None = None, what: str = "model") -> None:
        """Raise :class:`ModelMismatchError` unless the file names ``expected`` as its model."""
        if self.model_hash is None:
            raise ModelMismatchError("file names no model", name)
        if self.model_hash != expected:
            raise ModelMismatchError(
                f"file needs {what} {self.model_hash.hex()}, but the {what} given is {expected.hex()}", name)

    # -- serialisation -------------------------------------------------------------------------
    def encode_body(self, n_chunks: int) -> bytes:
        flags = 0
        tail = bytearray()
        if self.model_hash is not None:
            flags |= F_MODEL
            tail += self.model_hash
        if self.width is not None:
            flags |= F_SIZE
            tail += encode_uvarint(self.width) + encode_uvarint(self.height)
        if self.channels is not None:
            flags |= F_CHANNELS
            tail += encode_uvarint(self.channels)
        if self.count is not None:
            flags |= F_COUNT
            tail += encode_uvarint(self.count)
        if self.fps is not None:
            flags |= F_FPS
            tail += encode_uvarint(self.fps.numerator) + encode_uvarint(self.fps.denominator)
        if self.params:
            flags |= F_PARAMS
            tail += encode_uvarint(len(self.params)) + self.params
        if self.archive:
            flags |= F_ARCHIVE
        return bytes([int(self.kind), flags]) + encode_uvarint(n_chunks) + bytes(tail)

    @classmethod
    def decode_body(cls, body: bytes, name: str | None = None) -> tuple["Header", int]:
        """Parse a header chunk body; return ``(header, n_chunks)``."""
        if len(body) < 3:
            raise MalformedError("header chunk too short", name)
        kind, flags = body[0], body[1]
        if flags & F_RESERVED:
            raise MalformedError(f"reserved header flag bits set (0x{flags:02x})", name)
        pos = 2

        def uv(what: str, limit: int) -> int:
            nonlocal pos
            v, pos = decode_uvarint(body, pos)
            return check_size(v, limit, what, name)

        n_chunks = uv("chunk count", MAX_CHUNKS)
        fields: dict = {"kind": kind, "archive": bool(flags & F_ARCHIVE)}
        if flags & F_MODEL:
            if pos + MODEL_HASH_LEN > len(body):
                raise MalformedError("header ends inside the model hash", name)
            fields["model_hash"] = bytes(body[pos:pos + MODEL_HASH_LEN])
            pos += MODEL_HASH_LEN
        if flags & F_SIZE:
            fields["width"] = uv("width", MAX_DIMENSION)
            fields["height"] = uv("height", MAX_DIMENSION)
        if flags & F_CHANNELS:
            fields["channels"] = uv("channels", MAX_CHANNELS)
        if flags & F_COUNT:
            fields["count"] = uv("count", MAX_COUNT)
        if flags & F_FPS:
            num = uv("fps numerator", MAX_FPS_TERM)
            den = uv("fps denominator", MAX_FPS_TERM)
            if num == 0 or den == 0:
                raise MalformedError("fps numerator and denominator must be positive", name)
            fps = Fraction(num, den)
            if (fps.numerator, fps.denominator) != (num, den):
                raise MalformedError("fps fraction not in lowest terms", name)
            fields["fps"] = fps
        if flags & F_PARAMS:
            n = uv("params length", len(body) - pos)
            if n == 0:
                raise MalformedError("empty params field flagged present", name)
            fields["params"] = bytes(body[pos:pos + n])
            pos += n
        if pos != len(body):
            raise MalformedError(f"{len(body) - pos} unexpected bytes at the end of the header", name)
        if fields["archive"] and "count" not in fields:
            raise MalformedError("archive header without an item count", name)
        return cls(**fields), n_chunks


@dataclass(frozen=True)
class Chunk:
    type: str
    body: bytes
    offset: int = 0  # file offset of the chunk's type byte


@dataclass(frozen=True)
class ChunkInfo:
    """A chunk located without reading its body (for random access and inspection)."""

    type: str
    offset: int  # of the type byte
    body_offset: int
    length: int
    n_items: int  # items this chunk holds (1 for D, n for B, 0 otherwise)
    first_item: int


def encode_chunk(chunk_type: str, body: bytes) -> bytes:
    if len(chunk_type) != 1 or not ("A" <= chunk_type <= "Z" or "a" <= chunk_type <= "z"):
        raise ValueError(f"chunk type must be one ASCII letter, got {chunk_type!r}")
    head = chunk_type.encode("ascii") + encode_uvarint(len(body))
    crc = zlib.crc32(body, zlib.crc32(head))
    return head + bytes(body) + crc.to_bytes(4, "big")


def encode_batch(items: Sequence[bytes]) -> bytes:
    """Body of a ``B`` chunk: item count, item lengths, then the items back to back."""
    if not items:
        raise ValueError("a batch chunk needs at least one item")
    parts = [encode_uvarint(len(items))]
    parts += [encode_uvarint(len(it)) for it in items]
    parts += [bytes(it) for it in items]
    return b"".join(parts)


def decode_batch(body: bytes, name: str | None = None) -> list[bytes]:
    n, pos = decode_uvarint(body)
    # Every length takes at least one byte: bound n by the body before building any list.
    check_size(n, len(body) - pos, "batch item count", name)
    if n == 0:
        raise MalformedError("batch chunk with no items", name)
    lengths = []
    for _ in range(n):
        length, pos = decode_uvarint(body, pos)
        lengths.append(length)
    if sum(lengths) != len(body) - pos:
        raise MalformedError("batch item lengths do not add up to the chunk length", name)
    items = []
    for length in lengths:
        items.append(bytes(body[pos:pos + length]))
        pos += length
    return items


def text_chunk(key: str, value: str) -> tuple[str, bytes]:
    """An ancillary ``t`` chunk carrying a key/value string (encoder name, source file, ...)."""
    if "\0" in key:
        raise ValueError("key may not contain NUL")
    return TEXT, key.encode() + b"\0" + value.encode()


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


class ContainerWriter:
    """Write a container to a binary file object chunk by chunk (a video encoder streams groups).

    The number of chunks is part of the header, so it is given up front; :meth:`close` checks it.
    """

    def __init__(self, f: BinaryIO, header: Header, n_chunks: int):
        if not 0 <= n_chunks <= MAX_CHUNKS:
            raise ValueError("n_chunks out of range")
        self._f = f
        self._expected = n_chunks
        self._written = 0
        self.header = header
        self.nbytes = 0
        self._write(SIGNATURE + encode_chunk(HEADER, header.encode_body(n_chunks)))

    def _write(self, data: bytes) -> None:
        self._f.write(data)
        self.nbytes += len(data)

    def write_chunk(self, chunk_type: str, body: bytes) -> None:
        if chunk_type == HEADER:
            raise ValueError("the header chunk is written once, by the constructor")
        if self._written >= self._expected:
            raise ValueError(f"more chunks than the {self._expected} declared in the header")
        self._write(encode_chunk(chunk_type, body))
        self._written += 1

    def write_item(self, item: bytes) -> None:
        self.write_chunk(ITEM, item)

    def write_items(self, items: Sequence[bytes]) -> None:
        self.write_chunk(BATCH, encode_batch(items))

    def close(self) -> None:
        if self._written != self._expected:
            raise ValueError(f"{self._written} chunks written, header declares {self._expected}")


def write_container(header: Header, chunks: Iterable[tuple[str, bytes]]) -> bytes:
    """Serialise a whole container to bytes."""
    chunks = list(chunks)
    buf = io.BytesIO()
    w = ContainerWriter(buf, header, len(chunks))
    for chunk_type, body in chunks:
        w.write_chunk(chunk_type, body)
    w.close()
    return buf.getvalue()


def pack_items(header: Header, items: Sequence[bytes], *, batch_size: int = 65536,
               extra_chunks: Iterable[tuple[str, bytes]] = ()) -> bytes:
    """A container holding ``items``: one ``D`` chunk for a single item, ``B`` chunks otherwise."""
    items = list(items)
    chunks = list(extra_chunks)
    if len(items) == 1:
        chunks.append((ITEM, items[0]))
    else:
        for i in range(0, len(items), batch_size):
            chunks.append((BATCH, encode_batch(items[i:i + batch_size])))
    return write_container(header, chunks)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class ContainerReader:
    """Read a container from bytes, a path or a binary file object.

    - ``header`` and ``n_chunks`` are parsed (and checked) on construction;
    - :meth:`chunks` / :meth:`items` stream the file front to back, checking every CRC;
    - :meth:`item` reads one item by index, touching only the chunk that holds it;
    - :meth:`read_items` reads and checks the whole file.

    ``extra_critical`` names critical chunk types that the calling codec understands beyond the
    container's own (``H``, ``D``, ``B``). Every problem raises a :class:`BitstreamError` subclass
    naming ``name`` (the path, by default).
    """

    def __init__(self, source: bytes | bytearray | memoryview | str | os.PathLike | BinaryIO, *,
                 name: str | None = None, extra_critical: str = "", max_chunk: int = DEFAULT_MAX_CHUNK):
        self._own = False
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._f: BinaryIO = io.BytesIO(bytes(source))
        elif isinstance(source, (str, os.PathLike)):
            self._f = open(source, "rb")
            self._own = True
            name = name or str(source)
        else:
            self._f = source
        self.name = name
        self.max_chunk = max_chunk
        self._critical = frozenset({HEADER, ITEM, BATCH}) | frozenset(extra_critical)
        self._index: list[ChunkInfo] | None = None
        try:
            self._base = self._tell()
            self._size = self._probe_size()
            self._pos = 0
            self._read_signature()
            head = self._read_chunk_at_cursor()
            if head.type != HEADER:
                raise MalformedError(f"first chunk is {head.type!r}, expected the header 'H'")
            self.header, self.n_chunks = Header.decode_body(head.body)
            self.header_chunk = head
            if self._size is not None and self.n_chunks > (self._size - self._pos) // MIN_CHUNK_BYTES:
                raise TruncatedError(f"header declares {self.n_chunks} chunks; "
                                     f"the {self._size - self._pos} bytes left cannot hold them")
            self._first = self._pos
        except BitstreamError as err:
            self.close()
            raise err.with_name(self.name) from None
        except BaseException:
            self.close()
            raise

    # -- low level -------------------------------------------------------------------------------
    def _tell(self) -> int:
        try:
            return self._f.tell() if self._f.seekable() else 0
        except (OSError, ValueError, AttributeError):
            return 0

    def _probe_size(self) -> int | None:
        """Bytes from the container's start to the end of the source, or None if not seekable."""
        try:
            if not self._f.seekable():
                return None
            end = self._f.seek(0, os.SEEK_END)
            self._f.seek(self._base)
            return end - self._base
        except (OSError, ValueError, AttributeError):
            return None

    def _read(self, n: int) -> bytes:
        """Read exactly ``n`` bytes at the cursor, in pieces (no allocation ahead of the data)."""
        if self._size is not None and n > self._size - self._pos:
            raise TruncatedError(f"file ends at byte {self._size}, {n} more bytes expected at {self._pos}")
        parts, left = [], n
        while left:
            piece = self._f.read(min(left, 1 << 20))
            if not piece:
                raise TruncatedError(f"file ends early: {left} of {n} bytes missing at {self._pos + n - left}")
            parts.append(piece)
            left -= len(piece)
        self._pos += n
        return b"".join(parts)

    def _seek(self, pos: int) -> None:
        if self._size is None:
            if pos != self._pos:
                raise ValueError("this source is not seekable: read it once, front to back")
            return
        self._f.seek(self._base + pos)
        self._pos = pos

    def _read_signature(self) -> None:
        sig = self._f.read(len(SIGNATURE))
        self._pos += len(sig)
        if sig[:len(MAGIC)] != MAGIC[:len(sig)]:
            raise BadSignatureError("not a container file (bad signature)")
        if len(sig) < len(SIGNATURE):
            raise TruncatedError("file ends inside the signature")
        if sig[3] != VERSION:
            raise UnsupportedVersionError(f"container format version {sig[3]} is not supported (this reader: {VERSION})")

    def _read_chunk_head(self) -> tuple[str, int, bytes]:
        """Type and length at the cursor; returns ``(type, length, head_bytes)``."""
        first = self._read(1)
        t = chr(first[0])
        if not ("A" <= t <= "Z" or "a" <= t <= "z"):
            raise MalformedError(f"invalid chunk type byte 0x{first[0]:02x} at {self._pos - 1}")
        raw = bytearray()
        for _ in range(MAX_VARINT_BYTES):
            b = self._read(1)
            raw += b
            if not b[0] & 0x80:
                break
        length, _ = decode_uvarint(raw)
        limit = MAX_HEADER_BODY if t == HEADER else self.max_chunk
        check_size(length, limit, f"length of chunk {t!r}")
        return t, length, first + bytes(raw)

    def _read_chunk_at_cursor(self) -> Chunk:
        offset = self._pos
        t, length, head = self._read_chunk_head()
        body = self._read(length)
        crc = int.from_bytes(self._read(4), "big")
        if zlib.crc32(body, zlib.crc32(head)) != crc:
            raise CRCMismatchError(f"CRC mismatch in chunk {t!r} at byte {offset}")
        return Chunk(t, body, offset)

    def _check_type(self, t: str) -> None:
        if t == HEADER:
            raise MalformedError("a second header chunk")
        if is_critical(t) and t not in self._critical:
            raise UnknownCriticalChunkError(f"unknown critical chunk type {t!r}")

    def _check_end(self) -> None:
        if self._size is not None:
            if self._pos != self._size:
                raise MalformedError(f"{self._size - self._pos} bytes of trailing data after the last chunk")
        elif self._f.read(1):
            raise MalformedError("trailing data after the last chunk")

    # -- streaming -------------------------------------------------------------------------------
    def walk(self) -> Iterator[tuple[Chunk, list[bytes]]]:
        """Every chunk after the header with the items it holds (``D``: its body, ``B``: its items,
        any other type: none), CRC- and structure-checked: one pass for a codec that reads its own
        chunk types beside the items."""
        try:
            self._seek(self._first)
            for _ in range(self.n_chunks):
                chunk = self._read_chunk_at_cursor()
                self._check_type(chunk.type)
                if chunk.type == ITEM:
                    items = [chunk.body]
                elif chunk.type == BATCH:
                    items = decode_batch(chunk.body)
                else:
                    items = []
                yield chunk, items
            self._check_end()
        except BitstreamError as err:
            raise err.with_name(self.name) from None

    def chunks(self) -> Iterator[Chunk]:
        """Every chunk after the header, in file order. Callers skip ancillary types they do not know."""
        for chunk, _ in self.walk():
            yield chunk

    def items(self) -> Iterator[bytes]:
        """Every item in order (``D`` chunks and the contents of ``B`` chunks); other chunks skipped."""
        for _, items in self.walk():
            yield from items

    def read_items(self) -> list[bytes]:
        """Read and check the whole file; return all items."""
        return list(self.items())

    def texts(self) -> dict[str, str]:
        """The ``t`` chunks as a dict (reads the whole file)."""
        out = {}
        for chunk in self.chunks():
            if chunk.type == TEXT:
                key, sep, value = chunk.body.partition(b"\0")
                if not sep:
                    raise MalformedError("text chunk without a NUL separator", self.name)
                out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        return out

    # -- random access ---------------------------------------------------------------------------
    def index(self) -> list[ChunkInfo]:
        """Locate every chunk by walking the chunk heads (bodies are skipped, not read)."""
        if self._index is not None:
            return self._index
        if self._size is None:
            raise ValueError("random access needs a seekable source")
        try:
            self._seek(self._first)
            out: list[ChunkInfo] = []
            n_items = 0
            for _ in range(self.n_chunks):
                offset = self._pos
                t, length, head = self._read_chunk_head()
                body_offset = self._pos
                if length + 4 > self._size - body_offset:
                    raise TruncatedError(f"chunk {t!r} at byte {offset} runs past the end of the file")
                self._check_type(t)
                k = 1 if t == ITEM else 0
                if t == BATCH:
                    head_bytes = self._read(min(length, MAX_VARINT_BYTES))
                    k, _ = decode_uvarint(head_bytes)
                    check_size(k, length, "batch item count")
                    if k == 0:
                        raise MalformedError(f"batch chunk with no items at byte {offset}")
                out.append(ChunkInfo(t, offset, body_offset, length, k, n_items))
                n_items += k
                self._seek(body_offset + length + 4)
            self._check_end()
        except BitstreamError as err:
            raise err.with_name(self.name) from None
        self._index = out
        self._n_items = n_items
        return out

    def __len__(self) -> int:
        """Number of items (walks the chunk heads once)."""
        self.index()
        return self._n_items

    def read_chunk(self, info: ChunkInfo) -> Chunk:
        """The chunk that :meth:`index` located as ``info``, read and CRC-checked (random access)."""
        try:
            self._seek(info.offset)
            return self._read_chunk_at_cursor()
        except BitstreamError as err:
            raise err.with_name(self.name) from None

    def item(self, i: int) -> bytes:
        """Item ``i`` (negative counts from the end), reading only the chunk that holds it."""
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"item {i} out of range (file holds {n})")
        info = next(c for c in self._index if c.n_items and c.first_item <= i < c.first_item + c.n_items)
        chunk = self.read_chunk(info)
        if chunk.type == ITEM:
            return chunk.body
        return decode_batch(chunk.body, self.name)[i - info.first_item]

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        if self._own:
            self._f.close()

    def __enter__(self) -> "ContainerReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_container(source, *, name: str | None = None, extra_critical: str = "") -> tuple[Header, list[bytes]]:
    """Read and fully check a container; return ``(header, items)``."""
    with ContainerReader(source, name=name, extra_critical=extra_critical) as r:
        return r.header, r.read_items()


def container_overhead(header: Header, payload_sizes: Sequence[int]) -> int:
    """Bytes the container adds around items of the given sizes (as :func:`pack_items` lays them out)."""
    data = pack_items(header, [bytes(n) for n in payload_sizes])
    return len(data) - sum(payload_sizes)
