#!/usr/bin/env python
"""A standing mutation fuzzer for every decoder family of the library.

    python tools/fuzz.py --family pcz|pcz-archive|nerv|split|container|all --count N --seed S \
                         --jobs J --out DIR

It makes valid seed files with the library itself (``OUT/seeds``), mutates them -- bit flips,
truncations, chunk duplication / swap / drop, forged header fields and damaged chunk bodies, the
structural ones with lengths and CRCs fixed so they reach the codec behind the container -- and
decodes each input the way the codec's decode API / CLI does, in a child process under a time
and memory watch. Every outcome is one of

    decoded    the file decoded (a mutation may leave a valid file)
    typed      a bitstream.errors.BitstreamError subclass: the contract for bad input
    other      any other exception: a bug
    hang       the decode ran past --time-limit (killed); for nerv, past it plus the time the
               output its header declares within the default limits needs (declared_work)
    crash      the child died (a signal, an abort)
    over-mem   the decode needed more than --mem-limit above the child's baseline
    declared-long  a nerv file whose header declares, within the limits, more output than the
               campaign waits for (DECLARED_CAP_S): stopped there, not a bug

and a typed refusal slower than --refusal-limit (1 s) is counted as a *slow refusal*. The run
writes ``OUT/summary.json``, appends a results table to ``docs/fuzz.md`` and keeps every input
that found a bug (other / hang / crash / over-mem / slow) in ``tests/fuzz_corpus/<family>/`` under
its content hash, a few per distinct bug, recorded in ``tests/fuzz_corpus/MANIFEST.json``;
``tests/test_fuzz_corpus.py`` replays that corpus. ``--replay`` replays the corpus here and
updates the manifest's ``xfail`` marks (an entry that now passes loses its mark).

Why child processes, one reused per job: a decode that hangs in compiled code or allocates
gigabytes must not take the fuzzer with it, and starting Python with torch per input would cost
far more than most decodes. The child caps its address space (``RLIMIT_AS``) at its baseline
plus the limit before each input and resets its peak-RSS counter, so it reports each input's
peak memory; the parent kills it at the time limit and starts a new one.

This is a tool, not a test: the campaign (100,000 inputs a family) runs for hours; the test
suite only replays the corpus.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fuzz_corpus"
MANIFEST = CORPUS / "MANIFEST.json"
DOCS = ROOT / "docs" / "fuzz.md"

FAMILIES = ("pcz", "pcz-archive", "nerv", "split", "container")
OUTCOMES = ("decoded", "typed", "other", "hang", "crash", "over-mem", "declared-long")
BUGS = ("other", "hang", "crash", "over-mem", "slow")
MAX_CORPUS_FILE = 64 << 10  # inputs kept in the repository stay small
SIGNATURE = b"\x8eNC\x01"
PROJECT_DIRS = ("codec", "bitstream", "models")

# =============================================================================================
# Containers at the byte level: a walker of our own that does not validate, so that mutations can
# build what the library's writer refuses to (absurd sizes, wrong counts, reserved bits).
# =============================================================================================


def uvarint(v: int) -> bytes:
    """LEB128 of ``v`` (any size: a forged varint may be longer than the format allows)."""
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, next position); raises ValueError on a varint that runs off the end."""
    v = shift = 0
    while True:
        if pos >= len(buf) or shift > 70:
            raise ValueError("bad varint")
        b = buf[pos]
        v |= (b & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not b & 0x80:
            return v, pos


@dataclass
class RawChunk:
    type: int  # the type byte
    body: bytes

    def encode(self, crc_ok: bool = True) -> bytes:
        head = bytes([self.type]) + uvarint(len(self.body))
        crc = zlib.crc32(self.body, zlib.crc32(head))
        if not crc_ok:
            crc ^= 1
        return head + self.body + crc.to_bytes(4, "big")


def walk(data: bytes) -> list[RawChunk] | None:
    """The chunks of a well-formed container, or None (CRCs are not checked: seeds are valid)."""
    if data[:4] != SIGNATURE:
        return None
    chunks, pos = [], 4
    try:
        while pos < len(data):
            t = data[pos]
            n, pos = read_uvarint(data, pos + 1)
            if pos + n + 4 > len(data):
                return None
            chunks.append(RawChunk(t, data[pos:pos + n]))
            pos += n + 4
    except ValueError:
        return None
    return chunks if chunks and chunks[0].type == ord("H") else None


def assemble(chunks: list[RawChunk], sig: bytes = SIGNATURE) -> bytes:
    return sig + b"".join(c.encode() for c in chunks)


# Header flag bits and the fields they bring, in file order (bitstream/FORMAT.md §4).
F_MODEL, F_SIZE, F_CHANNELS, F_COUNT, F_FPS, F_PARAMS, F_ARCHIVE = 1, 2, 4, 8, 16, 32, 64


@dataclass
class RawHeader:
    """A header body's fields as integers, whatever their values; ``encode`` writes what the flags say."""

    kind: int
    flags: int
    n_chunks: int
    model: bytes = b"\0" * 8
    width: int = 0
    height: int = 0
    channels: int = 0
    count: int = 0
    fps: tuple[int, int] = (1, 1)
    params: bytes = b""

    @classmethod
    def parse(cls, body: bytes) -> "RawHeader | None":
        try:
            h = cls(body[0], body[1], 0)
            h.n_chunks, pos = read_uvarint(body, 2)
            if h.flags & F_MODEL:
                h.model, pos = body[pos:pos + 8], pos + 8
            if h.flags & F_SIZE:
                h.width, pos = read_uvarint(body, pos)
                h.height, pos = read_uvarint(body, pos)
            if h.flags & F_CHANNELS:
                h.channels, pos = read_uvarint(body, pos)
            if h.flags & F_COUNT:
                h.count, pos = read_uvarint(body, pos)
            if h.flags & F_FPS:
                num, pos = read_uvarint(body, pos)
                den, pos = read_uvarint(body, pos)
                h.fps = (num, den)
            if h.flags & F_PARAMS:
                n, pos = read_uvarint(body, pos)
                h.params, pos = body[pos:pos + n], pos + n
            return h
        except (ValueError, IndexError):
            return None

    def encode(self) -> bytes:
        out = bytearray([self.kind & 0xFF, self.flags & 0xFF]) + uvarint(self.n_chunks)
        if self.flags & F_MODEL:
            out += self.model
        if self.flags & F_SIZE:
            out += uvarint(self.width) + uvarint(self.height)
        if self.flags & F_CHANNELS:
            out += uvarint(self.channels)
        if self.flags & F_COUNT:
            out += uvarint(self.count)
        if self.flags & F_FPS:
            out += uvarint(self.fps[0]) + uvarint(self.fps[1])
        if self.flags & F_PARAMS:
            out += uvarint(len(self.params)) + self.params
        return bytes(out)


# =============================================================================================
# Mutations. Each takes a random generator and the family's seeds and returns (bytes, what).
# =============================================================================================

_POW = [1 << k for k in range(64)]
SIZES = sorted({0, 1, 2, 3, 4, 7, 8, 15, 16, 20, 27, 28, 29, 31, 32, 33, 55, 56, 57, 63, 64, 65, 127, 128,
                255, 256, 257, 384, 511, 512, 513, 1000, 1023, 1024, 4095, 4096, 4097, 16383, 16384, 65535, 65536,
                (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 1 << 24, (1 << 30) - 1, 1 << 30})
COUNTS = sorted(set(SIZES) | {(1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, 5478274,
                             1 << 40, 1 << 62, (1 << 63) - 1})


def _size(rng: random.Random) -> int:
    return rng.choice(SIZES) if rng.random() < 0.8 else rng.randrange(1 << rng.randrange(1, 31))


def _count(rng: random.Random) -> int:
    return rng.choice(COUNTS) if rng.random() < 0.8 else rng.randrange(1 << rng.randrange(1, 64))


def mut_bitflip(rng, data: bytes, seeds) -> tuple[bytes, str]:
    b = bytearray(data)
    n = rng.choice((1, 1, 2, 3, 8))
    for _ in range(n):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b), f"bitflip x{n}"


def mut_bytes(rng, data: bytes, seeds) -> tuple[bytes, str]:
    b = bytearray(data)
    n = rng.randint(1, 4)
    for _ in range(n):
        b[rng.randrange(len(b))] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x01, rng.randrange(256)))
    return bytes(b), f"bytes x{n}"


