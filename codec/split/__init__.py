"""splitcodec: the Entropic Student's bottleneck as a file (Matsubara et al., WACV 2022).

An *edge* device turns an image into a few hundred bytes; a *server* turns those bytes into class
probabilities. The two halves ship as two model files (:mod:`.models`) and share nothing but the
bitstream.

**The bitstream** (one container, ``FORMAT.md`` §2–8): header kind 3 (SPLIT), ``model`` = the edge
model's hash, ``width`` × ``height`` = the latent's spatial size, ``channels`` = the bottleneck
channels C; no params, no count; exactly one ``D`` item, an entropy-layer stream holding the
integer latent q (C, h, w) — ``q = round(y - median_c)`` of the encoder output y — coded
factorized (§10) under the shipped table, element i (C order) under row = its channel. The server
computes ``float32(q) + median_c`` (exactly the value the student's eval forward passes on) and
runs decoder and tail.

**Preprocessing** of a uint8 image on the edge (deterministic; torchvision's usual evaluation
transform in spirit): gray becomes RGB by repetition; the shorter side is resized to
``resize_size`` (longer side ``int(resize_size · long / short)``) with Pillow's bilinear filter
(fixed-point for 8-bit images); a centre crop of ``input_size`` × ``input_size`` is taken at offset
``int(round((side - input_size) / 2))``; pixels / 255 are normalised by ImageNet's mean and std in
float32. A float (3, H, W) tensor is taken as already preprocessed (any H, W ≥ 8).

The package: :mod:`.models` is the two model files (format, saving, loading, content hashes, the
shipped default), the HTTP prediction service over :class:`ServerDecoder` is :mod:`codec.serve.split`. This
module is the edge's encoder and the server's decoder, and re-exports the model names a user
needs, so ``from neural_codecs.codec import split; split.load_edge()`` is all there is to import.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from neural_codecs import bitstream as bs
from neural_codecs.bitstream import AbsurdSizeError, CdfTable, MalformedError, ModelMismatchError

from ..io.images import ImageFormatError, check_image
from .models import (DEFAULT, EDGE_FORMAT, FORMAT_VERSION, IMAGENET_MEAN, IMAGENET_STD, MAX_INPUT_SIDE, SERVER_FORMAT,
                     EdgeModel, ServerModel, SplitModelError, load_edge, load_server, model_path, save_models,
                     shipped_dir)

__all__ = [
    # the edge and the server
    "MAX_ASPECT", "MAX_LATENT_POSITIONS", "MAX_LATENT_VALUE", "EdgeEncoder", "ServerDecoder", "decode_latent",
    "encode_latent", "preprocess",
    # the model files (.models)
    "DEFAULT", "EDGE_FORMAT", "FORMAT_VERSION", "IMAGENET_MEAN", "IMAGENET_STD", "MAX_INPUT_SIDE", "SERVER_FORMAT",
    "EdgeModel", "ServerModel", "SplitModelError", "load_edge", "load_server", "model_path", "save_models",
    "shipped_dir",
]

#: Default bound on a bitstream's declared latent positions (h × w), checked before allocating:
#: 2^18 positions is a 2048 × 2048 input; the decoder's widest activation is then 512 MB.
MAX_LATENT_POSITIONS = 1 << 18
#: Decoded latent values beyond this are not from a real encoder (and would lose float32 exactness).
MAX_LATENT_VALUE = 1 << 20
#: Images more elongated than this are refused (the resize would blow the long side up).
MAX_ASPECT = 32


# ---------------------------------------------------------------------------------------------
# Edge: image -> bytes
# ---------------------------------------------------------------------------------------------


def preprocess(image: np.ndarray, input_size: int, resize_size: int, mean=IMAGENET_MEAN,
               std=IMAGENET_STD, name: str | None = None) -> torch.Tensor:
    """uint8 (H, W[, 3]) image -> float32 (3, input_size, input_size) (see the module docstring)."""
    from PIL import Image

    img = check_image(image, name)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    h, w = img.shape[:2]
    if max(h, w) > MAX_ASPECT * min(h, w):
        raise ImageFormatError(f"{w}x{h} image: aspect ratio beyond {MAX_ASPECT}:1", name)
    if h < w:
        nh, nw = resize_size, int(resize_size * w / h)
    else:
        nh, nw = int(resize_size * h / w), resize_size
    if (nh, nw) != (h, w):
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    top = int(round((nh - input_size) / 2.0))
    left = int(round((nw - input_size) / 2.0))
    crop = img[top:top + input_size, left:left + input_size]
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).to(torch.float32) / 255.0
    m = torch.tensor(mean, dtype=torch.float32).reshape(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).reshape(3, 1, 1)
    return (x - m) / s


def _indexes(C: int, h: int, w: int) -> np.ndarray:
    return np.repeat(np.arange(C, dtype=np.int64), h * w)


def encode_latent(q: np.ndarray, edge: EdgeModel) -> bytes:
    """A splitcodec file holding the integer latent ``q`` (C, h, w) under ``edge``'s table."""
    q = np.asarray(q)
    if q.dtype.kind not in "iu" or q.ndim != 3 or q.shape[0] != edge.config.bottleneck:
        raise ValueError(f"latent must be integers of shape ({edge.config.bottleneck}, h, w)")
    C, h, w = q.shape
    if h < 1 or w < 1:
        raise ValueError("empty latent")
    enc = bs.Encoder()
    enc.encode_factorized(q.astype(np.int64).ravel(), edge.table, _indexes(C, h, w))
    header = bs.Header(kind=bs.CodecKind.SPLIT, model_hash=edge.hash, width=w, height=h, channels=C)
    return bs.pack_items(header, [enc.to_bytes()])


