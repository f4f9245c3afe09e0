"""Quick start: the codecs on bundled images, then the layers underneath.

Runs on a fresh install with no data set:

1. **pcz** compresses scikit-image's bundled ``camera`` photograph (512x512 gray) and a crop of
   ``astronaut`` (RGB) with the shipped natural-image models, decompresses them, checks the round
   trip is bit-exact and prints the sizes beside PNG;
2. **nervcodec** pans a 128x96 window across scikit-image's ``astronaut`` (48 frames), fits an
   HNeRV network to the clip with ``nervcodec encode``'s defaults at 0.2 bpp (preset medium),
   writes the ``.nerv`` file, decodes it and prints its size and PSNR beside x264 (medium) at the
   closest size;
3. **splitcodec** encodes three bundled photographs on the "edge" with the shipped student
   encoder (a few hundred bytes each, written as ``.split`` files) and classifies them on the
   "server" from those bytes alone (the shipped model knows Imagenette's 10 classes);
4. the foundation alone: each pixel's difference to its left neighbour coded under a factorized
   table (the table travels in the file) -- one container written, inspected and decoded.

    python tools/quickstart.py [-o out/] [--force] [--skip-pcz] [--skip-nerv] [--skip-split]
"""
from __future__ import annotations

import argparse
import io
import sys
import zlib
from pathlib import Path

from neural_codecs.codec.cpu import calm_spinning, set_threads

calm_spinning()  # before torch loads (codec/cpu.py)

import numpy as np  # noqa: E402

from neural_codecs import bitstream as bs  # noqa: E402
from neural_codecs.bitstream.__main__ import _print_text, describe  # noqa: E402
from neural_codecs.codec.cli import exit_on_error  # noqa: E402


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


def _png_size(img: np.ndarray) -> int:
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(img).save(png, format="PNG", optimize=True)
    return len(png.getvalue())


def demo_images() -> list[tuple[str, np.ndarray]]:
    """The pcz demo's photographs: scikit-image's bundled ``camera`` and a crop of ``astronaut``."""
    from skimage import data as skdata

    return [("camera (512x512 gray)", skdata.camera()), ("astronaut crop (128x128 RGB)", skdata.astronaut()[:128, 192:320])]


def demo_pcz(outdir: Path, force: bool, images: list[tuple[str, np.ndarray]] | None = None) -> None:
    """Compress, write, read back and check ``images`` (label, array) with the shipped models;
    :func:`demo_images` by default (the tests pass small ones)."""
    import time

    from neural_codecs.codec import pcz

    print("pcz: lossless compression with probabilistic circuits (shipped models)")
    for label, img in images if images is not None else demo_images():
        key = pcz.default_model_for(img)
        model = pcz.load_model(key)
        t = time.perf_counter()
        data = pcz.compress(img, model)
        te = time.perf_counter() - t
        out = outdir / f"{label.split()[0]}.pcz"
        bs.atomic_write(out, data, force=force)
        t = time.perf_counter()
        back = pcz.decompress(out.read_bytes(), model, str(out))
        td = time.perf_counter() - t
        assert np.array_equal(back, img), "pcz round trip is not bit-exact"
        n = img.size
        print(f"  {label:<30} model {key:<13} pcz {len(data):>7} bytes {8 * len(data) / n:.3f} bpsp "
              f"(encode {te:.1f} s, decode {td:.1f} s, bit-exact)   PNG {_png_size(img):>7} bytes "
              f"{8 * _png_size(img) / n:.3f} bpsp")
    print()


def demo_clip(frames: int = 48, width: int = 128, height: int = 96) -> np.ndarray:
    """A camera pan across a bundled photograph: real texture, smooth motion, no data set needed."""
    from skimage import data as skdata

    img = skdata.astronaut()[::2, ::2]  # 256x256
    xs = np.linspace(0, img.shape[1] - width, frames).round().astype(int)
    ys = np.linspace(0, img.shape[0] - height, frames).round().astype(int)
    return np.stack([img[y:y + height, x:x + width] for x, y in zip(xs, ys)])


#: The demo's target rate: what x264 spends on this clip at a good-looking quality (crf ~22).
DEMO_BPP = 0.2


