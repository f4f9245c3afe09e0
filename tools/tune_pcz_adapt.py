"""Choose a patch model's backward-adaptation setting (strength, every, decay) on validation photos.

    python tools/tune_pcz_adapt.py [--model natural-rgb] [--strength 10 30 100] [--every 256]
                                   [--decay 0.9 0.95 0.98 1] [--json out.json]

The validation photos are scikit-image's bundled RGB photographs (or luma for a gray model) --
never Kodak, the benchmark. Each setting codes every photo (encoder only) and reports the
coded bits per subpixel of the set; the fixed model (no adaptation) is the baseline of the same run.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time

import numpy as np

from neural_codecs import bitstream as bs
from neural_codecs.codec import pcz
from neural_codecs.codec.io.images import luma

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photos(gray: bool) -> dict[str, np.ndarray]:
    from skimage import data as skdata

    out = {}
    for name in PHOTOS:
        img = np.ascontiguousarray(getattr(skdata, name)()[..., :3])
        out[name] = luma(img) if gray else img
    return out


def set_bpsp(model: pcz.PczModel, imgs: dict[str, np.ndarray]) -> float:
    bits = sub = 0
    for img in imgs.values():
        res = pcz.compress_ex(img, model)
        bits += 8 * len(res.data)
        sub += res.subpixels
    return bits / sub


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="natural-rgb")
    ap.add_argument("--strength", type=float, nargs="+", default=[10.0, 30.0, 100.0])
    ap.add_argument("--every", type=int, nargs="+", default=[256])
    ap.add_argument("--decay", type=float, nargs="+", default=[0.9, 0.95, 0.98, 1.0])
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    base = pcz.load_model(args.model)
    imgs = photos(base.layout.channels == 1)
    rows = []
    for setting in [None] + list(itertools.product(args.strength, args.every, args.decay)):
        m = dataclasses.replace(base, adapt=setting, _tables=None, _hash=None)
        t = time.perf_counter()
        bpsp = set_bpsp(m, imgs)
        rows.append({"adapt": setting, "bits_per_subpixel": round(bpsp, 4), "seconds": round(time.perf_counter() - t, 1)})
        print(json.dumps(rows[-1]), flush=True)
    best = min(rows[1:], key=lambda r: r["bits_per_subpixel"])
    out = {"name": "pcz-adapt-tuning", "description": f"{args.model} on scikit-image photos {', '.join(PHOTOS)}",
           "results": {"settings": [r["adapt"] for r in rows], "bits_per_subpixel": [r["bits_per_subpixel"] for r in rows],
                       "seconds": [r["seconds"] for r in rows]}, "best": best}
    print(json.dumps(best))
    if args.json:
        bs.atomic_write(args.json, json.dumps(out, indent=1).encode(), force=True)


if __name__ == "__main__":
    main()