def mut_truncate(rng, data: bytes, seeds) -> tuple[bytes, str]:
    r = rng.random()
    if r < 0.4:
        cut = rng.randrange(len(data))
    elif r < 0.8:
        cut = max(0, len(data) - rng.randint(1, 16))
    else:
        cut = rng.randint(0, min(len(data), 40))
    return data[:cut], f"truncate to {cut}/{len(data)}"


def mut_append(rng, data: bytes, seeds) -> tuple[bytes, str]:
    n = rng.choice((1, 4, 16, 300))
    return data + bytes(rng.randrange(256) for _ in range(n)), f"append {n}"


def _with_header(rng, chunks: list[RawChunk], fix_count: float = 0.85) -> list[RawChunk]:
    """Set the header's chunk count to the chunks there are (usually: so the walk goes on)."""
    h = RawHeader.parse(chunks[0].body)
    if h is not None and rng.random() < fix_count:
        h.n_chunks = len(chunks) - 1
        chunks[0] = RawChunk(chunks[0].type, h.encode())
    return chunks


def mut_chunk_dup(rng, data, seeds):
    chunks = walk(data)
    if not chunks or len(chunks) < 2:
        return mut_bitflip(rng, data, seeds)
    i = rng.randrange(1, len(chunks))
    j = rng.randrange(1, len(chunks) + 1)
    chunks.insert(j, RawChunk(chunks[i].type, chunks[i].body))
    return assemble(_with_header(rng, chunks)), f"chunk dup {chr(chunks[i].type)}#{i}->{j}"


def mut_chunk_swap(rng, data, seeds):
    chunks = walk(data)
    if not chunks or len(chunks) < 3:
        return mut_chunk_dup(rng, data, seeds)
    i, j = rng.sample(range(1, len(chunks)), 2)
    chunks[i], chunks[j] = chunks[j], chunks[i]
    return assemble(chunks), f"chunk swap {i}<->{j}"


def mut_chunk_drop(rng, data, seeds):
    chunks = walk(data)
    if not chunks or len(chunks) < 2:
        return mut_truncate(rng, data, seeds)
    i = rng.randrange(1, len(chunks))
    t = chr(chunks.pop(i).type)
    return assemble(_with_header(rng, chunks)), f"chunk drop {t}#{i}"


def mut_chunk_splice(rng, data, seeds):
    """A chunk of another seed of the family (another model's weights, another image's payload)."""
    chunks, other = walk(data), walk(rng.choice(seeds))
    if not chunks or not other or len(other) < 2 or len(chunks) < 2:
        return mut_chunk_dup(rng, data, seeds)
    src = rng.choice(other[1:])
    i = rng.randrange(1, len(chunks) + (rng.random() < 0.3))
    if i == len(chunks):
        chunks.append(src)
    else:
        chunks[i] = src
    return assemble(_with_header(rng, chunks)), f"chunk splice {chr(src.type)} at {i}"


def mut_chunk_type(rng, data, seeds):
    chunks = walk(data)
    if not chunks:
        return mut_bitflip(rng, data, seeds)
    i = rng.randrange(len(chunks))
    t = rng.choice(b"HDBtWEXaz\x00\xff")
    chunks[i] = RawChunk(t, chunks[i].body)
    return assemble(chunks), f"chunk {i} type -> {t:#x}"


