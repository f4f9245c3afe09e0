"""Tiny pcz models and golden .pcz files: how they were made.

``python tests/golden/pcz_sample.py`` rewrites them -- only for a deliberate format change;
``python tests/golden/pcz_sample.py stored`` only the stored-fallback file,
``python tests/golden/pcz_sample.py 20bit`` rewrites only the 20-bit pair (model format with a
``precision`` entry, added after the first golden files), ``... adapt`` only the adaptive pair
(an ``adapt`` entry: tables that follow the image, :mod:`models.pc.adapt`).
The committed model files, not this script, are what the golden test decodes with.
"""
from pathlib import Path

import numpy as np

from neural_codecs.codec.pcz import PatchLayout, PczModel, compress, compress_archive
from neural_codecs.models.pc import HCLT

HERE = Path(__file__).parent
WHOLE_MODEL = HERE / "pcz_tiny_whole.npz"  # 6x5 gray images, no context
PATCH_MODEL = HERE / "pcz_tiny_patch_rgb.npz"  # 2x2 RGB patches with context
GOLDEN_IMAGE = HERE / "tiny_rgb.pcz"
GOLDEN_ARCHIVE = HERE / "tiny_whole_archive.pcz"
WHOLE20_MODEL = HERE / "pcz_tiny_whole_20bit.npz"  # as WHOLE_MODEL, probabilities out of 2**20
GOLDEN_IMAGE20 = HERE / "tiny_gray_20bit.pcz"
ADAPT_MODEL = HERE / "pcz_tiny_patch_rgb_adapt.npz"  # 2x2 RGB patches, 20 bits, adaptive
GOLDEN_ADAPT = HERE / "tiny_rgb_adapt.pcz"
GOLDEN_STORED = HERE / "tiny_rgb_stored.pcz"  # noise under PATCH_MODEL: the stored fallback (chunk S)


def golden_rgb_image() -> np.ndarray:
    y, x = np.mgrid[0:5, 0:7]
    return np.stack([(y * 40 + x * 9) % 256, (x * x * 5) % 256, (y * x * 11 + 3) % 256], -1).astype(np.uint8)


def golden_gray_images() -> np.ndarray:
    i = np.arange(3 * 6 * 5).reshape(3, 6, 5)
    return ((i * 37) % 251 * (i % 4 != 0)).astype(np.uint8)


def golden_adapt_image() -> np.ndarray:
    """Smooth gradients with a little texture: the adaptive tables learn something."""
    y, x = np.mgrid[0:14, 0:17]
    t = (x * 7 + y * 3) % 5
    return np.stack([y * 9 + t, x * 8 + 2 * t, (x + y) * 5 + t], -1).astype(np.uint8)


def golden_noise_image() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (4, 6, 3), dtype=np.uint8)


def _model(layout: PatchLayout, K: int, seed: int, name: str, precision: int = 16, adapt=None) -> PczModel:
    D = len(layout.offsets)
    rng = np.random.default_rng(seed)
    parent = np.array([-1] + [int(rng.integers(0, v)) for v in range(1, D)])
    return PczModel.from_hclt(HCLT.random(parent, K, seed=seed), layout, name=name, precision=precision, adapt=adapt)


def build() -> None:
    whole = _model(PatchLayout.whole(6, 5, 1), 3, 1, "tiny-whole")
    patch = _model(PatchLayout.with_context(2, 2, 3), 3, 2, "tiny-patch-rgb")
    whole.save(WHOLE_MODEL, force=True)
    patch.save(PATCH_MODEL, force=True)
    whole, patch = PczModel.load(WHOLE_MODEL), PczModel.load(PATCH_MODEL)
    GOLDEN_IMAGE.write_bytes(compress(golden_rgb_image(), patch))
    GOLDEN_ARCHIVE.write_bytes(compress_archive(golden_gray_images(), whole, block=2).data)


def build_20bit() -> None:
    _model(PatchLayout.whole(6, 5, 1), 3, 1, "tiny-whole-20bit", precision=20).save(WHOLE20_MODEL, force=True)
    GOLDEN_IMAGE20.write_bytes(compress(golden_gray_images()[1], PczModel.load(WHOLE20_MODEL)))


def build_adapt() -> None:
    _model(PatchLayout.with_context(2, 2, 3), 3, 2, "tiny-patch-rgb-adapt", precision=20,
           adapt=(4.0, 5, 0.9)).save(ADAPT_MODEL, force=True)
    GOLDEN_ADAPT.write_bytes(compress(golden_adapt_image(), PczModel.load(ADAPT_MODEL)))


def build_stored() -> None:
    GOLDEN_STORED.write_bytes(compress(golden_noise_image(), PczModel.load(PATCH_MODEL)))


if __name__ == "__main__":
    import sys
    parts = {"20bit": [build_20bit], "adapt": [build_adapt], "stored": [build_stored]}
    for part in parts[sys.argv[1]] if sys.argv[1:] else [build, build_20bit, build_adapt, build_stored]:
        part()
    for p in (WHOLE_MODEL, PATCH_MODEL, GOLDEN_IMAGE, GOLDEN_ARCHIVE, WHOLE20_MODEL, GOLDEN_IMAGE20, ADAPT_MODEL, GOLDEN_ADAPT,
              GOLDEN_STORED):
        print(p.name, p.stat().st_size)