def demo_nerv(outdir: Path, force: bool, clip: np.ndarray | None = None, epochs: int | None = None) -> None:
    """Encode ``clip`` (default :func:`demo_clip`) with the encoder's defaults (``epochs``: the
    default preset's), decode it, and put x264 at the closest size beside it."""
    import time

    from neural_codecs.codec import nerv
    from neural_codecs.codec.eval.metrics import psnr

    set_threads()
    from neural_codecs.codec.io.video import read_video, write_video
    from neural_codecs.models.inr import FitOptions

    clip = demo_clip() if clip is None else clip
    epochs = epochs or nerv.PRESETS[nerv.DEFAULT_PRESET]["hnerv"]
    T, H, W, _ = clip.shape
    print(f"nervcodec: a {T}-frame {W}x{H} pan across 'astronaut' stored as an HNeRV network "
          f"(defaults, {DEMO_BPP} bpp asked)")
    t = time.perf_counter()
    res = nerv.encode(clip, 24, model="hnerv", bpp=DEMO_BPP,
                      options=FitOptions(epochs=epochs))
    te = time.perf_counter() - t
    out = outdir / "pan.nerv"
    bs.atomic_write(out, res.data, force=force)
    t = time.perf_counter()
    back, fps = nerv.decode(out.read_bytes(), str(out))
    td = time.perf_counter() - t
    assert np.array_equal(back, res.frames), "decoded frames differ from the encoder's evaluation"
    write_video(outdir / "pan_decoded.mp4", back, fps, force=force)
    pixels = T * H * W
    print(f"  pan.nerv  {len(res.data):>6} bytes {8 * len(res.data) / pixels:.3f} bpp  PSNR {psnr(back, clip):.2f} dB"
          f"  (encode {te:.0f} s, decode {T / td:.0f} fps) -> pan_decoded.mp4")
    # x264 (medium) at the CRF whose file size is closest to ours, for scale
    best = None
    for crf in range(20, 52, 2):
        mp4 = outdir / "pan_x264.mp4"
        write_video(mp4, clip, 24, crf=crf, force=True)
        size = mp4.stat().st_size
        if best is None or abs(size - len(res.data)) < abs(best[1] - len(res.data)):
            best = (crf, size, psnr(read_video(mp4).frames, clip))
    crf, size, p = best
    write_video(outdir / "pan_x264.mp4", clip, 24, crf=crf, force=True)
    print(f"  x264 crf {crf} {size:>6} bytes {8 * size / pixels:.3f} bpp  PSNR {p:.2f} dB  (pan_x264.mp4, closest size)")
    print()


def demo_split(outdir: Path, force: bool) -> None:
    """Edge: photo -> bytes with the shipped student encoder; server: bytes -> classes."""
    import time

    from skimage import data as skdata

    from neural_codecs.codec import split

    enc, dec = split.EdgeEncoder(), split.ServerDecoder(topk=3)
    print(f"splitcodec: shipped models (edge {enc.model_hash.hex()[:16]}); they know only these classes: "
          f"{', '.join(dec.model.class_names)} -- for other photos the answer is the nearest of them")
    for name in ("chelsea", "coffee", "rocket"):
        img = getattr(skdata, name)()
        t = time.perf_counter()
        bits = enc.encode(img)
        te = time.perf_counter() - t
        out = outdir / f"{name}.split"
        bs.atomic_write(out, bits, force=force)
        res = dec.decode(out.read_bytes(), str(out))
        top = ", ".join(f"{label} {p:.2f}" for label, p in res["topk"])
        print(f"  {name:<8} {img.shape[1]}x{img.shape[0]} -> {out.name} {len(bits):>5} bytes "
              f"(edge {1000 * te:.0f} ms)  server: {top}")
    print()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", default="out", help="folder for the files written (default: %(default)s)")
    ap.add_argument("-f", "--force", action="store_true", help="overwrite outputs that exist")
    ap.add_argument("--skip-pcz", action="store_true", help="skip the pcz demo")
    ap.add_argument("--skip-nerv", action="store_true", help="skip the nervcodec demo")
    ap.add_argument("--skip-split", action="store_true", help="skip the splitcodec demo")
    args = ap.parse_args(argv)
    from skimage import data as skdata

    img = skdata.camera()
    outdir = Path(args.output)
    out = outdir / "camera.ncf"
    with exit_on_error("quickstart"):
        outdir.mkdir(parents=True, exist_ok=True)
        if not args.skip_pcz:
            demo_pcz(outdir, args.force)
        if not args.skip_nerv:
            demo_nerv(outdir, args.force)
        if not args.skip_split:
            demo_split(outdir, args.force)
        print("the foundation: container + entropy layer (left-difference + one factorized table)")
        bs.atomic_write(out, encode(img), force=args.force)
        _print_text(describe(str(out)))
        back = decode(out.read_bytes(), str(out))
        assert np.array_equal(back, img), "round trip is not bit-exact"
    n = img.size
    print("\ncamera.png 512x512 gray, bits per pixel (lossless, bit-exact round trip checked):")
    for name, size in (("container (left-difference + factorized table)", out.stat().st_size),
                       ("PNG (Pillow, optimize)", _png_size(img)),
                       ("zlib level 9 of raw pixels", len(zlib.compress(img.tobytes(), 9)))):
        print(f"  {name:<48} {size:>7} bytes  {8 * size / n:.3f} bpp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