def _forge_json(rng, params: bytes) -> tuple[bytes, str] | None:
    """A numeric leaf of a JSON ``params`` set to an absurd or edge value, or a key removed."""
    try:
        doc = json.loads(params)
    except ValueError:
        return None
    leaves = []

    def visit(node, path):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            if isinstance(v, (dict, list)):
                visit(v, path + (k,))
            leaves.append(path + (k,))

    visit(doc, ())
    if not leaves:
        return None
    path = rng.choice(leaves)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    r = rng.random()
    if r < 0.1 and isinstance(parent, dict):
        del parent[path[-1]]
        what = "del"
    else:
        choices = [-1, 0, -_size(rng), 0.5, 1e308, None, "x", [], [_size(rng)] * 3,
                   [_size(rng)] * rng.choice((0, 1, 64, 4096))]
        if rng.random() < 0.6:  # mostly sizes: layers, widths, channels, strides that cost work
            choices = [_count(rng), _size(rng), rng.choice((100, 1000, 10000, 1 << 20))]
        if path[-1] == "model":
            choices += ["hnerv", "nervpp", "nirvana", "other"]
        if path[-1] == "v":
            choices += [0, 1, 2, 3]
        parent[path[-1]] = v = rng.choice(choices)
        what = f"= {json.dumps(v)[:40]}"
    out = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return out, f"params {'.'.join(map(str, path))} {what}"


def mut_header(rng, data, seeds):
    """Header fields forged (sizes up to 2**30, counts up to 2**63), flags toggled; CRC fixed."""
    chunks = walk(data)
    h = RawHeader.parse(chunks[0].body) if chunks else None
    if h is None:
        return mut_bitflip(rng, data, seeds)
    notes = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        f = rng.choice(("width", "height", "size", "channels", "count", "n_chunks", "fps", "params", "flags",
                        "kind", "model"))
        if h.params[:1] == b"{" and rng.random() < 0.5:
            f = "params"  # a JSON config (nerv) is where most of a file's sizes live
        if f in ("width", "height"):
            setattr(h, f, _size(rng))
            h.flags |= F_SIZE
        elif f == "size":
            h.width = h.height = _size(rng)
            h.flags |= F_SIZE
        elif f == "channels":
            h.channels = rng.choice((0, 1, 2, 3, 4, 255, 256, 4096, 4097, _size(rng)))
            h.flags |= F_CHANNELS
        elif f == "count":
            h.count = _count(rng)
            h.flags |= F_COUNT
        elif f == "n_chunks":
            h.n_chunks = _count(rng)
        elif f == "fps":
            h.fps = (rng.choice((0, 1, 2, 30000, _count(rng))), rng.choice((0, 1, 2, 1001, _count(rng))))
            h.flags |= F_FPS
        elif f == "params":
            forged = _forge_json(rng, h.params) if h.params[:1] == b"{" else None
            if forged is None:
                h.params = rng.choice((uvarint(_count(rng)), b"", bytes(rng.randrange(256) for _ in range(8))))
                forged = (h.params, f"params {h.params[:12].hex()}")
            h.params = forged[0]
            h.flags = h.flags | F_PARAMS if h.params else h.flags & ~F_PARAMS
            notes.append(forged[1])
            continue
        elif f == "flags":
            h.flags ^= 1 << rng.randrange(8)
        elif f == "kind":
            h.kind = rng.choice((0, 1, 2, 3, 4, 255))
        else:
            h.model = bytes(rng.randrange(256) for _ in range(8))
        val = {"size": h.width, "fps": h.fps, "flags": f"{h.flags:#04x}", "model": "random"}.get(f, getattr(h, f, ""))
        notes.append(f"{f}={val}")
    chunks[0] = RawChunk(chunks[0].type, h.encode())
    return assemble(chunks), "header " + ", ".join(notes)


