"""splitcodec benchmark: Entropic Students against JPEG / WebP + the teacher, top-1 vs bytes per image.

    python tools/bench_split.py --teacher bench_data/split/teacher.npz --students bench_data/split \\
        --out bench_data/split/bench [--limit 1000]

On Imagenette val (``--limit N``: a fixed random subset of N images), in one run:

- **Entropic Student** (every ``*_edge.npz`` with its ``*_server.npz`` under ``--students``): each
  image is encoded by ``EdgeEncoder.encode`` into a real splitcodec container and classified from
  those bytes by ``ServerDecoder``; top-1, mean container bytes per image, and edge latency (median
  ms of ``EdgeEncoder.encode`` on the raw decoded file, preprocessing included, 1 torch thread, over
  ``--latency-images`` images; the bytes of those encodes are checked equal to the benchmark's).
  The encoder is fully convolutional, so the same edge model is also timed on the paper's input
  size (``--latency-res``, default 224: resize 256 + centre crop 224): ``edge_ms_224``, the number
  the edge-latency target is about.
- **JPEG** (Pillow/libjpeg, 4:2:0, optimised Huffman tables) and **WebP** (libwebp through
  imagecodecs, lossy, method 6; Pillow if imagecodecs is missing; imagecodecs' default would be
  *lossless*, hence ``lossless=False``) at several qualities: the uint8 crop
  the student's edge preprocessing produces (same resize, same centre crop, before normalisation)
  is compressed, decoded, and classified by the **teacher**; top-1, mean file bytes per image, and
  median encode ms -- at the benchmark's size and on the ``--latency-res`` crop (``edge_ms_224``).
- **Teacher** on the uncompressed crop (the accuracy ceiling; its "bytes" are the raw res² · 3).

Results: one CompressAI-style JSON per codec in ``--out`` (``{"name", "description", "results":
{"bytes", "kb", "top1", "edge_ms", ...}}``, sorted by bytes; kB = 1000 bytes), rewritten after
every finished point so an interrupted run keeps them; ``summary.md`` and ``rate_accuracy.png``
(top-1 vs kB per image). Finally the paper-style check: the bytes the student needs to come within
one point of the teacher's top-1, against WebP's bytes at that accuracy (linear interpolation
between neighbouring points of each curve; "not reached" if a curve never gets there).
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import pyplot  # noqa: E402
from neural_codecs.codec.split import EdgeEncoder, load_edge, load_server  # noqa: E402
from split_data import (DEFAULT_CACHE, center_crop, check_edge_consistency, default_data_dir,  # noqa: E402
                        list_split, load_split, read_rgb, require_data, resize_size_for)
from train_split import classify, eval_codec, load_teacher, machine  # noqa: E402

PROG = "bench_split"
DEFAULT_JPEG = "5,10,20,30,50,75,90"
DEFAULT_WEBP = "5,10,20,30,50,75,90"
JPEG_NAME, WEBP_NAME, STUDENT_NAME, TEACHER_NAME = "JPEG", "WebP", "Entropic Student", "Teacher (uncompressed)"


def _fail(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _ints(s: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        _fail(f"{what} takes integers, e.g. 10,50,90 (got {s!r})")
    if any(not 0 <= v <= 100 for v in vals):
        _fail(f"{what}: qualities lie in 0..100")
    return vals


# ---------------------------------------------------------------------------------------------
# Classical codecs on the crop
# ---------------------------------------------------------------------------------------------


def jpeg_codec(q: int):
    from PIL import Image

    def enc(img: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=q, optimize=True)
        return buf.getvalue()

    def dec(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    return enc, dec


def webp_codec(q: int):
    try:
        import imagecodecs

        if not imagecodecs.WEBP.available:
            raise ImportError
        return (lambda img: imagecodecs.webp_encode(img, level=q, lossless=False, method=6),
                lambda data: np.asarray(imagecodecs.webp_decode(data))[..., :3])
    except (ImportError, AttributeError):
        from PIL import Image

        def enc(img):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "WEBP", quality=q, method=6)
            return buf.getvalue()

        def dec(data):
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(im.convert("RGB"))

        return enc, dec


def webp_library() -> str:
    try:
        import imagecodecs

        if imagecodecs.WEBP.available:
            return f"libwebp via imagecodecs {imagecodecs.__version__}"
    except (ImportError, AttributeError):
        pass
    import PIL

    return f"libwebp via Pillow {PIL.__version__}"


def run_classical(teacher, crops, labels, codec: str, q: int, timing: int,
                  big: list[np.ndarray] | None = None, big_res: int = 224) -> dict:
    enc, dec = (jpeg_codec if codec == JPEG_NAME else webp_codec)(q)
    n = len(crops)
    decoded = np.empty_like(crops)
    nbytes = np.empty(n, np.int64)
    times = []
    for i in range(n):
        t = time.perf_counter()
        data = enc(crops[i])
        if i < timing:
            times.append(time.perf_counter() - t)
        nbytes[i] = len(data)
        img = dec(data)
        if img.shape != crops[i].shape:
            raise RuntimeError(f"{codec} q{q}: decoded shape {img.shape} != {crops[i].shape}")
        decoded[i] = img
    top1 = float((classify(teacher, decoded) == labels).mean())
    r = {"quality": q, "bytes": float(nbytes.mean()), "top1": top1,
         "edge_ms": 1000 * statistics.median(times) if times else None}
    if big:
        r[f"edge_ms_{big_res}"] = median_ms(enc, big)
    return r


# ---------------------------------------------------------------------------------------------
# Students
# ---------------------------------------------------------------------------------------------


def find_students(spec: str) -> list[tuple[Path, Path]]:
    p = Path(spec)
    if p.is_dir():
        edges = sorted(p.glob("*_edge.npz"))
    else:
        edges = sorted(Path(f) for f in glob.glob(spec)) if any(c in spec for c in "*?[") else [p]
    pairs = []
    for e in edges:
        if not e.name.endswith("_edge.npz"):
            continue
        s = e.with_name(e.name[: -len("_edge.npz")] + "_server.npz")
        if s.is_file():
            pairs.append((e, s))
    return pairs


def student_beta(edge_path: Path):
    meta = edge_path.with_name(edge_path.name[: -len("_edge.npz")] + ".json")
    if meta.is_file():
        try:
            return json.loads(meta.read_text()).get("beta")
        except (json.JSONDecodeError, AttributeError):
            return None
    return None


def edge_latency(edge, files, count: int, reference: list[bytes]) -> float:
    """Median ms of ``EdgeEncoder.encode`` on raw decoded files with 1 torch thread; checks the
    bytes equal ``reference`` (the benchmark's encodes of the cached crops)."""
    raws = [read_rgb(f) for f in files[:count]]
    ms, outputs = timed(EdgeEncoder(edge).encode, raws, warm_up=False)
    for f, data, ref in zip(files, outputs, reference):
        if data != ref:
            raise RuntimeError(f"{f}: encoding the raw image gives other bytes than the cached crop")
    return float("nan") if ms is None else ms


def resized_edge(edge, res: int):
    """The same edge model fed ``res`` x ``res`` crops (resize res * 256 / 224, as for training):
    the encoder is fully convolutional, only the latent grows."""
    import dataclasses

    cfg = dataclasses.replace(edge.config, input_size=res)
    return dataclasses.replace(edge, config=cfg, resize_size=resize_size_for(res), path=None, _hash=None)


def big_inputs(files, count: int, res: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first ``count`` files decoded (what the edge encoder is timed on: its resize and crop
    included) and their uint8 ``res`` crops, cut as the edge cuts them (what JPEG / WebP encode)."""
    raws = [read_rgb(f) for f in files[:count]]
    return raws, [center_crop(r, res, resize_size_for(res)) for r in raws]


def timed(fn, items, warm_up: bool = True) -> tuple[float | None, list]:
    """(median ms of ``fn(item)`` over ``items``, the outputs), with 1 torch thread and, with
    ``warm_up``, one untimed call first."""
    if not items:
        return None, []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if warm_up:
            fn(items[0])
        times, outputs = [], []
        for it in items:
            t = time.perf_counter()
            outputs.append(fn(it))
            times.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return 1000 * statistics.median(times), outputs


def median_ms(fn, items) -> float | None:
    """Median ms of ``fn(item)`` over ``items`` (1 torch thread; one untimed warm-up call)."""
    return timed(fn, items)[0]


def run_student(edge_p: Path, server_p: Path, crops, labels, files, res: int, latency_images: int,
                big_raw: list[np.ndarray] | None = None, big_res: int = 224) -> dict:
    from split_data import normalize

    edge, server = load_edge(edge_p), load_server(server_p)
    if edge.config.input_size != res:
        raise ValueError(f"input size {edge.config.input_size}, the benchmark's is {res}")
    check_edge_consistency(edge, files, res)
    r = eval_codec(edge, server, crops, labels, desc=f"{edge_p.name}")
    k = min(latency_images, len(files))
    enc = EdgeEncoder(edge)
    reference = [enc.encode(normalize(crops[i])) for i in range(k)]
    r["edge_ms"] = edge_latency(edge, files, k, reference)
    if big_raw:
        r[f"edge_ms_{big_res}"] = median_ms(EdgeEncoder(resized_edge(edge, big_res)).encode, big_raw)
    r["beta"] = student_beta(edge_p)
    r["file"] = edge_p.name
    r["edge_model"] = edge.hash.hex()
    return r


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-").replace("--", "-")


def write_json(out: Path, name: str, description: str, points: list[dict], extra_keys=(), pixels: int = 0) -> None:
    """One CompressAI-style JSON; ``bpp`` (bits per pixel of the res x res input, the key
    CompressAI's plotting needs) when ``pixels`` is given."""
    pts = sorted(points, key=lambda p: p["bytes"])
    results = {"bpp": [8 * p["bytes"] / pixels for p in pts]} if pixels else {}
    results |= {"bytes": [p["bytes"] for p in pts], "kb": [p["bytes"] / 1000 for p in pts],
               "top1": [p["top1"] for p in pts], "edge_ms": [p.get("edge_ms") for p in pts]}
    for k in extra_keys:
        results[k] = [p.get(k) for p in pts]
    doc = {"name": name, "description": description, "results": results}
    (out / f"{slug(name)}.json").write_text(json.dumps(doc, indent=1) + "\n")


def bytes_at(points: list[dict], target: float) -> tuple[float | None, str]:
    """Bytes where the (bytes-sorted) curve first reaches ``target`` top-1: linear interpolation
    between the neighbouring points; ("<=", b) if its cheapest point already does; None if never."""
    pts = sorted(points, key=lambda p: p["bytes"])
    for i, p in enumerate(pts):
        if p["top1"] >= target:
            if i == 0:
                return p["bytes"], "<="
            a = pts[i - 1]
            t = (target - a["top1"]) / (p["top1"] - a["top1"])
            return a["bytes"] + t * (p["bytes"] - a["bytes"]), "~"
    return None, "not reached"


def paper_check(groups: dict[str, list[dict]], teacher_top1: float) -> str:
    target = teacher_top1 - 0.01
    lines = [f"Paper-style check: bytes per image at teacher top-1 - 1 point = {100 * target:.2f}%"]
    found = {}
    for name in (STUDENT_NAME, WEBP_NAME, JPEG_NAME):
        if name not in groups:
            continue
        b, how = bytes_at(groups[name], target)
        found[name] = b
        lines.append(f"  {name}: " + ("not reached" if b is None else f"{how} {b:.1f} bytes ({b / 1000:.3f} kB)"))
    s, w = found.get(STUDENT_NAME), found.get(WEBP_NAME)
    if s is not None and w is not None:
        lines.append(f"  WebP / student = {w / s:.2f}x")
    return "\n".join(lines)


def _ms(v) -> str:
    return "" if v is None else f"{v:.2f}"


def summarize(out: Path, groups: dict[str, list[dict]], header: str, check: str, big_res: int = 0) -> str:
    """summary.md: the table (plus an encode-ms column at ``big_res`` px when measured) and the check."""
    key = f"edge_ms_{big_res}"
    big = big_res > 0 and any(key in p for pts in groups.values() for p in pts)
    ten = any("top1_10class" in p for pts in groups.values() for p in pts)  # an ImageNet teacher on Imagenette
    extra = (f" encode ms at {big_res} px |" if big else "") + (" top-1 of Imagenette's 10 (%) |" if ten else "")
    lines = [header, "", "| codec | setting | bytes/image | kB/image | top-1 (%) | edge ms |" + extra,
             "|---|---|---|---|---|---|" + ("---|" if big else "") + ("---|" if ten else "")]
    for name, pts in groups.items():
        for p in sorted(pts, key=lambda p: p["bytes"]):
            if "beta" in p or "file" in p:
                setting = f"beta {p['beta']:g}" if p.get("beta") is not None else p.get("file", "")
            elif "quality" in p:
                setting = f"q {p['quality']}"
            else:
                setting = "raw"
            lines.append(f"| {name} | {setting} | {p['bytes']:.1f} | {p['bytes'] / 1000:.3f} | {100 * p['top1']:.2f} | "
                         f"{_ms(p.get('edge_ms'))} |" + (f" {_ms(p.get(key))} |" if big else "")
                         + (f" {100 * p['top1_10class']:.2f} |" if ten else ""))
    text = "\n".join(lines) + "\n\n" + check.replace("\n  ", "\n- ") + "\n"
    (out / "summary.md").write_text(text)
    return text


def plot(out: Path, groups: dict[str, list[dict]], teacher_top1: float | None) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in groups.items():
        if name == TEACHER_NAME:
            continue
        pts = sorted(pts, key=lambda p: p["bytes"])
        ax.plot([p["bytes"] / 1000 for p in pts], [100 * p["top1"] for p in pts], "o-", label=name, ms=4)
    if teacher_top1 is not None:
        ax.axhline(100 * teacher_top1, color="k", ls="--", lw=1, label="teacher, uncompressed")
        ax.axhline(100 * teacher_top1 - 1, color="gray", ls=":", lw=1, label="teacher - 1 point")
    ax.set_xscale("log")
    ax.set_xlabel("kB per image")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rate_accuracy.png", dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data_dir(), help="Imagenette folder (default: %(default)s)")
    ap.add_argument("--teacher", type=Path, required=True, help="teacher .npz from train_split.py teacher")
    ap.add_argument("--students", default=None,
                    help="folder (or glob) of *_edge.npz / *_server.npz pairs (default: the teacher's folder)")
    ap.add_argument("--out", type=Path, default=Path("bench_data/split/bench"), help="results folder (%(default)s)")
    ap.add_argument("--limit", type=int, help="use a fixed random subset of N val images")
    ap.add_argument("--jpeg", default=DEFAULT_JPEG, help="JPEG qualities ('' for none; %(default)s)")
    ap.add_argument("--webp", default=DEFAULT_WEBP, help="WebP qualities ('' for none; %(default)s)")
    ap.add_argument("--latency-images", type=int, default=50, help="images for the edge timings (%(default)s)")
    ap.add_argument("--latency-res", type=int, default=224,
                    help="also time every edge encoder and JPEG / WebP encode on crops of this size, the "
                         "paper's input (0: skip; %(default)s)")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="decoded-split cache (%(default)s)")
    ap.add_argument("--no-cache", action="store_true", help="do not cache the decoded val split")
    ap.add_argument("--threads", type=int, help="torch threads for the accuracy passes (edge timing: always 1)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = require_data(args.data, PROG, splits=("val",))
    teacher, tmeta = load_teacher_or_fail(args.teacher)
    res = tmeta["res"]
    jpeg_q, webp_q = _ints(args.jpeg, "--jpeg"), _ints(args.webp, "--webp")
    students = find_students(args.students or str(args.teacher.parent))

    crops, labels, wnids = load_split(root, "val", res, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    files, _, _ = list_split(root, "val")
    if wnids != tmeta["wnids"]:
        _fail("the val classes differ from the teacher's")
    if args.limit and args.limit < len(labels):
        idx = np.sort(np.random.default_rng(0).permutation(len(labels))[: args.limit])
        crops, labels, files = crops[idx], labels[idx], [files[i] for i in idx]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    where = (f"Imagenette val, {len(labels)} images at {res}x{res} (resize {tmeta['resize_size']} + centre crop), "
             f"teacher {tmeta['arch']} width {tmeta['base_width']} ({args.teacher.name}); {machine()}")
    print(f"{PROG}: {where}; {len(students)} student(s)", flush=True)
    groups: dict[str, list[dict]] = {}
    big_res = args.latency_res
    big_raw, big = big_inputs(files, args.latency_images, big_res) if big_res > 0 else ([], [])
    big_key = f"edge_ms_{big_res}"

    def flush() -> None:
        t1 = groups[TEACHER_NAME][0]["top1"]
        check = paper_check(groups, t1)
        summarize(out, groups, f"Measured on {where}.", check, big_res)
        plot(out, groups, t1)

    t_top1 = float((classify(teacher, crops) == labels).mean())
    groups[TEACHER_NAME] = [{"bytes": float(res * res * 3), "top1": t_top1, "edge_ms": None}]
    write_json(out, TEACHER_NAME, f"The teacher on the uncompressed uint8 crops (bytes = raw RGB); {where}",
               groups[TEACHER_NAME], pixels=res * res)
    print(f"  teacher: top-1 {t_top1:.4f} uncompressed", flush=True)
    flush()

    for edge_p, server_p in students:
        try:
            p = run_student(edge_p, server_p, crops, labels, files, res, args.latency_images, big_raw, big_res)
        except (ValueError, RuntimeError) as err:
            print(f"  {edge_p.name}: skipped ({err})", flush=True)
            continue
        groups.setdefault(STUDENT_NAME, []).append(p)
        print(f"  student {edge_p.name}: top-1 {p['top1']:.4f}, {p['bytes']:.1f} bytes/image, "
              f"edge {p['edge_ms']:.2f} ms" + (f", {p[big_key]:.2f} ms at {big_res} px" if big else ""), flush=True)
        write_json(out, STUDENT_NAME, "Entropic Student: real splitcodec containers (EdgeEncoder.encode -> "
                   "ServerDecoder); edge_ms = median EdgeEncoder.encode on the raw file, 1 thread"
                   + (f" ({big_key}: the same encoder on {big_res} px crops, resize included)" if big else "")
                   + f"; {where}", groups[STUDENT_NAME], ("beta", "file", "edge_model", big_key), pixels=res * res)
        flush()

    for name, qs, lib in ((JPEG_NAME, jpeg_q, "Pillow/libjpeg, 4:2:0, optimize=True"), (WEBP_NAME, webp_q,
                                                                                        webp_library() + ", method 6")):
        for q in qs:
            p = run_classical(teacher, crops, labels, name, q, args.latency_images, big, big_res)
            groups.setdefault(name, []).append(p)
            print(f"  {name} q{q}: top-1 {p['top1']:.4f}, {p['bytes']:.1f} bytes/image", flush=True)
            write_json(out, name, f"{name} ({lib}) of the uint8 crop, decoded and classified by the teacher; "
                       f"edge_ms = median encode" + (f" ({big_key}: of the {big_res} px crop)" if big else "")
                       + f"; {where}", groups[name], ("quality", big_key), pixels=res * res)
            flush()

    print(summarize(out, groups, f"Measured on {where}.", paper_check(groups, t_top1), big_res), flush=True)
    print(f"results in {out}/", flush=True)
    return 0


def load_teacher_or_fail(path: Path):
    if not path.is_file():
        _fail(f"teacher {path} not found")
    return load_teacher(path)


if __name__ == "__main__":
    sys.exit(main())
