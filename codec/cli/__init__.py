"""Command-line shells over :mod:`codec`: ``pcz``, ``nervcodec``."""
from __future__ import annotations

import argparse
import sys

import bitstream as bs


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
