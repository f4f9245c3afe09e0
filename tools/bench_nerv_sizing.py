"""Does ``--bpp`` hold? nervcodec's defaults on clips of every length and size, rate achieved vs asked.

For each frame count and size (area-downscaled from the given clip, from its first frame), one
encode with ``nervcodec encode``'s defaults (preset medium, rate control towards ``--bpp``);
reports the file's bpp, its ratio to the target, PSNR and encode time, and writes them as JSON.

    python tools/bench_nerv_sizing.py CLIP [--bpp 0.05] [--frames 8,48,240] [--sizes 128x72,320x180,640x360]
        [--model hnerv] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from neural_codecs.codec.cpu import calm_spinning, set_threads  # noqa: E402

calm_spinning()  # before torch loads (codec/cpu.py)

from neural_codecs.codec import nerv  # noqa: E402
from neural_codecs.codec.metrics import psnr  # noqa: E402
from neural_codecs.codec.video_io import read_video  # noqa: E402
from neural_codecs.models.inr import FitOptions  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip")
    ap.add_argument("--bpp", type=float, default=nerv.DEFAULT_BPP)
    ap.add_argument("--frames", default="8,48,240")
    ap.add_argument("--sizes", default="128x72,320x180,640x360")
    ap.add_argument("--model", default="hnerv", choices=nerv.KINDS)
    ap.add_argument("--preset", default=nerv.DEFAULT_PRESET, choices=tuple(nerv.PRESETS))
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    rows = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        for count in (int(n) for n in args.frames.split(",")):
            video = read_video(args.clip, count=count, size=(w, h))
            T = video.count
            t0 = time.perf_counter()
            res = nerv.encode(video.frames, video.fps, model=args.model, bpp=args.bpp,
                              options=FitOptions(epochs=nerv.PRESETS[args.preset][args.model]))
            took = time.perf_counter() - t0
            bpp = 8 * len(res.data) / (T * w * h)
            row = {"frames": T, "width": w, "height": h, "target_bpp": args.bpp, "bpp": bpp,
                   "ratio": bpp / args.bpp, "psnr": psnr(res.frames, video.frames), "encode_s": took,
                   "bytes": len(res.data), "lam": res.fitted.history[-1].get("lam") if res.fitted.history else None}
            rows.append(row)
            print(f"{T:4d} frames {w}x{h}: {bpp:.4f} bpp ({100 * (row['ratio'] - 1):+.0f} % of {args.bpp}), "
                  f"{row['psnr']:.2f} dB, {took:.0f} s", flush=True)
            if args.json:
                args.json.write_text(json.dumps({"clip": args.clip, "model": args.model, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
