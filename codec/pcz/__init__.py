"""pcz: lossless image compression with Hidden Chow-Liu Tree probabilistic circuits.

Liu, Mandt & Van den Broeck, "Lossless Compression with Probabilistic Circuits" (ICLR 2022).
An image is cut into patches that match the model (MNIST's model: one 28x28 patch per image);
each patch is coded pixel by pixel under the circuit's exact conditionals, *given its already
decoded neighbours* (the row above and the column to the left): they are observed variables of
the patch model, and marginalisation makes p(patch | context) exact; neighbours outside the image
are simply unobserved. Patches on one anti-diagonal of the patch grid do not depend on each other,
so they are coded as one batch (vectorised, both cores); an archive codes many images per batch.

The pipeline is the library's one shape: array -> model (conditionals) -> entropy layer -> container.

    data = compress(img, model)          # numpy uint8 (H, W) or (H, W, 3) -> bytes
    img2 = decompress(data, model)       # bytes -> numpy, bit-exact

The package: :mod:`.model` is the model file format (patch layout, colour transform, fixed-point
probabilities, shipped models), :mod:`.tiling` the wavefront over the patch grid and the coding of
one stream, and :mod:`codec.train.pcz` trains models from images. This module is the API (compress,
decompress, archives, limits, file info) and re-exports the model names a user needs, so
``from neural_codecs.codec import pcz; pcz.load_model(...)`` is all there is to import.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neural_codecs import bitstream as bs
from neural_codecs.bitstream import AbsurdSizeError, BitstreamError, MalformedError, ModelMismatchError

from ..io.images import check_image
from .model import (DEFAULT_ADAPT, MAX_MODEL_MEMBER, MODEL_ARRAYS, MODEL_FORMAT, MODEL_PRECISION, SHIPPED,
                    ModelFileError, PatchLayout, PczModel, default_model_for, load_model, shipped_model_path)
from .tiling import _code_block, _pad, _Tiling, _tiling

__all__ = [
    # the API
    "ARCHIVE_BLOCK", "DEFAULT_LIMITS", "Limits", "Result", "check_limits", "compress", "compress_archive",
    "compress_ex", "decompress", "decompress_archive", "file_info", "timed_roundtrip",
    # the model file format (.model)
    "DEFAULT_ADAPT", "MAX_MODEL_MEMBER", "MODEL_ARRAYS", "MODEL_FORMAT", "MODEL_PRECISION", "SHIPPED",
    "ModelFileError", "PatchLayout", "PczModel", "default_model_for", "load_model", "shipped_model_path",
]

#: Default number of images coded as one stream in an archive.
ARCHIVE_BLOCK = 1000
#: Chunk type of a *stored* single image (critical: a reader that predates it refuses the file
#: rather than misreading it): the raw pixels, used when the model's code would be no smaller
#: (noise, or images far from anything the model learned), so no image costs more than raw.
STORED = "S"


def _as_nhwc(imgs: np.ndarray) -> np.ndarray:
    return imgs[..., None] if imgs.ndim == 3 else imgs


def _check_model_fits(model: PczModel, channels: int, name: str | None = None) -> None:
    if model.layout.channels != channels:
        kind = {1: "gray", 3: "RGB"}
        raise ModelMismatchError(f"model {model.name or model.path!r} codes {kind[model.layout.channels]} images, "
                                 f"this image is {kind[channels]}", name)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    """What compressing produced: the file's bytes and the sizes a benchmark reports."""

    data: bytes
    ideal_bits: float  # -sum(log2 q) under the model's conditionals
    payload_bytes: int
    subpixels: int

    @property
    def bits_per_subpixel(self) -> float:
        return 8 * len(self.data) / self.subpixels

    @property
    def ideal_bits_per_subpixel(self) -> float:
        return self.ideal_bits / self.subpixels


def _header(model: PczModel, H: int, W: int, C: int, count: int | None = None, block: int = 0) -> bs.Header:
    return bs.Header(kind=bs.CodecKind.PCZ, model_hash=model.hash, width=W, height=H, channels=C,
                     count=count, archive=count is not None,
                     params=bs.varint.encode_uvarint(block) if count is not None else b"")


def compress(img: np.ndarray, model: PczModel, *, store: bool = True) -> bytes:
    """Compress one uint8 image (H, W) gray or (H, W, 3) RGB; returns the ``.pcz`` bytes.

    ``store``: where the model's code is no smaller than the raw pixels, write those instead
    (:data:`STORED`); False always writes the code (tests of the coder)."""
    return compress_ex(img, model, store=store).data


