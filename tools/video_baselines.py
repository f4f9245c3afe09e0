"""Classical video codec baselines (x264, x265, SVT-AV1 through PyAV) for the nervcodec benchmark.

    python tools/video_baselines.py CLIP [--codecs x264,x265,svtav1] [--crf-list 28,32,36]
                                         [--crf-list svtav1=40,48] [--out DIR]

Each codec encodes the whole clip in memory (4:2:0, 2 threads) at several qualities; every point
reports the container size as bits per pixel, RGB PSNR and MS-SSIM of the decoded frames (converted
back to RGB24 by FFmpeg, as our codec's output is RGB), encode seconds and decode frames/s (decode +
conversion to RGB). Writes one CompressAI-style JSON per codec into --out
({"name", "description", "results": {"bpp", "psnr-rgb", "ms-ssim-rgb", "encode_s", "decode_fps",
"psnr-rgb-vs-yuv420-input", "crf", "bytes": [...]}}, sorted by bpp) and prints a table.
"psnr-rgb" compares with the RGB input, as for an RGB codec; "psnr-rgb-vs-yuv420-input" compares with
the input after an uncoded RGB -> 4:2:0 -> RGB round trip, i.e. the codec's loss without the chroma
subsampling loss (which alone limits RGB PSNR to ~38.7 dB on the 320x180 benchmark clip). ``encode_classical`` is the same measurement for one point, from Python.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from neural_codecs.codec.eval.metrics import ms_ssim, psnr

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
DECODE_REPEATS = 3

# name: (FFmpeg encoder, container, default preset, fixed options, default CRFs for the sweep)
CODECS = {
    # down to crf 45 / 44: nervcodec's default rate (0.015 bpp) lies below crf 39's on both
    # development clips, and its comparison interpolates, never extrapolates
    "x264": ("libx264", "mp4", "medium", {}, (24, 27, 30, 33, 36, 39, 42, 45)),
    "x265": ("libx265", "mp4", "medium", {}, (26, 29, 32, 35, 38, 41, 44)),
    "svtav1": ("libsvtav1", "mp4", "8", {}, (28, 35, 42, 49, 56, 62)),
}
LABELS = {"x264": "x264 {preset}", "x265": "x265 {preset}", "svtav1": "SVT-AV1 preset {preset}"}
#: libx265 on this FFmpeg corrupts the heap on some frames smaller than this (e.g. 34x18).
X265_MIN_SIDE = 64


def _options(codec: str, preset: str, crf: int | None, qp: int | None) -> dict:
    opts = dict(CODECS[codec][3])
    opts["preset"] = str(preset)
    if qp is not None:
        opts["qp"] = str(qp)
    else:
        opts["crf"] = str(crf)
    if codec == "x265":
        opts["x265-params"] = f"log-level=error:pools={THREADS}"
    return opts


def encode_classical(frames: np.ndarray, fps, codec: str, *, crf: int | None = None, qp: int | None = None,
                     preset=None) -> dict:
    """Encode uint8 (T, H, W, 3) RGB ``frames`` with a classical codec in memory and measure it.

    ``codec`` is "x264" (libx264, preset medium), "x265" (libx265, preset medium) or "svtav1"
    (libsvtav1, preset 8), all yuv420p in mp4, 2 threads; quality by ``crf`` (the codec's default
    sweep midpoint when neither is given) or constant ``qp``. Odd sizes are padded by edge
    replication to even for 4:2:0 and cropped after decoding (bpp counts the original pixels).

    Returns {"bytes": container size, "bpp": 8 * bytes / (T * H * W), "psnr": RGB PSNR vs the input
    over the whole clip, "ms_ssim": mean MS-SSIM, "encode_s": seconds to convert + encode + mux,
    "decode_fps": frames/s to demux + decode + convert to RGB24, best of 3 runs, "psnr_vs_420": RGB
    PSNR against the input after an uncoded RGB -> yuv420p -> RGB round trip (the codec's loss
    without the chroma subsampling loss; "psnr" is the one to compare with an RGB codec)}.
    """
    import av

    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or 0 in frames.shape:
        raise ValueError(f"expected uint8 (T, H, W, 3) RGB frames, got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if codec == "x265" and min(h, w) < X265_MIN_SIDE:
        raise ValueError(f"libx265 is not run on frames smaller than {X265_MIN_SIDE} pixels a side ({w}x{h}): "
                         "this build corrupts memory on some of them")
    encoder, fmt, default_preset, _, sweep = CODECS[codec]
    if crf is None and qp is None:
        crf = sweep[len(sweep) // 2]
    fps = Fraction(fps)
    ph, pw = h + h % 2, w + w % 2
    padded = frames if (ph, pw) == (h, w) else np.pad(frames, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    opts = _options(codec, preset if preset is not None else default_preset, crf, qp)

    buf = io.BytesIO()
    t0 = time.perf_counter()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(encoder, rate=fps, options=opts)
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        tb = 1 / fps
        stream.time_base = stream.codec_context.time_base = tb
        stream.codec_context.thread_count = THREADS
        for i in range(t):
            # convert here, single-threaded: swscale's slice threads cost more than they save at this
            # size (and the encoder would otherwise convert inside PyAV with them)
            frame = av.VideoFrame.from_ndarray(padded[i], format="rgb24").reformat(format="yuv420p", threads=1)
            frame.pts, frame.time_base = i, tb
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    encode_s = time.perf_counter() - t0
    data = buf.getvalue()

    decoded = np.empty_like(padded)
    decode_s = math.inf
    for _ in range(DECODE_REPEATS):  # best of a few: the decode is short and timings are noisy
        n = 0
        t0 = time.perf_counter()
        with av.open(io.BytesIO(data), "r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = THREADS
            for frame in container.decode(stream):
                if n >= t:
                    raise RuntimeError(f"{codec}: decoded more frames than the {t} encoded")
                decoded[n] = frame.to_ndarray(format="rgb24", threads=1)
                n += 1
        decode_s = min(decode_s, time.perf_counter() - t0)
        if n != t:
            raise RuntimeError(f"{codec}: decoded {n} frames, encoded {t}")
    decoded = decoded[:, :h, :w]
    # The input as 4:2:0 sees it (RGB -> yuv420p -> RGB, no coding): separates the codec's loss
    # from the chroma subsampling loss, which alone costs ~39 dB RGB PSNR on the benchmark clip.
    as420 = np.stack([av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p", threads=1)
                      .to_ndarray(format="rgb24", threads=1) for f in padded])[:, :h, :w]
    return {"bytes": len(data), "bpp": 8 * len(data) / (t * h * w), "psnr": psnr(frames, decoded),
            "ms_ssim": ms_ssim(frames, decoded), "encode_s": encode_s, "decode_fps": t / decode_s,
            "psnr_vs_420": psnr(as420, decoded)}


def available(codec: str) -> bool:
    """Whether PyAV's FFmpeg has the encoder for ``codec``."""
    import av

    try:
        av.codec.Codec(CODECS[codec][0], "w")
        return True
    except Exception:
        return False


