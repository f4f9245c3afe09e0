"""Train the Entropic Student's teacher and students on Imagenette (CPU-sized), reproducibly.

    python tools/train_split.py teacher --arch resnet18 --base-width 32 --res 64 --epochs 12 \\
        -o bench_data/split/teacher.npz
    python tools/train_split.py student --teacher bench_data/split/teacher.npz --betas 0.25,0.5,1,1.5 \\
        -o bench_data/split        # 16 + 24 epochs, stage 1 on a cosine: ~15 min per beta at 64 px on 2 cores

``teacher``: a torchvision-named ResNet trained from scratch on Imagenette *train* at ``--res`` px
(SGD momentum 0.9, lr 0.1 · batch / 256, per-step cosine decay, label smoothing 0.1, weight decay
5e-4), top-1 on *val* after every epoch. Written after every epoch (an interrupted run keeps the
last one): ``OUT.npz`` (the ``state_dict`` under torchvision's names, no pickle) and ``OUT.json``
(architecture, width, classes, resolution, history).

``student``: for each β of ``--betas``, a student cut from the teacher (its layer2 … fc copied),
trained in the paper's two stages: :meth:`EntropicStudent.train_stage1` (feature distillation +
β · rate, Adam 1e-3 decaying along a cosine; ``--schedule1 constant`` keeps the paper's constant
rate) and :meth:`~EntropicStudent.train_stage2` (decoder + tail on CE + KL, Adam 1e-3 with a cosine
decay; ``--optimizer2 sgd`` for the paper's SGD 1e-3 momentum 0.9), both on batches of 16 (steps,
not images seen, limit a CPU-sized run). The default is 16 + 24 epochs (about 15 minutes per β at
64 px on 2 cores), RESULTS.md's recipe, because at β 1 it gives 71.3 % top-1 at 232 bytes/image
where 6 + 10 epochs at a constant stage-1 rate give 68.1 % at 234. Written with
:func:`codec.split.save_models` as ``DIR/student_b{β}_edge.npz`` / ``_server.npz``
(+ ``student_b{β}.json``), then measured on val by really encoding every image with
``EdgeEncoder`` and decoding the bytes with ``ServerDecoder``.
Existing students are skipped unless ``--force`` (so an interrupted sweep resumes).

**β's unit.** ``--betas`` weighs *bits per input pixel* (``loss = Σ MSE + β · bits / res²``), so
one β list means the same trade-off at every resolution; the student's own ``beta`` (bits per
image) is β / res². ``--rate-unit image`` passes β through unchanged.

Every image goes through the edge model's preprocessing geometry (``tools/split_data.py``).
Seeds are fixed (``--seed``): the same command gives the same models on the same software stack.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from neural_codecs import bitstream as bs  # noqa: E402
from neural_codecs.codec.split import EdgeEncoder, ServerDecoder, save_models  # noqa: E402
from neural_codecs.models.split import ARCHS, EntropicStudent, ResNet  # noqa: E402
from neural_codecs.models.split.student import PRIOR_LR  # noqa: E402
from split_data import (DEFAULT_CACHE, ImagenetteDataset, class_names, default_data_dir, load_split,  # noqa: E402
                        normalize, require_data, resize_size_for)

PROG = "train_split"
TEACHER_FORMAT = "split-teacher"
TEACHER_BATCH = 128
#: Students learn from small batches: both stages are limited by steps, not by images seen (at 64 px,
#: 4 + 2 epochs, Adam in stage 2: batch 128 58.0 % top-1, batch 16 64.9 %, stage 1 in 235 s instead of 284 s).
STUDENT_BATCH = 16


def _fail(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


# ---------------------------------------------------------------------------------------------
# Teacher files
# ---------------------------------------------------------------------------------------------


def save_teacher(model: ResNet, meta: dict, path) -> None:
    """``path`` (.npz: the state_dict under torchvision names) and ``path.with_suffix('.json')``."""
    path = Path(path)
    buf = io.BytesIO()
    np.savez(buf, **{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    bs.atomic_write(path, buf.getvalue(), force=True)
    bs.atomic_write(path.with_suffix(".json"), (json.dumps(meta, indent=1) + "\n").encode(), force=True)


def load_teacher(path) -> tuple[ResNet, dict]:
    """A teacher written by :func:`save_teacher` (eval mode) and its metadata."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        _fail(f"teacher {path} or its metadata {meta_path.name} not found (train one with '{PROG} teacher')")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != TEACHER_FORMAT:
        _fail(f"{meta_path} is not teacher metadata")
    model = ResNet(meta["arch"], meta["num_classes"], meta["base_width"])
    with np.load(path, allow_pickle=False) as z:
        state = {k: torch.from_numpy(z[k].copy()) for k in z.files}
    model.load_state_dict(state)
    return model.eval(), meta


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


