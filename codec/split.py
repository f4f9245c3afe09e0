"""splitcodec: the Entropic Student's bottleneck as a file (Matsubara et al., WACV 2022).

An *edge* device turns an image into a few hundred bytes; a *server* turns those bytes into class
probabilities. The two halves ship as two model files and share nothing but the bitstream:

- **edge model** (``.npz``, no pickle): ``config`` (UTF-8 JSON as uint8: the
  :class:`~models.split.StudentConfig`, ``resize_size``, ``mean``, ``std``), ``encoder.*`` (the
  student encoder's float32 weights, PyTorch names), ``medians`` (float32, one per latent channel)
  and ``cdf_table`` (uint8: the prior as a serialised :class:`~bitstream.CdfTable`,
  ``FORMAT.md`` §11, built once by the trainer and never recomputed). Its **content hash**
  (:func:`modelfile.content_hash`, the canonical rule of ``FORMAT.md`` §15: for each key in sorted
  order ``key NUL dtype NUL shape NUL`` then the array's bytes, C order) names it in every bitstream.
- **server model** (``.npz``): ``config`` (the student config and ``edge_model``, the hex hash of
  the edge model it pairs with), ``decoder.*``, ``tail.*`` (the teacher's layer2 … fc under
  torchvision names), ``class_names`` (unicode array), and copies of ``medians`` and
  ``cdf_table``, so the server needs nothing from the edge file.

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
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neural_codecs import bitstream as bs
from neural_codecs.bitstream import AbsurdSizeError, BitstreamError, CdfTable, MalformedError, ModelMismatchError
from neural_codecs.models.split import EntropicStudent, ResNetTail, StudentConfig, build_decoder, build_encoder

from . import modelfile
from .images import ImageFormatError, check_image

EDGE_FORMAT = "splitcodec-edge"
SERVER_FORMAT = "splitcodec-server"
FORMAT_VERSION = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Default bound on a bitstream's declared latent positions (h × w), checked before allocating:
#: 2^18 positions is a 2048 × 2048 input; the decoder's widest activation is then 512 MB.
MAX_LATENT_POSITIONS = 1 << 18
#: Decoded latent values beyond this are not from a real encoder (and would lose float32 exactness).
MAX_LATENT_VALUE = 1 << 20
MAX_INPUT_SIDE = 8192
#: Images more elongated than this are refused (the resize would blow the long side up).
MAX_ASPECT = 32


class SplitModelError(BitstreamError):
    """A splitcodec model file is missing parts, inconsistent, or of the wrong kind."""


# ---------------------------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------------------------


def _json_array(doc: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), dtype=np.uint8).copy()


def _state_arrays(module: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def _read_npz(path, what: str) -> dict[str, np.ndarray]:
    """The model file's arrays. Names no splitcodec model file has, and oversized members, are
    refused from the zip directory before any member is read (:func:`modelfile.read`); an edge
    file given for a server one (or back) is then named by its config."""
    return modelfile.read(path, {"config", "medians", "cdf_table", "class_names"}, ("encoder.", "decoder.", "tail."),
                          what=f"{what} file", error=SplitModelError)


def _parse_config(a: dict, fmt: str, name: str) -> tuple[dict, StudentConfig]:
    if "config" not in a:
        raise SplitModelError(f"no config: not a {fmt} file", name)
    raw = a["config"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise SplitModelError("config must be UTF-8 JSON bytes", name)
    try:
        doc = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SplitModelError(f"config is not JSON ({err})", name) from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        got = doc.get("format") if isinstance(doc, dict) else None
        raise SplitModelError(f"this is a {got or 'unknown'} file, expected {fmt}", name)
    if doc.get("version") != FORMAT_VERSION:
        raise SplitModelError(f"{fmt} version {doc.get('version')} is not supported", name)
    try:
        cfg = StudentConfig(**doc["student"])
    except (KeyError, TypeError, ValueError) as err:
        raise SplitModelError(f"bad student config ({err})", name) from None
    return doc, cfg


def _load_module(build, a: dict, prefix: str, name: str) -> nn.Module:
    """Build on the meta device (no allocation), check every key / shape / dtype, then adopt the
    file's arrays as the weights."""
    with torch.device("meta"):
        module = build()
    expected = module.state_dict()
    given = {k[len(prefix) + 1:]: v for k, v in a.items() if k.startswith(prefix + ".")}
    missing, extra = set(expected) - set(given), set(given) - set(expected)
    if missing or extra:
        some = sorted(missing)[:3] or sorted(extra)[:3]
        raise SplitModelError(f"{prefix} weights do not match the config ({len(missing)} missing, "
                              f"{len(extra)} unexpected, e.g. {', '.join(some)})", name)
    state = {}
    for k, t in expected.items():
        v = given[k]
        want = np.int64 if t.dtype == torch.int64 else np.float32
        if tuple(v.shape) != tuple(t.shape) or v.dtype != want:
            raise SplitModelError(f"{prefix}.{k}: {v.dtype}{list(v.shape)}, expected "
                                  f"{np.dtype(want)}{list(t.shape)}", name)
        if want is np.float32 and not np.isfinite(v).all():
            raise SplitModelError(f"{prefix}.{k} holds non-finite values", name)
        state[k] = torch.from_numpy(np.array(v, copy=True))
    module.load_state_dict(state, assign=True)
    return module.eval().requires_grad_(False)


