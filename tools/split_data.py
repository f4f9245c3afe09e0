"""Imagenette for the Entropic Student tools (``train_split.py``, ``bench_split.py``).

A folder ``ROOT/<split>/<wnid>/*.JPEG`` (Imagenette: 10 classes; any folder of class subfolders
works). Classes are the sorted subfolder names (wnid -> index); :data:`IMAGENETTE_NAMES` gives the
human-readable names of the ten Imagenette wnids (others keep their folder name).

**Geometry = the codec's edge preprocessing.** Every image becomes a uint8 ``res`` × ``res`` crop
made exactly as :func:`codec.split.preprocess` makes it for an edge model of input size ``res``
with its default ``resize_size = round(res · 256 / 224)``: gray -> RGB, shorter side resized to
``resize_size`` with Pillow's bilinear filter, centre crop at ``round((side - res) / 2)``.
:func:`normalize` then applies the same float32 ops (``x / 255``, ImageNet mean / std), so
``normalize(crop)`` is *bit-identical* to ``EdgeEncoder.preprocess(raw image)``;
:func:`check_edge_consistency` verifies that on real files. JPEG / WebP baselines compress that
very uint8 crop.

**Cache.** Decoding 9,469 JPEGs takes a while on a small CPU, so a split can be decoded once into
``CACHE/<split>_r<res>_<key>.npy`` (uint8 N × res × res × 3, ``allow_pickle=False``) plus
``..._labels.npy`` (int64); ``key`` hashes the file list, sizes and the class list, so a changed
folder never reuses a stale cache.

**Augmentation** (training only): random crop with zero padding (``res // 8`` pixels a side) and a
random horizontal flip, on the uint8 crop, before normalisation.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from neural_codecs.codec.split import IMAGENET_MEAN, IMAGENET_STD

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "bench_data" / "split_cache"
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}

IMAGENETTE_NAMES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}

#: Each Imagenette wnid's class index in a 1000-way ImageNet classifier.
IMAGENET_INDEX = {
    "n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491, "n03028079": 497,
    "n03394916": 566, "n03417042": 569, "n03425413": 571, "n03445777": 574, "n03888257": 701,
}
#: Imagenette's files from ImageNet's *validation* split carry this prefix (the rest come from its
#: training split, which an ImageNet-pretrained teacher has seen).
IMAGENET_VAL_PREFIX = "ILSVRC2012_val_"


def imagenet_val_files(root) -> tuple[list[Path], np.ndarray]:
    """Imagenette's images from ImageNet's validation split, from both of its folders (sorted by
    name), with their 1000-way ImageNet labels: the evaluation set of an ImageNet teacher."""
    files = []
    for split in ("train", "val"):
        files += [p for p in (Path(root) / split).glob(f"*/{IMAGENET_VAL_PREFIX}*") if p.suffix.lower() in IMAGE_SUFFIXES]
    files.sort(key=lambda p: p.name)
    return files, np.asarray([IMAGENET_INDEX[p.parent.name] for p in files], np.int64)


def default_data_dir() -> Path:
    """``$SHARED_DATA/imagenette`` if SHARED_DATA is set, else ``../shared/data/imagenette``."""
    env = os.environ.get("SHARED_DATA")
    if env:
        return Path(env) / "imagenette"
    return Path(__file__).resolve().parents[2] / "shared/data/imagenette"


def require_data(root, prog: str, splits=("train", "val")) -> Path:
    """``root`` if it holds the splits; else one line on stderr and exit status 2."""
    root = Path(root)
    for s in splits:
        if not (root / s).is_dir():
            print(f"{prog}: error: Imagenette not found: {root / s} is not a folder "
                  f"(pass --data DIR holding train/<wnid>/ and val/<wnid>/)", file=sys.stderr)
            raise SystemExit(2)
    return root


def resize_size_for(res: int) -> int:
    """The edge model's default resize size for input size ``res`` (as ``EdgeModel.from_student``)."""
    return int(round(res * 256 / 224))


def class_names(wnids) -> list[str]:
    return [IMAGENETTE_NAMES.get(w, w) for w in wnids]


def list_split(root, split: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files (sorted by class then name), int64 labels and the sorted wnid list of ``root/split``."""
    d = Path(root) / split
    wnids = sorted(p.name for p in d.iterdir() if p.is_dir())
    if not wnids:
        raise FileNotFoundError(f"no class subfolders in {d}")
    files, labels = [], []
    for i, w in enumerate(wnids):
        fs = sorted(p for p in (d / w).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += fs
        labels += [i] * len(fs)
    if not files:
        raise FileNotFoundError(f"no images in {d}")
    return files, np.asarray(labels, np.int64), wnids


def read_rgb(path) -> np.ndarray:
    """A file decoded by Pillow as uint8 (H, W, 3) RGB (gray and CMYK converted)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def center_crop(img: np.ndarray, res: int, resize_size: int | None = None) -> np.ndarray:
    """uint8 (H, W[, 3]) -> uint8 (res, res, 3), the geometry of :func:`codec.split.preprocess`."""
    from PIL import Image

    rs = resize_size_for(res) if resize_size is None else int(resize_size)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    h, w = img.shape[:2]
    nh, nw = (rs, int(rs * w / h)) if h < w else (int(rs * h / w), rs)
    if (nh, nw) != (h, w):
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    top, left = int(round((nh - res) / 2.0)), int(round((nw - res) / 2.0))
    return np.ascontiguousarray(img[top:top + res, left:left + res])


_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).reshape(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).reshape(3, 1, 1)