def _machine() -> str:
    from bench_common import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} cores, {THREADS} threads"


def _crf_lists(specs: list[str] | None, codecs: list[str]) -> dict[str, list[int]]:
    lists = {c: list(CODECS[c][4]) for c in codecs}
    for spec in specs or []:
        target, _, values = spec.rpartition("=")
        nums = [int(v) for v in values.split(",") if v.strip()]
        for c in ([target] if target else codecs):
            if c not in CODECS:
                raise SystemExit(f"video_baselines: error: unknown codec {c!r} in --crf-list {spec}")
            lists[c] = nums
    return lists


def main(argv=None) -> None:
    from neural_codecs.codec.cli import exit_on_error
    from neural_codecs.codec.io.video import read_video

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clip", type=Path, help="video file or directory of PNG frames")
    ap.add_argument("--codecs", default="x264,x265,svtav1", help="comma list of x264, x265, svtav1")
    ap.add_argument("--crf-list", action="append", metavar="[CODEC=]CRF,CRF,...",
                    help="qualities for every codec, or for one codec with CODEC=...; repeatable")
    ap.add_argument("--out", type=Path, help="folder for the CompressAI-style JSON files")
    args = ap.parse_args(argv)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only, not its banner per encode
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    for c in codecs:
        if c not in CODECS:
            ap.error(f"unknown codec {c!r}; choose from {', '.join(CODECS)}")
    crfs = _crf_lists(args.crf_list, codecs)

    with exit_on_error("video_baselines"):
        video = read_video(args.clip)
    t, h, w = video.count, video.height, video.width
    print(f"{args.clip}: {t} frames {w}x{h} @ {video.fps} fps", flush=True)
    import av

    versions = ", ".join(f"{k} {'.'.join(map(str, v))}" for k, v in av.library_versions.items()
                         if k in ("libavcodec", "libavformat", "libswscale"))
    rows = []
    for codec in codecs:
        if not available(codec):
            print(f"{codec}: encoder {CODECS[codec][0]} missing in this PyAV build; skipped", flush=True)
            continue
        preset = CODECS[codec][2]
        name = LABELS[codec].format(preset=preset)
        points = []
        for crf in crfs[codec]:
            r = encode_classical(video.frames, video.fps, codec, crf=crf)
            r["crf"] = crf
            points.append(r)
            rows.append((name, r))
            print(f"{name:<20} crf {crf:>3}: {r['bpp']:.4f} bpp  {r['psnr']:6.2f} dB  MS-SSIM {r['ms_ssim']:.4f}  "
                  f"encode {r['encode_s']:6.2f} s  decode {r['decode_fps']:7.1f} fps  (vs 4:2:0 input {r['psnr_vs_420']:.2f} dB)",
                  flush=True)
        points.sort(key=lambda r: r["bpp"])
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            desc = (f"{name} ({CODECS[codec][0]}, yuv420p, {CODECS[codec][1]} in memory, {THREADS} threads) "
                    f"on {args.clip.name}: {t} frames {w}x{h} @ {video.fps} fps; RGB metrics after FFmpeg's "
                    f"YUV->RGB24; decode_fps includes the RGB conversion. PyAV {av.__version__} ({versions}); "
                    f"{_machine()}. Command: python tools/video_baselines.py {' '.join(sys.argv[1:] if argv is None else argv)}")
            results = {"bpp": [r["bpp"] for r in points], "psnr-rgb": [r["psnr"] for r in points],
                       "ms-ssim-rgb": [r["ms_ssim"] for r in points], "encode_s": [r["encode_s"] for r in points],
                       "decode_fps": [r["decode_fps"] for r in points],
                       "psnr-rgb-vs-yuv420-input": [r["psnr_vs_420"] for r in points], "crf": [r["crf"] for r in points],
                       "bytes": [r["bytes"] for r in points]}
            slug = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
            (args.out / f"{slug}.json").write_text(json.dumps({"name": name, "description": desc, "results": results},
                                                              indent=1) + "\n")
    print()
    print(f"{'codec':<20} {'crf':>4} {'bpp':>7} {'PSNR':>7} {'MS-SSIM':>8} {'enc s':>7} {'dec fps':>8} {'PSNR420':>8}")
    for name, r in sorted(rows, key=lambda nr: (nr[0], nr[1]["bpp"])):
        print(f"{name:<20} {r['crf']:>4} {r['bpp']:7.4f} {r['psnr']:7.2f} {r['ms_ssim']:8.4f} "
              f"{r['encode_s']:7.2f} {r['decode_fps']:8.1f} {r['psnr_vs_420']:8.2f}")
    if args.out is not None:
        print(f"JSON written to {args.out}/")


if __name__ == "__main__":
    main()