def _damage_body(rng, body: bytes) -> tuple[bytes, str]:
    b = bytearray(body)
    r = rng.random()
    if not b or r < 0.1:
        n = rng.choice((1, 8, 100))
        return bytes(b) + bytes(rng.randrange(256) for _ in range(n)), f"+{n} bytes"
    if r < 0.3:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b), "bitflips"
    if r < 0.45:
        cut = rng.randrange(len(b))
        return bytes(b[:cut]), f"cut at {cut}/{len(b)}"
    if r < 0.6:
        a = rng.randrange(len(b))
        n = rng.randint(1, 64)
        b[a:a + n] = bytes([rng.choice((0, 0xFF))]) * min(n, len(b) - a)
        return bytes(b), f"fill {a}+{n}"
    if r < 0.85:  # a varint where the codec reads one: counts, lengths, table sizes
        pos = rng.choice((0, 0, rng.randrange(min(len(b), 16)), rng.randrange(len(b))))
        try:
            _, end = read_uvarint(bytes(b), pos)
        except ValueError:
            end = pos + 1
        v = _count(rng)
        b[pos:end] = uvarint(v)
        return bytes(b), f"varint@{pos}={v}"
    a, n = rng.randrange(len(b)), rng.randint(1, 32)
    r = rng.random()
    if r < 0.3:  # a region repeated: more rows, more items, longer streams than the seed has
        k = rng.choice((2, 10, 100, 1000))
        part = bytes(b[a:a + n])
        b[a:a] = part * min(k, (256 << 10) // max(1, len(part)))
        return bytes(b), f"repeat {a}+{n} x{k}"
    if r < 0.65:
        del b[a:a + n]
        return bytes(b), f"delete {a}+{n}"
    b[a:a] = bytes(rng.randrange(256) for _ in range(n))
    return bytes(b), f"insert {a}+{n}"


def mut_body(rng, data, seeds):
    """A chunk body damaged, its length and CRC fixed, so the damage reaches the codec."""
    chunks = walk(data)
    if not chunks or len(chunks) < 2:
        return mut_bitflip(rng, data, seeds)
    i = rng.randrange(1, len(chunks))
    body, what = _damage_body(rng, chunks[i].body)
    chunks[i] = RawChunk(chunks[i].type, body)
    return assemble(chunks), f"body {chr(chunks[i].type)}#{i} {what}"


MUTATORS = {
    "bitflip": (mut_bitflip, 3), "bytes": (mut_bytes, 2), "truncate": (mut_truncate, 2), "append": (mut_append, 1),
    "dup": (mut_chunk_dup, 1), "swap": (mut_chunk_swap, 1), "drop": (mut_chunk_drop, 1),
    "splice": (mut_chunk_splice, 1), "type": (mut_chunk_type, 1), "header": (mut_header, 5), "body": (mut_body, 6),
}


def mutate(rng: random.Random, seeds: list[bytes]) -> tuple[bytes, str]:
    """One input: a seed through one mutator, sometimes two (damaged *and* forged)."""
    names = list(MUTATORS)
    weights = [MUTATORS[n][1] for n in names]
    data = rng.choice(seeds)
    notes = []
    for _ in range(2 if rng.random() < 0.2 else 1):
        name = rng.choices(names, weights)[0]
        data, what = MUTATORS[name][0](rng, data, seeds)
        notes.append(f"{name}: {what}")
        if not data:
            break
    return data, "; ".join(notes)


# =============================================================================================
# Seeds: valid files of each family, made with the library (small and fast to decode).
# =============================================================================================


def _digit():
    import numpy as np

    y, x = np.mgrid[0:28, 0:28]
    r = np.hypot(y - 14, x - 13.5)
    return np.where((r > 6) & (r < 10), 255 - (y * 3 % 40), 0).astype(np.uint8)


def _rgb(h: int, w: int):
    import numpy as np

    y, x = np.mgrid[0:h, 0:w]
    t = (x * 7 + y * 3) % 5
    return np.stack([y * 9 + t, x * 8 + 2 * t, (x + y) * 5 + t], -1).astype(np.uint8)


def _clip(frames: int = 8, size: int = 32):
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([np.stack([(xx * 9 + t * 20) % 256, (yy * 13) % 256, ((xx + yy) * 5 + t * 7) % 256], -1)
                     for t in range(frames)]).astype(np.uint8)


# The bare container's seed: what its payload items mean (the decoder knows them, as a codec would).
CAT_N, CAT_K = 64, 16
FACT_N = 40


def _cat_model():
    import numpy as np

    i, k = np.arange(CAT_N)[:, None], np.arange(CAT_K)[None, :]
    return ((i * 7 + k * 13) % 31 + 1).astype(np.float64)


def _fact_indexes():
    import numpy as np

    return np.arange(FACT_N) % 2


def make_seeds(family: str) -> dict[str, bytes]:
    """name -> bytes of the family's seed files."""
    import numpy as np

    from neural_codecs import bitstream as bs

    if family == "pcz":
        from neural_codecs.codec import pcz

        gray = _rgb(12, 10)[..., 1]
        return {"mnist-28x28": pcz.compress(_digit(), pcz.load_model("mnist")),
                "natural-rgb-14x17": pcz.compress(_rgb(14, 17), pcz.load_model("natural-rgb")),
                "natural-gray-12x10": pcz.compress(gray, pcz.load_model("natural-gray"))}
    if family == "pcz-archive":
        from neural_codecs.codec import pcz

        d = _digit()
        imgs = np.stack([d, d[::-1], d.T, np.roll(d, 3, 1), 255 - d])
        m = pcz.load_model("mnist")
        return {"mnist-5-block2": pcz.compress_archive(imgs, m, block=2).data,
                "mnist-3-block3": pcz.compress_archive(imgs[:3], m, block=3).data}
    if family == "nerv":
        from neural_codecs.codec import nerv
        from neural_codecs.models.inr import FitOptions

        opts = FitOptions(epochs=1, seed=1, precision="fp32")
        return {kind: nerv.encode(_clip(), 24, model=kind, size=2000, options=opts, group=4).data
                for kind in ("hnerv", "nervpp", "nirvana")}
    if family == "split":
        from neural_codecs.codec import split

        enc = split.EdgeEncoder()
        return {"rgb-40x48": enc.encode(_rgb(40, 48)), "rgb-64x64": enc.encode(_rgb(64, 64)[::-1].copy())}
    if family == "container":
        rng = np.random.default_rng(5)
        enc = bs.Encoder()
        enc.encode_categorical(rng.integers(0, CAT_K, CAT_N), _cat_model())
        table = bs.CdfTable.from_pmfs([np.arange(1, 10, dtype=np.float64), np.ones(5)], offsets=[-4, 0],
                                      tail_mass=[0.01, 0.05])
        v = (np.arange(FACT_N) * 5 % 13) - 6
        v[::9] = [1000, -70000, 3, 2**39, -2**35]
        items = [enc.to_bytes(), bs.encode_factorized(v, table, _fact_indexes()), table.to_bytes()]
        from fractions import Fraction

        h = bs.Header(kind=bs.CodecKind.GENERIC, model_hash=bs.model_hash(b"fuzz"), width=28, height=28,
                      channels=1, count=3, fps=Fraction(24000, 1001), params=b"\x01fuzz", archive=True)
        return {"batch2": bs.pack_items(h, items, batch_size=2, extra_chunks=[bs.text_chunk("encoder", "fuzz")]),
                "single": bs.write_container(bs.Header(kind=bs.CodecKind.GENERIC, width=3, height=2),
                                             [(bs.ITEM, items[2])])}
    raise ValueError(f"unknown family {family}")


def load_seeds(family: str, folder: Path) -> list[bytes]:
    """The family's seeds from ``folder/<family>/`` (made and stored there on first use)."""
    d = folder / family
    files = sorted(d.glob("*.bin")) if d.is_dir() else []
    if not files:
        d.mkdir(parents=True, exist_ok=True)
        for name, data in make_seeds(family).items():
            (d / f"{name}.bin").write_bytes(data)
        files = sorted(d.glob("*.bin"))
    return [f.read_bytes() for f in files]


# =============================================================================================
# Decoding, as each codec's API / CLI does with a file (runs in the child).
# =============================================================================================

_CACHE: dict = {}


def decode_pcz(data: bytes) -> None:
    """``pcz decompress FILE``: describe the file, pick the shipped model it names, decode."""
    from neural_codecs.bitstream import ModelMismatchError
    from neural_codecs.codec import pcz

    name = "fuzz.pcz"
    info = pcz.file_info(data, name)
    if "pcz" not in _CACHE:
        _CACHE["pcz"] = {m.hash.hex(): m for m in map(pcz.load_model, pcz.SHIPPED)}
    model = _CACHE["pcz"].get(info["model_hash"])
    if model is None:
        raise ModelMismatchError(f"file needs pcz model {info['model_hash']}, not a shipped one", name)
    if info["images"] > 1:
        pcz.decompress_archive(data, model, name, index=0)
        pcz.decompress_archive(data, model, name)
    else:
        pcz.decompress(data, model, name)


def decode_nerv(data: bytes) -> None:
    """``nervcodec info`` then ``nervcodec decode``: every frame, and the last one by random access."""
    from neural_codecs.codec import nerv

    name = "fuzz.nerv"
    nerv.info(data, name)
    with nerv.NervReader(data, name) as r:
        r.frames()
        r.frame(r.count - 1)


def decode_split(data: bytes) -> None:
    """``splitcodec decode`` / the service: bytes -> prediction with the shipped server model."""
    from neural_codecs.codec import split

    if "split" not in _CACHE:
        _CACHE["split"] = split.ServerDecoder()
    _CACHE["split"].decode(data, "fuzz.split")


def decode_container(data: bytes) -> None:
    """The container alone: stream and random access, texts, then the payloads as the seed coded them."""
    from neural_codecs import bitstream as bs

    name = "fuzz.ncf"
    header, items = bs.read_container(data, name=name)
    with bs.ContainerReader(data, name=name) as r:
        for i in range(len(r)):
            r.item(i)
        r.texts()
    if len(items) == 1:
        bs.CdfTable.from_bytes(items[0], name)
    if len(items) >= 3:
        bs.Decoder(items[0], name).decode_categorical(_cat_model())
        table, _ = bs.CdfTable.from_bytes(items[2], name)
        if table.rows < 2:  # the rows are what the caller's indexes need, as a codec checks
            raise bs.MalformedError("table has too few rows", name)
        bs.decode_factorized(items[1], table, _fact_indexes(), name)


DECODERS = {"pcz": decode_pcz, "pcz-archive": decode_pcz, "nerv": decode_nerv, "split": decode_split,
            "container": decode_container}


# =============================================================================================
# The child: reads requests on stdin, answers one JSON line each on its private stdout.
# =============================================================================================


def _proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmSize, VmRSS, VmHWM of a process in bytes (empty if it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmSize", "VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def _status() -> dict[str, int]:
    return _proc_status()


def _where(tb) -> str:
    """The innermost frame of the library (codec/, bitstream/, models/) in a traceback."""
    best = ""
    for fr in traceback.extract_tb(tb):
        rel = _project_path(fr.filename)
        if rel:
            best = f"{rel}:{fr.lineno} {fr.name}"
    return best


def _project_path(filename: str) -> str | None:
    """``codec/pcz/tiling.py`` for a file of the library under ROOT, else None (torch, numpy, this tool)."""
    try:
        rel = Path(filename).resolve().relative_to(ROOT)
    except (ValueError, OSError):
        return None
    return rel.as_posix() if rel.parts[0] in PROJECT_DIRS else None


_OOM = re.compile(r"can't allocate memory|bad_alloc|out of memory|memory allocation of", re.I)


def _run_one(family: str, data: bytes, mem_limit: int) -> dict:
    import resource

    from neural_codecs.bitstream import BitstreamError

    st = _status()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if mem_limit:
        resource.setrlimit(resource.RLIMIT_AS, (st["VmSize"] + mem_limit, hard))
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM: the peak below is this input's
        hwm_reset = True
    except OSError:
        hwm_reset = False
    res = {"outcome": "decoded", "exc": "", "msg": "", "where": ""}
    t0 = time.perf_counter()
    try:
        DECODERS[family](data)
    except BaseException as err:  # noqa: BLE001 - classifying every way out is the point
        res["exc"] = type(err).__name__
        res["msg"] = str(err)[:300]
        res["where"] = _where(err.__traceback__)
        if isinstance(err, BitstreamError):
            res["outcome"] = "typed"
        elif isinstance(err, MemoryError) or _OOM.search(str(err)):
            res["outcome"] = "over-mem"
        elif isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        else:
            res["outcome"] = "other"
        del err
    res["elapsed"] = time.perf_counter() - t0
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    after = _status()
    res["peak"] = max(0, after["VmHWM"] - st["VmRSS"]) if hwm_reset else None
    return res


#: Families whose hangs get a faulthandler dump of where they spend their time. Not the torch
#: families: faulthandler's watchdog thread walks the other threads' frames while they run, and
#: with torch's kernels running that can segfault the child, even in a legitimate decode; their
#: hangs are reported without a stack.
DUMP_FAMILIES = frozenset({"pcz", "pcz-archive", "container"})


def _die_with_parent() -> None:
    """Linux: ask the kernel to kill this child when the fuzzer dies (otherwise a campaign stopped
    with SIGKILL leaves its workers decoding orphaned inputs for minutes)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_main(mem_limit: int, hang_after: float) -> None:
    """Serve decode requests: a JSON line ``{"family", "n", "warm"}`` then n bytes; answer one line."""
    import faulthandler

    _die_with_parent()
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything the decoders print goes to the log, not into the protocol
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    inp = sys.stdin.buffer
    while True:
        line = inp.readline()
        if not line:
            return
        req = json.loads(line)
        data = inp.read(req["n"])
        if not req.get("warm") and req["family"] in DUMP_FAMILIES:
            faulthandler.dump_traceback_later(hang_after, exit=False)  # where a hang spends its time
        res = _run_one(req["family"], data, 0 if req.get("warm") else mem_limit)
        faulthandler.cancel_dump_traceback_later()
        print(f"-- done {res['outcome']}", file=sys.stderr, flush=True)
        proto.write(json.dumps(res).encode() + b"\n")


# =============================================================================================
# The parent side: a child per job, restarted after a crash, hang or over-memory.
# =============================================================================================


@dataclass
class Result:
    outcome: str
    elapsed: float
    peak: int | None = None
    exc: str = ""
    msg: str = ""
    where: str = ""

    def slow(self, refusal_limit: float) -> bool:
        return self.outcome == "typed" and self.elapsed > refusal_limit

    def bug(self, refusal_limit: float) -> str | None:
        """The kind of bug this outcome is (BUGS), or None for a proper decode or refusal."""
        if self.outcome in ("other", "hang", "crash", "over-mem"):
            return self.outcome
        return "slow" if self.slow(refusal_limit) else None

    def signature(self, refusal_limit: float) -> str:
        """One line naming a distinct bug: what went wrong and where in the library."""
        kind = self.bug(refusal_limit) or self.outcome
        return f"{kind}: {self.exc or '-'} at {self.where or '?'}"


class Worker:
    """One child process decoding inputs of any family; warmed per family with its seeds."""

    def __init__(self, seeds: dict[str, list[bytes]], *, time_limit: float = 10.0, mem_limit: int = 512 << 20,
                 log: Path | None = None, warm_limit: float = 300.0):
        self.seeds, self.time_limit, self.mem_limit, self.warm_limit = seeds, time_limit, mem_limit, warm_limit
        self.log = log or Path(os.devnull)
        self.proc: subprocess.Popen | None = None
        self.warm: set[str] = set()
        self.restarts = 0

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   PYTHONFAULTHANDLER="1")
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                      "--mem-limit", str(self.mem_limit / 2**20),
                                      "--hang-after", str(max(0.1, self.time_limit - 0.5))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._logf,
                                     env=env, cwd=str(ROOT), start_new_session=True)
        self.warm = set()

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._kill()
            self.proc = None
            self._logf.close()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the child's own session: it and anything it started
            self.proc.wait()

    def _log_tail(self, n: int = 20000) -> str:
        self._logf.flush()
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, f.seek(0, 2) - n))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return text.rsplit("-- done", 1)[-1]

    def _request(self, family: str, data: bytes, warm: bool, limit: float) -> Result:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.close()
                self.restarts += 1
            self._start()
        base = _proc_status(self.proc.pid).get("VmRSS", 0)  # the idle child: this input's baseline
        t0 = time.perf_counter()
        try:
            self.proc.stdin.write(json.dumps({"family": family, "n": len(data), "warm": warm}).encode() + b"\n" + data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._died(t0)
        fd, buf = self.proc.stdout.fileno(), b""
        while not buf.endswith(b"\n"):
            left = t0 + limit - time.perf_counter()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                peak = _proc_status(self.proc.pid).get("VmHWM", 0) - base
                self._kill()
                return Result("hang", time.perf_counter() - t0, peak=max(0, peak) if base else None,
                              msg=f"killed after {limit:g} s", where=_dumped_where(self._log_tail()))
            chunk = os.read(fd, 65536)
            if not chunk:
                return self._died(t0)
            buf += chunk
        res = Result(**json.loads(buf))
        if res.outcome == "over-mem" or (res.peak or 0) > self.mem_limit:
            res.outcome = "over-mem"
            self._kill()  # a child that hit its memory cap is not trusted with the next input
        elif res.elapsed > limit and not warm:
            res.outcome = "hang"
        return res

    def _died(self, t0: float) -> Result:
        code = self.proc.wait()
        tail = self._log_tail()
        outcome = "over-mem" if _OOM.search(tail) else "crash"
        return Result(outcome, time.perf_counter() - t0, exc=f"exit {code}", where=_dumped_where(tail),
                      msg=_last_line(tail))

    def run(self, family: str, data: bytes) -> Result:
        """Decode ``data`` as ``family`` in the child (warming the child for the family first).
        The time limit grows by what the output its header declares needs (:func:`declared_work`)."""
        if family not in self.warm or self.proc is None or self.proc.poll() is not None:
            self.warm_up(family)
        declared = declared_work(family, data)
        res = self._request(family, data, False, self.time_limit + min(declared, DECLARED_CAP_S))
        if res.outcome == "hang" and declared > DECLARED_CAP_S:
            res.outcome = "declared-long"  # stopped, not judged: its header asks for that much work
        return res

    def warm_up(self, family: str) -> list[Result]:
        """Decode the family's seeds once (imports, compiled kernels, models) outside the limits."""
        out = [self._request(family, s, True, self.warm_limit) for s in self.seeds.get(family, [])]
        if self.proc is not None and self.proc.poll() is None:
            self.warm.add(family)
        return out


#: What a legitimate nerv decode may take per declared frame and per declared pixel, about four
#: times the measured cost: a NeRV++ file forged to 16,383 frames of 32x32 renders in 46 s on an
#: idle machine (2.8 ms a frame, most of it per-frame overhead); HNeRV 320x180 renders at 69 fps.
NERV_FRAME_S = 1e-2
NERV_PIXEL_S = 1e-6
#: The most a campaign waits for such a decode beyond the base limit. A file whose header asks for
#: more (a NeRV++ file, which stores nothing per frame, forged to 2^20 frames: about an hour) is
#: stopped there and counted as *declared-long*, not as a hang: its work is what it declares.
DECLARED_CAP_S = 50.0


def declared_work(family: str, data: bytes) -> float:
    """Seconds the output a nerv file's header declares really needs, when the header is within
    the decoder's default limits (the campaign's bound: a decode may take long only when its
    header declares output, within the limits, that needs it). 0 for other families, whose limits
    bound the work by the bytes (pcz's subpixels per payload byte) or by small fixed sizes."""
    if family != "nerv":
        return 0.0
    try:
        from neural_codecs import bitstream as bs
        from neural_codecs.codec import nerv

        with bs.ContainerReader(data, extra_critical=nerv.CHUNK_TYPES) as r:
            h = r.header
            nerv.params_to_config(h, None)  # within the default limits, else no allowance
            return h.count * (NERV_FRAME_S + NERV_PIXEL_S * h.width * h.height)
    except Exception:
        return 0.0


def _dumped_where(text: str) -> str:
    """The innermost library frame of a faulthandler dump (innermost first) or a traceback in a log."""
    if "most recent call first" in text:
        for block in text.split("most recent call first")[1:]:
            frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', block)
            hit = next((f"{rel}:{line} {func}" for fn, line, func in frames if (rel := _project_path(fn))), "")
            if hit:
                return hit
        return ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', text)
    hits = [f"{rel}:{line} {func}" for fn, line, func in frames if (rel := _project_path(fn))]
    return hits[-1] if hits else ""


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


# =============================================================================================
# The campaign
# =============================================================================================


@dataclass
class Tally:
    family: str
    counts: Counter = field(default_factory=Counter)
    by_mutator: dict = field(default_factory=lambda: defaultdict(Counter))
    bugs: dict = field(default_factory=dict)  # signature -> {count, examples}
    refusal_times: list = field(default_factory=list)
    max_peak: int = 0
    seconds: float = 0.0
    restarts: int = 0


def _corpus_name(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16] + ".bin"


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def save_manifest(manifest: dict) -> None:
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=1) + "\n")


