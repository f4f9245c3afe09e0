"""Training pcz models from images: data gathering (whole images or patches with context) + EM.

Used by ``pcz train`` and by ``tools/train_pcz_models.py`` (which makes the shipped models).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from neural_codecs.models.pc import fit_em

from ..io.images import ImageFormatError, read_idx, read_image
from ..pcz.model import PatchLayout, PczModel

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def list_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files given directly, plus image and idx files found (recursively, sorted) in folders."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and (f.suffix.lower() in IMAGE_SUFFIXES
                                                                     or "idx" in f.name))
        else:
            out.append(p)
    return out


def is_idx(path: Path) -> bool:
    return "idx" in path.name and path.suffix.lower() not in IMAGE_SUFFIXES


def load_same_size(paths: list[Path], limit: int | None = None) -> np.ndarray:
    """Images of one size from idx files and/or image files, as (N, H, W[, 3])."""
    arrays = []
    for p in paths:
        arrays.append(read_idx(p, limit) if is_idx(p) else read_image(p)[None])
        if limit is not None and sum(map(len, arrays)) >= limit:
            break
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) != 1:
        raise ImageFormatError(f"images of different sizes {sorted(shapes)} (an archive or a whole-image model "
                               "needs one size; train a patch model with --patch)")
    data = np.concatenate(arrays)
    return data[:limit] if limit else data


def sample_patches(images: Iterable[np.ndarray], layout: PatchLayout, per_image: int, seed: int = 0) -> np.ndarray:
    """Random patches with their full context (rows (per_image * n_images, D) uint8).

    Positions are drawn on the patch grid so training sees what the coder sees; patches whose
    context would leave the image are skipped (the coder marginalises missing context exactly).
    """
    rng = np.random.default_rng(seed)
    dy, dx, ch = layout.offsets.T
    rows = []
    for img in images:
        img = img[..., None] if img.ndim == 2 else layout.to_coded_colors(img)
        H, W = img.shape[:2]
        R, C = H // layout.ph, W // layout.pw
        if R < 2 or C < 3:
            continue
        r = rng.integers(1, R, per_image)
        c = rng.integers(1, C - 1, per_image)
        ys = r[:, None] * layout.ph + dy[None]
        xs = c[:, None] * layout.pw + dx[None]
        rows.append(img[ys, xs, np.broadcast_to(ch, ys.shape)])
    if not rows:
        raise ImageFormatError("no image is large enough for this patch size")
    centered, _ = layout.center(np.concatenate(rows).astype(np.int64))
    return centered.astype(np.uint8)


def train(data: np.ndarray, layout: PatchLayout, *, K: int, epochs: int, full_epochs: int, batch: int = 512,
          pseudocount: float = 0.01, inertia: tuple[float, float] = (0.2, 0.9), seed: int = 0, name: str = "",
          info: dict | None = None,
          progress: Callable[[int, int, float], None] | None = None,
          adapt: tuple[float, int, float] | None = None) -> PczModel:
    """EM on rows of model variables (N, D) uint8 -> a :class:`PczModel` (fixed-point probabilities);
    ``adapt`` = (strength, every, decay) makes it a backward-adaptive model (:mod:`models.pc.adapt`)."""
    t0 = time.time()
    hclt, history = fit_em(np.ascontiguousarray(data), K, minibatch_epochs=epochs, batch_size=batch,
                           full_epochs=full_epochs, pseudocount=pseudocount, inertia=inertia, seed=seed,
                           progress=progress)
    meta = {"K": K, "epochs": epochs, "full_epochs": full_epochs, "batch": batch, "pseudocount": pseudocount,
            "inertia": list(inertia),
            "seed": seed, "train_rows": int(len(data)), "train_seconds": round(time.time() - t0, 1),
            "train_bpd_history": [round(-h / np.log(2) / data.shape[1], 4) for h in history]}
    meta.update(info or {})
    return PczModel.from_hclt(hclt, layout, name=name, info=meta, adapt=adapt)
