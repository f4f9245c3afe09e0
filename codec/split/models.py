"""splitcodec model files: the edge model and the server model, saved, loaded, and named by their
content hash.

The two halves of a trained Entropic Student ship as two model files and share nothing but the
bitstream:

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

Both are read through :mod:`codec.modelfile` (member names and sizes checked from the zip directory
before anything is read); their torch modules are built on the meta device and every key, shape
and dtype is checked before the file's arrays become the weights. ``"default"`` names the models
shipped in the package (``shipped/``, made by ``tools/train_split_defaults.py``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neural_codecs.bitstream import BitstreamError, CdfTable
from neural_codecs.models.split import EntropicStudent, StudentConfig, build_decoder, build_encoder, build_tail

from .. import modelfile

EDGE_FORMAT = "splitcodec-edge"
SERVER_FORMAT = "splitcodec-server"
FORMAT_VERSION = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_INPUT_SIDE = 8192


class SplitModelError(BitstreamError):
    """A splitcodec model file is missing parts, inconsistent, or of the wrong kind."""


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
        tail = _load_module(lambda: build_tail(cfg), a, "tail", name)
        med, table, tb = _parse_prior(a, cfg, name)
        names = a.get("class_names")
        if names is None or names.dtype.kind != "U" or names.shape != (cfg.num_classes,):
            raise SplitModelError(f"class_names must be {cfg.num_classes} strings", name)
        return cls(cfg, dec, tail, med, table, tb, [str(s) for s in names], edge_hash, name)


def save_models(student: EntropicStudent, class_names, edge_path, server_path, *, force: bool = False,
                resize_size: int | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> tuple[EdgeModel, ServerModel]:
    """Write a trained student as an edge file and a server file (atomically); return both models.

    The CDF table is computed here, once, from the student's learned prior. ``mean``/``std``: the
    edge's input normalisation (a student of EfficientNet-Lite0 takes RGB in [0, 1]: 0 and 1)."""
    edge = EdgeModel.from_student(student, resize_size, mean, std)
    server = ServerModel.from_student(student, class_names, edge)
    edge.save(edge_path, force=force)
    server.save(server_path, force=force)
    return edge, server


#: The name that picks the models shipped in the package (``tools/train_split_defaults.py``).
DEFAULT = "default"


def shipped_dir() -> Path:
    return modelfile.shipped_path("split/shipped", "")


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
