"""pcz: lossless image compression with Hidden Chow-Liu Tree probabilistic circuits.

Liu, Mandt & Van den Broeck, "Lossless Compression with Probabilistic Circuits" (ICLR 2022).
An image is cut into patches that match the model (MNIST's model: one 28x28 patch per image);
each patch is coded pixel by pixel under the circuit's exact conditionals, *given its already
decoded neighbours* (the row above and the column to the left): they are observed variables of
the patch model, and marginalisation makes p(patch | context) exact; neighbours outside the image
are simply unobserved. Patches on one anti-diagonal of the patch grid do not depend on each other,
so they are coded as one batch (vectorised, both cores); an archive codes many images per batch.

The pipeline is the library's one shape: array -> model (conditionals) -> entropy layer -> container.

    data = compress(img, model)          # numpy uint8 (H, W) or (H, W, 3) -> bytes
    img2 = decompress(data, model)       # bytes -> numpy, bit-exact
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neural_codecs import bitstream as bs
from neural_codecs.bitstream import AbsurdSizeError, BitstreamError, MalformedError, ModelMismatchError
from neural_codecs.models.pc.adapt import Adapter, check_setting
from neural_codecs.models.pc.coder import CodingTables, Stepper, coding_tables

from . import modelfile
from .images import check_image

#: Fixed-point precision (bits) of the probabilities in a newly made model file: every stored
#: probability is a count out of 2**MODEL_PRECISION, at least 1. 20 bits, not 16: at 16 bits each
#: of a row's 256 emission entries holds >= 1/65536, mass taken from the near-certain values that
#: most pixels have, which costs MNIST 0.004 bits/pixel; at 20 bits that cost is 0.0001.
MODEL_PRECISION = 20
#: Precisions a model file may declare; a file without the ``precision`` entry is 16 (uint16).
_PRECISIONS = range(16, 25)
MODEL_FORMAT = 1
#: Default number of images coded as one stream in an archive.
ARCHIVE_BLOCK = 1000
#: Backward adaptation of new patch models (strength, every, decay); see models/pc/adapt.py.
DEFAULT_ADAPT = (10.0, 128, 0.97)
#: Conditionals (floats) the encoder gathers before one call into the entropy layer.
_ENCODE_BUFFER = 1 << 18
SHIPPED = {"mnist": "mnist.npz", "natural-gray": "natural_gray.npz", "natural-rgb": "natural_rgb.npz"}
#: The arrays a model file may hold; any other member is refused before anything is read.
MODEL_ARRAYS = frozenset({"format", "patch", "offsets", "parent", "prior", "trans", "emit", "name", "info",
                          "centered", "subtract_green", "precision", "adapt"})
#: Largest array (declared uncompressed bytes) a model file may hold: 8x the shipped MNIST
#: model's emission table (32 MB).
MAX_MODEL_MEMBER = 1 << 28


class ModelFileError(BitstreamError):
    """A pcz model file is missing, unreadable or inconsistent."""


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PatchLayout:
    """Which pixel each model variable stands for, relative to a patch's top-left corner.

    ``offsets[v] = (dy, dx, channel)``. Variables with dy >= 0 and dx >= 0 are the patch's pixels
    (coded); the others are context: the row above (dy = -1, -1 <= dx <= pw) and the column to the
    left (dx = -1, 0 <= dy < ph), all decoded before the patch in the anti-diagonal order.
    """

    ph: int
    pw: int
    channels: int
    offsets: np.ndarray  # (D, 3) int64
    centered: bool = False  # variables are values relative to the mean of the decoded context
    subtract_green: bool = False  # RGB coded as (R - G, G, B - G) mod 256, as WebP lossless does

    @property
    def coded(self) -> np.ndarray:
        return (self.offsets[:, 0] >= 0) & (self.offsets[:, 1] >= 0)

    def validate(self, name: str | None = None) -> None:
        o = self.offsets
        if not (1 <= self.ph <= 4096 and 1 <= self.pw <= 4096 and self.channels in (1, 3)):
            raise ModelFileError(f"patch {self.ph}x{self.pw}x{self.channels} out of range", name)
        if o.ndim != 2 or o.shape[1] != 3 or not 1 <= len(o) <= 1 << 16:
            raise ModelFileError("offsets must have shape (D, 3)", name)
        dy, dx, c = o.T
        inside = self.coded
        ok_ctx = ((dy == -1) & (dx >= -1) & (dx <= self.pw)) | ((dx == -1) & (dy >= 0) & (dy < self.ph))
        if ((c < 0) | (c >= self.channels)).any() or (inside & ((dy >= self.ph) | (dx >= self.pw))).any() \
                or (~inside & ~ok_ctx).any():
            raise ModelFileError("a variable lies outside the patch and its causal context", name)
        keys = (dy + 2) * (self.pw + 3) * 4 + (dx + 2) * 4 + c
        if len(np.unique(keys)) != len(keys) or inside.sum() != self.ph * self.pw * self.channels:
            raise ModelFileError("patch variables must cover the patch exactly once", name)

    @classmethod
    def whole(cls, h: int, w: int, channels: int) -> "PatchLayout":
        """One patch = the whole image, raster order, no context (MNIST)."""
        yy, xx, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(channels), indexing="ij")
        return cls(h, w, channels, np.stack([yy.ravel(), xx.ravel(), cc.ravel()], 1).astype(np.int64))

    def to_coded_colors(self, imgs: np.ndarray) -> np.ndarray:
        """(..., 3) RGB -> the channels the model codes (reversible, integer)."""
        if not self.subtract_green:
            return imgs
        out = imgs.astype(np.int64)
        out[..., 0] = (out[..., 0] - out[..., 1]) % 256
        out[..., 2] = (out[..., 2] - out[..., 1]) % 256
        return out

    def from_coded_colors(self, imgs: np.ndarray) -> np.ndarray:
        if not self.subtract_green:
            return imgs
        out = imgs.astype(np.int64)
        out[..., 0] = (out[..., 0] + out[..., 1]) % 256
        out[..., 2] = (out[..., 2] + out[..., 1]) % 256
        return out

    @classmethod
    def with_context(cls, ph: int, pw: int, channels: int, centered: bool = True,
                     subtract_green: bool | None = None) -> "PatchLayout":
        """A ph x pw patch plus the row above (pw + 2 pixels) and the column to the left.

        ``centered``: every variable is coded as (value - r + 128) mod 256, r = the rounded mean of
        the patch's available context in that channel (128 if none). A latent state then stands
        for a local *deviation* rather than an absolute brightness, so K states resolve the small
        differences of smooth regions instead of spreading 256 levels over K states.
        """
        ctx = [(-1, dx) for dx in range(-1, pw + 1)] + [(dy, -1) for dy in range(ph)]
        inner = [(dy, dx) for dy in range(ph) for dx in range(pw)]
        rows = [(dy, dx, c) for dy, dx in ctx + inner for c in range(channels)]
        sg = channels == 3 if subtract_green is None else subtract_green
        return cls(ph, pw, channels, np.array(rows, dtype=np.int64), centered, sg)

    def center(self, ev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of variable values (R, D), -1 where missing -> (transformed rows, shift (R, D)).

        A coded value y decodes back as (y - shift) mod 256. Integer arithmetic only."""
        if not self.centered:
            return ev, np.zeros_like(ev)
        ch = self.offsets[:, 2]
        ctx = ~self.coded
        ref = np.full((len(ev), self.channels), 128, dtype=np.int64)
        for c in range(self.channels):
            vals = ev[:, ctx & (ch == c)]
            ok = vals >= 0
            n = ok.sum(1)
            tot = np.where(ok, vals, 0).sum(1)
            ref[:, c] = np.where(n > 0, (tot + n // 2) // np.maximum(n, 1), 128)
        shift = 128 - ref[:, ch]
        return np.where(ev >= 0, (ev + shift) % 256, -1), shift


def _count_dtype(precision: int):
    return np.uint16 if precision == 16 else np.uint32


def _fixed_point(p: np.ndarray, precision: int) -> np.ndarray:
    """Probabilities -> counts summing to 2**precision per row, each >= 1 (deterministic rule)."""
    flat = p.reshape(-1, p.shape[-1])
    return bs.quantize_probabilities(flat, precision).astype(_count_dtype(precision)).reshape(p.shape)


@dataclass(eq=False)
class PczModel:
    """A pcz model: an HCLT's structure and fixed-point probabilities, plus its patch layout.

    The coder reads the stored integers (divided by 2**precision, exact), never exp() of
    anything, so every machine rebuilds the same floats. ``hash`` names the model in the files
    it codes.
    """

    layout: PatchLayout
    parent: np.ndarray
    prior: np.ndarray  # (K,) counts out of 2**precision (uint16 at 16 bits, else uint32)
    trans: np.ndarray  # (D, K, K) counts, [v, z_parent, z_v]
    emit: np.ndarray  # (D, K, 256) counts
    name: str = ""
    info: dict = field(default_factory=dict)
    path: str | None = None
    precision: int = 16
    #: Backward adaptation (strength, every, decay) -- see :mod:`models.pc.adapt` -- or None.
    adapt: tuple[float, int, float] | None = None
    _tables: CodingTables | None = field(default=None, repr=False)
    _hash: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_hclt(cls, hclt, layout: PatchLayout, name: str = "", info: dict | None = None,
                  precision: int = MODEL_PRECISION, adapt: tuple[float, int, float] | None = None) -> "PczModel":
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be {_PRECISIONS.start}..{_PRECISIONS.stop - 1} bits")
        trans = np.exp(hclt.log_trans)
        trans[hclt.parent < 0] = 1.0  # the root's matrix is unused
        return cls(layout, np.asarray(hclt.parent, np.int64), _fixed_point(np.exp(hclt.log_prior), precision),
                   _fixed_point(trans, precision), _fixed_point(np.exp(hclt.log_emit), precision), name,
                   dict(info or {}), precision=precision,
                   adapt=None if adapt is None else check_setting(*adapt))

    @property
    def D(self) -> int:
        return len(self.parent)

    @property
    def K(self) -> int:
        return len(self.prior)

    def _arrays(self) -> dict:
        L = self.layout
        arrays = {"format": np.int64(MODEL_FORMAT), "patch": np.array([L.ph, L.pw, L.channels], np.int64),
                  "offsets": L.offsets, "parent": self.parent, "prior": self.prior, "trans": self.trans,
                  "emit": self.emit, "name": np.array(self.name), "info": np.array(json.dumps(self.info, sort_keys=True))}
        if L.centered:
            arrays["centered"] = np.int64(1)
        if L.subtract_green:
            arrays["subtract_green"] = np.int64(1)
        if self.precision != 16:  # absent = 16, so existing 16-bit model files keep their hashes
            arrays["precision"] = np.int64(self.precision)
        if self.adapt is not None:  # absent = a fixed model
            arrays["adapt"] = np.array(self.adapt, np.float64)
        return arrays

    @property
    def hash(self) -> bytes:
        """Content hash: SHA-256 over the arrays decoding depends on (key, dtype, shape, bytes),
        first 8 bytes -- the name and training notes are left out.

        Computed once: a model's arrays are not to be modified after construction."""
        if self._hash is None:
            self._hash = self._content_hash()
        return self._hash

    def _content_hash(self) -> bytes:
        # the legacy rule pcz models were first named by; "name" and "info" are labels, not what
        # decoding depends on
        return modelfile.content_hash(self._arrays(), "pcz-v1", skip=("name", "info"))

    @property
    def tables(self) -> CodingTables:
        if self._tables is None:
            scale = 1.0 / (1 << self.precision)
            self._tables = coding_tables(self.parent, self.prior * scale, self.trans * scale,
                                         self.emit * scale, self.layout.coded)
        return self._tables

    def adapter(self) -> Adapter | None:
        """A fresh :class:`Adapter` for one coding stream, or None for a fixed model."""
        return None if self.adapt is None else Adapter(self.tables, *self.adapt)

    def save(self, path, *, force: bool = False) -> None:
        modelfile.save(path, self._arrays(), force=force)

    @classmethod
    def load(cls, path, *, max_member: int = MAX_MODEL_MEMBER) -> "PczModel":
        """Read a model file: only the arrays a model has, each at most ``max_member`` bytes
        (checked from the zip directory before anything is read)."""
        name = str(path)
        a = modelfile.read(path, MODEL_ARRAYS, what="pcz model file", error=ModelFileError,
                           max_member=max_member, max_total=4 * max_member)
        try:
            return cls._from_arrays(a, name)
        except ModelFileError:
            raise
        except (KeyError, ValueError, TypeError, IndexError) as err:
            raise ModelFileError(f"inconsistent pcz model file ({err})", name) from None

    @classmethod
    def _from_arrays(cls, a: dict, name: str) -> "PczModel":
        if int(a["format"]) != MODEL_FORMAT:
            raise ModelFileError(f"model format {int(a['format'])} is not supported", name)
        ph, pw, ch = (int(v) for v in a["patch"])
        flags = {}
        for key in ("centered", "subtract_green"):
            flags[key] = int(a[key]) if key in a else 0
            if flags[key] not in (0, 1):
                raise ModelFileError(f"bad {key!r} flag", name)
        if flags["subtract_green"] and ch != 3:
            raise ModelFileError("subtract_green needs an RGB model", name)
        layout = PatchLayout(ph, pw, ch, np.asarray(a["offsets"], np.int64), bool(flags["centered"]),
                             bool(flags["subtract_green"]))
        layout.validate(name)
        D = len(layout.offsets)
        parent, prior, trans, emit = a["parent"], a["prior"], a["trans"], a["emit"]
        K = len(prior)
        if not 2 <= K <= 1024:
            raise ModelFileError(f"{K} latent states is out of range", name)
        if parent.shape != (D,) or trans.shape != (D, K, K) or emit.shape != (D, K, 256):
            raise ModelFileError("array shapes disagree with the patch layout", name)
        precision = int(a["precision"]) if "precision" in a else 16
        if precision not in _PRECISIONS or (precision == 16 and "precision" in a):
            raise ModelFileError(f"bad precision {precision}", name)
        dtype = np.dtype(_count_dtype(precision))
        for arr in (prior, trans, emit):
            if arr.dtype != dtype:
                raise ModelFileError(f"{precision}-bit probabilities must be stored as {dtype} counts", name)
        top = 1 << precision
        for label, arr in (("prior", prior), ("transition", trans), ("emission", emit)):
            if (arr == 0).any() or (arr.reshape(-1, arr.shape[-1]).sum(1, dtype=np.int64) != top).any():
                raise ModelFileError(f"{label} rows must be positive counts summing to 2**{precision}", name)
        adapt = None
        if "adapt" in a:
            v = np.asarray(a["adapt"])
            if v.dtype != np.float64 or v.shape != (3,):
                raise ModelFileError("'adapt' must be 3 float64 values (strength, every, decay)", name)
            try:
                adapt = check_setting(*v.tolist())
            except ValueError as err:
                raise ModelFileError(str(err), name) from None
        model = cls(layout, parent.astype(np.int64), prior, trans, emit, str(a["name"]),
                    json.loads(str(a["info"])), name, precision=precision, adapt=adapt)
        try:
            model.tables  # checks the tree
        except ValueError as err:
            raise ModelFileError(str(err), name) from None
        return model


def shipped_model_path(key: str) -> Path:
    return modelfile.shipped_path("pcz_models", SHIPPED[key])


def load_model(spec: str | os.PathLike) -> PczModel:
    """A model by shipped name ('mnist', 'natural-gray', 'natural-rgb') or by path."""
    if isinstance(spec, str) and spec in SHIPPED:
        path = shipped_model_path(spec)
        if not path.exists():
            raise ModelFileError(f"shipped model {spec!r} is not installed (expected {path})")
        return PczModel.load(path)
    if isinstance(spec, str) and not os.path.exists(spec) and not spec.endswith(".npz"):
        raise ModelFileError(f"no shipped model or model file named {spec!r}; shipped models: {', '.join(SHIPPED)}")
    return PczModel.load(spec)


def default_model_for(img: np.ndarray) -> str:
    """The shipped model a plain `pcz compress` uses for this image."""
    if img.ndim == 2 and img.shape == (28, 28):
        return "mnist"
    return "natural-gray" if img.ndim == 2 else "natural-rgb"


# ---------------------------------------------------------------------------------------------
# Tiling: patches of the padded image, grouped by anti-diagonal
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tiling:
    """The patch grid of a padded image, visited by anti-diagonal wavefront.

    Patch (r, c) needs (r, c-1) and (r-1, c+1), both coded one step earlier, so it is coded at
    step ``c + 2r``. A grid one patch wide has no patch at the odd steps; :attr:`steps` lists only
    the steps that hold a patch. A step's index arrays are built when it is coded (:meth:`group`),
    never all at once: they would cost 32 bytes a variable of the whole image up front.
    """

    layout: PatchLayout
    R: int  # patch rows
    C: int  # patch columns

    @property
    def Hp(self) -> int:
        return self.R * self.layout.ph

    @property
    def Wp(self) -> int:
        return self.C * self.layout.pw

    @property
    def steps(self) -> range:
        return range(0, 2 * self.R - 1, 2) if self.C == 1 else range(self.C + 2 * self.R - 2)

    @property
    def widest(self) -> int:
        """Most patches one step holds."""
        return min(self.R, (self.C + 1) // 2)

    def group(self, t: int):
        """Step ``t``'s patches, top row first: (ys, xs, cs, valid), each (P, D)."""
        L = self.layout
        r = np.arange(max(0, -(-(t - self.C + 1) // 2)), min(self.R - 1, t // 2) + 1)
        c = t - 2 * r
        dy, dx, ch = L.offsets.T
        ys = r[:, None] * L.ph + dy[None]
        xs = c[:, None] * L.pw + dx[None]
        valid = (ys >= 0) & (ys < self.Hp) & (xs >= 0) & (xs < self.Wp)
        return np.where(valid, ys, 0), np.where(valid, xs, 0), np.broadcast_to(ch, ys.shape), valid


def _tiling(layout: PatchLayout, H: int, W: int) -> _Tiling:
    return _Tiling(layout, -(-H // layout.ph), -(-W // layout.pw))


def _pad(imgs: np.ndarray, Hp: int, Wp: int) -> np.ndarray:
    """(N, H, W, C) -> (N, Hp, Wp, C) by repeating the last row and column (decoder crops them)."""
    N, H, W, _ = imgs.shape
    return np.pad(imgs, ((0, 0), (0, Hp - H), (0, Wp - W), (0, 0)), mode="edge")


def _code_block(model: PczModel, canvas: np.ndarray, enc: bs.Encoder | None, dec: bs.Decoder | None,
                tiling: _Tiling, progress=None) -> None:
    """Code (or decode into) ``canvas`` (N, Hp, Wp, C): every patch of every image, one stream.

    An adaptive model's tables are updated from each wavefront step's patches once they are
    coded (encoder) or decoded (decoder): the same rows in the same order on both sides.
    ``progress(done, total)`` is called after each wavefront step, if given."""
    adapter = model.adapter()
    tables = model.tables
    N = canvas.shape[0]
    cv = tables.coded_vars
    n_idx = np.arange(N)[:, None, None]
    steps = tiling.steps
    for step, t in enumerate(steps):
        if progress is not None:
            progress(step, len(steps))
        if adapter is not None:
            tables = adapter.tables
        ys, xs, cs, valid = tiling.group(t)
        P = ys.shape[0]
        ev = canvas[n_idx, ys[None], xs[None], cs[None]].astype(np.int64)
        ev = np.where(valid[None], ev, -1).reshape(N * P, -1)
        ev, shift = model.layout.center(ev)
        stepper = Stepper(tables, ev)
        if enc is not None:
            # The encoder knows every value: gather several steps' conditionals and code them in
            # one call (same symbols, same order as the decoder's one-step-at-a-time calls).
            vals = ev[:, cv]
            rows = len(vals)
            per_call = max(1, _ENCODE_BUFFER // (rows * tables.V))
            for k0 in range(0, len(cv), per_call):
                ks = range(k0, min(k0 + per_call, len(cv)))
                qs = np.empty((len(ks), rows, tables.V))
                for j, k in enumerate(ks):
                    qs[j] = stepper.step(vals[:, k - 1] if k else None)
                enc.encode_categorical(vals[:, ks].T.ravel(), qs.reshape(-1, tables.V))
        else:
            vals = np.empty((N * P, len(cv)), dtype=np.int64)
            for k in range(len(cv)):
                q = stepper.step(vals[:, k - 1] if k else None)
                vals[:, k] = dec.decode_categorical(q)
            ev[:, cv] = vals
            vals = ((vals - shift[:, cv]) % 256).reshape(N, P, -1)
            canvas[n_idx, ys[None][..., cv], xs[None][..., cv], cs[None][..., cv]] = vals
        if adapter is not None:
            adapter.observe(ev)


def _as_nhwc(imgs: np.ndarray) -> np.ndarray:
    return imgs[..., None] if imgs.ndim == 3 else imgs


def _check_model_fits(model: PczModel, channels: int, name: str | None = None) -> None:
    if model.layout.channels != channels:
        kind = {1: "gray", 3: "RGB"}
        raise ModelMismatchError(f"model {model.name or model.path!r} codes {kind[model.layout.channels]} images, "
                                 f"this image is {kind[channels]}", name)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    """What compressing produced: the file's bytes and the sizes a benchmark reports."""

    data: bytes
    ideal_bits: float  # -sum(log2 q) under the model's conditionals
    payload_bytes: int
    subpixels: int

    @property
    def bits_per_subpixel(self) -> float:
        return 8 * len(self.data) / self.subpixels

    @property
    def ideal_bits_per_subpixel(self) -> float:
        return self.ideal_bits / self.subpixels


def _header(model: PczModel, H: int, W: int, C: int, count: int | None = None, block: int = 0) -> bs.Header:
    return bs.Header(kind=bs.CodecKind.PCZ, model_hash=model.hash, width=W, height=H, channels=C,
                     count=count, archive=count is not None,
                     params=bs.varint.encode_uvarint(block) if count is not None else b"")


def compress(img: np.ndarray, model: PczModel) -> bytes:
    """Compress one uint8 image (H, W) gray or (H, W, 3) RGB; returns the ``.pcz`` bytes."""
    return compress_ex(img, model).data


def compress_ex(img: np.ndarray, model: PczModel, progress=None) -> Result:
    """:func:`compress` with the sizes a benchmark reports; ``progress(done, total)`` if given."""
    img = check_image(img)
    C = 1 if img.ndim == 2 else 3
    _check_model_fits(model, C)
    H, W = img.shape[:2]
    payload, ideal = _encode_images(model, img[None], _tiling(model.layout, H, W), progress)
    data = bs.pack_items(_header(model, H, W, C), [payload])
    return Result(data, ideal, len(payload), img.size)


def _encode_images(model: PczModel, imgs: np.ndarray, tiling: _Tiling, progress=None) -> tuple[bytes, float]:
    """One stream for same-size images (N, H, W[, 3]); returns (payload, ideal bits)."""
    enc = bs.Encoder()
    coded = model.layout.to_coded_colors(_as_nhwc(imgs))
    _code_block(model, _pad(coded.astype(np.uint8), tiling.Hp, tiling.Wp), enc, None, tiling, progress)
    return enc.to_bytes(), enc.report().ideal_bits


def _read_pcz(data: bytes, name: str | None):
    """Header and items of a container that must be a pcz file with a usable image description."""
    header, items = bs.read_container(data, name=name)
    if header.kind != bs.CodecKind.PCZ:
        raise MalformedError(f"this is a {bs.container.kind_name(header.kind)} file, not pcz", name)
    if header.width is None or header.channels is None:
        raise MalformedError("pcz header lacks the image size or channels", name)
    if header.channels not in (1, 3):
        raise MalformedError(f"pcz codes 1 or 3 channels, the header says {header.channels}", name)
    if header.width == 0 or header.height == 0:
        raise MalformedError(f"declared size {header.width}x{header.height} is empty", name)
    if header.archive and header.count == 0:
        raise MalformedError("archive of 0 images", name)
    return header, items


@dataclass(frozen=True)
class Limits:
    """What a pcz decoder accepts, checked from the header before anything is allocated.

    As Pillow's ``MAX_IMAGE_PIXELS``: a file over a limit is refused with :class:`AbsurdSizeError`
    and decodes if the caller raises that limit (``limits=Limits(max_pixels=...)``; the CLI's
    ``--max-pixels``, ``--max-images``, ``--max-total``, ``--max-ratio``, ``--max-state``).

    ``max_ratio`` bounds the work a few bytes can ask for. The bytes alone give no sound bound: the
    range coder drops trailing zero bytes, and symbols that each sit at the bottom of their
    distribution (symbol 0: a black pixel under the MNIST model) keep the coder's low end at zero,
    so a black MNIST digit, or a thousand of them, codes to an empty payload, and a 34-byte file
    can truly be a black 16384 x 16384 image. So, as zip-bomb guards do, a stream may decode at
    most ``free_subpixels`` plus ``max_ratio`` subpixels a payload byte (an empty payload counts
    one). Real images cost far more than 1/32 byte a subpixel (MNIST 1.19 bits, Kodak 3.15 bits);
    a flat synthetic image past the allowance needs the limit raised. Subpixels are counted as
    decoded: padded to whole patches. The free allowance is what a forged size decodes before its
    payload proves invalid; at 2^14 subpixels that is well under a second with the slowest shipped
    model (a forged MNIST width decodes 2^16 subpixels in up to 1.8 s).
    """

    max_pixels: int = 1 << 26  # one image: 8192 x 8192
    max_images: int = 1 << 24  # images in one archive
    max_total: int = 1 << 28  # decoded subpixels of a whole archive
    max_ratio: float = 32.0  # decoded subpixels per payload byte, beyond free_subpixels
    free_subpixels: int = 1 << 14  # decoded whatever the payload's length: a 128 x 128 gray image
    max_state: int = 1 << 25  # coder state of one wavefront step: patches x variables x states (floats)


DEFAULT_LIMITS = Limits()


def _open(data: bytes, model: PczModel, name: str | None, limits: Limits):
    header, items = _read_pcz(data, name)
    header.require_model(model.hash, name, what="pcz model")
    if header.width * header.height > limits.max_pixels:
        raise AbsurdSizeError(f"declared size {header.width}x{header.height} is over the limit of "
                              f"{limits.max_pixels} pixels (max_pixels)", name)
    _check_model_fits(model, header.channels, name)
    return header, items


def _check_streams(model: PczModel, header: bs.Header, payloads: list, counts: list, name, limits: Limits) -> None:
    """Refuse, before anything is allocated, streams that ask for more work than the limits allow:
    the coder state of one step, and the subpixels each payload's bytes may decode."""
    tiling = _tiling(model.layout, header.height, header.width)
    per_image = tiling.Hp * tiling.Wp * header.channels
    state = max(counts) * tiling.widest * model.D * model.K
    if state > limits.max_state:
        raise AbsurdSizeError(f"{max(counts)} images of {header.width}x{header.height} in one stream need "
                              f"{state} coder state values, over the limit of {limits.max_state} (max_state)", name)
    for payload, n in zip(payloads, counts):
        allowed = limits.free_subpixels + limits.max_ratio * max(1, len(payload))  # an empty stream counts 1 byte
        if n * per_image > allowed:
            raise AbsurdSizeError(f"{n} x {header.width}x{header.height} image(s) from {len(payload)} payload bytes: "
                                  f"more than {limits.max_ratio:g} subpixels a byte (max_ratio)", name)


def check_limits(data: bytes, model: PczModel, name: str | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise :class:`AbsurdSizeError` if decoding ``data`` needs more than ``limits`` allow (and
    any other error the decoder would raise before decoding); decodes nothing."""
    header, items = _open(data, model, name, limits)
    if not header.archive:
        if len(items) != 1:
            raise MalformedError("an archive: use decompress_archive", name)
        _check_streams(model, header, items, [1], name, limits)
        return
    _, _, sizes = _archive_plan(model, header, items, name, limits)
    _check_streams(model, header, items, sizes, name, limits)


def _archive_plan(model: PczModel, header: bs.Header, items: list, name, limits: Limits):
    """An archive's (images, block, images in each block), its count and total size checked."""
    N, block = header.count, _archive_block(header, name)
    if N > limits.max_images:
        raise AbsurdSizeError(f"archive declares {N} images, over the limit of {limits.max_images} (max_images)", name)
    if len(items) != -(-N // block):
        raise MalformedError(f"archive of {N} images in blocks of {block} should hold {-(-N // block)} items", name)
    tiling = _tiling(model.layout, header.height, header.width)
    total = N * tiling.Hp * tiling.Wp * header.channels
    if total > limits.max_total:
        raise AbsurdSizeError(f"archive declares {N} images of {header.width}x{header.height}: {total} subpixels "
                              f"to decode, over the limit of {limits.max_total} (max_total)", name)
    return N, block, [min(block, N - lo) for lo in range(0, N, block)]


def decompress(data: bytes, model: PczModel, name: str | None = None, progress=None,
               limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode a single-image ``.pcz`` file (bytes) to its uint8 array, bit-exact.

    Declared sizes are checked against ``limits`` before anything is allocated."""
    header, items = _open(data, model, name, limits)
    if header.archive or len(items) != 1:
        raise MalformedError("an archive: use decompress_archive", name)
    _check_streams(model, header, items, [1], name, limits)
    return _decode_images(items[0], model, header, 1, name, progress)[0]


def _decode_images(payload: bytes, model: PczModel, header: bs.Header, n: int, name, progress=None) -> np.ndarray:
    H, W, C = header.height, header.width, header.channels
    tiling = _tiling(model.layout, H, W)
    canvas = np.zeros((n, tiling.Hp, tiling.Wp, C), dtype=np.uint8)
    _code_block(model, canvas, None, bs.Decoder(payload, name), tiling, progress)
    out = model.layout.from_coded_colors(canvas[:, :H, :W]).astype(np.uint8, copy=False)
    return out[..., 0] if C == 1 else out


def compress_archive(imgs: np.ndarray, model: PczModel, block: int = ARCHIVE_BLOCK) -> Result:
    """Many same-size images (N, H, W) or (N, H, W, 3) in one file: a whole data set, honestly sized.

    Images are coded ``block`` at a time in one stream per block (one container item each), so
    the per-image cost of terminating a stream and framing an item is shared."""
    imgs = np.asarray(imgs)
    if imgs.dtype != np.uint8 or imgs.ndim not in (3, 4) or len(imgs) == 0:
        raise ValueError("expected a nonempty uint8 array (N, H, W) or (N, H, W, 3)")
    check_image(imgs[0])
    N, H, W = imgs.shape[:3]
    C = 1 if imgs.ndim == 3 else 3
    _check_model_fits(model, C)
    tiling = _tiling(model.layout, H, W)
    payloads, ideal = [], 0.0
    for lo in range(0, N, block):
        payload, bits = _encode_images(model, imgs[lo:lo + block], tiling)
        payloads.append(payload)
        ideal += bits
    data = bs.pack_items(_header(model, H, W, C, count=N, block=block), payloads)
    return Result(data, ideal, sum(map(len, payloads)), imgs.size)


def _archive_block(header: bs.Header, name) -> int:
    try:
        block, used = bs.varint.decode_uvarint(header.params)
    except BitstreamError as err:
        raise err.with_name(name) from None
    if used != len(header.params) or block < 1:
        raise MalformedError("bad archive parameters", name)
    return block


def decompress_archive(data: bytes, model: PczModel, name: str | None = None, index: int | None = None,
                       limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """All images of an archive (N, H, W[, 3]), or only image ``index`` (decoding just its block).

    The count, the images' total size and every block's work are checked against ``limits``
    before anything is allocated."""
    header, items = _open(data, model, name, limits)
    if not header.archive:
        return decompress(data, model, name, limits=limits)[None]
    N, block, sizes = _archive_plan(model, header, items, name, limits)
    if index is not None:
        if not 0 <= index < N:
            raise IndexError(f"image {index} out of range (archive holds {N})")
        b = index // block
        _check_streams(model, header, [items[b]], [sizes[b]], name, limits)
        return _decode_images(items[b], model, header, sizes[b], name)[index - b * block]
    _check_streams(model, header, items, sizes, name, limits)
    shape = (N, header.height, header.width) + ((3,) if header.channels == 3 else ())
    out = np.empty(shape, dtype=np.uint8)
    for lo, payload, n in zip(range(0, N, block), items, sizes):
        out[lo:lo + n] = _decode_images(payload, model, header, n, name)
    return out


def timed_roundtrip(img: np.ndarray, model: PczModel) -> tuple[Result, float, float]:
    """Compress and decompress one image, check it is bit-exact; return (result, encode s, decode s)."""
    import time

    t = time.perf_counter()
    res = compress_ex(img, model)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    back = decompress(res.data, model)
    t_dec = time.perf_counter() - t
    if not np.array_equal(back, img):
        raise AssertionError("pcz round trip is not bit-exact")
    return res, t_enc, t_dec


def file_info(data: bytes, name: str | None = None) -> dict:
    """What a .pcz file says about itself, without needing the model (nothing is decoded)."""
    header, items = _read_pcz(data, name)
    n = header.count if header.archive else 1
    sub = n * header.width * header.height * header.channels
    return {"images": n, "width": header.width, "height": header.height, "channels": header.channels,
            "model_hash": header.model_hash.hex() if header.model_hash else None, "bytes": len(data),
            "payload_bytes": sum(map(len, items)), "bits_per_subpixel": 8 * len(data) / sub}