class EdgeEncoder:
    """Image -> splitcodec bytes, with only the edge model (no server weights involved)."""

    def __init__(self, edge: EdgeModel | str | os.PathLike = DEFAULT):
        self.model = edge if isinstance(edge, EdgeModel) else load_edge(edge)

    @property
    def model_hash(self) -> bytes:
        return self.model.hash

    def preprocess(self, image, name: str | None = None) -> torch.Tensor:
        """uint8 image -> preprocessed float tensor; a float (3, H, W) tensor / array passes through."""
        m = self.model
        if isinstance(image, torch.Tensor) or (isinstance(image, np.ndarray) and image.dtype.kind == "f"):
            x = torch.as_tensor(image).to(torch.float32)
            if x.ndim != 3 or x.shape[0] != 3 or not 8 <= min(x.shape[1:]) or max(x.shape[1:]) > MAX_INPUT_SIDE:
                raise ValueError(f"a float input must be (3, H, W) with 8 <= H, W <= {MAX_INPUT_SIDE}, "
                                 f"got {tuple(x.shape)}")
            if not torch.isfinite(x).all():
                raise ValueError("input holds non-finite values")
            return x
        return preprocess(image, m.config.input_size, m.resize_size, m.mean, m.std, name)

    def latent(self, image, name: str | None = None) -> np.ndarray:
        """The integer latent q = round(encoder(x) - median), int64 (C, h, w)."""
        x = self.preprocess(image, name)
        with torch.inference_mode():
            y = self.model.encoder(x[None])[0]
            med = torch.from_numpy(self.model.medians).reshape(-1, 1, 1)
            q = torch.round(y - med)
        if not torch.isfinite(q).all() or q.abs().max() >= MAX_LATENT_VALUE:
            raise ValueError("the encoder produced a latent out of range (non-finite input or weights?)")
        return q.to(torch.int64).numpy()

    def encode(self, image, name: str | None = None) -> bytes:
        """uint8 (H, W, 3) / (H, W) image, or a preprocessed float (3, H, W) tensor -> bytes."""
        return encode_latent(self.latent(image, name), self.model)


# ---------------------------------------------------------------------------------------------
# Server: bytes -> prediction
# ---------------------------------------------------------------------------------------------


def decode_latent(data: bytes, model: EdgeModel | ServerModel, name: str | None = None, *,
                  max_positions: int = MAX_LATENT_POSITIONS) -> np.ndarray:
    """The integer latent (C, h, w) of a splitcodec file, checked against ``model`` (edge or server)."""
    expected = model.hash if isinstance(model, EdgeModel) else model.edge_hash
    return _decode_latent(data, model.table, expected, model.config.bottleneck, name, max_positions)