@torch.inference_mode()
def classify(model, crops: np.ndarray, batch: int = 256) -> np.ndarray:
    """Predicted class per uint8 crop (N, res, res, 3) for a ResNet (or anything returning logits)."""
    model.eval()
    preds = np.empty(len(crops), np.int64)
    for s in range(0, len(crops), batch):
        logits = model(normalize(crops[s:s + batch]))
        preds[s:s + batch] = logits.argmax(1).numpy()
    return preds


def eval_codec(edge, server, crops: np.ndarray, labels: np.ndarray, *, batch: int = 64,
               desc: str | None = None) -> dict:
    """Top-1 and container bytes per image of a student, through the real files: each crop is
    encoded by ``EdgeEncoder.encode`` (on the edge preprocessing of the crop), the bytes are
    parsed by ``ServerDecoder.decode_latent`` and classified by ``ServerDecoder.logits`` (batched)."""
    enc = EdgeEncoder(edge)
    dec = ServerDecoder(server, enc.model, topk=1)
    n = len(crops)
    nbytes = np.empty(n, np.int64)
    preds = np.empty(n, np.int64)
    bar = tqdm(total=n, desc=desc or "encode/decode val", unit="img", leave=False, mininterval=2,
               disable=desc is False)
    for s in range(0, n, batch):
        qs = []
        for i in range(s, min(n, s + batch)):
            data = enc.encode(normalize(crops[i]))
            nbytes[i] = len(data)
            qs.append(dec.decode_latent(data))
        preds[s:s + len(qs)] = dec.logits(np.stack(qs)).argmax(1)
        bar.update(len(qs))
    bar.close()
    return {"top1": float((preds == labels).mean()), "bytes": float(nbytes.mean()), "images": n,
            "bytes_min": int(nbytes.min()), "bytes_max": int(nbytes.max())}


# ---------------------------------------------------------------------------------------------
# Common setup
# ---------------------------------------------------------------------------------------------


def _loader(ds, batch: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch, shuffle=True, generator=g, drop_last=len(ds) > batch, num_workers=0)


