"""Reading and writing the videos nervcodec takes: anything PyAV opens, and directories of PNG frames.

A clip is a numpy uint8 array of shape (T, H, W, 3), RGB, with its frame rate as an exact
:class:`fractions.Fraction` (30000/1001 stays 30000/1001).

- :func:`read_video` / :func:`iter_video` read mp4, mkv, webm, y4m, avi, ... (whatever FFmpeg
  demuxes and decodes) or a directory of PNG frames, pick frames ``[start, start + count)`` and can
  area-downscale them. Sizes and frame counts are checked against limits before frames are
  decoded or stored, and every error names the file (a command line prints it as one line through
  :func:`neural_codecs.codec.cli.exit_on_error`).
- :func:`write_video` writes a directory of PNG frames, H.264 in mp4/mkv/mov, lossless FFV1 in mkv,
  or y4m, chosen by the path; files appear atomically, an existing output is refused without
  ``force`` and an input is never overwritten.

Colour: RGB <-> YUV conversions are FFmpeg's (swscale), BT.601 limited range unless the file says
otherwise, so YUV outputs (H.264, y4m) are not bit-exact in RGB even when the codec is lossless in
YUV. Bit-exact outputs: the PNG directory and ``.mkv`` with ``lossless=True`` (FFV1 coding the RGB
planes).
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import re
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from neural_codecs.bitstream import AbsurdSizeError, CodecError
from neural_codecs.bitstream.errors import OutputExistsError
from neural_codecs.bitstream.safeio import atomic_output, check_output

#: Default limits of :func:`read_video`: frames per clip, and pixels per frame.
MAX_FRAMES = 100_000
MAX_PIXELS = 1 << 26
#: Frame rate given to a directory of PNG frames when the caller names none.
DIRECTORY_FPS = Fraction(25)

#: ``-`` as an output: YUV4MPEG2 on stdout.
STDOUT = "-"
_FRAME_NAME = "frame_{:06d}.png"
_FRAME_RE = re.compile(r"frame_\d{6,}\.png")
_MAX_DIR_FRAMES = 1_000_000  # six-digit names keep their order when sorted as text
# RGB <-> YUV conversions in one thread: FFmpeg 8's swscale slice threads cost far more than they
# save on frames this small, and on a busy 2-core machine they make conversion ~20x slower.
_SWS_THREADS = 1

# file suffix -> FFmpeg container format
_CONTAINERS = {
    ".mp4": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".y4m": "yuv4mpegpipe",
}

PathLike = str | os.PathLike


class VideoFormatError(CodecError):
    """Not a video we can read or write: not a video file, no video stream, zero frames, unsupported."""


class VideoTooLargeError(VideoFormatError, AbsurdSizeError):
    """Frames or frame counts beyond the limits, refused before anything is allocated."""


@dataclass
class Video:
    """A clip: ``frames`` uint8 (T, H, W, 3) RGB and its frame rate ``fps`` (frames per second)."""

    frames: np.ndarray
    fps: Fraction

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def count(self) -> int:
        return int(self.frames.shape[0])


# --------------------------------------------------------------------------------------------
# helpers


def as_fps(fps, name: str | None = None) -> Fraction:
    """A frame rate as a positive Fraction (ints, Fractions and strings like "30000/1001" exactly;
    floats to the nearest fraction with denominator <= 1001, so 29.97 becomes 2997/100)."""
    try:
        if isinstance(fps, float):
            value = Fraction(fps).limit_denominator(1001)
        else:
            value = Fraction(fps)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"frame rate {fps!r} is not a number") from None
    if value <= 0 or value.numerator >= 2**31 or value.denominator >= 2**31:
        raise VideoFormatError(f"frame rate {value} is not usable", name)
    return value


def area_resize(frames: np.ndarray, width: int, height: int, *, batch: int = 32) -> np.ndarray:
    """Resize uint8 frames (T, H, W, C) or one (H, W, C) frame to ``width`` x ``height`` by area.

    Each output pixel is the mean of the input pixels its area covers (``torch`` "area"
    interpolation, i.e. adaptive average pooling), rounded half to even and clipped to uint8; for
    integer factors that is exactly the mean of each block. Meant for downscaling (upscaling by
    area repeats pixels). Works in batches of ``batch`` frames to bound memory.
    """
    import torch
    import torch.nn.functional as F

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        raise ValueError(f"expected uint8 (T, H, W, C) or (H, W, C) frames, got {frames.dtype} {frames.shape}")
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"size {width}x{height} is empty")
    single = frames.ndim == 3
    clip = frames[None] if single else frames
    if clip.shape[1:3] == (height, width):
        out = clip.copy()
    else:
        out = np.empty((clip.shape[0], height, width, clip.shape[3]), np.uint8)
        with torch.no_grad():
            for i in range(0, clip.shape[0], batch):
                x = torch.from_numpy(np.ascontiguousarray(clip[i:i + batch])).permute(0, 3, 1, 2).float()
                y = F.interpolate(x, size=(height, width), mode="area")
                out[i:i + batch] = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out[0] if single else out


def _check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    if width < 1 or height < 1:
        raise VideoFormatError(f"frames of {width}x{height} pixels are empty", name)
    if width * height > max_pixels:
        raise VideoTooLargeError(f"{width}x{height} frames exceed the limit of {max_pixels} pixels", name)


def _is_dir_target(path: PathLike) -> bool:
    s = os.fspath(path)
    return s.endswith(("/", os.sep)) or Path(s).is_dir() or Path(s).suffix == ""


# --------------------------------------------------------------------------------------------
# sources: a directory of PNG frames or anything PyAV opens


class _DirSource:
    """A directory of PNG frames, sorted by file name."""

    def __init__(self, path: Path, max_pixels: int):
        from PIL import Image

        self.name = str(path)
        self.files = sorted((p for p in path.iterdir()
                             if p.suffix.lower() == ".png" and not p.name.startswith(".") and p.is_file()),
                            key=lambda p: p.name)
        if not self.files:
            raise VideoFormatError("no PNG frames in this directory (zero frames)", self.name)
        self.width, self.height = self._size(self.files[0], Image)
        _check_pixels(self.width, self.height, max_pixels, str(self.files[0]))
        self.fps = DIRECTORY_FPS
        self.count: int | None = len(self.files)

    @staticmethod
    def _size(path: Path, Image) -> tuple[int, int]:
        try:
            with Image.open(path) as im:
                return im.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
                raise
            raise VideoFormatError(f"not a readable PNG frame ({err})", str(path)) from None

    def frames(self, skip: int) -> Iterator[np.ndarray]:
        from PIL import Image

        from .images import read_image

        for path in self.files[skip:]:
            size = self._size(path, Image)
            if size != (self.width, self.height):
                raise VideoFormatError(f"frame is {size[0]}x{size[1]} but the first frame is "
                                       f"{self.width}x{self.height}; all frames must have one size", str(path))
            try:
                img = read_image(path)
            except CodecError as err:
                raise VideoFormatError(err.message, str(path)) from None
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            yield img

    def close(self) -> None:
        pass


class _AVSource:
    """The first video stream of a file PyAV (FFmpeg) opens."""

    def __init__(self, path: Path, max_pixels: int):
        import av

        self.name = str(path)
        self.max_pixels = max_pixels
        try:
            self.container = av.open(str(path), "r")
        except av.error.FFmpegError as err:
            if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
                raise
            raise VideoFormatError(f"not a video file ({_av_message(err)})", self.name) from None
        try:
            if not self.container.streams.video:
                raise VideoFormatError("no video stream in this file", self.name)
            self.stream = self.container.streams.video[0]
            self.stream.thread_type = "AUTO"
            self.width, self.height = self.stream.width, self.stream.height
            if self.width and self.height:  # 0 when the header does not say; checked per frame below
                _check_pixels(self.width, self.height, max_pixels, self.name)
            rate = self.stream.average_rate or self.stream.guessed_rate
            self.fps = Fraction(rate) if rate else Fraction(25)
            self.count = int(self.stream.frames) or None
        except BaseException:
            self.container.close()
            raise

    def frames(self, skip: int) -> Iterator[np.ndarray]:
        import av

        size = None
        index = 0
        try:
            for frame in self.container.decode(self.stream):
                if size is None:
                    _check_pixels(frame.width, frame.height, self.max_pixels, self.name)
                    size = (frame.width, frame.height)
                elif (frame.width, frame.height) != size:
                    raise VideoFormatError(f"frame size changes from {size[0]}x{size[1]} to "
                                           f"{frame.width}x{frame.height} at frame {index}", self.name)
                index += 1
                if index <= skip:
                    continue
                yield frame.to_ndarray(format="rgb24", threads=_SWS_THREADS)
        except av.error.FFmpegError as err:
            if isinstance(err, (FileNotFoundError, PermissionError)):
                raise
            raise VideoFormatError(f"cannot decode video ({_av_message(err)})", self.name) from None

    def close(self) -> None:
        self.container.close()


def _av_message(err) -> str:
    return getattr(err, "strerror", None) or str(err)


@contextlib.contextmanager
def _open(path: PathLike, max_pixels: int):
    path = Path(path)
    os.stat(path)  # a missing file is a plain FileNotFoundError naming it
    src = _DirSource(path, max_pixels) if path.is_dir() else _AVSource(path, max_pixels)
    try:
        yield src
    finally:
        src.close()


def _parse_size(size, max_pixels: int, name: str) -> tuple[int, int] | None:
    if size is None:
        return None
    w, h = (int(v) for v in size)
    if w < 1 or h < 1:
        raise ValueError(f"size {w}x{h} is empty")
    _check_pixels(w, h, max_pixels, name)
    return w, h


def _selected(src, start: int, count: int | None, size, max_frames: int) -> Iterator[np.ndarray]:
    """Frames [start, start + count) of ``src``, resized, refusing more than ``max_frames``."""
    if start < 0:
        raise ValueError(f"start {start} is negative")
    if count is not None and count < 1:
        raise ValueError(f"count {count} is not positive")
    if count is not None and count > max_frames:
        raise VideoTooLargeError(f"{count} frames requested; the limit is {max_frames}", src.name)
    if count is None and src.count is not None and src.count - start > max_frames:
        raise VideoTooLargeError(f"{src.count - start} frames exceed the limit of {max_frames}", src.name)
    n = 0
    for frame in src.frames(start):
        if n >= max_frames:
            raise VideoTooLargeError(f"more than {max_frames} frames (the limit)", src.name)
        yield frame if size is None else area_resize(frame, *size)
        n += 1
        if count is not None and n >= count:
            return  # before decoding another frame
    if n == 0:
        total = f"it has {src.count} frames" if src.count is not None else "it has fewer frames"
        raise VideoFormatError("zero frames" if start == 0 else f"zero frames: start {start} is past the end ({total})",
                               src.name)


# --------------------------------------------------------------------------------------------
# public API


def probe_video(path: PathLike, *, max_pixels: int = MAX_PIXELS) -> tuple[int, int, Fraction, int | None]:
    """(width, height, fps, frame count or None when the file does not say), without decoding.

    A directory of PNG frames reports its first frame's size, 25 fps and the number of PNG files.
    """
    with _open(path, max_pixels) as src:
        return src.width, src.height, src.fps, src.count


def iter_video(path: PathLike, *, start: int = 0, count: int | None = None, size: tuple[int, int] | None = None,
               max_frames: int = MAX_FRAMES, max_pixels: int = MAX_PIXELS) -> Iterator[np.ndarray]:
    """Yield frames ``[start, start + count)`` of a video one at a time as uint8 (H, W, 3) RGB.

    Same arguments and errors as :func:`read_video` (raised when the generator runs); the frame
    rate comes from :func:`probe_video`.
    """
    with _open(path, max_pixels) as src:
        yield from _selected(src, start, count, _parse_size(size, max_pixels, src.name), max_frames)


def read_video(path: PathLike, *, start: int = 0, count: int | None = None, size: tuple[int, int] | None = None,
               fps: Fraction | None = None, max_frames: int = MAX_FRAMES, max_pixels: int = MAX_PIXELS) -> Video:
    """Read a video file or a directory of PNG frames as a :class:`Video` (uint8 (T, H, W, 3) RGB).

    - ``path``: anything PyAV opens (its first video stream), or a directory of 8-bit gray or RGB
      PNG frames of one size, taken in file-name order.
    - ``start``, ``count``: keep frames ``[start, start + count)`` (to the end when ``count`` is None).
    - ``size=(width, height)``: area-downscale every frame (:func:`area_resize`).
    - ``fps``: the frame rate to record (a directory has none: 25 unless given; for a file it
      replaces the stream's average rate -- no frames are dropped or repeated).
    - ``max_frames``, ``max_pixels``: limits checked against the header (and each frame) before
      frames are stored; beyond them :class:`VideoTooLargeError`.

    Raises :class:`VideoFormatError` (naming the file) for a file that is not a video, has no video
    stream, has zero frames (also when ``start`` is past the end) or frames beyond the limits, and
    ``FileNotFoundError`` for a missing path.
    """
    with _open(path, max_pixels) as src:
        rate = as_fps(fps, src.name) if fps is not None else src.fps
        frames = list(_selected(src, start, count, _parse_size(size, max_pixels, src.name), max_frames))
    return Video(np.stack(frames), rate)


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"expected uint8 (T, H, W, 3) RGB frames, got {frames.dtype} {frames.shape}")
    if 0 in frames.shape:
        raise ValueError(f"no pixels to write: frames of shape {frames.shape}")
    return frames


def check_video_output(path: PathLike, *, force: bool = False, inputs: Iterable[PathLike] = ()) -> None:
    """Raise now what :func:`write_video` would raise about ``path`` itself (a kind we cannot
    write, an existing output without ``force``, an input), so a caller can fail before long work."""
    name = os.fspath(path)
    if name == STDOUT:
        return
    if _is_dir_target(path):
        target = Path(path).resolve()
        for inp in inputs:
            inp = Path(inp).resolve()
            if inp == target or target in inp.parents:
                raise OutputExistsError(f"{path}: output directory is or holds an input; refusing to overwrite it")
        _existing_dir(Path(path), force)
        return
    suffix = Path(path).suffix.lower()
    if suffix not in _CONTAINERS:
        raise VideoFormatError(f"cannot write {suffix or 'this kind of'} files; use .mp4, .mkv, .mov, .y4m "
                               "or a directory of PNG frames", name)
    check_output(path, force=force, inputs=inputs)


def write_video(path: PathLike, frames: np.ndarray, fps, *, force: bool = False, inputs: Iterable[PathLike] = (),
                lossless: bool = False, crf: int = 12, first: int = 0) -> None:
    """Write uint8 (T, H, W, 3) RGB ``frames`` at ``fps`` (kept exactly); the path picks the kind.

    - a directory (a path ending in "/", an existing directory or a path without suffix):
      ``frame_000000.png``, ``frame_000001.png``, ... (numbered from ``first``: the clip's frame
      index, so ``nervcodec decode --frame 5`` writes ``frame_000005.png``) -- bit-exact. Written into a temporary
      sibling directory and renamed into place; with ``force`` an existing directory holding only
      ``frame_NNNNNN.png`` files is replaced (one holding anything else is never touched).
    - ``.mp4`` / ``.mov`` / ``.mkv``: H.264 (libx264, preset medium, ``crf``), yuv420p -- or
      yuv444p when the width or height is odd, since 4:2:0 needs even sizes (so a file read back
      has the original size). With ``lossless``: ``.mkv`` is FFV1 coding RGB exactly (pixel format
      bgr0: this FFmpeg's FFV1 takes 8-bit RGB only packed, not as gbrp), ``.mp4``/``.mov`` are
      libx264 with qp 0 in yuv444p -- lossless in YUV, but the RGB -> YUV rounding means a read
      back is close to, not bit-exactly, the RGB input.
    - ``.y4m``: raw yuv444p frames in a YUV4MPEG2 file (same RGB -> YUV rounding; ``lossless`` and
      ``crf`` do not apply). ``-`` writes the same to stdout.

    Files are written atomically; an existing output is refused without ``force`` and an input
    (``inputs``) is never overwritten (:class:`bitstream.errors.OutputExistsError`).
    """
    frames = _check_frames(frames)
    name = os.fspath(path)
    fps = as_fps(fps, name)
    if name == STDOUT:  # a stream: YUV4MPEG2, as ffmpeg's "-f yuv4mpegpipe -"
        buf = io.BytesIO()
        _encode(buf, "yuv4mpegpipe", "rawvideo", "yuv444p", {}, frames, fps, "stdout")
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return
    if _is_dir_target(path):
        _write_png_dir(Path(path), frames, force=force, inputs=inputs, first=first)
        return
    suffix = Path(path).suffix.lower()
    if suffix not in _CONTAINERS:
        raise VideoFormatError(f"cannot write {suffix or 'this kind of'} files; use .mp4, .mkv, .mov, .y4m "
                               "or a directory of PNG frames", name)
    t, h, w, _ = frames.shape
    fmt = _CONTAINERS[suffix]
    if fmt == "yuv4mpegpipe":
        codec, pix_fmt, options = "rawvideo", "yuv444p", {}
    elif lossless and fmt == "matroska":
        codec, pix_fmt, options = "ffv1", "bgr0", {"level": "3", "slicecrc": "1"}
    elif lossless:
        codec, pix_fmt, options = "libx264", "yuv444p", {"preset": "medium", "qp": "0"}
    else:
        codec = "libx264"
        pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
        options = {"preset": "medium", "crf": str(int(crf))}
    with atomic_output(path, force=force, inputs=inputs) as f:
        _encode(f, fmt, codec, pix_fmt, options, frames, fps, name)


def _encode(f, fmt: str, codec: str, pix_fmt: str, options: dict, frames: np.ndarray, fps: Fraction,
            name: str) -> None:
    import av

    t, h, w, _ = frames.shape
    try:
        with av.open(f, "w", format=fmt) as container:
            stream = container.add_stream(codec, rate=fps, options=options)
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            tb = 1 / fps  # one tick per frame; the muxer may pick a finer stream time base
            stream.time_base = stream.codec_context.time_base = tb
            for i in range(t):
                frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
                frame = frame.reformat(format=pix_fmt, threads=_SWS_THREADS)  # else the encoder does it, threaded
                frame.pts = i
                frame.time_base = tb
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    except av.error.FFmpegError as err:
        raise VideoFormatError(f"cannot encode with {codec} ({_av_message(err)})", name) from None


def _write_png_dir(path: Path, frames: np.ndarray, *, force: bool, inputs: Iterable[PathLike], first: int = 0) -> None:
    from .images import encode_png

    if frames.shape[0] > _MAX_DIR_FRAMES:
        raise ValueError(f"{frames.shape[0]} frames are too many for a directory (at most {_MAX_DIR_FRAMES})")
    target = path.resolve()
    for inp in inputs:
        inp = Path(inp).resolve()
        if inp == target or target in inp.parents:
            raise OutputExistsError(f"{path}: output directory is or holds an input; refusing to overwrite it")
    existing = _existing_dir(path, force)
    parent = path.parent if str(path.parent) else Path(".")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=parent))
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; give the usual mode of a new directory
        for i, frame in enumerate(frames):
            (tmp / _FRAME_NAME.format(first + i)).write_bytes(encode_png(frame))
        # re-check just before the rename: the output may have appeared meanwhile
        if _existing_dir(path, force) and not existing:
            raise OutputExistsError(f"{path}: appeared while writing (use --force to overwrite)")
        if existing:  # ours (only frame files), force given: move it aside, rename, then delete it
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)  # onto nothing, or onto an empty directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _existing_dir(path: Path, force: bool) -> bool:
    """True if ``path`` is a nonempty directory we may replace; False if absent or empty; else raise."""
    if not path.exists():
        return False
    if not path.is_dir():
        raise OutputExistsError(f"{path}: exists and is not a directory")
    entries = [e.name for e in os.scandir(path)]
    if not entries:
        return False
    if not force:
        raise OutputExistsError(f"{path}: already exists (use --force to overwrite)")
    others = [e for e in entries if not _FRAME_RE.fullmatch(e)]
    if others:
        raise OutputExistsError(f"{path}: holds files other than frame_NNNNNN.png (e.g. {others[0]}); "
                                "refusing to replace it")
    return True
