"""Command-line shells over :mod:`codec`: ``pcz``, ``nervcodec``, ``splitcodec``."""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import math
import os
import sys

from neural_codecs import bitstream as bs

DISTRIBUTION = "neural-codecs"


@contextlib.contextmanager
def exit_on_error(prog: str, status: int = 2):
    """Turn the errors a user can cause into one line on stderr and exit ``status``.

    Catches :class:`~neural_codecs.bitstream.CodecError` (bad files, bad arguments),
    :class:`~neural_codecs.bitstream.OutputExistsError` and ``OSError`` (missing file, permission
    denied, ...). Anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except (bs.CodecError, bs.OutputExistsError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(status) from None
    except OSError as err:
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"{prog}: error: {where}{err.strerror or err}", file=sys.stderr)
        raise SystemExit(status) from None


def require_extra(prog: str, extra: str, *modules: str) -> None:
    """Exit with one line and status 2 when a module this CLI needs is not installed: the core
    install carries pcz and the container only; video and split need their extras."""
    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except ImportError:  # a broken install of it counts as missing
            found = False
        if not found:
            print(f"{prog}: error: {m} is not installed; {prog} needs the '{extra}' extra: "
                  f"pip install '{DISTRIBUTION}[{extra}]'", file=sys.stderr)
            raise SystemExit(2)


#: ``-`` as an input or output: standard input or output, as cjxl and ffmpeg take it.
STDIO = "-"


def read_input(path, limit: int) -> bytes:
    """The bytes of the file ``path``, or of stdin for ``-``; more than ``limit`` bytes is an
    :class:`~neural_codecs.bitstream.AbsurdSizeError` either way."""
    if str(path) != STDIO:
        return bs.read_limited(path, limit)
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise bs.AbsurdSizeError(f"more than {limit} bytes on standard input", "stdin")
    return data


def add_version(ap: argparse.ArgumentParser) -> None:
    """``--version``, as every codec CLI has: the installed distribution's version."""
    try:
        v = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        v = "unknown"
    ap.add_argument("--version", action="version", version=f"%(prog)s ({DISTRIBUTION}) {v}")


def whole(least: int = 0, most: int | None = None):
    """An argparse type: a whole number in ``least`` .. ``most``, so a nonsensical count (0 epochs,
    a negative port) is a usage error, not a traceback deep inside."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if most is None and v < least:
            raise argparse.ArgumentTypeError(f"{v} is below {least}")
        if most is not None and not least <= v <= most:
            raise argparse.ArgumentTypeError(f"{v} is outside {least}..{most}")
        return v

    parse.__name__ = "whole number"
    return parse


def real(least: float = 0.0, *, strict: bool = False, below: float | None = None):
    """An argparse type: a finite number ``>= least`` (``> least`` when ``strict``), and
    ``< below`` if given."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v) or v < least or (strict and v == least):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number {'>' if strict else '>='} {least:g}")
        if below is not None and not v < below:
            raise argparse.ArgumentTypeError(f"{text} is not below {below:g}")
        return v

    parse.__name__ = "number"
    return parse


#: Exit status after the reader of stdout went away: 128 + SIGPIPE, as a shell reports a tool
#: that SIGPIPE ended (``cat big | head``).
BROKEN_PIPE_STATUS = 141


class UsageError(bs.CodecError):
    """A command line that asks for something impossible (``-o`` with several inputs, ...): one
    line on stderr and exit status 2, as for a bad file."""


def show_progress(quiet: bool = False) -> bool:
    """Whether to draw progress bars: only for a person watching stderr on a terminal, so a log
    or a pipe gets clean lines instead of ``\r`` updates glued to the error line."""
    if quiet:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr replaced or closed
        return False


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll reports an error on it): a broken
    pipe elsewhere (a child process such as ffmpeg dying) stays an error."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of what is left in its buffer
    cannot fail a second time on the closed pipe (and print 'Exception ignored ...')."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def run(prog: str, parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` and run the chosen subcommand the way every one of our CLIs does: errors a
    user can cause print one line and exit 2; Ctrl-C says nothing was written and exits 130;
    a closed stdout (``| head``) ends quietly with status 141."""
    args = parser.parse_args(argv)
    with exit_on_error(prog):
        try:
            args.func(args)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
        except BrokenPipeError:
            if not _stdout_closed():
                raise
            _quiet_stdout()
            return BROKEN_PIPE_STATUS
        except KeyboardInterrupt:
            print(f"{prog}: interrupted; no partial output written", file=sys.stderr)
            return 130
    return 0
