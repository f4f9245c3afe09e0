"""Reading and writing the images the codecs take: PNG (and what Pillow reads) and MNIST idx files.

Images are numpy uint8 arrays, (H, W) gray or (H, W, 3) RGB, as Pillow and scikit-image give them.
Every reader checks declared sizes before it allocates, and names the file in its errors.
"""
from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np

from neural_codecs.bitstream import AbsurdSizeError, CodecError, MalformedError, TruncatedError

#: Largest image accepted (pixels), checked from the header before decoding.
MAX_PIXELS = 1 << 28


class ImageFormatError(CodecError):
    """Not an image we can code (unreadable, or a kind we refuse, e.g. 16-bit or alpha)."""


def check_image(img: np.ndarray, name: str | None = None) -> np.ndarray:
    """Validate an array as a codec input: uint8, (H, W) or (H, W, 3), nonempty."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ImageFormatError(f"expected uint8 pixels, got {img.dtype}", name)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ImageFormatError(f"expected an (H, W) gray or (H, W, 3) RGB image, got shape {img.shape}", name)
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageFormatError("empty image", name)
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise AbsurdSizeError(f"{img.shape[1]}x{img.shape[0]} image exceeds {MAX_PIXELS} pixels", name)
    return np.ascontiguousarray(img)


def read_image(path: str | os.PathLike | io.BufferedIOBase, name: str | None = None) -> np.ndarray:
    """A PNG (or anything Pillow opens) as uint8 (H, W) or (H, W, 3).

    8-bit gray and RGB are read as they are; 1-bit images become gray 0/255 and palette images
    without transparency become RGB (both lossless in pixel values). 16-bit images and images with
    an alpha channel are refused with a message rather than silently changed. ``path`` may be an
    open binary file (stdin's bytes); ``name`` then names it in errors.
    """
    from PIL import Image, UnidentifiedImageError

    name = name or str(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise AbsurdSizeError(f"{w}x{h} image exceeds {MAX_PIXELS} pixels", name)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F") or im.info.get("bits", 8) > 8:
                raise ImageFormatError(f"{mode} ({'16-bit' if '16' in mode else 'high bit depth'}) images "
                                       "are not supported; convert to 8-bit first", name)
            if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
                raise ImageFormatError("images with an alpha channel or transparency are not supported", name)
            if mode == "P":
                im = im.convert("RGB")
            elif mode == "1":
                im = im.convert("L")
            elif mode not in ("L", "RGB"):
                raise ImageFormatError(f"image mode {mode} is not supported (8-bit gray or RGB only)", name)
            im.load()
            return check_image(np.asarray(im), name)
    except UnidentifiedImageError:
        raise ImageFormatError("not an image file Pillow can read", name) from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, CodecError):
            raise
        if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise ImageFormatError(f"cannot read image ({err})", name) from None


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of a uint8 gray/RGB array (for writing outputs atomically)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(check_image(img)).save(buf, format="PNG")
    return buf.getvalue()


def read_idx(path: str | os.PathLike, limit_items: int | None = None) -> np.ndarray:
    """An MNIST-style idx file of uint8 images (``.gz`` or raw) as (N, H, W) uint8."""
    name = str(path)
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise MalformedError(f"corrupt gzip data ({err})", name) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ImageFormatError("not an idx file", name)
    dtype, ndim = raw[2], raw[3]
    if dtype != 0x08 or ndim != 3:
        raise ImageFormatError(f"idx file holds type 0x{dtype:02x} with {ndim} dimensions; expected uint8 images (3-D)", name)
    if len(raw) < 16:
        raise TruncatedError("idx header truncated", name)
    n, h, w = (int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(3))
    if h * w > MAX_PIXELS or h == 0 or w == 0:
        raise AbsurdSizeError(f"idx declares {h}x{w} images", name)
    if len(raw) - 16 < n * h * w:
        raise TruncatedError(f"idx declares {n} images of {h}x{w} but holds {len(raw) - 16} bytes", name)
    if limit_items is not None:
        n = min(n, limit_items)
    return np.frombuffer(raw, dtype=np.uint8, count=n * h * w, offset=16).reshape(n, h, w).copy()


def luma(img: np.ndarray) -> np.ndarray:
    """Gray from RGB: ITU-R BT.601 weights in integer arithmetic (exact, same on every machine)."""
    c = img.astype(np.int32)
    return ((299 * c[..., 0] + 587 * c[..., 1] + 114 * c[..., 2] + 500) // 1000).astype(np.uint8)
