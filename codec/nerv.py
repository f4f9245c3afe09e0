"""nervcodec: a video stored as a neural network (HNeRV, NeRV++, NIRVANA) in the common container.

File layout (``bitstream/FORMAT.md`` §13 has every byte):

- header: kind NERV, frame size, 3 channels, frame count, fps, and ``params`` = the model kind and
  its hyper-parameters as canonical JSON (``{"config":{…},"model":…,"v":3}``; the frame size is
  the header's);
- ``W`` chunks (critical): one network's integer weights — HNeRV and NeRV++ have one, NIRVANA one
  per group of frames, in order (a group may be coded as the residual against the previous one);
- ``E`` chunks (critical, HNeRV only): the integer embeddings of a run of 16 consecutive frames,
  the clip's first frame as it is and every other as the difference to its predecessor, channel
  by channel under context rows (format v3; v2 files, which restart the differences at each run
  under two rows, and v1 files, eight frames per run each coded as it is, still decode);
- ``t`` chunks (ancillary): what the encoder measured (PSNR, settings), for ``nervcodec info``.

Integers are coded by the shared entropy layer under empirical-histogram :class:`~bitstream.CdfTable`
rows that travel in the chunk (one row per large tensor, one shared by the small ones), so any
value decodes exactly and the table costs a few dozen bytes. Decoding streams chunk by chunk; any
single frame decodes alone (HNeRV: the weights and the ``E`` chunks up to its own; NeRV++: the weights; NIRVANA:
the weight chunks up to its group, no frames rendered on the way).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator

import numpy as np
import torch

from neural_codecs import bitstream as bs
from neural_codecs.bitstream import AbsurdSizeError, MalformedError
from neural_codecs.bitstream.varint import decode_uvarint, encode_uvarint
from neural_codecs.models.inr import EMB_RUN, KINDS, FitOptions, Fitted, QuantizedTensor, dequantize_embeddings, fit, get_kind
from neural_codecs.models.inr.distributed import team
from neural_codecs.models.inr.fit import probe_step_seconds
from neural_codecs.models.inr.quant import ROW_CAPS, SMALL_TENSOR as QUANT_SMALL_TENSOR, TABLE_SPAN
from neural_codecs.models.inr.hnerv import EMB_ROWS, EmbeddingRows, embedding_bits, embedding_layout

from .eval import metrics

WEIGHTS = "W"
EMBEDDINGS = "E"
CHUNK_TYPES = WEIGHTS + EMBEDDINGS
FORMAT_VERSION = 3
#: Versions this reader decodes (v1: HNeRV embeddings coded frame by frame, 8 frames per chunk;
#: v2: differences restarting at each chunk, two table rows).
READABLE_VERSIONS = (1, 2, 3)
#: Frames per ``E`` chunk (HNeRV), by format version: the unit a single-frame decode reads.
EMB_RUNS = {1: 8, 2: EMB_RUN, 3: EMB_RUN}
#: Tensors with fewer values share one table row; larger ones get their own.
SMALL_TENSOR = QUANT_SMALL_TENSOR
#: Widest table row; values outside it are escape-coded (exact, just dearer).
MAX_ROW = TABLE_SPAN


@dataclass(frozen=True)
class Limits:
    """What a nerv decoder accepts, checked from the header before any network is built.

    As Pillow's ``MAX_IMAGE_PIXELS``: a file over a limit is refused with :class:`AbsurdSizeError`
    and decodes if the caller raises the limit (``limits=Limits(max_frames=...)``; the CLI's
    ``--max-pixels``, ``--max-frames``, ``--max-output``, ``--max-params``).

    Why the output needs limits of its own: a NeRV++ file stores nothing per frame and the entropy
    coder can code a million zero weights in a few bytes, so a 10 KB file can truly describe hours
    of video or a network of gigabytes. The defaults hold what this codec is for (4K frames, about
    an hour of 360p) and keep a decode within a few hundred MB."""

    max_pixels: int = 1 << 23  # one frame, padded to the network's stride: 4096 x 2048
    max_frames: int = 1 << 20
    max_output: int = 1 << 33  # frames x pixels of the whole clip (one hour of 640x360 at 25 fps: 2^32.7)
    max_params: int = 1 << 24  # network parameters (NIRVANA: one group's)


DEFAULT_LIMITS = Limits()

#: Largest network the encoder makes (parameters): what a default decoder accepts.
MAX_PARAMS = DEFAULT_LIMITS.max_params



class NervError(MalformedError):
    """A ``.nerv`` file whose contents do not describe a decodable network."""


# ---------------------------------------------------------------------------------------------
# Sizing
# ---------------------------------------------------------------------------------------------

#: Coded bits per network parameter assumed when sizing a network from a target bpp (measured on
#: the benchmark clip at the default λ). Sizing only has to be close: the rate control steers λ
#: until the file lands on the target (:class:`~models.inr.control.RateControl`).
BITS_PER_PARAM = 3.0
#: Table bytes assumed per table row of a trained network (a row spans a few dozen values).
TABLE_ROW_BYTES = 40
#: The target rate when the user names neither a size nor a rate: the default model's (each kind
#: has its own, :attr:`~models.inr.kind.InrKind.default_bpp`; see :func:`default_bpp`).
DEFAULT_BPP = get_kind("hnerv").default_bpp
#: λ a rate-controlled fit starts from. Low on purpose: λ that starts high coarsens the learned
#: quantization steps in the first epochs, and lowering λ afterwards does not make them fine
#: again (48 frames at 320x180, 0.05 bpp asked, λ from 0.02: 0.029 bpp, with λ down at 1e-5 by
#: the end); from below, the controller raises λ until the rate comes down to the target.
START_LAM = 1e-4
#: The smallest network budget make_config sizes for (parameters).
MIN_BUDGET = 300

#: Encoder presets, as x264's: epochs of training (NIRVANA: per group of frames), each kind's
#: ``preset_epochs``. ``medium`` is the default; its epochs were chosen so 240 frames at 320x180
#: encode within 10 minutes on two CPU cores (``tools/bench_nerv.py``), and
#: :data:`PRESET_SECONDS` holds that on slower ones.
PRESETS = {p: {k: get_kind(k).preset_epochs[p] for k in KINDS} for p in ("fast", "medium", "slow")}
DEFAULT_PRESET = "medium"
#: Wall-clock cap on a preset's training (seconds; None: none): the epochs above are what it trains
#: where they fit, and on a slower CPU (one without native bf16, or a busy one) the epochs are
#: planned to end within it, so ``medium`` keeps its 10-minute promise anywhere. Where the
#: preset's epochs end inside the cap, the cap changes nothing (the same bytes).
PRESET_SECONDS = {"fast": None, "medium": 540.0, "slow": 3300.0}


def training_plan(model: str, preset: str = DEFAULT_PRESET, epochs: int | None = None,
                  time: float | None = None) -> tuple[int, float | None]:
    """(epochs, time budget in seconds) for a fit: ``epochs`` as given; with only ``time``, as
    many epochs as fit it; else the preset's epochs under the preset's cap."""
    if epochs:
        return epochs, time
    if time:
        return 1000, time
    return PRESETS[preset][model], PRESET_SECONDS[preset]


def _zero_fitted(kind: str, cfg, frames: int) -> Fitted:
    """A fitted network of ``cfg``'s shapes holding only zeros (for measuring fixed costs)."""
    k = get_kind(kind)
    tensors = [QuantizedTensor(torch.zeros(s, dtype=torch.int64), 1.0) for s in k.shapes(cfg)]
    groups = [tensors] * k.weight_groups(cfg, frames)
    emb = None
    if k.embeddings:
        c, h, w = cfg.emb_shape
        emb = [QuantizedTensor(torch.zeros((frames, h, w), dtype=torch.int64), 1.0) for _ in range(c)]
    return Fitted(kind, cfg, groups, emb, frames=torch.zeros((frames, 1, 1, 3), dtype=torch.uint8))


