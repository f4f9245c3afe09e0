"""Typed errors: :class:`CodecError`, the root of every error a user's input can cause, and under
it :class:`BitstreamError` for what reads a container or an entropy-coded payload.

Every way a file can be bad maps to one subclass, so a command-line tool catches one type and
prints one line (``FILE: problem``) instead of a traceback, and a test can assert that corrupt
input raises *only* these errors. The codecs derive their own (a bad image, video or model file,
an impossible command line) from :class:`CodecError`. The root lives here, in the lowest layer,
because this package imports nothing else of the library.
"""
from __future__ import annotations


class CodecError(ValueError):
    """The root: input that no codec of this library can take (a bad file, a bad argument).

    ``name`` is the file (or other source) the input came from, when known; ``str(err)`` then reads
    ``"NAME: message"``.
    """

    def __init__(self, message: str, name: str | None = None):
        self.message = message
        self.name = name
        super().__init__(f"{name}: {message}" if name else message)

    def with_name(self, name: str | None) -> "CodecError":
        """Return a copy of this error that names its source (keeps the subclass)."""
        if name is None or self.name is not None:
            return self
        err = type(self).__new__(type(self))
        CodecError.__init__(err, self.message, name)
        return err


class BitstreamError(CodecError):
    """The bytes are not a valid container / payload."""


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


