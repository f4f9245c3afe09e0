"""The split codec at the paper's scale: an ImageNet-pretrained EfficientNet-Lite0 at 224 px.

    python tools/bench_split_imagenet.py teacher [--data DIR] [--out DIR] [--threads 2]

``teacher``: the reference every point of the rate-accuracy curve is read against. The teacher
(the published ImageNet weights, extra ``[teacher]``) classifies the 500 Imagenette images that
come from ImageNet's *validation* split (files ``ILSVRC2012_val_*`` in both of Imagenette's folders;
the others come from ImageNet's training split, which the teacher has seen). Reported:

- top-1 over all 1000 ImageNet classes (comparable with the published ImageNet top-1),
- top-1 restricted to Imagenette's 10 classes (argmax over those 10 logits),
- the whole teacher's latency on one 224 px image (median of ``--repeats``; what running the full
  classifier on the edge costs), on ``--threads`` torch threads.

Geometry: the standard evaluation crop -- shorter side resized to 256 (Pillow bilinear), centre
crop 224 (``split_data.center_crop``), RGB / 255 into the network, which normalises it itself.

Writes ``OUT/teacher.json`` (CompressAI-style: ``{"name", "description", "results": {...}}``).

    python tools/bench_split_imagenet.py run [--students 'bench_data/split224/student_*_edge.npz']
        [--jpeg 5,10,20,30,50,75,90] [--webp 5,10,20,30,50,75,90] [--out DIR]

``run``: the rate-accuracy benchmark, everything on the same 500 images in one run -- the teacher on
uncompressed crops; JPEG and WebP at each quality compressing the 224 px crop, decoded and classified
by the same teacher; each student (``tools/train_split_imagenet.py``) from the decoded *photo* through
the real edge path (``EdgeEncoder.encode``: resize, crop, encoder, rounding, entropy coding, the
container) and the server (``ServerDecoder``: container, entropy decoding, decoder, tail). Bytes are
real file bytes. Latency (median over ``--latency-images`` photos, ``--threads`` threads): the
student's whole edge encode, JPEG's and WebP's encode of the crop, and the whole teacher beside
them. The server's integers are checked equal to the edge's on every image. Writes one
CompressAI-style JSON per codec, ``summary.md`` (with the paper-style check: bytes at the teacher's
top-1 minus one point) and ``rate_accuracy.png``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench_split import (JPEG_NAME, STUDENT_NAME, TEACHER_NAME, WEBP_NAME, find_students, jpeg_codec, paper_check,
                         plot, student_beta, summarize, webp_codec, webp_library, write_json)
from split_data import IMAGENET_INDEX, center_crop, default_data_dir, imagenet_val_files, read_rgb, require_data
from train_split import machine
from train_split_imagenet import RES, RESIZE, teacher_or_fail, to_input
from neural_codecs.codec.split import EdgeEncoder, ServerDecoder, load_edge, load_server
from neural_codecs.models.split.efficientnet_lite import published_weights_path  # noqa: F401 (tests ask it)

PROG = "bench_split_imagenet"


def _fail(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def crops(files) -> np.ndarray:
    """uint8 (N, 224, 224, 3): each file's evaluation crop."""
    return np.stack([center_crop(read_rgb(f), RES, RESIZE) for f in files])


@torch.no_grad()
def logits_of(net, images: np.ndarray, batch: int = 50) -> torch.Tensor:
    return torch.cat([net(to_input(images[i:i + batch])) for i in range(0, len(images), batch)])


def top1(logits: torch.Tensor, labels: np.ndarray, classes: list[int] | None = None) -> float:
    """Top-1 in percent; with ``classes``, the argmax over those logits only."""
    if classes is not None:
        idx = torch.tensor(classes)
        pred = idx[logits[:, idx].argmax(1)]
    else:
        pred = logits.argmax(1)
    return 100.0 * float((pred.numpy() == labels).mean())


@torch.no_grad()
def latency_ms(fn, x, repeats: int) -> float:
    fn(x)  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(1000.0 * (time.perf_counter() - t0))
    return statistics.median(times)