def keep_finding(family: str, data: bytes, res: Result, what: str, manifest: dict, refusal_limit: float,
                 corpus: Path, keep: int) -> str | None:
    """Save a bug-finding input into the corpus (a few per distinct bug); return its relative path."""
    if len(data) >= MAX_CORPUS_FILE:
        return None
    sig = res.signature(refusal_limit)
    same = [k for k, v in manifest.items() if v.get("signature") == sig and k.startswith(family + "/")]
    rel = f"{family}/{_corpus_name(data)}"
    if rel in manifest or len(same) >= keep:
        return rel if rel in manifest else None
    (corpus / family).mkdir(parents=True, exist_ok=True)
    (corpus / rel).write_bytes(data)
    manifest[rel] = {"outcome": res.bug(refusal_limit), "signature": sig, "mutation": what,
                     "message": res.msg[:200], "found": datetime.date.today().isoformat(), "xfail": True}
    return rel


def fuzz_family(family: str, args, seeds: list[bytes], manifest: dict, lock: threading.Lock) -> Tally:
    """Mutate and decode ``args.count`` inputs of one family on ``args.jobs`` children."""
    tally = Tally(family)
    nxt = iter(range(args.count))
    out = Path(args.out)

    def job(j: int) -> None:
        w = Worker({family: seeds}, time_limit=args.time_limit, mem_limit=int(args.mem_limit * 2**20),
                   log=out / f"worker-{family}-{j}.log")
        try:
            w.warm_up(family)
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    break
                rng = random.Random(f"{args.seed}/{family}/{i}")
                data, what = mutate(rng, seeds)
                res = w.run(family, data)
                with lock:
                    _record(tally, family, i, data, what, res, args, manifest)
        finally:
            with lock:
                tally.restarts += w.restarts
            w.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=job, args=(j,)) for j in range(args.jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally.seconds = time.perf_counter() - t0
    return tally


def _record(tally: Tally, family: str, i: int, data: bytes, what: str, res: Result, args, manifest: dict) -> None:
    tally.counts[res.outcome] += 1
    mut = what.split(":", 1)[0]
    tally.by_mutator[mut][res.outcome] += 1
    if res.outcome == "typed":
        tally.refusal_times.append(res.elapsed)
    tally.max_peak = max(tally.max_peak, res.peak or 0)
    kind = res.bug(args.refusal_limit)
    if kind is None:
        return
    if kind == "slow":
        tally.counts["slow"] += 1
    sig = res.signature(args.refusal_limit)
    entry = tally.bugs.setdefault(sig, {"kind": kind, "count": 0, "examples": []})
    entry["count"] += 1
    if len(entry["examples"]) < 3:
        rel = None if args.no_corpus else keep_finding(family, data, res, what, manifest, args.refusal_limit,
                                                        Path(args.corpus), args.keep)
        entry["examples"].append({"input": i, "mutation": what, "bytes": len(data), "elapsed": round(res.elapsed, 3),
                                  "peak_mb": None if res.peak is None else round(res.peak / 2**20, 1),
                                  "message": res.msg[:200], "corpus": rel})
    if args.verbose:
        print(f"  {family} #{i}: {sig} ({what})", file=sys.stderr)


def summarize(t: Tally, refusal_limit: float) -> dict:
    rt = sorted(t.refusal_times)
    n = sum(t.counts[o] for o in OUTCOMES)
    return {"inputs": n, **{o: t.counts[o] for o in OUTCOMES}, "slow_refusals": t.counts["slow"],
            "seconds": round(t.seconds, 1), "inputs_per_s": round(n / t.seconds, 2) if t.seconds else None,
            "refusal_s_median": round(rt[len(rt) // 2], 4) if rt else None,
            "refusal_s_p99": round(rt[int(0.99 * (len(rt) - 1))], 4) if rt else None,
            "refusal_s_max": round(rt[-1], 4) if rt else None,
            "max_peak_mb": round(t.max_peak / 2**20, 1), "child_restarts": t.restarts,
            "refusal_limit_s": refusal_limit,
            "by_mutator": {k: dict(v) for k, v in sorted(t.by_mutator.items())},
            "bugs": dict(sorted(t.bugs.items(), key=lambda kv: -kv[1]["count"]))}


def results_table(summary: dict, args) -> str:
    """The markdown block appended to docs/fuzz.md for one run."""
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    rows = ["| family | inputs | decoded | typed | other | hang | crash | over-mem | slow refusals | declared-long "
            "| inputs/s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fam, s in summary["families"].items():
        rows.append(f"| {fam} | {s['inputs']} | {s['decoded']} | {s['typed']} | {s['other']} | {s['hang']} | "
                    f"{s['crash']} | {s['over-mem']} | {s['slow_refusals']} | {s.get('declared-long', 0)} "
                    f"| {s['inputs_per_s']} |")
    bugs = [f"- {fam}: {sig} ×{b['count']}" + (f" (e.g. `tests/fuzz_corpus/{b['examples'][0]['corpus']}`)"
                                               if b["examples"] and b["examples"][0]["corpus"] else "")
            for fam, s in summary["families"].items() for sig, b in s["bugs"].items()]
    head = (f"\n## Run of {now} (commit {summary['commit']})\n\n"
            f"`python tools/fuzz.py --family {','.join(args.family)} --count {args.count} --seed {args.seed} "
            f"--jobs {args.jobs}`; limits: {args.time_limit:g} s, {args.mem_limit:g} MiB above baseline, "
            f"refusals within {args.refusal_limit:g} s.\n\n")
    return head + "\n".join(rows) + "\n" + ("\nDistinct bugs:\n\n" + "\n".join(bugs) + "\n" if bugs else "")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


DOCS_INTRO = """# Fuzzing the decoders

`tools/fuzz.py` mutates valid files of every decoder family (pcz single images, pcz archives, nerv
files of all three models, splitcodec files, the bare container) and decodes each input in a child
process under a time and memory watch; see its docstring for the mutations and the outcomes.
Inputs that find a bug are kept in `tests/fuzz_corpus/` and replayed by `tests/test_fuzz_corpus.py`.
Each run appends its table below (newest last).

Outcomes: *decoded* (the mutated file is valid), *typed* (a `BitstreamError` subclass: the contract),
*other* (any other exception), *hang* (past the time limit; for nerv, plus what the output its
header declares within the default limits needs), *crash* (the child died), *over-mem* (more than
the memory limit above the child's baseline), *slow refusals* (a typed error after more than 1 s),
*declared-long* (a nerv header declaring, within the limits, more output than the campaign waits
for: stopped, not a bug).
"""


def replay(args) -> int:
    """Replay the corpus; set each manifest entry's ``xfail`` to whether it still fails."""
    corpus = Path(args.corpus)
    manifest = load_manifest()
    files = corpus_files(corpus)
    w = Worker(corpus_seeds(corpus), time_limit=args.time_limit, mem_limit=int(args.mem_limit * 2**20))
    failing = 0
    try:
        for rel, family in files:
            res = w.run(family, (corpus / rel).read_bytes())
            ok = res.outcome in ("decoded", "typed") and not res.slow(args.refusal_limit)
            failing += not ok
            if rel in manifest:
                manifest[rel]["xfail"] = not ok
            print(f"{'ok  ' if ok else 'FAIL'} {rel}: {res.outcome} {res.elapsed:.2f} s {res.exc} {res.where}")
    finally:
        w.close()
    save_manifest(manifest)
    print(f"{len(files)} inputs, {failing} failing; manifest updated")
    return 0


def corpus_files(corpus: Path = CORPUS) -> list[tuple[str, str]]:
    """(path relative to the corpus, family) of every replayable input (seeds excluded)."""
    return [(f"{d.name}/{f.name}", d.name) for d in sorted(corpus.iterdir()) if d.is_dir() and d.name in FAMILIES
            for f in sorted(d.glob("*.bin")) if not f.name.startswith("seed-")] if corpus.is_dir() else []


def corpus_seeds(corpus: Path = CORPUS) -> dict[str, list[bytes]]:
    """The valid seed files kept in the corpus (``seed-*.bin``), per family: the children's warm-up."""
    return {fam: [f.read_bytes() for f in sorted((corpus / fam).glob("seed-*.bin"))] for fam in FAMILIES
            if (corpus / fam).is_dir()}


def export_seeds(families, seeds: Path, corpus: Path) -> int:
    """Each family's seeds into ``corpus/<family>/seed-<name>.bin`` (the small ones)."""
    for fam in families:
        load_seeds(fam, seeds)
        for f in sorted((seeds / fam).glob("*.bin")):
            if f.stat().st_size < MAX_CORPUS_FILE:
                (corpus / fam).mkdir(parents=True, exist_ok=True)
                (corpus / fam / f"seed-{f.name}").write_bytes(f.read_bytes())
                print(f"{corpus / fam / ('seed-' + f.name)}: {f.stat().st_size} bytes", file=sys.stderr)
    return 0


def _families(text: str) -> tuple[str, ...]:
    names = FAMILIES if text == "all" else tuple(text.split(","))
    bad = [n for n in names if n not in FAMILIES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown family {', '.join(bad)} (choose from {', '.join(FAMILIES)}, all)")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", type=_families, default="all",
                   help=f"one of {', '.join(FAMILIES)}, several joined by commas, or all (default)")
    p.add_argument("--count", type=int, default=1000, help="inputs per family (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="input i of a family is a function of (seed, family, i)")
    p.add_argument("--jobs", type=int, default=1, help="child processes decoding in parallel (default 1)")
    p.add_argument("--out", default="fuzz-out", help="folder for seeds, summary.json and child logs")
    p.add_argument("--time-limit", type=float, default=10.0, help="seconds before a decode counts as a hang")
    p.add_argument("--mem-limit", type=float, default=512.0, help="MiB above the child's baseline")
    p.add_argument("--refusal-limit", type=float, default=1.0, help="seconds a refusal may take")
    p.add_argument("--keep", type=int, default=1, help="corpus files kept per distinct bug and family (default 1)")
    p.add_argument("--corpus", default=str(CORPUS), help="where bug-finding inputs go (default tests/fuzz_corpus)")
    p.add_argument("--no-corpus", action="store_true", help="keep no inputs")
    p.add_argument("--no-docs", action="store_true", help="do not append the table to docs/fuzz.md")
    p.add_argument("--replay", action="store_true", help="replay the corpus and update the manifest's xfail marks")
    p.add_argument("--export-seeds", action="store_true",
                   help="copy the seeds (made if needed) into the corpus as seed-*.bin: the replay's valid files")
    p.add_argument("-v", "--verbose", action="store_true", help="print each bug as it is found")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--hang-after", type=float, default=9.5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(int(args.mem_limit * 2**20), args.hang_after)
        return 0
    if args.replay:
        return replay(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    families = args.family
    if args.export_seeds:
        return export_seeds(families, out / "seeds", Path(args.corpus))
    manifest = load_manifest()
    lock = threading.Lock()
    summary = {"commit": _commit(), "seed": args.seed, "count": args.count, "jobs": args.jobs,
               "time_limit_s": args.time_limit, "mem_limit_mib": args.mem_limit, "families": {}}
    for fam in families:
        t = time.perf_counter()
        seeds = load_seeds(fam, out / "seeds")
        print(f"{fam}: {len(seeds)} seeds ({time.perf_counter() - t:.1f} s); fuzzing {args.count} inputs",
              file=sys.stderr)
        tally = fuzz_family(fam, args, seeds, manifest, lock)
        s = summary["families"][fam] = summarize(tally, args.refusal_limit)
        print(f"{fam}: " + ", ".join(f"{o} {s[o]}" for o in OUTCOMES) + f", slow {s['slow_refusals']}; "
              f"{s['inputs_per_s']} inputs/s; {len(s['bugs'])} distinct bugs", file=sys.stderr)
        if not args.no_corpus:
            save_manifest(manifest)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if not args.no_docs:
        if not DOCS.exists():
            DOCS.write_text(DOCS_INTRO)
        with open(DOCS, "a") as f:
            f.write(results_table(summary, args))
    print(f"summary: {out / 'summary.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
