"""Does ``--bpp`` hold? nervcodec's defaults on clips of every length and size, rate achieved vs asked.

For each frame count and size (area-downscaled from the given clip, from frame ``--start``), one
encode with ``nervcodec encode``'s defaults (preset medium, rate control towards ``--bpp``,
the preset's epochs under its time cap, as the CLI plans them); reports the file's bpp, its
ratio to the target, PSNR, encode time and epochs trained, and writes them as JSON.

    python tools/bench_nerv_sizing.py CLIP [--start 0] [--bpp 0.05] [--frames 8,48,240] [--sizes 128x72,320x180,640x360]
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
from neural_codecs.codec.eval.metrics import psnr  # noqa: E402
from neural_codecs.codec.io.video import read_video  # noqa: E402
from neural_codecs.models.inr import FitOptions  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip")
    ap.add_argument("--start", type=int, default=0, help="first frame of the clip to use (default 0)")
    ap.add_argument("--bpp", type=float, help="target rate (default: the model's)")
    ap.add_argument("--frames", default="8,48,240")
    ap.add_argument("--sizes", default="128x72,320x180,640x360")
    ap.add_argument("--model", default="hnerv", choices=nerv.KINDS)
    ap.add_argument("--preset", default=nerv.DEFAULT_PRESET, choices=tuple(nerv.PRESETS))
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    if args.bpp is None:
        args.bpp = nerv.default_bpp(args.model)
    epochs, budget = nerv.training_plan(args.model, args.preset)
    rows = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        for count in (int(n) for n in args.frames.split(",")):
            video = read_video(args.clip, start=args.start, count=count, size=(w, h))
            T = video.count
            t0 = time.perf_counter()
            res = nerv.encode(video.frames, video.fps, model=args.model, bpp=args.bpp,
                              options=FitOptions(epochs=epochs, time_budget=budget,
                                                adapt_threads=args.threads is None))
            took = time.perf_counter() - t0
            bpp = 8 * len(res.data) / (T * w * h)
            row = {"frames": T, "width": w, "height": h, "target_bpp": args.bpp, "bpp": bpp,
                   "ratio": bpp / args.bpp, "psnr": psnr(res.frames, video.frames), "encode_s": took,
                   "bytes": len(res.data), "lam": res.fitted.history[-1].get("lam") if res.fitted.history else None,
                   "epochs": len(res.fitted.history)}
            rows.append(row)
            print(f"{T:4d} frames {w}x{h}: {bpp:.4f} bpp ({100 * (row['ratio'] - 1):+.0f} % of {args.bpp}), "
                  f"{row['psnr']:.2f} dB, {took:.0f} s, {row['epochs']} epochs", flush=True)
            if args.json:
                args.json.write_text(json.dumps({"clip": args.clip, "start": args.start, "model": args.model, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