def cmd_teacher(args) -> dict:
    root = require_data(args.data, PROG)
    files, labels = imagenet_val_files(root)
    if not files:
        _fail(f"no ImageNet-validation files (ILSVRC2012_val_*) under {root}")
    net = teacher_or_fail(PROG)
    t0 = time.perf_counter()
    images = crops(files)
    logits = logits_of(net, images)
    seconds = time.perf_counter() - t0
    classes = sorted(IMAGENET_INDEX.values())
    res = {
        "top1": [round(top1(logits, labels), 2)],
        "top1_10class": [round(top1(logits, labels, classes), 2)],
        "bytes": [RES * RES * 3],
        "edge_ms": [round(latency_ms(net, to_input(images[:1]), args.repeats), 2)],
        "images": [len(files)],
    }
    doc = {"name": "EfficientNet-Lite0 teacher (uncompressed)",
           "description": f"published ImageNet weights; {len(files)} ImageNet-validation images of Imagenette, "
                          f"resize {RESIZE} + centre crop {RES}; {machine()}; "
                          f"classified in {seconds:.1f} s", "results": res}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "teacher.json.part"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out / "teacher.json")
    print(f"teacher: top-1 {res['top1'][0]:.2f} % (1000 classes), {res['top1_10class'][0]:.2f} % "
          f"(Imagenette's 10) on {len(files)} images; whole network {res['edge_ms'][0]:.1f} ms an image "
          f"({args.threads} threads) -> {out / 'teacher.json'}")
    return doc


def _timed(fn, items, count: int) -> tuple[list, float]:
    """(``fn`` of every item, median ms of the first ``count`` calls after one warm-up call)."""
    fn(items[0])
    outs, times = [], []
    for i, it in enumerate(items):
        t = time.perf_counter()
        outs.append(fn(it))
        if i < count:
            times.append(1000.0 * (time.perf_counter() - t))
    return outs, statistics.median(times)


def _point(logits: torch.Tensor, labels: np.ndarray, nbytes, **extra) -> dict:
    classes = sorted(IMAGENET_INDEX.values())
    return {"bytes": float(np.mean(nbytes)), "top1": top1(logits, labels) / 100,
            "top1_10class": top1(logits, labels, classes) / 100, **extra}


def run_classical(net, images: np.ndarray, labels, name: str, q: int, count: int) -> dict:
    enc, dec = (jpeg_codec if name == JPEG_NAME else webp_codec)(q)
    datas, ms = _timed(enc, list(images), count)
    decoded = np.stack([dec(d) for d in datas])
    if decoded.shape != images.shape:
        raise RuntimeError(f"{name} q{q}: decoded shape {decoded.shape} != {images.shape}")
    return _point(logits_of(net, decoded), labels, [len(d) for d in datas], quality=q, edge_ms=ms)