def compress_ex(img: np.ndarray, model: PczModel, progress=None, *, store: bool = True) -> Result:
    """:func:`compress` with the sizes a benchmark reports; ``progress(done, total)`` if given."""
    img = check_image(img)
    C = 1 if img.ndim == 2 else 3
    _check_model_fits(model, C)
    H, W = img.shape[:2]
    payload, ideal = _encode_images(model, img[None], _tiling(model.layout, H, W), progress)
    if store and len(payload) >= img.size:  # no gain over the raw pixels: store them (same framing cost)
        raw = np.ascontiguousarray(img).tobytes()
        return Result(bs.write_container(_header(model, H, W, C), [(STORED, raw)]), ideal, len(raw), img.size)
    data = bs.pack_items(_header(model, H, W, C), [payload])
    return Result(data, ideal, len(payload), img.size)


def _encode_images(model: PczModel, imgs: np.ndarray, tiling: _Tiling, progress=None) -> tuple[bytes, float]:
    """One stream for same-size images (N, H, W[, 3]); returns (payload, ideal bits)."""
    enc = bs.Encoder()
    coded = model.layout.to_coded_colors(_as_nhwc(imgs))
    _code_block(model, _pad(coded.astype(np.uint8), tiling.Hp, tiling.Wp), enc, None, tiling, progress)
    return enc.to_bytes(), enc.report().ideal_bits


def _read_pcz(data: bytes, name: str | None):
    """Header, items and ``stored`` (the file holds one image's raw pixels, see :data:`STORED`) of a
    container that must be a pcz file with a usable image description."""
    items, stored = [], []
    with bs.ContainerReader(data, name=name, extra_critical=STORED) as r:
        header = r.header
        for chunk, chunk_items in r.walk():
            items += chunk_items
            if chunk.type == STORED:
                stored.append(chunk.body)
    if header.kind != bs.CodecKind.PCZ:
        raise MalformedError(f"this is a {bs.container.kind_name(header.kind)} file, not pcz", name)
    if header.width is None or header.channels is None:
        raise MalformedError("pcz header lacks the image size or channels", name)
    if header.channels not in (1, 3):
        raise MalformedError(f"pcz codes 1 or 3 channels, the header says {header.channels}", name)
    if header.width == 0 or header.height == 0:
        raise MalformedError(f"declared size {header.width}x{header.height} is empty", name)
    if header.archive and header.count == 0:
        raise MalformedError("archive of 0 images", name)
    if stored:
        if header.archive or items or len(stored) != 1:
            raise MalformedError("a stored image must be the file's only item, in a single-image file", name)
        if len(stored[0]) != header.width * header.height * header.channels:
            raise MalformedError(f"stored image holds {len(stored[0])} bytes, its {header.width}x{header.height}x"
                                 f"{header.channels} size needs {header.width * header.height * header.channels}", name)
    return header, stored or items, bool(stored)


@dataclass(frozen=True)
class Limits:
    """What a pcz decoder accepts, checked from the header before anything is allocated.

    As Pillow's ``MAX_IMAGE_PIXELS``: a file over a limit is refused with :class:`AbsurdSizeError`
    and decodes if the caller raises that limit (``limits=Limits(max_pixels=...)``; the CLI's
    ``--max-pixels``, ``--max-images``, ``--max-total``, ``--max-ratio``, ``--max-state``).

    ``max_ratio`` bounds the work a few bytes can ask for. The bytes alone give no sound bound: the
    range coder drops trailing zero bytes, and symbols that each sit at the bottom of their
    distribution (symbol 0: a black pixel under the MNIST model) keep the coder's low end at zero,
    so a black MNIST digit, or a thousand of them, codes to an empty payload, and a 34-byte file
    can truly be a black 16384 x 16384 image. So, as zip-bomb guards do, a stream may decode at
    most ``free_subpixels`` plus ``max_ratio`` subpixels a payload byte (an empty payload counts
    one). Real images cost far more than 1/32 byte a subpixel (MNIST 1.19 bits, Kodak 3.15 bits);
    a flat synthetic image past the allowance needs the limit raised. Subpixels are counted as
    decoded: padded to whole patches. The free allowance is what a forged size decodes before its
    payload proves invalid; at 2^14 subpixels that is well under a second with the slowest shipped
    model (a forged MNIST width decodes 2^16 subpixels in up to 1.8 s).
    """

    max_pixels: int = 1 << 26  # one image: 8192 x 8192
    max_images: int = 1 << 24  # images in one archive
    max_total: int = 1 << 28  # decoded subpixels of a whole archive
    max_ratio: float = 32.0  # decoded subpixels per payload byte, beyond free_subpixels
    free_subpixels: int = 1 << 14  # decoded whatever the payload's length: a 128 x 128 gray image
    max_state: int = 1 << 25  # coder state of one wavefront step: patches x variables x states (floats)


