"""Reading model files (``.npz``) without trusting them.

``np.load`` reads whatever a file holds: an unknown array of any size is decompressed before the
caller can refuse it, a member's ``.npy`` header may declare a shape far larger than its bytes
(numpy allocates the declared size), and bytes that are neither zip nor ``.npy`` draw numpy's
advice to enable pickle. :func:`read_npz` instead reads the zip's central directory first and
refuses, before reading any member, names the caller does not expect and declared (uncompressed)
sizes over a bound; then each member's ``.npy`` header must describe exactly the bytes that
follow. Pickled (object) arrays are refused, never loaded. Every problem is one line, raised as
the caller's :class:`BitstreamError` subclass.
"""
from __future__ import annotations

import ast
import os
import zipfile
from typing import Iterable

import numpy as np

from .errors import BitstreamError

#: Default bound on one member's declared uncompressed size (bytes).
MAX_MEMBER = 1 << 28
#: Default bound on all members' declared uncompressed sizes together (bytes).
MAX_TOTAL = 1 << 30
#: Default bound on the number of members.
MAX_MEMBERS = 4096
_NPY_MAGIC = b"\x93NUMPY"


def read_npz(path: str | os.PathLike, names: Iterable[str] = (), prefixes: tuple[str, ...] = (), *,
             what: str = "model file", error: type[BitstreamError] = BitstreamError,
             max_member: int = MAX_MEMBER, max_total: int = MAX_TOTAL,
             max_members: int = MAX_MEMBERS) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` at ``path``, each key in ``names`` or starting with one of ``prefixes``.

    Raises ``error`` (naming ``path``) for anything else; a missing file or a folder raises the
    usual ``OSError``. Checks names, count and declared sizes from the zip directory before any
    member is read, so a refused file costs little more than its directory.
    """
    name = str(path)
    allowed = frozenset(names)

    def fail(message: str):
        return error(message, name)

    if os.path.isdir(path):
        raise IsADirectoryError(21, "Is a directory", name)
    try:
        zf = zipfile.ZipFile(path)
    except (FileNotFoundError, PermissionError):
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as err:
        raise fail(f"not a {what} (not an npz archive: {err})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise fail(f"{len(infos)} members, over the limit of {max_members}")
        total, keys = 0, set()
        for info in infos:
            key = info.filename[:-4] if info.filename.endswith(".npy") else None
            if key is None or not (key in allowed or key.startswith(prefixes)):
                raise fail(f"unexpected member {info.filename[:80]!r} in a {what}")
            if key in keys:
                raise fail(f"member {info.filename[:80]!r} appears twice")
            keys.add(key)
            if info.file_size > max_member:
                raise fail(f"member {info.filename[:80]!r} declares {info.file_size} bytes, over the limit of {max_member}")
            total += info.file_size
        if total > max_total:
            raise fail(f"members declare {total} bytes together, over the limit of {max_total}")
        out = {}
        for info in infos:
            try:
                raw = zf.read(info)  # at most info.file_size bytes: zipfile stops there and checks the CRC
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
                    NotImplementedError, RuntimeError) as err:
                raise fail(f"member {info.filename[:80]!r} cannot be read ({err})") from None
            except Exception as err:  # a damaged deflate stream raises zlib.error
                raise fail(f"member {info.filename[:80]!r} cannot be read ({type(err).__name__}: {err})") from None
            out[info.filename[:-4]] = _parse_npy(raw, info.filename[:80], fail)
    return out


def _parse_npy(raw: bytes, member: str, fail) -> np.ndarray:
    """One ``.npy`` member's array; its header must describe exactly the bytes that follow."""
    if not raw.startswith(_NPY_MAGIC) or len(raw) < 10:
        raise fail(f"member {member!r} is not a .npy array")
    major = raw[6]
    if major == 1:
        hlen, start = int.from_bytes(raw[8:10], "little"), 10
    elif major in (2, 3):
        hlen, start = int.from_bytes(raw[8:12], "little"), 12
    else:
        raise fail(f"member {member!r}: .npy version {major} is not supported")
    if start + hlen > len(raw):
        raise fail(f"member {member!r} ends inside its header")
    try:
        head = ast.literal_eval(raw[start:start + hlen].decode("latin1" if major < 3 else "utf8"))
        dtype = np.dtype(head["descr"]) if isinstance(head["descr"], str) else None
        shape = tuple(int(d) for d in head["shape"])
        fortran = bool(head["fortran_order"])
    except (ValueError, SyntaxError, TypeError, KeyError, UnicodeDecodeError, MemoryError, RecursionError):
        raise fail(f"member {member!r} has a damaged .npy header") from None
    if dtype is None or dtype.hasobject or dtype.itemsize == 0:
        raise fail(f"member {member!r} is not a plain numeric or text array (pickled objects are never loaded)")
    if any(d < 0 for d in shape):
        raise fail(f"member {member!r} declares a negative shape")
    count = 1
    for d in shape:
        count *= d
    body = raw[start + hlen:]
    if count * dtype.itemsize != len(body):
        raise fail(f"member {member!r} declares {shape} {dtype} but holds {len(body)} bytes")
    arr = np.frombuffer(body, dtype=dtype, count=count).copy()
    return arr.reshape(shape, order="F" if fortran else "C")