@torch.no_grad()
def run_student(edge_p: Path, server_p: Path, raws: list[np.ndarray], images: np.ndarray, labels, count: int) -> dict:
    """One student through the real edge and server paths (see the module docstring). ``edge_ms``
    times the edge from the decoded photo (resize and crop included); ``edge_ms_crop`` from the
    224 px crop, as the teacher's latency is timed -- and must give the same bytes."""
    edge, server = load_edge(edge_p), load_server(server_p)
    enc, dec = EdgeEncoder(edge), ServerDecoder(server, edge)
    datas, ms = _timed(enc.encode, raws, count)
    crops = [to_input(images[i:i + 1])[0] for i in range(count)]
    again, ms_crop = _timed(enc.encode, crops, count)
    if again != datas[:count]:
        raise RuntimeError(f"{edge_p}: the crop and the photo it was cut from code to different bytes")
    qs = [dec.decode_latent(d) for d in datas]
    for i in range(0, len(raws), max(1, len(raws) // 10)):  # the server's integers are the edge's
        if not np.array_equal(qs[i], enc.latent(raws[i])):
            raise RuntimeError(f"{edge_p}: image {i} decodes to other integers than the edge coded")
    logits = torch.cat([torch.from_numpy(dec.logits(np.stack(qs[i:i + 50]))) for i in range(0, len(qs), 50)])
    return _point(logits, labels, [len(d) for d in datas], beta=student_beta(edge_p), file=edge_p.name,
                  edge_ms=ms, edge_ms_crop=ms_crop, edge_model=edge.hash.hex())


def cmd_run(args) -> dict:
    root = require_data(args.data, PROG)
    files, labels = imagenet_val_files(root)
    if not files:
        _fail(f"no ImageNet-validation files (ILSVRC2012_val_*) under {root}")
    students = find_students(args.students) if args.students else []
    if args.students and not students:
        _fail(f"no student models match {args.students} (want *_edge.npz beside *_server.npz)")
    net = teacher_or_fail(PROG)
    raws = [read_rgb(f) for f in files]
    images = np.stack([center_crop(r, RES, RESIZE) for r in raws])
    count = min(args.latency_images, len(files))
    groups: dict[str, list[dict]] = {}
    t_ms = latency_ms(net, to_input(images[:1]), args.repeats)
    teacher = _point(logits_of(net, images), labels, [RES * RES * 3], edge_ms=t_ms)
    groups[TEACHER_NAME] = [teacher]
    for name, qs in ((JPEG_NAME, args.jpeg), (WEBP_NAME, args.webp)):
        for q in (int(v) for v in qs.split(",") if v):
            groups.setdefault(name, []).append(run_classical(net, images, labels, name, q, count))
            p = groups[name][-1]
            print(f"{name} q{q}: {p['bytes']:.0f} B, top-1 {100 * p['top1']:.2f} %", file=sys.stderr, flush=True)
    for e, s_ in students:
        groups.setdefault(STUDENT_NAME, []).append(run_student(e, s_, raws, images, labels, count))
        p = groups[STUDENT_NAME][-1]
        print(f"{e.name}: {p['bytes']:.0f} B, top-1 {100 * p['top1']:.2f} %, edge {p['edge_ms']:.1f} ms "
              f"({p['edge_ms_crop']:.1f} from the crop)",
              file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    where = (f"{len(files)} ImageNet-validation images of Imagenette at {RES} px (resize {RESIZE}, centre crop); "
             f"EfficientNet-Lite0 teacher (published ImageNet weights); {args.threads} threads; {machine()}")
    names = {JPEG_NAME: "Pillow/libjpeg 4:2:0, optimised Huffman", WEBP_NAME: webp_library(),
             STUDENT_NAME: "edge encode from the decoded photo, real container bytes", TEACHER_NAME: "uncompressed crop"}
    for name, pts in groups.items():
        write_json(out, f"{name} 224", f"{names[name]}; {where}", pts,
                   ("top1_10class", "quality", "beta", "edge_ms_crop"), pixels=RES * RES)
    check = paper_check(groups, teacher["top1"])

    def span(key, name):
        v = [p[key] for p in groups[name]]
        return f"{min(v):.2f}" if min(v) == max(v) else f"{min(v):.2f}-{max(v):.2f}"

    check += f"\n  edge latency from the 224 px crop: whole teacher {t_ms:.2f} ms"
    if STUDENT_NAME in groups:
        check += (f", student {span('edge_ms_crop', STUDENT_NAME)} ms "
                  f"(from the decoded photo, resize included: {span('edge_ms', STUDENT_NAME)} ms)")
    check += "".join(f", {n} encode {span('edge_ms', n)} ms" for n in (JPEG_NAME, WEBP_NAME) if n in groups)
    text = summarize(out, groups, f"# Split codec at 224 px\n\n{where}", check)
    plot(out, groups, teacher["top1"])
    print(text)
    return groups


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("teacher", help="the teacher's accuracy on the 500 ImageNet-validation images, and its latency")
    t.add_argument("--data", default=str(default_data_dir()), help="Imagenette folder (train/, val/)")
    t.add_argument("--out", default="bench_data/split224", help="output folder (default bench_data/split224)")
    t.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    t.add_argument("--repeats", type=int, default=20, help="latency repeats (median; default 20)")
    r = sub.add_parser("run", help="the rate-accuracy benchmark: teacher, JPEG, WebP and students, same run")
    r.add_argument("--data", default=str(default_data_dir()), help="Imagenette folder (train/, val/)")
    r.add_argument("--out", default="bench_data/split224", help="output folder (default bench_data/split224)")
    r.add_argument("--students", default="bench_data/split224/student_*_edge.npz",
                   help="student edge models (glob or folder; server files beside them; '' for none)")
    r.add_argument("--jpeg", default="5,10,20,30,50,75,90", help="JPEG qualities ('' for none)")
    r.add_argument("--webp", default="5,10,20,30,50,75,90", help="WebP qualities ('' for none)")
    r.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    r.add_argument("--repeats", type=int, default=20, help="teacher latency repeats (median; default 20)")
    r.add_argument("--latency-images", type=int, default=50, help="images whose encode is timed (default 50)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    (cmd_teacher if args.cmd == "teacher" else cmd_run)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