def normalize(crop) -> torch.Tensor:
    """uint8 (H, W, 3) array / (N, H, W, 3) batch -> float32 (3, H, W) / (N, 3, H, W), with the same
    float32 ops as :func:`codec.split.preprocess` (so bit-identical to it)."""
    t = torch.as_tensor(np.ascontiguousarray(crop))
    t = t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    x = t.contiguous().to(torch.float32) / 255.0
    return (x - _MEAN) / _STD


def _cache_key(root: Path, split: str, files: list[Path], wnids: list[str], res: int) -> str:
    h = hashlib.sha1()
    h.update(f"{res}\0{resize_size_for(res)}\0{'/'.join(wnids)}\0".encode())
    for f in files:
        h.update(f"{f.relative_to(root / split)}\0{f.stat().st_size}\0".encode())
    return h.hexdigest()[:12]


def load_split(root, split: str, res: int, *, cache_dir=DEFAULT_CACHE, use_cache: bool = True,
               progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 crops (N, res, res, 3), int64 labels (N,), wnids) of ``root/split``, decoded once and
    cached as ``.npy`` when ``use_cache``."""
    root = Path(root)
    files, labels, wnids = list_split(root, split)
    path = lbl_path = None
    if use_cache:
        key = _cache_key(root, split, files, wnids, res)
        cache_dir = Path(cache_dir)
        path = cache_dir / f"{split}_r{res}_{key}.npy"
        lbl_path = cache_dir / f"{split}_r{res}_{key}_labels.npy"
        if path.is_file() and lbl_path.is_file():
            x = np.load(path, allow_pickle=False)
            y = np.load(lbl_path, allow_pickle=False)
            if x.shape == (len(files), res, res, 3) and x.dtype == np.uint8 and np.array_equal(y, labels):
                return x, y, wnids
    out = np.empty((len(files), res, res, 3), np.uint8)
    it = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc=f"decode {split} @ {res}px", unit="img", leave=False, mininterval=2)
    for i, f in enumerate(it):
        out[i] = center_crop(read_rgb(f), res)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        for p, a in ((path, out), (lbl_path, labels)):
            tmp = p.with_name(p.name + ".part.npy")
            np.save(tmp, a, allow_pickle=False)
            os.replace(tmp, p)
    return out, labels, wnids


class ImagenetteDataset(Dataset):
    """Imagenette ``split`` at ``res`` px: items are (normalised float32 (3, res, res), int label).

    ``train=True`` adds the augmentation (random crop with ``pad`` pixels of zero padding, random
    horizontal flip; torch's global RNG, so ``torch.manual_seed`` makes it reproducible).
    ``cache=False`` decodes every file anew on each access instead of pre-decoding the split.
    """

    def __init__(self, root, split: str, res: int, *, train: bool = False, cache: bool = True,
                 cache_dir=DEFAULT_CACHE, pad: int | None = None, progress: bool = True):
        self.root, self.split, self.res, self.train = Path(root), split, int(res), bool(train)
        self.pad = max(1, self.res // 8) if pad is None else int(pad)
        if cache:
            self.images, self.labels, self.wnids = load_split(root, split, res, cache_dir=cache_dir,
                                                              progress=progress)
            self.files = None
        else:
            self.files, self.labels, self.wnids = list_split(root, split)
            self.images = None
        self.classes = class_names(self.wnids)

    def __len__(self) -> int:
        return len(self.labels)

    def crop(self, i: int) -> np.ndarray:
        """The uint8 (res, res, 3) centre crop of item ``i`` (what the edge sees)."""
        if self.images is not None:
            return self.images[i]
        return center_crop(read_rgb(self.files[i]), self.res)

    def augment(self, img: np.ndarray) -> np.ndarray:
        p, r = self.pad, self.res
        padded = np.pad(img, ((p, p), (p, p), (0, 0)))
        dy, dx = (int(v) for v in torch.randint(0, 2 * p + 1, (2,)))
        out = padded[dy:dy + r, dx:dx + r]
        if torch.rand(()) < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def __getitem__(self, i: int):
        img = self.crop(i)
        if self.train:
            img = self.augment(img)
        return normalize(img), int(self.labels[i])


def check_edge_consistency(edge_model, files, res: int, count: int = 4) -> None:
    """Assert that ``normalize(center_crop(image))`` equals the edge model's own preprocessing of
    the raw image, bit for bit, on the first ``count`` files (raises RuntimeError otherwise)."""
    from neural_codecs.codec.split import EdgeEncoder

    enc = edge_model if isinstance(edge_model, EdgeEncoder) else EdgeEncoder(edge_model)
    if enc.model.config.input_size != res:
        raise RuntimeError(f"the edge model's input size is {enc.model.config.input_size}, the data's {res}")
    if enc.model.resize_size != resize_size_for(res):
        raise RuntimeError(f"the edge model resizes to {enc.model.resize_size}, the data to {resize_size_for(res)}")
    for f in list(files)[:count]:
        raw = read_rgb(f)
        if not torch.equal(enc.preprocess(raw), normalize(center_crop(raw, res))):
            raise RuntimeError(f"{f}: cached crop differs from the edge preprocessing")