def _decode_latent(data, table: CdfTable, expected_hash: bytes, C: int, name, max_positions) -> np.ndarray:
    header, items = bs.read_container(bytes(data), name=name)
    if header.kind != bs.CodecKind.SPLIT:
        raise MalformedError(f"this is a {bs.container.kind_name(header.kind)} file, not splitcodec", name)
    header.require_model(expected_hash, name, what="splitcodec edge model")
    if header.width is None or header.channels is None:
        raise MalformedError("splitcodec header lacks the latent size or channels", name)
    if header.channels != C:
        raise MalformedError(f"header declares {header.channels} latent channels, the model has {C}", name)
    h, w = header.height, header.width
    if h < 1 or w < 1 or h * w > max_positions:
        raise AbsurdSizeError(f"declared latent size {w}x{h} is out of range (at most {max_positions} positions)",
                              name)
    if header.archive or header.count is not None or header.params or header.fps is not None:
        raise MalformedError("unexpected header fields for a splitcodec file", name)
    if len(items) != 1:
        raise MalformedError(f"expected one item, found {len(items)}", name)
    q = bs.Decoder(items[0], name).decode_factorized(table, _indexes(C, h, w))
    if np.abs(q).max() >= MAX_LATENT_VALUE:
        raise MalformedError("decoded latent values out of range (corrupt payload)", name)
    return q.reshape(C, h, w)


class ServerDecoder:
    """splitcodec bytes -> ``{"logits", "topk", "top1", "index", "model"}``.

    ``edge`` (optional) pins the pairing: an :class:`EdgeModel` (or its path), its 8-byte hash (or
    hex), or a :class:`~bitstream.CdfTable`; each must match what the server model was saved with,
    else :class:`~bitstream.ModelMismatchError`. Safe to call from several threads at once.
    """

    def __init__(self, server: ServerModel | str | os.PathLike = DEFAULT, edge=None, *, topk: int = 5,
                 max_positions: int = MAX_LATENT_POSITIONS):
        self.model = server if isinstance(server, ServerModel) else load_server(server)
        self.topk = max(1, min(int(topk), len(self.model.class_names)))
        self.max_positions = int(max_positions)
        self.table = self.model.table
        if isinstance(edge, (str, os.PathLike)) and not _is_hex_hash(edge):
            edge = load_edge(edge)
        if isinstance(edge, EdgeModel):
            self._require_pair(edge.hash, f"edge model {edge.path or ''}".strip())
            if edge.table_bytes != self.model.table_bytes or not np.array_equal(edge.medians, self.model.medians):
                raise ModelMismatchError("the edge model's prior differs from the server's copy", self.model.path)
        elif isinstance(edge, CdfTable):
            if edge.to_bytes() != self.model.table_bytes:
                raise ModelMismatchError("the given CDF table is not the one the server model was saved with",
                                         self.model.path)
            self.table = edge
        elif isinstance(edge, (bytes, str)):
            self._require_pair(bytes.fromhex(edge) if isinstance(edge, str) else bytes(edge), "edge model hash")
        elif edge is not None:
            raise TypeError("edge must be an EdgeModel, a path, a hash or a CdfTable")
        self._med = torch.from_numpy(self.model.medians).reshape(1, -1, 1, 1)

    def _require_pair(self, h: bytes, what: str) -> None:
        if h != self.model.edge_hash:
            raise ModelMismatchError(f"{what} {h.hex()} is not the one this server model pairs with "
                                     f"({self.model.edge_hash.hex()})", self.model.path)

    @property
    def model_hash(self) -> bytes:
        """The edge model hash every accepted bitstream must name."""
        return self.model.edge_hash

    def decode_latent(self, data: bytes, name: str | None = None) -> np.ndarray:
        return _decode_latent(data, self.table, self.model.edge_hash, self.model.config.bottleneck, name,
                              self.max_positions)

    def logits(self, q: np.ndarray) -> np.ndarray:
        """Integer latent(s) (C, h, w) or (N, C, h, w) -> float32 logits (num_classes,) or (N, …)."""
        q = np.asarray(q)
        single = q.ndim == 3
        qt = torch.from_numpy(q[None] if single else q)
        with torch.inference_mode():
            y_hat = qt.to(torch.float32) + self._med
            logits = self.model.tail(self.model.decoder(y_hat))["logits"]
        out = logits.numpy()
        return out[0] if single else out

    def predict_latent(self, q: np.ndarray) -> dict:
        logits = self.logits(q)
        z = logits.astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")[: self.topk]
        names = self.model.class_names
        topk = [(names[i], float(p[i])) for i in order]
        return {"logits": logits, "topk": topk, "top1": names[order[0]], "index": int(order[0]),
                "model": self.model.edge_hash.hex()}

    def decode(self, data: bytes, name: str | None = None) -> dict:
        """Bytes -> prediction. Bad bytes raise :class:`~bitstream.BitstreamError` subclasses only."""
        return self.predict_latent(self.decode_latent(data, name))


def _is_hex_hash(s) -> bool:
    if not isinstance(s, str) or len(s) != 16:
        return False
    try:
        bytes.fromhex(s)
        return True
    except ValueError:
        return False
