"""Command-line shells over :mod:`codec`: ``pcz``, ``nervcodec``, ``splitcodec``."""
from __future__ import annotations

import argparse
import math
import sys

import bitstream as bs


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


def run(prog: str, parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` and run the chosen subcommand the way every one of our CLIs does: errors a
    user can cause print one line and exit 2; Ctrl-C says nothing was written and exits 130."""
    args = parser.parse_args(argv)
    with bs.exit_on_error(prog):
        try:
            args.func(args)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted; no partial output written", file=sys.stderr)
            return 130
        except IndexError as err:
            raise bs.BitstreamError(str(err)) from None
    return 0
