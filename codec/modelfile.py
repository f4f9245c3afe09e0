"""Model files, one way for every codec: safe reading, one content hash, saving, shipped models.

A model file is an ``.npz`` of named arrays (never pickle). What names a model inside a bitstream
is its **content hash**, the first 8 bytes of SHA-256 over its arrays' canonical bytes
(``FORMAT.md`` §15), so re-saving a model (another zip layout, compression on or off) keeps its
name, and labels the rule leaves out (a pcz model's name and training notes) can change freely.

- :func:`read` checks member names and declared sizes from the zip directory before any member is
  read (:func:`neural_codecs.bitstream.npzfile.read_npz`).
- :func:`content_hash` is the one hash rule; ``legacy="pcz-v1"`` is the rule pcz's first models
  were named by, kept so that shipped pcz models and the files made with them keep their names.
- :func:`save` writes a compressed ``.npz`` atomically.
- :func:`shipped_path` finds a model shipped inside the package by file name.
"""
from __future__ import annotations

import io
import os
from importlib import resources
from pathlib import Path
from typing import Iterable

import numpy as np

from neural_codecs import bitstream as bs
from neural_codecs.bitstream import BitstreamError
from neural_codecs.bitstream.npzfile import MAX_MEMBER, MAX_TOTAL, read_npz

#: Hash rules: the canonical one and the legacy pcz one (see :func:`canonical_bytes`).
RULES = ("canonical", "pcz-v1")


def canonical_bytes(arrays: dict[str, np.ndarray], rule: str = "canonical", skip: Iterable[str] = ()) -> bytes:
    """The bytes a content hash covers: for each key in sorted order (except ``skip``), a key line
    and then the array's bytes in C order. The key line is ``key NUL dtype NUL [shape] NUL``
    (``canonical``) or ``key|dtype|(shape)|`` (``pcz-v1``), with numpy's ``dtype.str`` (``<f4``)
    and the shape written as a Python list or tuple; a scalar counts as shape ``(1,)``, as numpy's
    ``ascontiguousarray`` makes it (the shipped models were hashed so)."""
    if rule not in RULES:
        raise ValueError(f"unknown hash rule {rule!r}")
    skip = set(skip)
    out = bytearray()
    for key in sorted(arrays):
        if key in skip:
            continue
        a = np.ascontiguousarray(arrays[key])
        if rule == "canonical":
            out += f"{key}\0{a.dtype.str}\0{list(a.shape)}\0".encode()
        else:
            out += f"{key}|{a.dtype.str}|{a.shape}|".encode()
        out += a.tobytes()
    return bytes(out)


def content_hash(arrays: dict[str, np.ndarray], rule: str = "canonical", skip: Iterable[str] = ()) -> bytes:
    """The 8-byte name of a model in every bitstream (:func:`neural_codecs.bitstream.model_hash`
    of :func:`canonical_bytes`)."""
    return bs.model_hash(canonical_bytes(arrays, rule, skip))


def read(path: str | os.PathLike, names: Iterable[str] = (), prefixes: tuple[str, ...] = (), *, what: str,
         error: type[BitstreamError] = BitstreamError, max_member: int = MAX_MEMBER,
         max_total: int = MAX_TOTAL) -> dict[str, np.ndarray]:
    """A model file's arrays: only ``names`` and keys starting with ``prefixes``, each at most
    ``max_member`` declared bytes, checked before anything is read; problems raise ``error``."""
    return read_npz(path, names, prefixes, what=what, error=error, max_member=max_member, max_total=max_total)


def save(path: str | os.PathLike, arrays: dict[str, np.ndarray], *, force: bool = False) -> None:
    """Write ``arrays`` as a compressed ``.npz``, atomically (never over an existing file without
    ``force``)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    bs.atomic_write(path, buf.getvalue(), force=force)


def shipped_path(folder: str, file: str) -> Path:
    """Where the package keeps a shipped model file (``folder`` inside ``neural_codecs.codec``)."""
    return Path(str(resources.files(__package__) / folder / file))
