"""pcz model files: a Hidden Chow-Liu Tree's structure and fixed-point probabilities, plus the
patch layout it codes.

A model file is an ``.npz`` of named arrays (:data:`MODEL_ARRAYS`, never pickle), read through
:mod:`codec.modelfile` (member names and sizes checked before anything is read). Probabilities are
stored as integer counts out of ``2**precision``, so every machine rebuilds the same floats and
decoding is bit-exact; the file's content hash (the legacy ``pcz-v1`` rule of ``FORMAT.md`` §15)
names the model in every ``.pcz`` file. :class:`PatchLayout` says which pixel each model variable
stands for (a patch and its decoded context) and holds the reversible colour transform (RGB coded
as R - G, G, B - G) and the centring of values on their context. Shipped models are found by name
(:data:`SHIPPED`, :func:`load_model`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neural_codecs import bitstream as bs
from neural_codecs.bitstream import BitstreamError
from neural_codecs.models.pc.adapt import Adapter, check_setting
from neural_codecs.models.pc.coder import CodingTables, coding_tables

from .. import modelfile

#: Fixed-point precision (bits) of the probabilities in a newly made model file: every stored
#: probability is a count out of 2**MODEL_PRECISION, at least 1. 20 bits, not 16: at 16 bits each
#: of a row's 256 emission entries holds >= 1/65536, mass taken from the near-certain values that
#: most pixels have, which costs MNIST 0.004 bits/pixel; at 20 bits that cost is 0.0001.
MODEL_PRECISION = 20
#: Precisions a model file may declare; a file without the ``precision`` entry is 16 (uint16).
_PRECISIONS = range(16, 25)
MODEL_FORMAT = 1
#: Backward adaptation of new patch models (strength, every, decay); see models/pc/adapt.py.
DEFAULT_ADAPT = (10.0, 128, 0.97)
SHIPPED = {"mnist": "mnist.npz", "natural-gray": "natural_gray.npz", "natural-rgb": "natural_rgb.npz"}
#: The arrays a model file may hold; any other member is refused before anything is read.
MODEL_ARRAYS = frozenset({"format", "patch", "offsets", "parent", "prior", "trans", "emit", "name", "info",
                          "centered", "subtract_green", "precision", "adapt"})
#: Largest array (declared uncompressed bytes) a model file may hold: 8x the shipped MNIST
#: model's emission table (32 MB).
MAX_MODEL_MEMBER = 1 << 28


class ModelFileError(BitstreamError):
    """A pcz model file is missing, unreadable or inconsistent."""



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
    return modelfile.shipped_path("pcz/shipped", SHIPPED[key])


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
