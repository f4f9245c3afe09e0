"""pcz benchmark: bits per subpixel and speed beside PNG, WebP lossless and JPEG XL lossless.

    python tools/bench_pcz.py mnist [--data ../shared/data] [--single 2000] [--repeats 3] [--out results/]
    python tools/bench_pcz.py kodak [--data ../shared/data] [--out results/]
    python tools/bench_pcz.py speed [--data ../shared/data] [--images 20]

- mnist: the whole test set (10,000 digits) as one pcz archive with the shipped MNIST model --
  actual file bits vs the ideal -log2 p, encode/decode images/s (median of --repeats); one file
  per image for the first --single digits; the classical codecs one file per image, same digits.
- kodak: every Kodak image, one file each, with the shipped natural-image model; same baselines.
- speed: fast vs naive conditionals on the same digits in the same run (median of repeats).

Writes CompressAI-style JSON ({"name", "description", "results": {metric: [...]}}) per codec
into --out and prints a table. Needs the bench extra (imagecodecs) for the baselines.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from neural_codecs.codec import pcz
from neural_codecs.codec.io.images import read_idx, read_image
from neural_codecs.models.pc.coder import fast_conditionals, naive_conditionals

ROOT = Path(__file__).resolve().parents[1]


def _baselines():
    import imagecodecs as ic
    from PIL import Image

    def png(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def webp(a):  # libwebp codes RGB(A) only: gray goes in as three equal channels
        return ic.webp_encode(np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a, lossless=True, level=100, method=6)

    def unwebp(b, shape):
        out = ic.webp_decode(b)
        return out[..., 0] if len(shape) == 2 else out

    return {
        "PNG (Pillow, optimize)": (png, lambda b, shape: np.asarray(Image.open(io.BytesIO(b)))),
        "WebP lossless (method 6)": (webp, unwebp),
        "JPEG XL lossless (effort 7)": (lambda a: ic.jpegxl_encode(a, lossless=True, effort=7),
                                        lambda b, shape: ic.jpegxl_decode(b)),
    }


def _median(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _baseline_rows(images, label):
    rows = {}
    for name, (enc, dec) in _baselines().items():
        sizes, te, td = [], 0.0, 0.0
        for a in images:
            t = time.perf_counter()
            b = enc(a)
            te += time.perf_counter() - t
            t = time.perf_counter()
            back = dec(b, a.shape)
            td += time.perf_counter() - t
            assert np.array_equal(np.asarray(back).reshape(a.shape), a), f"{name} is not lossless on {label}"
            sizes.append(len(b))
        sub = sum(a.size for a in images)
        rows[name] = {"bits_per_subpixel": 8 * sum(sizes) / sub,
                      "encode_ms_per_image": 1000 * te / len(images), "decode_ms_per_image": 1000 * td / len(images)}
    return rows


def _write(out: Path | None, name: str, description: str, results: dict, channels: int | None = None) -> None:
    """One CompressAI-style JSON; ``channels`` adds the ``bpp`` (bits per pixel) key its plotting needs."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    results = dict(results)
    if channels and "bits_per_subpixel" in results:
        results = {"bpp": results["bits_per_subpixel"] * channels, **results}
    (out / f"{slug}.json").write_text(json.dumps({"name": name, "description": description,
                                                  "results": {k: v if isinstance(v, list) else [v]
                                                              for k, v in results.items()}}, indent=1))


def bench_mnist(args) -> dict:
    imgs = read_idx(Path(args.data) / "mnist" / "t10k-images-idx3-ubyte.gz", args.limit)
    model = pcz.load_model("mnist")
    t_enc, res = _median(lambda: pcz.compress_archive(imgs, model), args.repeats)
    t_dec, back = _median(lambda: pcz.decompress_archive(res.data, model), args.repeats)
    assert np.array_equal(back, imgs), "archive round trip is not bit-exact"
    single = imgs[:args.single]
    t0 = time.perf_counter()
    files = [pcz.compress(a, model) for a in single]
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    back1 = [pcz.decompress(f, model) for f in files]
    t_single_dec = time.perf_counter() - t0
    assert all(np.array_equal(b, a) for b, a in zip(back1, single)), "one-file round trip is not bit-exact"
    out = {
        "pcz archive": {"bits_per_subpixel": 8 * len(res.data) / imgs.size, "ideal_bits_per_subpixel": res.ideal_bits / imgs.size,
                        "actual_over_ideal_percent": 100 * (8 * len(res.data) / res.ideal_bits - 1),
                        "encode_ms_per_image": 1000 * t_enc / len(imgs), "decode_ms_per_image": 1000 * t_dec / len(imgs),
                        "encode_images_per_s": len(imgs) / t_enc, "decode_images_per_s": len(imgs) / t_dec,
                        "file_bytes": len(res.data), "images": len(imgs)},
        "pcz one file per image": {"bits_per_subpixel": 8 * sum(map(len, files)) / single.size,
                                   "encode_ms_per_image": 1000 * t_single / len(single),
                                   "decode_ms_per_image": 1000 * t_single_dec / len(single),
                                   "encode_images_per_s": len(single) / t_single,
                                   "decode_images_per_s": len(single) / t_single_dec, "images": len(single)},
    }
    _print(out)
    out.update(_baseline_rows(list(single), "MNIST"))
    for name, r in out.items():
        _write(args.out, f"{name} mnist", (f"MNIST test set ({len(imgs)} digits), model {model.name} {model.hash.hex()}"
                                            if name == "pcz archive" else
                                            f"MNIST test set, one file per image, first {len(single)} digits"), r, 1)
    return out