DEFAULT_LIMITS = Limits()


def _open(data: bytes, model: PczModel, name: str | None, limits: Limits):
    header, items, stored = _read_pcz(data, name)
    header.require_model(model.hash, name, what="pcz model")
    if header.width * header.height > limits.max_pixels:
        raise AbsurdSizeError(f"declared size {header.width}x{header.height} is over the limit of "
                              f"{limits.max_pixels} pixels (max_pixels)", name)
    _check_model_fits(model, header.channels, name)
    return header, items, stored


def _check_streams(model: PczModel, header: bs.Header, payloads: list, counts: list, name, limits: Limits) -> None:
    """Refuse, before anything is allocated, streams that ask for more work than the limits allow:
    the coder state of one step, and the subpixels each payload's bytes may decode."""
    tiling = _tiling(model.layout, header.height, header.width)
    per_image = tiling.Hp * tiling.Wp * header.channels
    state = max(counts) * tiling.widest * model.D * model.K
    if state > limits.max_state:
        raise AbsurdSizeError(f"{max(counts)} images of {header.width}x{header.height} in one stream need "
                              f"{state} coder state values, over the limit of {limits.max_state} (max_state)", name)
    for payload, n in zip(payloads, counts):
        allowed = limits.free_subpixels + limits.max_ratio * max(1, len(payload))  # an empty stream counts 1 byte
        if n * per_image > allowed:
            raise AbsurdSizeError(f"{n} x {header.width}x{header.height} image(s) from {len(payload)} payload bytes: "
                                  f"more than {limits.max_ratio:g} subpixels a byte (max_ratio)", name)