def overhead_bits(kind: str, cfg, frames: int, fps=25, tables: bool = True, room: float | None = None) -> float:
    """Bits a file of this network spends besides its integers' entropy: the header, chunk framing,
    step sizes and the encoder's text notes (measured by packing an all-zero network of the same
    shapes), plus, with ``tables``, :data:`TABLE_ROW_BYTES` per table row (what sizing assumes;
    the rate control measures the tables as they are instead). ``room``: the file's target bytes,
    which decide how much of the notes it carries (:func:`_texts`)."""
    texts = _texts(10.0, FitOptions(batch=1), 1e-4, room)  # a typical PSNR width
    fixed = len(pack(_zero_fitted(kind, cfg, frames), fps, texts))
    if not tables:
        return 8.0 * fixed
    k = get_kind(kind)
    rows = _row_of([math.prod(s) for s in k.shapes(cfg)])[1]
    return 8.0 * (fixed + TABLE_ROW_BYTES * (rows * k.weight_groups(cfg, frames) + (2 if k.embeddings else 0)))


def _budget(kind: str, height: int, width: int, frames: int, bpp: float, group: int) -> int:
    """Parameters for ``bpp``: the file's bits less the fixed costs (measured on a first sizing)
    and HNeRV's embeddings, at :data:`BITS_PER_PARAM` a parameter."""
    bits = bpp * frames * height * width
    budget = max(MIN_BUDGET, int(bits / BITS_PER_PARAM))
    for _ in range(2):  # the fixed costs depend a little on the network's shapes: size twice
        cfg = get_kind(kind).size_for_rate(height, width, frames, budget, group, bits)
        spare = bits - overhead_bits(kind, cfg, frames, room=bits / 8)
        if get_kind(kind).embeddings:
            spare -= embedding_bits(*cfg.emb_shape, frames)
        budget = max(MIN_BUDGET, int(spare / BITS_PER_PARAM))
    return budget