def _parse_prior(a: dict, cfg: StudentConfig, name: str) -> tuple[np.ndarray, CdfTable, bytes]:
    for key in ("medians", "cdf_table"):
        if key not in a:
            raise SplitModelError(f"missing array {key!r}", name)
    med = a["medians"]
    if med.dtype != np.float32 or med.shape != (cfg.bottleneck,) or not np.isfinite(med).all():
        raise SplitModelError(f"medians must be {cfg.bottleneck} finite float32 values", name)
    raw = a["cdf_table"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise SplitModelError("cdf_table must be bytes (uint8)", name)
    table_bytes = raw.tobytes()
    table, used = CdfTable.from_bytes(table_bytes, name)
    if used != len(table_bytes) or table.rows != cfg.bottleneck:
        raise SplitModelError(f"cdf_table must hold exactly {cfg.bottleneck} rows", name)
    return med.copy(), table, table_bytes


def _student_prior(student: EntropicStudent) -> tuple[np.ndarray, CdfTable, bytes]:
    eb = student.entropy_bottleneck
    table = eb.cdf_table()
    med = eb.medians.detach().cpu().numpy().astype(np.float32)
    return med, table, table.to_bytes()


@dataclass(eq=False)
class EdgeModel:
    """What the edge needs: preprocessing, the encoder, the medians and the integer prior table."""

    config: StudentConfig
    encoder: nn.Module
    medians: np.ndarray
    table: CdfTable
    table_bytes: bytes
    resize_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    path: str | None = None
    _hash: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_student(cls, student: EntropicStudent, resize_size: int | None = None,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD) -> "EdgeModel":
        """The edge half of a trained student (computes its CDF table now; a copy of the encoder)."""
        import copy

        cfg = student.config
        med, table, tb = _student_prior(student)
        rs = resize_size or int(round(cfg.input_size * 256 / 224))
        enc = copy.deepcopy(student.encoder).cpu().eval().requires_grad_(False)
        model = cls(cfg, enc, med, table, tb, rs, tuple(map(float, mean)), tuple(map(float, std)))
        model._validate_preprocessing(None)
        return model

    def _validate_preprocessing(self, name) -> None:
        ok = (isinstance(self.resize_size, int) and self.config.input_size <= self.resize_size <= MAX_INPUT_SIDE
              and len(self.mean) == 3 and len(self.std) == 3
              and all(np.isfinite(v) for v in self.mean) and all(np.isfinite(v) and v > 0 for v in self.std))
        if not ok:
            raise SplitModelError("bad preprocessing settings (resize_size, mean, std)", name)

    def arrays(self) -> dict[str, np.ndarray]:
        doc = {"format": EDGE_FORMAT, "version": FORMAT_VERSION, "student": self.config.to_dict(),
               "resize_size": self.resize_size, "mean": list(self.mean), "std": list(self.std)}
        return {"config": _json_array(doc), **_state_arrays(self.encoder, "encoder"),
                "medians": np.asarray(self.medians, np.float32),
                "cdf_table": np.frombuffer(self.table_bytes, dtype=np.uint8).copy()}

    @property
    def hash(self) -> bytes:
        """8-byte content hash that names this model in bitstreams."""
        if self._hash is None:
            self._hash = modelfile.content_hash(self.arrays())
        return self._hash

    def save(self, path, *, force: bool = False) -> None:
        modelfile.save(path, self.arrays(), force=force)

    @classmethod
    def load(cls, path) -> "EdgeModel":
        name = str(path)
        a = _read_npz(path, "splitcodec edge model")
        doc, cfg = _parse_config(a, EDGE_FORMAT, name)
        extra = set(a) - {"config", "medians", "cdf_table"} - {k for k in a if k.startswith("encoder.")}
        if extra:
            raise SplitModelError(f"unexpected arrays {sorted(extra)[:3]}", name)
        enc = _load_module(lambda: build_encoder(cfg), a, "encoder", name)
        med, table, tb = _parse_prior(a, cfg, name)
        try:
            rs = doc["resize_size"]
            if type(rs) is not int:
                raise TypeError("resize_size must be an integer")
            mean, std = tuple(float(v) for v in doc["mean"]), tuple(float(v) for v in doc["std"])
            model = cls(cfg, enc, med, table, tb, rs, mean, std, name)
        except (KeyError, TypeError, ValueError) as err:
            raise SplitModelError(f"bad preprocessing settings ({err})", name) from None
        model._validate_preprocessing(name)
        model._hash = modelfile.content_hash(a)
        return model


@dataclass(eq=False)
class ServerModel:
    """What the server needs: decoder, teacher tail, class names, and the prior to decode with."""

    config: StudentConfig
    decoder: nn.Module
    tail: nn.Module
    medians: np.ndarray
    table: CdfTable
    table_bytes: bytes
    class_names: list[str]
    edge_hash: bytes
    path: str | None = None

    @classmethod
    def from_student(cls, student: EntropicStudent, class_names, edge: EdgeModel) -> "ServerModel":
        """The server half of ``student``, paired with ``edge`` (whose prior it copies)."""
        import copy

        names = [str(c) for c in class_names]
        if len(names) != student.config.num_classes:
            raise ValueError(f"{len(names)} class names for {student.config.num_classes} classes")
        dec = copy.deepcopy(student.decoder).cpu().eval().requires_grad_(False)
        tail = copy.deepcopy(student.tail).cpu().eval().requires_grad_(False)
        return cls(student.config, dec, tail, edge.medians.copy(), edge.table, edge.table_bytes, names, edge.hash)

    def arrays(self) -> dict[str, np.ndarray]:
        doc = {"format": SERVER_FORMAT, "version": FORMAT_VERSION, "student": self.config.to_dict(),
               "edge_model": self.edge_hash.hex()}
        return {"config": _json_array(doc), **_state_arrays(self.decoder, "decoder"), **_state_arrays(self.tail, "tail"),
                "medians": np.asarray(self.medians, np.float32),
                "cdf_table": np.frombuffer(self.table_bytes, dtype=np.uint8).copy(),
                "class_names": np.array(self.class_names, dtype=str)}

    def save(self, path, *, force: bool = False) -> None:
        modelfile.save(path, self.arrays(), force=force)

    @classmethod
    def load(cls, path) -> "ServerModel":
        name = str(path)
        a = _read_npz(path, "splitcodec server model")
        doc, cfg = _parse_config(a, SERVER_FORMAT, name)
        try:
            edge_hash = bytes.fromhex(doc["edge_model"])
            if len(edge_hash) != 8:
                raise ValueError("length")
        except (KeyError, TypeError, ValueError):
            raise SplitModelError("config lacks a valid edge_model hash", name) from None
        known = {"config", "medians", "cdf_table", "class_names"}
        extra = {k for k in a if k not in known and not k.startswith(("decoder.", "tail."))}
        if extra:
            raise SplitModelError(f"unexpected arrays {sorted(extra)[:3]}", name)
        dec = _load_module(lambda: build_decoder(cfg), a, "decoder", name)
        tail = _load_module(lambda: ResNetTail(cfg.arch, cfg.num_classes, cfg.base_width), a, "tail", name)
        med, table, tb = _parse_prior(a, cfg, name)
        names = a.get("class_names")
        if names is None or names.dtype.kind != "U" or names.shape != (cfg.num_classes,):
            raise SplitModelError(f"class_names must be {cfg.num_classes} strings", name)
        return cls(cfg, dec, tail, med, table, tb, [str(s) for s in names], edge_hash, name)


def save_models(student: EntropicStudent, class_names, edge_path, server_path, *, force: bool = False,
                resize_size: int | None = None) -> tuple[EdgeModel, ServerModel]:
    """Write a trained student as an edge file and a server file (atomically); return both models.

    The CDF table is computed here, once, from the student's learned prior."""
    edge = EdgeModel.from_student(student, resize_size)
    server = ServerModel.from_student(student, class_names, edge)
    edge.save(edge_path, force=force)
    server.save(server_path, force=force)
    return edge, server


#: The name that picks the models shipped in the package (``tools/train_split_defaults.py``).
DEFAULT = "default"


def shipped_dir() -> Path:
    return modelfile.shipped_path("split_models", "")


def model_path(spec, file: str):
    """``spec`` as a path: the shipped ``file`` (``edge.npz`` / ``server.npz``) for ``"default"``."""
    if isinstance(spec, str) and spec == DEFAULT:
        path = shipped_dir() / file
        if not path.exists():
            raise SplitModelError(f"the shipped {file} is not installed (expected {path})")
        return path
    return spec


def load_edge(path=DEFAULT) -> EdgeModel:
    """An edge model file, or the shipped one for ``"default"`` (raises :class:`SplitModelError`
    for anything but a valid one)."""
    return EdgeModel.load(model_path(path, "edge.npz"))


def load_server(path=DEFAULT) -> ServerModel:
    """A server model file, or the shipped one for ``"default"`` (raises :class:`SplitModelError`
    for anything but a valid one)."""
    return ServerModel.load(model_path(path, "server.npz"))


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
