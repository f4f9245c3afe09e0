"""Make the nervcodec benchmark clip: Big Buck Bunny frames 240-479, area-downscaled to 320x180, lossless.

    python tools/make_bench_clip.py [--src VIDEO] [-o bench_data/bbb_320x180_240.mkv] [--force]
                                    [--start 240] [--count 240] [--size 320x180]

The source is ../shared/data/video/big_buck_bunny_360p.mp4 (beside the repository) unless --src
says otherwise. A .mkv output is FFV1 coding the RGB frames exactly (a directory gets PNG frames),
and the written file is read back and compared with the frames before the tool reports success.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from neural_codecs.codec.cli import exit_on_error
from neural_codecs.codec.io.video import probe_video, read_video, write_video

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = Path(__file__).resolve().parents[2] / "shared/data/video/big_buck_bunny_360p.mp4"
DEFAULT_OUT = ROOT / "bench_data" / "bbb_320x180_240.mkv"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size {text} is empty")
    return w, h


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help=f"source video (default {DEFAULT_SRC})")
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT,
                    help="output: .mkv (FFV1, lossless), .mp4/.y4m or a directory of PNG frames")
    ap.add_argument("--start", type=int, default=240, help="first source frame (default 240)")
    ap.add_argument("--count", type=int, default=240, help="number of frames (default 240)")
    ap.add_argument("--size", type=_size, default=(320, 180), help="output WIDTHxHEIGHT (default 320x180)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing output")
    args = ap.parse_args(argv)
    prog = "make_bench_clip"
    if not args.src.is_file():
        print(f"{prog}: error: {args.src}: source video not found (give --src)", file=sys.stderr)
        raise SystemExit(2)
    with exit_on_error(prog):
        src_w, src_h, _, _ = probe_video(args.src)
        video = read_video(args.src, start=args.start, count=args.count, size=args.size)
        if video.count != args.count:
            print(f"{prog}: warning: the source has only {video.count} frames from {args.start}", file=sys.stderr)
        if args.output.parent != Path(""):
            args.output.parent.mkdir(parents=True, exist_ok=True)
        write_video(args.output, video.frames, video.fps, force=args.force, inputs=[args.src], lossless=True)
        back = read_video(args.output)
    exact = (args.output.is_dir() or back.fps == video.fps) and back.frames.shape == video.frames.shape and np.array_equal(back.frames, video.frames)
    size = sum(p.stat().st_size for p in args.output.iterdir()) if args.output.is_dir() else args.output.stat().st_size
    print(f"wrote {args.output}: {video.count} frames {video.width}x{video.height} @ {video.fps} fps "
          f"(frames {args.start}-{args.start + video.count - 1} of {args.src.name}, area-downscaled from "
          f"{src_w}x{src_h}), {size} bytes, read back {'bit-exact' if exact else 'NOT bit-exact (lossy output kind)'}"
          f"{' (PNG frames keep no frame rate)' if args.output.is_dir() else ''}")


if __name__ == "__main__":
    main()