def default_bpp(kind: str) -> float:
    """The rate ``kind`` is trained for when the user names neither a size nor a rate."""
    return get_kind(kind).default_bpp


def make_config(kind: str, height: int, width: int, frames: int, *, size: int | None = None,
                bpp: float | None = None, group: int = 16):
    """A model config for ``kind`` sized by parameter count ``size`` or for a target ``bpp``
    (default: the kind's, :func:`default_bpp`), counting what the file spends besides the weights."""
    k = get_kind(kind)
    if size is not None:
        return k.size(height, width, frames, max(size, MIN_BUDGET), group)
    bpp = bpp if bpp is not None else default_bpp(kind)
    size = _budget(kind, height, width, frames, bpp, group)
    return k.size_for_rate(height, width, frames, max(size, MIN_BUDGET), group, bpp * frames * height * width)


#: Config fields a v3 header leaves out: the container header holds the frame size already (and
#: v3 leaves out ``pix_fmt``, always rgb24). Why: in a file of a few hundred bytes the description
#: is the largest fixed cost (8 frames at 128x72, 0.05 bpp asked: 162 of a 460-byte target).
FRAME_FIELDS = ("height", "width")


def config_to_params(kind: str, cfg) -> bytes:
    config = {k: v for k, v in cfg.to_dict().items() if k not in FRAME_FIELDS}
    doc = {"v": FORMAT_VERSION, "model": kind, "config": config}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def params_to_config(header: bs.Header, name: str | None, limits: Limits = DEFAULT_LIMITS):
    """Parse and validate the header's model description; sizes are checked before building."""
    try:
        doc = json.loads(header.params.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("v") not in READABLE_VERSIONS:
            raise NervError(f"unsupported nerv format version {doc.get('v') if isinstance(doc, dict) else '?'}", name)
        kind = doc.get("model")
        try:
            model = get_kind(kind)
        except ValueError:
            raise NervError(f"unknown model kind {kind!r}", name) from None
        if doc.get("pix_fmt", "rgb24" if doc["v"] >= 3 else None) != "rgb24":
            raise NervError(f"unsupported pixel format {doc.get('pix_fmt')!r}", name)
        fields = doc["config"]
        if not isinstance(fields, dict):
            raise NervError("model config is not an object", name)
        if doc["v"] >= 3:  # the frame size from the container header where the config leaves it out
            fields = {"height": header.height, "width": header.width, **fields}
        types = {f.name: str(f.type) for f in dataclasses.fields(model.config)}
        for k, v in fields.items():
            if not _of_type(v, types.get(k, "")):
                raise NervError(f"model config {k}={json.dumps(v)[:40]} is not a{'n' if types.get(k, 'x')[0] == 'i' else ''} "
                                f"{types.get(k) or 'known field'}", name)
        for f, most in model.field_limits.items():
            v = fields.get(f)
            if isinstance(v, int) and not isinstance(v, bool) and v > most:
                raise AbsurdSizeError(f"model config {f}={v} out of range (at most {most})", name)
        for k, v in fields.items():
            if isinstance(v, bool) or (isinstance(v, (int, float)) and not (0 < v <= 1 << 20)):
                raise AbsurdSizeError(f"model config {k}={v} out of range", name)
            if isinstance(v, list) and (len(v) > 16 or not all(isinstance(i, int) and 1 <= i <= 64 for i in v)):
                raise AbsurdSizeError(f"model config {k}={v} out of range", name)
        cfg = model.config(**fields)
        version = doc["v"]
    except bs.BitstreamError:
        raise
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError, ArithmeticError) as err:
        raise NervError(f"bad model description in the header ({err})", name) from None
    if (cfg.height, cfg.width) != (header.height, header.width):
        raise NervError("model config and header disagree on the frame size", name)
    H, W = cfg.padded
    T = header.count or 0
    _within(H * W, limits.max_pixels, f"padded frame {W}x{H}", "max-pixels", name)
    _within(T, limits.max_frames, "frame count", "max-frames", name)
    _within(T * H * W, limits.max_output, "frames x pixels", "max-output", name)
    try:
        n = sum(math.prod(s) for s in model.shapes(cfg))
    except (ValueError, RuntimeError) as err:
        raise NervError(f"model config does not build a network ({err})", name) from None
    _within(n, limits.max_params, "network parameters", "max-params", name)
    return kind, cfg, version


def _of_type(v, t: str) -> bool:
    """Whether a JSON value fits a config field annotated ``t`` (int, float, tuple[int, ...])."""
    if isinstance(v, bool):
        return False
    if t == "int":
        return isinstance(v, int)
    if t == "float":
        return isinstance(v, (int, float))
    if t.startswith("tuple"):
        return isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
    return False


def _within(value: int, limit: int, what: str, flag: str, name: str | None) -> None:
    if value > limit:
        raise AbsurdSizeError(f"{what}: {value} is over the limit {limit} (--{flag} raises it)", name)


# ---------------------------------------------------------------------------------------------
# Coding integer tensors
# ---------------------------------------------------------------------------------------------