def check_limits(data: bytes, model: PczModel, name: str | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise :class:`AbsurdSizeError` if decoding ``data`` needs more than ``limits`` allow (and
    any other error the decoder would raise before decoding); decodes nothing."""
    header, items, stored = _open(data, model, name, limits)
    if stored:
        return
    if not header.archive:
        if len(items) != 1:
            raise MalformedError("an archive: use decompress_archive", name)
        _check_streams(model, header, items, [1], name, limits)
        return
    _, _, sizes = _archive_plan(model, header, items, name, limits)
    _check_streams(model, header, items, sizes, name, limits)


def _archive_plan(model: PczModel, header: bs.Header, items: list, name, limits: Limits):
    """An archive's (images, block, images in each block), its count and total size checked."""
    N, block = header.count, _archive_block(header, name)
    if N > limits.max_images:
        raise AbsurdSizeError(f"archive declares {N} images, over the limit of {limits.max_images} (max_images)", name)
    if len(items) != -(-N // block):
        raise MalformedError(f"archive of {N} images in blocks of {block} should hold {-(-N // block)} items", name)
    tiling = _tiling(model.layout, header.height, header.width)
    total = N * tiling.Hp * tiling.Wp * header.channels
    if total > limits.max_total:
        raise AbsurdSizeError(f"archive declares {N} images of {header.width}x{header.height}: {total} subpixels "
                              f"to decode, over the limit of {limits.max_total} (max_total)", name)
    return N, block, [min(block, N - lo) for lo in range(0, N, block)]


def decompress(data: bytes, model: PczModel, name: str | None = None, progress=None,
               limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode a single-image ``.pcz`` file (bytes) to its uint8 array, bit-exact.

    Declared sizes are checked against ``limits`` before anything is allocated."""
    header, items, stored = _open(data, model, name, limits)
    if stored:
        shape = (header.height, header.width) + ((3,) if header.channels == 3 else ())
        return np.frombuffer(items[0], dtype=np.uint8).reshape(shape).copy()
    if header.archive or len(items) != 1:
        raise MalformedError("an archive: use decompress_archive", name)
    _check_streams(model, header, items, [1], name, limits)
    return _decode_images(items[0], model, header, 1, name, progress)[0]


def _decode_images(payload: bytes, model: PczModel, header: bs.Header, n: int, name, progress=None) -> np.ndarray:
    H, W, C = header.height, header.width, header.channels
    tiling = _tiling(model.layout, H, W)
    canvas = np.zeros((n, tiling.Hp, tiling.Wp, C), dtype=np.uint8)
    _code_block(model, canvas, None, bs.Decoder(payload, name), tiling, progress)
    out = model.layout.from_coded_colors(canvas[:, :H, :W]).astype(np.uint8, copy=False)
    return out[..., 0] if C == 1 else out


def compress_archive(imgs: np.ndarray, model: PczModel, block: int = ARCHIVE_BLOCK) -> Result:
    """Many same-size images (N, H, W) or (N, H, W, 3) in one file: a whole data set, honestly sized.

    Images are coded ``block`` at a time in one stream per block (one container item each), so
    the per-image cost of terminating a stream and framing an item is shared."""
    imgs = np.asarray(imgs)
    if imgs.dtype != np.uint8 or imgs.ndim not in (3, 4) or len(imgs) == 0:
        raise ValueError("expected a nonempty uint8 array (N, H, W) or (N, H, W, 3)")
    check_image(imgs[0])
    N, H, W = imgs.shape[:3]
    C = 1 if imgs.ndim == 3 else 3
    _check_model_fits(model, C)
    tiling = _tiling(model.layout, H, W)
    payloads, ideal = [], 0.0
    for lo in range(0, N, block):
        payload, bits = _encode_images(model, imgs[lo:lo + block], tiling)
        payloads.append(payload)
        ideal += bits
    data = bs.pack_items(_header(model, H, W, C, count=N, block=block), payloads)
    return Result(data, ideal, sum(map(len, payloads)), imgs.size)


def _archive_block(header: bs.Header, name) -> int:
    try:
        block, used = bs.varint.decode_uvarint(header.params)
    except BitstreamError as err:
        raise err.with_name(name) from None
    if used != len(header.params) or block < 1:
        raise MalformedError("bad archive parameters", name)
    return block


def decompress_archive(data: bytes, model: PczModel, name: str | None = None, index: int | None = None,
                       limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """All images of an archive (N, H, W[, 3]), or only image ``index`` (decoding just its block).

    The count, the images' total size and every block's work are checked against ``limits``
    before anything is allocated."""
    header, items, _ = _open(data, model, name, limits)
    if not header.archive:
        return decompress(data, model, name, limits=limits)[None]
    N, block, sizes = _archive_plan(model, header, items, name, limits)
    if index is not None:
        if not 0 <= index < N:
            raise IndexError(f"image {index} out of range (archive holds {N})")
        b = index // block
        _check_streams(model, header, [items[b]], [sizes[b]], name, limits)
        return _decode_images(items[b], model, header, sizes[b], name)[index - b * block]
    _check_streams(model, header, items, sizes, name, limits)
    shape = (N, header.height, header.width) + ((3,) if header.channels == 3 else ())
    out = np.empty(shape, dtype=np.uint8)
    for lo, payload, n in zip(range(0, N, block), items, sizes):
        out[lo:lo + n] = _decode_images(payload, model, header, n, name)
    return out


def timed_roundtrip(img: np.ndarray, model: PczModel) -> tuple[Result, float, float]:
    """Compress and decompress one image, check it is bit-exact; return (result, encode s, decode s)."""
    import time

    t = time.perf_counter()
    res = compress_ex(img, model)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    back = decompress(res.data, model)
    t_dec = time.perf_counter() - t
    if not np.array_equal(back, img):
        raise AssertionError("pcz round trip is not bit-exact")
    return res, t_enc, t_dec


def file_info(data: bytes, name: str | None = None) -> dict:
    """What a .pcz file says about itself, without needing the model (nothing is decoded)."""
    header, items, stored = _read_pcz(data, name)
    n = header.count if header.archive else 1
    sub = n * header.width * header.height * header.channels
    return {"images": n, "width": header.width, "height": header.height, "channels": header.channels,
            "model_hash": header.model_hash.hex() if header.model_hash else None, "bytes": len(data),
            "payload_bytes": sum(map(len, items)), "bits_per_subpixel": 8 * len(data) / sub, "stored": stored}