def _datasets(args, res: int):
    root = require_data(args.data, PROG)
    kw = dict(cache=not args.no_cache, cache_dir=args.cache_dir)
    train = ImagenetteDataset(root, "train", res, train=True, **kw)
    val_x, val_y, val_wnids = load_split(root, "val", res, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    if val_wnids != train.wnids:
        _fail(f"train and val class folders differ under {root}")
    return train, val_x, val_y


class StepBar:
    """A ``progress(step, total, info)`` callback drawing one tqdm bar per epoch."""

    def __init__(self, desc: str, steps_per_epoch: int, keys=("loss",)):
        self.desc, self.per, self.keys, self.bar = desc, max(1, steps_per_epoch), keys, None

    def __call__(self, step: int, total, info: dict) -> None:
        epoch = (step - 1) // self.per
        if self.bar is None or (step - 1) % self.per == 0:
            if self.bar is not None:
                self.bar.close()
            epochs = -(-(total or step) // self.per)
            self.bar = tqdm(total=self.per, desc=f"{self.desc} epoch {epoch + 1}/{epochs}", unit="batch",
                            mininterval=2)
        self.bar.update(1)
        self.bar.set_postfix({k: f"{info[k]:.4g}" for k in self.keys if k in info}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------------------------------------
# teacher
# ---------------------------------------------------------------------------------------------


def cmd_teacher(args) -> None:
    out = Path(args.output or f"bench_data/split/teacher_{args.arch}_w{args.base_width}_r{args.res}.npz")
    if out.suffix != ".npz":
        _fail("the teacher output must end in .npz")
    if (out.exists() or out.with_suffix(".json").exists()) and not args.force:
        _fail(f"{out} exists (use --force to overwrite)")
    train, val_x, val_y = _datasets(args, args.res)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = ResNet(args.arch, len(train.wnids), args.base_width)
    args.batch = args.batch or TEACHER_BATCH
    loader = _loader(train, args.batch, args.seed)
    lr = args.lr if args.lr is not None else 0.1 * args.batch / 256
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=args.weight_decay)
    total = max(1, args.epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))
    meta = {"format": TEACHER_FORMAT, "arch": args.arch, "base_width": args.base_width,
            "num_classes": len(train.wnids), "res": args.res, "resize_size": resize_size_for(args.res),
            "wnids": train.wnids, "class_names": train.classes, "epochs": 0, "batch": args.batch, "lr": lr,
            "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing, "seed": args.seed,
            "train_images": len(train), "val_images": len(val_y), "machine": machine(), "history": []}
    print(f"{PROG} teacher: {args.arch} width {args.base_width}, {len(train.wnids)} classes, {args.res}px, "
          f"{len(train)} train / {len(val_y)} val images, {args.epochs} epochs of {len(loader)} batches, "
          f"lr {lr:g}, {machine()}", flush=True)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        seen = correct = 0
        loss_sum = 0.0
        bar = tqdm(loader, desc=f"teacher epoch {epoch + 1}/{args.epochs}", unit="batch", mininterval=2)
        for x, y in bar:
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
        bar.close()
        top1 = float((classify(model, val_x) == val_y).mean())
        secs = time.perf_counter() - t0
        meta["history"].append({"epoch": epoch + 1, "loss": loss_sum / max(1, seen),
                                "train_top1": correct / max(1, seen),
                                "val_top1": top1, "seconds": round(secs, 1)})
        meta.update(epochs=epoch + 1, top1=top1, seconds=round(secs, 1))
        save_teacher(model, meta, out)
        print(f"  epoch {epoch + 1}: loss {loss_sum / max(1, seen):.4f}, train top-1 {correct / max(1, seen):.4f}, "
              f"val top-1 {top1:.4f} ({secs:.0f} s) -> {out}", flush=True)


# ---------------------------------------------------------------------------------------------
# student
# ---------------------------------------------------------------------------------------------


def _pair(s: str, what: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in s.split(","))
        return a, b
    except ValueError:
        _fail(f"{what} takes two integers, e.g. 96,48 (got {s!r})")


def beta_tag(beta: float) -> str:
    return f"{beta:g}"


def student_paths(out: Path, beta: float) -> tuple[Path, Path, Path]:
    stem = out / f"student_b{beta_tag(beta)}"
    return Path(f"{stem}_edge.npz"), Path(f"{stem}_server.npz"), Path(f"{stem}.json")


def parse_betas(s: str, flag: str = "--betas", fail=None) -> list[float]:
    """Comma-separated rate weights, each a positive finite number; else ``fail(message)``."""
    fail = fail or _fail
    try:
        betas = [float(b) for b in s.split(",") if b.strip()]
    except ValueError:
        fail(f"{flag} takes numbers, e.g. 0.125,0.25,0.5 (got {s!r})")
    if not betas or any(not (b > 0 and math.isfinite(b)) for b in betas):
        fail(f"{flag} must be positive numbers")
    return betas


def cmd_student(args) -> None:
    betas = parse_betas(args.betas)
    teacher, tmeta = load_teacher(args.teacher)
    args.batch = args.batch or STUDENT_BATCH
    res = tmeta["res"]
    if args.res is not None and args.res != res:
        _fail(f"the teacher was trained at {res}px, not {args.res}px")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    train, val_x, val_y = _datasets(args, res)
    if train.wnids != tmeta["wnids"]:
        _fail("the data's classes differ from the teacher's")
    names = tmeta["wnids"] if args.label_names == "wnid" else class_names(tmeta["wnids"])
    overrides = dict(input_size=res, enc_channels=_pair(args.enc_channels, "--enc-channels"),
                     bottleneck=args.bottleneck, dec_channels=_pair(args.dec_channels, "--dec-channels"))
    t_top1 = float((classify(teacher, val_x) == val_y).mean())
    print(f"{PROG} student: teacher {args.teacher} ({tmeta['arch']} width {tmeta['base_width']}, {res}px, "
          f"val top-1 {t_top1:.4f}); betas {', '.join(map(beta_tag, betas))} per {args.rate_unit}; "
          f"stage 1 {args.stage1_epochs} + stage 2 {args.stage2_epochs} epochs; {machine()}", flush=True)
    for beta in betas:
        edge_p, server_p, meta_p = student_paths(out, beta)
        if edge_p.exists() and server_p.exists() and not args.force:
            print(f"  beta {beta_tag(beta)}: {edge_p.name} exists, skipped (--force retrains)", flush=True)
            continue
        beta_img = beta / (res * res) if args.rate_unit == "pixel" else beta
        torch.manual_seed(args.seed)
        student = EntropicStudent.from_teacher(teacher, **overrides)
        loader = _loader(train, args.batch, args.seed)
        t0 = time.perf_counter()
        bar = StepBar(f"b{beta_tag(beta)} stage 1", len(loader), ("loss", "distortion", "bits"))
        h1 = student.train_stage1(teacher, loader, epochs=args.stage1_epochs, beta=beta_img, lr=args.lr1,
                                  prior_lr=args.prior_lr, schedule=args.schedule1, progress=bar)
        bar.close()
        bar = StepBar(f"b{beta_tag(beta)} stage 2", len(loader))
        h2 = student.train_stage2(teacher, loader, epochs=args.stage2_epochs, lr=args.lr2,
                                  optimizer=args.optimizer2, progress=bar)
        bar.close()
        train_s = time.perf_counter() - t0
        edge, server = save_models(student, names, edge_p, server_p, force=True)
        r = eval_codec(edge, server, val_x, val_y, desc=f"b{beta_tag(beta)} val")
        tail = max(1, len(loader))
        meta = {"beta": beta, "rate_unit": args.rate_unit, "beta_per_image_bits": beta_img, "res": res,
                "teacher": str(args.teacher), "teacher_top1": t_top1, "student": student.config.to_dict(),
                "edge_model": edge.hash.hex(), "stage1_epochs": args.stage1_epochs,
                "stage2_epochs": args.stage2_epochs, "lr1": args.lr1, "prior_lr": args.prior_lr, "lr2": args.lr2,
                "schedule1": args.schedule1, "optimizer2": args.optimizer2,
                "batch": args.batch,
                "seed": args.seed, "train_seconds": round(train_s, 1), "machine": machine(),
                "stage1_last": {k: float(np.mean([h[k] for h in h1[-tail:]])) for k in h1[0]} if h1 else None,
                "stage2_last_loss": float(np.mean([h["loss"] for h in h2[-tail:]])) if h2 else None,
                "val": r, "class_names": names}
        bs.atomic_write(meta_p, (json.dumps(meta, indent=1) + "\n").encode(), force=True)
        s1 = meta["stage1_last"] or {}
        print(f"  beta {beta_tag(beta)}: val top-1 {r['top1']:.4f} at {r['bytes']:.1f} bytes/image "
              f"({8 * r['bytes'] / (res * res):.4f} bpp; stage-1 est. {s1.get('bits', float('nan')) / 8:.1f} B), "
              f"trained in {train_s:.0f} s -> {edge_p.name}, {server_p.name}", flush=True)


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--data", type=Path, default=default_data_dir(),
                       help="Imagenette folder with train/ and val/ (default: %(default)s)")
        p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="decoded-split cache (%(default)s)")
        p.add_argument("--no-cache", action="store_true", help="decode images on every access instead")
        p.add_argument("--batch", type=int, help=f"batch size (teacher {TEACHER_BATCH}, student {STUDENT_BATCH})")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
        p.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")

    p = sub.add_parser("teacher", help="train a ResNet teacher", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common(p)
    p.add_argument("--arch", default="resnet18", choices=sorted(ARCHS))
    p.add_argument("--base-width", type=int, default=32, help="stem / layer1 channels (torchvision: 64)")
    p.add_argument("--res", type=int, default=64, help="input side in pixels")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr", type=float, help="peak learning rate (default 0.1 * batch / 256)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("-o", "--output", help="teacher .npz (default bench_data/split/teacher_ARCH_wWIDTH_rRES.npz)")
    p.set_defaults(func=cmd_teacher)

    p = sub.add_parser("student", help="train Entropic Students from a teacher",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common(p)
    p.add_argument("--teacher", type=Path, required=True, help="teacher .npz (its .json beside it)")
    p.add_argument("--res", type=int, help="must equal the teacher's resolution (taken from it by default)")
    p.add_argument("--betas", default="0.25,0.5,1,1.5", help="rate weights, one student each")
    p.add_argument("--rate-unit", choices=("pixel", "image"), default="pixel",
                   help="beta weighs bits per input pixel (beta / res^2 per image bit) or bits per image")
    p.add_argument("--stage1-epochs", type=int, default=16)
    p.add_argument("--stage2-epochs", type=int, default=24)
    p.add_argument("--lr1", type=float, default=1e-3, help="stage 1 Adam learning rate")
    p.add_argument("--prior-lr", type=float, default=PRIOR_LR,
                   help="stage 1 Adam learning rate of the prior's density (%(default)s; its few parameters "
                        "start wide and must tighten within a short run)")
    p.add_argument("--schedule1", choices=("constant", "cosine"), default="cosine",
                   help="stage 1 learning rates: constant (the paper's) or decaying to 0 along a cosine")
    p.add_argument("--lr2", type=float, default=1e-3, help="stage 2 learning rate")
    p.add_argument("--optimizer2", choices=("adam", "sgd"), default="adam",
                   help="stage 2 optimizer: Adam with a cosine decay, or the paper's SGD (momentum 0.9)")
    p.add_argument("--enc-channels", default="96,48", help="encoder channels (the paper's)")
    p.add_argument("--bottleneck", type=int, default=24, help="latent channels (the paper's)")
    p.add_argument("--dec-channels", default="512,256", help="decoder channels (the paper's)")
    p.add_argument("--label-names", choices=("human", "wnid"), default="human",
                   help="class names in the server model ('wnid' lets 'splitcodec eval' run on val/ as is)")
    p.add_argument("-o", "--output", default="bench_data/split", help="folder for student_b{beta}_{edge,server}.npz")
    p.set_defaults(func=cmd_student)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