def _row_of(sizes: list[int]) -> tuple[list[int], int]:
    """Table row per tensor: one each for large tensors, a shared last row for the small ones."""
    rows, r = [], 0
    for n in sizes:
        if n >= SMALL_TENSOR:
            rows.append(r)
            r += 1
        else:
            rows.append(-1)
    shared = r
    rows = [shared if x < 0 else x for x in rows]
    return rows, shared + (1 if shared in rows else 0)


def _empirical_table(values: list[np.ndarray], precision: int = bs.entropy.TABLE_PRECISION,
                     span: int = MAX_ROW) -> bs.CdfTable:
    """Each row's histogram over at most ``span`` values around its median; values outside are
    escape-coded, and the escape gets the mass they have."""
    pmfs, offsets, tails = [], [], []
    for v in values:
        if v.size == 0:
            lo, counts, out = 0, np.ones(1), 0.0
        else:
            med = int(np.median(v))
            lo = max(int(v.min()), med - span // 2)
            hi = min(int(v.max()), lo + span - 1)
            inside = (v >= lo) & (v <= hi)
            counts = np.bincount(v[inside] - lo, minlength=hi - lo + 1).astype(np.float64)
            counts = counts + 1e-3  # absent values stay codable (the quantizer floors at 1 anyway)
            out = float(np.count_nonzero(~inside))
        pmfs.append(counts / (counts.sum() + out))
        offsets.append(lo)
        tails.append(out / (counts.sum() + out))
    return bs.CdfTable.from_pmfs(pmfs, offsets, tails, precision=precision)


#: Widest table rows the encoder tries: a row costs about a byte a value it spans, so a row of few,
#: widely spread values (HNeRV's intra embeddings: 288 values over ±1,000 in 48 frames at
#: 128x72) is cheaper with its outliers escape-coded than with a table of 2,000 entries.
TABLE_SPANS = ROW_CAPS


#: Table precisions the encoder tries (bits a frequency); the reader takes any. Why: a table row
#: costs about a varint a value it spans, two bytes at 16 bits, so in a small file (8 frames at
#: 320x180: 4,470 parameters) the tables cost a third as much as the integers they code; coarser
#: frequencies cost the integers little and halve the tables.
TABLE_PRECISIONS = (8, 10, 12, 14, bs.entropy.TABLE_PRECISION)


def _smallest(code: Callable[[bs.CdfTable], list[bytes]], values: list[np.ndarray]) -> tuple[bs.CdfTable, list[bytes]]:
    """The table precision and row width (of :data:`TABLE_PRECISIONS`, :data:`TABLE_SPANS`) whose
    table and streams are shortest."""
    widest = max((int(v.max()) - int(v.min()) + 1 for v in values if v.size), default=1)
    best = None
    for precision, span in itertools.product(TABLE_PRECISIONS, TABLE_SPANS):
        if span != MAX_ROW and span >= widest:
            continue  # the same table as a wider cap
        try:
            table = _empirical_table(values, precision, span)
        except ValueError:  # a row wider than this precision holds
            continue
        streams = code(table)
        size = len(table.to_bytes()) + sum(len(b) for b in streams)
        if best is None or size < best[0]:
            best = (size, table, streams)
    return best[1], best[2]


def encode_ints(arrays: list[np.ndarray]) -> bytes:
    """Integer arrays (shapes known to the decoder) → value count, table, entropy payload.

    The count lets the decoder refuse a chunk that does not belong to the header's network."""
    flat = [np.asarray(a, dtype=np.int64).ravel() for a in arrays]
    rows, n_rows = _row_of([len(f) for f in flat])
    per_row = [np.concatenate([f for f, r in zip(flat, rows) if r == k]) for k in range(n_rows)]
    values = np.concatenate(flat) if flat else np.zeros(0, np.int64)
    index = np.concatenate([np.full(len(f), r) for f, r in zip(flat, rows)]) if flat else np.zeros(0, np.int64)

    def code(table):
        enc = bs.Encoder()
        enc.encode_factorized(values, table, index)
        return [enc.to_bytes()]

    table, (payload,) = _smallest(code, per_row)
    tb = table.to_bytes()
    return encode_uvarint(len(values)) + encode_uvarint(len(tb)) + tb + payload


def decode_ints(data: bytes, shapes: list[tuple[int, ...]], name: str | None) -> list[np.ndarray]:
    sizes = [math.prod(s) for s in shapes]
    rows, n_rows = _row_of(sizes)
    count, pos = decode_uvarint(data, 0)
    if count != sum(sizes):
        raise NervError(f"chunk holds {count} integers, the network described in the header needs {sum(sizes)}", name)
    n, pos = decode_uvarint(data, pos)
    if n > len(data) - pos:
        raise bs.TruncatedError("integer table runs past the chunk", name)
    table, used = bs.CdfTable.from_bytes(data[pos:pos + n], name)
    if used != n or table.rows != n_rows:
        raise NervError(f"integer table has {table.rows} rows, {n_rows} expected", name)
    index = np.concatenate([np.full(k, r) for k, r in zip(sizes, rows)]) if sizes else np.zeros(0, np.int64)
    values = bs.Decoder(data[pos + n:], name).decode_factorized(table, index)
    out, at = [], 0
    for s, k in zip(shapes, sizes):
        out.append(values[at:at + k].reshape(s))
        at += k
    return out


def _pack_floats(xs: list[float]) -> bytes:
    return struct.pack(f"<{len(xs)}f", *xs)


def _unpack_floats(data: bytes, pos: int, n: int, name) -> tuple[list[float], int]:
    if pos + 4 * n > len(data):
        raise bs.TruncatedError("chunk ends inside its step sizes", name)
    xs = list(struct.unpack_from(f"<{n}f", data, pos))
    if not all(math.isfinite(x) and x > 0 for x in xs):
        raise NervError("a step size is not a positive finite number", name)
    return xs, pos + 4 * n


def encode_weights(tensors: list[QuantizedTensor], prev: list[QuantizedTensor] | None) -> bytes:
    """One network's weights; against ``prev`` (the previous group) when that codes smaller."""
    steps = _pack_floats([t.step for t in tensors])
    direct = bytes([0]) + steps + encode_ints([t.ints.numpy() for t in tensors])
    if prev is None:
        return direct
    resid = bytes([1]) + steps + encode_ints([(t.ints - p.ints).numpy() for t, p in zip(tensors, prev)])
    return resid if len(resid) < len(direct) else direct


def decode_weights(body: bytes, shapes: list[tuple[int, ...]], prev: list[QuantizedTensor] | None,
                   name) -> list[QuantizedTensor]:
    if not body:
        raise bs.TruncatedError("empty weight chunk", name)
    mode = body[0]
    if mode not in (0, 1) or (mode == 1 and prev is None):
        raise NervError(f"bad weight chunk mode {mode}", name)
    steps, pos = _unpack_floats(body, 1, len(shapes), name)
    ints = decode_ints(body[pos:], shapes, name)
    if mode == 1:
        ints = [i + p.ints.numpy() for i, p in zip(ints, prev)]
    return [QuantizedTensor(torch.from_numpy(np.ascontiguousarray(i)), s) for i, s in zip(ints, steps)]


def _shapes(kind: str, cfg) -> list[tuple[int, ...]]:
    return get_kind(kind).shapes(cfg)


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


@dataclass
class EncodeResult:
    data: bytes
    fitted: Fitted
    kind: str

    @property
    def frames(self) -> np.ndarray:
        """The encoder's final evaluation: what a decoder rebuilds from ``data``."""
        return self.fitted.frames.numpy()


def _v2_rows(shape: tuple[int, ...]) -> np.ndarray:
    """Format v2's table row of every embedding value of one run of frames: 0 for the run's first
    frame (coded as it is), 1 for the others (coded as the difference to their predecessor)."""
    delta = (np.arange(shape[0]) != 0).astype(np.int64)
    return np.broadcast_to(delta.reshape(-1, *[1] * (len(shape) - 1)), shape).copy()


def _emb_chunks(vals: np.ndarray, rows: np.ndarray, table: bs.CdfTable) -> Iterator[bytes]:
    """``E`` bodies (v3): per run, the value count and one entropy stream holding the run's
    values channel by channel (the order the decoder learns each channel's rows in)."""
    for lo in range(0, len(vals), EMB_RUN):
        enc = bs.Encoder()
        for c in range(vals.shape[1]):
            enc.encode_factorized(vals[lo:lo + EMB_RUN, c].ravel(), table, rows[lo:lo + EMB_RUN, c].ravel())
        yield encode_uvarint(vals[lo:lo + EMB_RUN].size) + enc.to_bytes()


def pack(fitted: Fitted, fps, texts: dict[str, str] | None = None) -> bytes:
    """The ``.nerv`` bytes of a fitted network."""
    kind, cfg = fitted.kind, fitted.config
    T = int(fitted.frames.shape[0])
    chunks: list[tuple[str, bytes]] = []
    prev = None
    for i, w in enumerate(fitted.groups):
        chunks.append((WEIGHTS, encode_weights(w, prev)))
        prev = w
    if get_kind(kind).embeddings:  # the embeddings' steps and table ride in front of the network they feed
        ints = np.stack([t.ints.numpy() for t in fitted.emb], axis=1)
        steps = _pack_floats([t.step for t in fitted.emb])
        # one table shared by all ``E`` chunks: context rows, or two rows where those cost less
        best = None
        for n_rows in (EMB_ROWS, 2):
            vals, rows = embedding_layout(ints, contexts=n_rows > 2)
            table, bodies = _smallest(lambda t: list(_emb_chunks(vals, rows, t)),
                                      [vals[rows == r] for r in range(n_rows)])
            size = len(table.to_bytes()) + sum(map(len, bodies))
            if best is None or size < best[0]:
                best = (size, table, bodies)
        _, table, bodies = best
        tb = table.to_bytes()
        chunks[0] = (WEIGHTS, encode_uvarint(len(steps)) + steps + encode_uvarint(len(tb)) + tb + chunks[0][1])
        chunks += [(EMBEDDINGS, b) for b in bodies]
    for k, v in (texts or {}).items():
        chunks.append(bs.text_chunk(k, v))
    header = bs.Header(kind=bs.CodecKind.NERV, width=cfg.width, height=cfg.height, channels=3, count=T,
                       fps=Fraction(fps), params=config_to_params(kind, cfg))
    return bs.write_container(header, chunks)


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError("frames must be a nonempty uint8 array (T, H, W, 3)")
    return frames


def prepare(frames: np.ndarray, fps=25, *, model: str = "hnerv", size: int | None = None,
            bpp: float | None = None, options: FitOptions | None = None, group: int = 16,
            rate_control: bool | None = None):
    """The config and options :func:`encode` trains with: the network sized by ``size`` or for
    ``bpp`` (default: the kind's, :func:`default_bpp`), and, unless ``rate_control`` is False
    (default: on when no ``size`` is given), λ steered so the file lands near that bpp."""
    T, H, W, _ = _check_frames(frames).shape
    opts = get_kind(model).resolve(options or FitOptions(), team().size)
    cfg = make_config(model, H, W, T, size=size, bpp=bpp, group=group)
    if rate_control is None:
        rate_control = size is None
    if rate_control and opts.target_bpp is None:
        opts = dataclasses.replace(opts, target_bpp=bpp if bpp is not None else default_bpp(model), lam=START_LAM)
    if opts.target_bpp is not None:
        room = opts.target_bpp * T * H * W / 8
        opts = dataclasses.replace(opts, overhead_bits=overhead_bits(model, cfg, T, fps, tables=False, room=room))
    return cfg, opts


def estimate_seconds(frames: np.ndarray, model: str, cfg, opts: FitOptions) -> float:
    """About how long :func:`encode` will take here: timed training steps times the steps planned
    (NIRVANA: every group at its full epochs, so an upper bound with ``target_psnr``), plus the
    final render; with a time budget, at most the budget."""
    cap = math.inf if opts.time_budget is None else opts.time_budget
    step_s, per_epoch = probe_step_seconds(_check_frames(frames), model, cfg, opts)
    return min(cap, step_s * per_epoch * get_kind(model).planned_epochs(cfg, opts, len(frames)))


def encode(frames: np.ndarray, fps=25, *, model: str = "hnerv", size: int | None = None,
           bpp: float | None = None, options: FitOptions | None = None, group: int = 16,
           progress: Callable[[int, int, dict], None] | None = None,
           rate_control: bool | None = None) -> EncodeResult | None:
    """Fit ``model`` to uint8 frames (T, H, W, 3) and return the ``.nerv`` bytes and what they decode to.

    Called by every rank of a torch.distributed process group (same arguments), the training is
    shared (:mod:`models.inr.distributed`) and rank 0 gets the result; other ranks get None.

    ``size`` is the network's parameter count (or, for NIRVANA, of all groups together as a
    budget); ``bpp`` sizes it from a target rate instead (default: the kind's), and then
    λ is steered towards that rate unless ``rate_control`` is False (:func:`prepare`).
    ``options`` sets epochs, λ, device, seed, a time budget.
    """
    frames = _check_frames(frames)
    cfg, opts = prepare(frames, fps, model=model, size=size, bpp=bpp, options=options, group=group,
                        rate_control=rate_control)
    return encode_prepared(frames, fps, model, cfg, opts, progress)


def encode_prepared(frames: np.ndarray, fps, model: str, cfg, opts: FitOptions,
                    progress: Callable[[int, int, dict], None] | None = None) -> EncodeResult | None:
    """:func:`encode` with the config and options :func:`prepare` gave (the CLI prepares first,
    to say what it will train, and does not size the network twice)."""
    frames = _check_frames(frames)
    fitted = fit(frames, model, cfg, opts, progress)
    if fitted is None:  # a rank > 0 of a distributed encode: rank 0 holds the result
        return None
    psnr = metrics.psnr(fitted.frames.numpy(), frames)
    lam = fitted.history[-1].get("lam", opts.lam) if fitted.history else opts.lam
    T, H, W, _ = frames.shape
    room = opts.target_bpp * T * H * W / 8 if opts.target_bpp else None
    return EncodeResult(pack(fitted, fps, _texts(psnr, opts, lam, room)), fitted, model)


#: The encoder's notes take at most this share of a file's target size; in a smaller file only the
#: PSNR is noted (8 frames at 128x72 and 0.05 bpp: a 461-byte target, 139 bytes of notes).
NOTES_SHARE = 0.05


def _texts(psnr: float, opts: FitOptions, lam: float, room: float | None = None) -> dict[str, str]:
    """The encoder's ``t`` notes: its name, the PSNR it measured, its settings (λ as it ended);
    only the PSNR when the file's target size ``room`` (bytes) is too small for the rest."""
    notes = {"encoder": "nervcodec (neural-codecs)", "psnr": f"{psnr:.4f}",
             "settings": json.dumps({"epochs": opts.epochs, "lam": float(f"{lam:.4g}"), "lr": opts.lr,
                                     "batch": opts.batch, "seed": opts.seed}, sort_keys=True)}
    if room is not None and sum(len(k) + len(v) + 16 for k, v in notes.items()) > NOTES_SHARE * room:
        return {"psnr": notes["psnr"]}
    return notes


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


class NervReader:
    """An open ``.nerv`` file: header facts up front, frames on demand (streamed or one by one)."""

    def __init__(self, source, name: str | None = None, limits: Limits = DEFAULT_LIMITS):
        self._r = bs.ContainerReader(source, name=name, extra_critical=CHUNK_TYPES)
        self.name = self._r.name
        h = self._r.header
        if h.kind != bs.CodecKind.NERV:
            self._r.close()
            raise MalformedError(f"this is a {bs.container.kind_name(h.kind)} file, not nerv", self.name)
        try:
            if h.width is None or h.count is None or h.fps is None or h.channels != 3:
                raise NervError("nerv header lacks the frame size, count, fps or channels", self.name)
            if h.count == 0:
                raise NervError("nerv file declares zero frames", self.name)
            self.kind, self.config, self.version = params_to_config(h, self.name, limits)
        except BaseException:
            self._r.close()
            raise
        self.header = h
        self._kind = get_kind(self.kind)
        self.width, self.height, self.count, self.fps = h.width, h.height, h.count, h.fps
        self._shapes = _shapes(self.kind, self.config)
        self.emb_run = EMB_RUNS[self.version]
        self._index = None

    # -- structure ------------------------------------------------------------------------------
    def index(self):
        if self._index is None:
            infos = self._r.index()
            w = [c for c in infos if c.type == WEIGHTS]
            e = [c for c in infos if c.type == EMBEDDINGS]
            want_w = self._kind.weight_groups(self.config, self.count)
            want_e = -(-self.count // self.emb_run) if self._kind.embeddings else 0
            if len(w) != want_w or len(e) != want_e:
                raise NervError(f"file has {len(w)} weight and {len(e)} embedding chunks; "
                                f"{self.kind} with {self.count} frames needs {want_w} and {want_e}", self.name)
            self._index = (w, e)
        return self._index

    def _weights(self, body: bytes, prev):
        """A ``W`` body → (tensors, embedding coding): HNeRV's embedding steps (and, from v2, the
        table its ``E`` chunks share) ride in front of the weights."""
        emb = None
        if self._kind.embeddings:
            n, pos = decode_uvarint(body, 0)
            if n != 4 * self.config.emb_ch:
                raise NervError("embedding step block has the wrong size", self.name)
            steps, pos = _unpack_floats(body, pos, self.config.emb_ch, self.name)
            table = None
            if self.version >= 2:
                n, pos = decode_uvarint(body, pos)
                if n > len(body) - pos:
                    raise bs.TruncatedError("embedding table runs past the chunk", self.name)
                table, used = bs.CdfTable.from_bytes(body[pos:pos + n], self.name)
                want = (2,) if self.version == 2 else (2, EMB_ROWS)
                if used != n or table.rows not in want:
                    raise NervError(f"embedding table has {table.rows} rows, "
                                    f"{' or '.join(map(str, want))} expected", self.name)
                pos += n
            emb = (steps, table)
            body = body[pos:]
        return decode_weights(body, self._shapes, prev, self.name), emb

    def _embeddings(self, body: bytes, run: int, emb, last: np.ndarray | None = None) -> np.ndarray:
        """Run ``run``'s integer embeddings (n, C, h, w); ``last``: the previous run's last frame's
        integers (v3 continues its differences across runs; the first run has none)."""
        steps, table = emb
        c, h, w = self.config.emb_shape
        n = min(self.emb_run, self.count - run * self.emb_run)
        if table is None:  # v1: the chunk's own table, every frame as it is
            (ints,) = decode_ints(body, [(n, c, h, w)], self.name)
            return ints
        count, pos = decode_uvarint(body, 0)
        if count != n * c * h * w:
            raise NervError(f"embedding chunk holds {count} integers, {n * c * h * w} expected", self.name)
        dec = bs.Decoder(body[pos:], self.name)
        if self.version == 2:
            return np.cumsum(dec.decode_factorized(table, _v2_rows((n, c, h, w))), axis=0)
        vals = np.empty((n, c, h, w), dtype=np.int64)
        rule = EmbeddingRows(n, h, w, first=run == 0, contexts=table.rows > 2)  # seven rows: by context
        for k in range(c):
            vals[:, k] = dec.decode_factorized(table, rule.next())
            rule.observe(vals[:, k])
        if run == 0:
            return np.cumsum(vals, axis=0)
        if last is None:
            raise ValueError("a v3 run after the first needs its predecessor's integers")
        return last[None] + np.cumsum(vals, axis=0)

    def _runs(self, emb_coding, first_run: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(run, its integer embeddings) for each run from ``first_run`` on. v3 decodes the runs
        before it too (integers only), whose last frame its differences start from."""
        _, ei = self.index()
        last = None
        for run in range(first_run if self.version < 3 else 0, len(ei)):
            ints = self._embeddings(self._r.read_chunk(ei[run]).body, run, emb_coding, last)
            last = ints[-1]
            if run >= first_run:
                yield run, ints

    def embedding_ints(self) -> np.ndarray | None:
        """The clip's integer embeddings (T, C, h, w) as the file codes them (HNeRV); None for
        kinds without embeddings. Integers only: nothing is rendered."""
        wi, _ = self.index()
        _, emb_coding = self._weights(self._r.read_chunk(wi[0]).body, None)
        if emb_coding is None:
            return None
        return np.concatenate([ints for _, ints in self._runs(emb_coding)])

    def _dequantized(self, ints: np.ndarray, emb) -> torch.Tensor:
        steps, _ = emb
        return dequantize_embeddings([QuantizedTensor(torch.from_numpy(ints[:, k].copy()), steps[k])
                                      for k in range(ints.shape[1])])

    def _net(self, tensors):
        try:
            return self._kind.decoder(self.config, tensors)
        except ValueError as err:
            raise NervError(str(err), self.name) from None

    # -- frames ---------------------------------------------------------------------------------
    def iter_frames(self, device: str = "cpu", batch: int = 8) -> Iterator[np.ndarray]:
        """Decode front to back, yielding uint8 (n, H, W, 3) batches as chunks arrive: each
        network as its ``W`` chunk arrives, then its frames (with embeddings: one ``E`` chunk's run
        at a time; else ``batch`` frames at a time)."""
        wi, _ = self.index()
        prev = None
        for g, info in enumerate(wi):
            prev, emb_coding = self._weights(self._r.read_chunk(info).body, prev)
            net = self._net(prev)
            span = self._kind.group_frames(self.config, self.count, g)
            if emb_coding is None:
                for lo in range(span.start, span.stop, batch):
                    yield self._kind.render(self.config, net, count=self.count,
                                            frames=range(lo, min(span.stop, lo + batch)), device=device).numpy()
                continue
            for run, ints in self._runs(emb_coding):
                emb = self._dequantized(ints, emb_coding)
                lo = run * self.emb_run
                yield self._kind.render(self.config, net, count=self.count, frames=range(lo, lo + len(emb)),
                                        emb=emb, device=device).numpy()

    def frames(self, device: str = "cpu") -> np.ndarray:
        return np.concatenate(list(self.iter_frames(device)))

    def frame(self, i: int, device: str = "cpu") -> np.ndarray:
        """Frame ``i`` alone (uint8 (H, W, 3)), reading only the chunks it needs: the networks up
        to the one that renders it, and the ``E`` chunks up to its own (v3; v1 and v2: its own)."""
        if not 0 <= i < self.count:
            raise IndexError(f"frame {i} out of range (file holds {self.count})")
        wi, _ = self.index()
        g = self._kind.group_of(self.config, i)
        prev = emb_coding = None
        for info in wi[:g + 1]:
            prev, emb_coding = self._weights(self._r.read_chunk(info).body, prev)
        emb = None
        if emb_coding is not None:
            run, ints = next(self._runs(emb_coding, i // self.emb_run))
            k = i - run * self.emb_run
            emb = self._dequantized(ints[k:k + 1], emb_coding)
        return self._kind.render(self.config, self._net(prev), count=self.count, frames=range(i, i + 1), emb=emb,
                                 device=device).numpy()[0]

    def texts(self) -> dict[str, str]:
        return self._r.texts()

    def close(self) -> None:
        self._r.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def decode(data, name: str | None = None, device: str = "cpu",
           limits: Limits = DEFAULT_LIMITS) -> tuple[np.ndarray, Fraction]:
    """``.nerv`` bytes (or a path) → (uint8 frames (T, H, W, 3), fps)."""
    with NervReader(data, name, limits) as r:
        return r.frames(device), r.fps


def info(source, name: str | None = None, limits: Limits = DEFAULT_LIMITS) -> dict:
    """What a ``.nerv`` file holds, without rendering any frame."""
    with NervReader(source, name, limits) as r:
        wi, ei = r.index()
        size = r._r._size or 0
        n_params = sum(math.prod(s) for s in r._shapes)
        return {"model": r.kind, "config": r.config.to_dict(), "width": r.width, "height": r.height,
                "frames": r.count, "fps": str(r.fps), "bytes": size,
                "bpp": 8 * size / (r.count * r.width * r.height), "parameters": n_params,
                "weight_chunks": len(wi), "weight_bytes": sum(c.length for c in wi),
                "embedding_chunks": len(ei), "embedding_bytes": sum(c.length for c in ei), **r.texts()}