def bench_kodak(args) -> dict:
    paths = sorted((Path(args.data) / "kodak").glob("kodim*.png"))[:args.limit]
    if not paths:
        raise SystemExit(f"bench_pcz: no kodim*.png in {Path(args.data) / 'kodak'}")
    imgs = [read_image(p) for p in paths]
    model = pcz.load_model("natural-rgb")
    per, te, td, bits, ideal = [], 0.0, 0.0, 0, 0.0
    for p, a in zip(paths, imgs):
        r, e, d = pcz.timed_roundtrip(a, model)
        per.append(r.bits_per_subpixel)
        te, td, bits, ideal = te + e, td + d, bits + 8 * len(r.data), ideal + r.ideal_bits
        print(f"  {p.name}: {r.bits_per_subpixel:.4f} bits/subpixel, encode {e:.1f} s, decode {d:.1f} s", flush=True)
    sub = sum(a.size for a in imgs)
    out = {"pcz (natural-rgb)": {"bits_per_subpixel": bits / sub, "ideal_bits_per_subpixel": ideal / sub,
                                 "per_image_bits_per_subpixel": per, "encode_ms_per_image": 1000 * te / len(imgs),
                                 "decode_ms_per_image": 1000 * td / len(imgs)}}
    _print(out)
    out.update(_baseline_rows(imgs, "Kodak"))
    for name, r in out.items():
        _write(args.out, f"{name} kodak", f"Kodak, {len(imgs)} images, one file per image", r, 3)
    return out


def bench_speed(args) -> dict:
    """Fast vs naive conditionals on the same digits, one core each (numba threads = 1).

    The fast path is timed twice: one image per call (every step pays a Python call, as a
    single-file decoder does) and all images in one batch (as an archive does)."""
    import numba

    imgs = read_idx(Path(args.data) / "mnist" / "t10k-images-idx3-ubyte.gz", args.images)
    tables = pcz.load_model("mnist").tables
    x = imgs.reshape(len(imgs), -1).astype(np.int64)
    fast_conditionals(tables, x[:1])
    naive_conditionals(tables, x[0])
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        t_one, qf = _median(lambda: np.stack([fast_conditionals(tables, xi[None])[0] for xi in x]), args.repeats)
        t_batch, qb = _median(lambda: fast_conditionals(tables, x), args.repeats)
        t_naive, qn = _median(lambda: np.stack([naive_conditionals(tables, xi) for xi in x]), args.repeats)
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(qf, qn) and np.array_equal(qb, qn), "fast and naive conditionals differ"
    out = {"fast vs naive (1 core)": {"images": len(x), "naive_images_per_s": len(x) / t_naive,
                                       "fast_one_image_per_call_images_per_s": len(x) / t_one,
                                       "fast_batched_images_per_s": len(x) / t_batch,
                                       "speedup_one_image_per_call": t_naive / t_one,
                                       "speedup_batched": t_naive / t_batch, "identical_conditionals": True,
                                       "repeats": args.repeats}}
    _write(args.out, "pcz speed mnist", f"pcz conditionals on {len(x)} MNIST test digits, median of {args.repeats} "
           "runs each, fast and naive in the same process, 1 numba thread", out["fast vs naive (1 core)"])
    return out


def _print(res: dict) -> None:
    for name, r in res.items():
        print(f"{name:<32} " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in r.items() if not isinstance(v, list)), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("mnist", "kodak", "speed"))
    ap.add_argument("--data", default=os.environ.get("SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--single", type=int, default=2000, help="MNIST digits coded one file each")
    ap.add_argument("--images", type=int, default=20, help="digits for the fast/naive comparison")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, help="only the first N images (MNIST digits / Kodak files)")
    ap.add_argument("--out", type=Path, help="folder for CompressAI-style JSON files")
    args = ap.parse_args(argv)
    res = {"mnist": bench_mnist, "kodak": bench_kodak, "speed": bench_speed}[args.what](args)
    print("all rows:")
    _print(res)


if __name__ == "__main__":
    main()
