"""Safe file output and size checks shared by every codec's command line.

- Outputs are written to a temporary file in the destination folder and renamed into place only
  when complete, so an interrupted or failed run never leaves a partial file behind.
- An existing output is refused unless ``force`` is given, and an *input* is never overwritten,
  ``force`` or not.
- Sizes declared by a file are checked against limits before anything is allocated.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from .errors import AbsurdSizeError, OutputExistsError

PathLike = str | os.PathLike


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_output(path: PathLike, *, force: bool = False, inputs: Iterable[PathLike] = ()) -> Path:
    """Raise :class:`OutputExistsError` if writing ``path`` would clobber something it should not."""
    path = Path(path)
    for inp in inputs:
        if _same_file(path, Path(inp)):
            raise OutputExistsError(f"{path}: output is the same file as an input; refusing to overwrite it")
    if path.is_dir():
        raise OutputExistsError(f"{path}: output is a directory")
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: already exists (use --force to overwrite)")
    return path


@contextlib.contextmanager
def atomic_output(path: PathLike, *, force: bool = False, inputs: Iterable[PathLike] = ()) -> Iterator[BinaryIO]:
    """Open a temporary file for binary writing; rename it to ``path`` when the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path`` is
    untouched.
    """
    path = check_output(path, force=force, inputs=inputs)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode of a new file
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # Re-check just before the rename: the output may have appeared meanwhile.
        check_output(path, force=force, inputs=inputs)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: PathLike, data: bytes, *, force: bool = False, inputs: Iterable[PathLike] = ()) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, force=force, inputs=inputs) as f:
        f.write(data)
    return Path(path)


def check_size(value: int, limit: int, what: str, name: str | None = None) -> int:
    """Raise :class:`AbsurdSizeError` if a declared ``value`` exceeds ``limit`` (or is negative)."""
    if value < 0 or value > limit:
        raise AbsurdSizeError(f"{what} {value} is beyond the limit {limit}", name)
    return value


def read_limited(path: PathLike, limit: int, what: str = "file size") -> bytes:
    """Read a whole file, refusing one larger than ``limit`` bytes before reading it."""
    path = Path(path)
    size = path.stat().st_size
    check_size(size, limit, what, str(path))
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    check_size(len(data), limit, what, str(path))  # the file may have grown since stat()
    return data
