"""Quick start: write, inspect and decode a container with the shared entropy layer.

Runs on a fresh install with no data set: it takes scikit-image's bundled ``camera`` photograph,
codes each pixel's difference to its left neighbour under a factorized table fitted to the image
(the table travels in the file), writes one container, inspects it, decodes it and checks the
round trip is bit-exact, then prints the size beside PNG and zlib.

This is a demonstration of the layers, not a codec: pcz, nervcodec and splitcodec extend it.

    python tools/quickstart.py [-o out/camera.ncf] [--force]
"""
from __future__ import annotations

import argparse
import io
import sys
import zlib
from pathlib import Path

import numpy as np

import bitstream as bs
from bitstream.__main__ import _print_text, describe


def residuals(img: np.ndarray) -> np.ndarray:
    """Left-neighbour differences, wrapped into -128..127 (first column: difference to 128)."""
    left = np.concatenate([np.full((img.shape[0], 1), 128, np.int16), img[:, :-1].astype(np.int16)], axis=1)
    return ((img.astype(np.int16) - left + 128) % 256 - 128).astype(np.int64)


def unresiduals(res: np.ndarray) -> np.ndarray:
    img = np.empty(res.shape, np.uint8)
    prev = np.full(res.shape[0], 128, np.int64)
    for j in range(res.shape[1]):  # one column at a time, vectorised over rows
        prev = (prev + res[:, j]) % 256
        img[:, j] = prev
    return img


def encode(img: np.ndarray) -> bytes:
    res = residuals(img)
    hist = np.bincount((res + 128).ravel(), minlength=256).astype(np.float64)
    lo, hi = np.flatnonzero(hist)[[0, -1]]
    table = bs.CdfTable.from_pmfs([hist[lo:hi + 1]], offsets=[lo - 128])
    payload = bs.encode_factorized(res, table, np.zeros(res.shape, np.int64))
    header = bs.Header(kind=bs.CodecKind.GENERIC, width=img.shape[1], height=img.shape[0], channels=1)
    return bs.pack_items(header, [table.to_bytes(), payload],
                         extra_chunks=[bs.text_chunk("source", "skimage.data.camera()")])


def decode(data: bytes, name: str | None = None) -> np.ndarray:
    header, (table_bytes, payload) = bs.read_container(data, name=name)
    table, _ = bs.CdfTable.from_bytes(table_bytes, name)
    res = bs.decode_factorized(payload, table, np.zeros((header.height, header.width), np.int64), name)
    return unresiduals(res)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", default="out/camera.ncf", help="container to write (default: %(default)s)")
    ap.add_argument("-f", "--force", action="store_true", help="overwrite the output if it exists")
    args = ap.parse_args(argv)
    from PIL import Image
    from skimage import data as skdata

    img = skdata.camera()
    out = Path(args.output)
    with bs.exit_on_error("quickstart"):
        out.parent.mkdir(parents=True, exist_ok=True)
        bs.atomic_write(out, encode(img), force=args.force)
        _print_text(describe(str(out)))
        back = decode(out.read_bytes(), str(out))
        assert np.array_equal(back, img), "round trip is not bit-exact"
    png = io.BytesIO()
    Image.fromarray(img).save(png, format="PNG", optimize=True)
    n = img.size
    print(f"\ncamera.png 512x512 gray, bits per pixel (lossless, bit-exact round trip checked):")
    for name, size in (("container (left-difference + factorized table)", out.stat().st_size),
                       ("PNG (Pillow, optimize)", len(png.getvalue())),
                       ("zlib level 9 of raw pixels", len(zlib.compress(img.tobytes(), 9)))):
        print(f"  {name:<48} {size:>7} bytes  {8 * size / n:.3f} bpp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
