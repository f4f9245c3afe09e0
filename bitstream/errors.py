"""Typed errors for everything that reads a container or an entropy-coded payload.

Every way a file can be bad maps to one subclass of :class:`BitstreamError`, so a command-line
tool catches one type and prints one line (``FILE: problem``) instead of a traceback, and a test
can assert that corrupt input raises *only* these errors.
"""
from __future__ import annotations

import contextlib
import sys


class BitstreamError(ValueError):
    """Base class: the bytes are not a valid container / payload.

    ``name`` is the file (or other source) the bytes came from, when known; ``str(err)`` then reads
    ``"NAME: message"``.
    """

    def __init__(self, message: str, name: str | None = None):
        self.message = message
        self.name = name
        super().__init__(f"{name}: {message}" if name else message)

    def with_name(self, name: str | None) -> "BitstreamError":
        """Return a copy of this error that names its source (keeps the subclass)."""
        if name is None or self.name is not None:
            return self
        err = type(self).__new__(type(self))
        BitstreamError.__init__(err, self.message, name)
        return err


class BadSignatureError(BitstreamError):
    """The first bytes are not our signature: a different kind of file."""


class UnsupportedVersionError(BitstreamError):
    """Our signature, but a format version this reader does not know."""


class UnknownCriticalChunkError(BitstreamError):
    """A critical chunk type this reader does not understand (ancillary ones are skipped)."""


class CRCMismatchError(BitstreamError):
    """A chunk's CRC-32 does not match its bytes: the file is corrupt."""


class TruncatedError(BitstreamError):
    """The bytes end before the structure they declare."""


class AbsurdSizeError(BitstreamError):
    """A declared size is beyond what is plausible; raised before anything is allocated."""


class MalformedError(BitstreamError):
    """Structurally invalid: non-canonical integers, reserved bits set, counts that disagree, ..."""


class ModelMismatchError(BitstreamError):
    """The file names a model (by content hash) that is not the one supplied."""


class OutputExistsError(FileExistsError):
    """Refusing to overwrite an existing output without ``force`` (or ever, if it is an input)."""


@contextlib.contextmanager
def exit_on_error(prog: str, status: int = 2):
    """Turn the errors a user can cause into one line on stderr and exit ``status``.

    Catches :class:`BitstreamError`, :class:`OutputExistsError` and ``OSError`` (missing file,
    permission denied, ...). Anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except (BitstreamError, OutputExistsError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(status) from None
    except OSError as err:
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"{prog}: error: {where}{err.strerror or err}", file=sys.stderr)
        raise SystemExit(status) from None
