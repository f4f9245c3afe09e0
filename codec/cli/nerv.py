"""``nervcodec``: video stored as a neural network (command line).

A thin shell over :mod:`codec.nerv` and :mod:`codec.io.video`; see ``nervcodec --help``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from fractions import Fraction
from pathlib import Path


from . import require_extra

require_extra("nervcodec", "video", "torch", "av", "pytorch_msssim")

from ..cpu import calm_spinning  # noqa: E402

calm_spinning()  # before torch is first imported (by codec.nerv): see codec/cpu.py

from neural_codecs import bitstream as bs  # noqa: E402

from . import UsageError, add_version, read_input, show_progress, real, run, whole  # noqa: E402
from .. import nerv  # noqa: E402
from neural_codecs.models.inr import get_kind  # noqa: E402
from ..cpu import set_threads  # noqa: E402
from ..eval.metrics import ms_ssim, psnr  # noqa: E402
from ..io.video import check_video_output, read_video, write_video  # noqa: E402

PROG = "nervcodec"
#: Most bytes read from stdin for ``nervcodec decode -``.
MAX_STDIN_BYTES = 1 << 32

EPILOG = """examples:
  nervcodec encode clip.mp4 -o clip.nerv                      # HNeRV at ~0.015 bpp, preset medium
  nervcodec encode clip.mp4 --bpp 0.1 --preset slow           # more bits, more training
  nervcodec encode clip.mp4 --time 5m                         # plan the training to end in 5 minutes
  nervcodec encode clip.mp4 --model nirvana --bpp 0.04 --epochs 150
  nervcodec encode clip.mp4 --model nirvana --size 800k --lam 0.001 --lr 5e-3 --epochs 80 \\
      --first-epochs 160 --start-epochs 0 --target-psnr 31     # NIRVANA set for speed to a PSNR
  nervcodec encode frames/ --fps 30 --model nervpp --size 150k -o f.nerv
  nervcodec decode clip.nerv -o back.mp4                      # x264 at high quality
  nervcodec decode clip.nerv -o back.mkv --lossless           # exact RGB (ffv1)
  nervcodec decode clip.nerv -o frames/                       # PNG frames
  nervcodec decode clip.nerv --frame 42 -o f42/               # one frame alone
  nervcodec info clip.nerv
  nervcodec eval clip.mp4 clip.nerv                           # PSNR / MS-SSIM / bpp
  torchrun --nproc-per-node 2 -m neural_codecs.codec.cli.nerv encode clip.mp4 --model nirvana --threads 1
                                                              # 2 processes (gloo; NCCL on GPUs)

Models: hnerv (frame embeddings + conv decoder; best quality per bit here), nervpp (frame index
-> network, nothing per frame), nirvana (one small network per group of frames, residual-coded;
fastest to encode). Weights are quantized while training and entropy coded.

Rate: --bpp (default 0.015 for hnerv, a low rate, where HNeRV beats x264 here; ask 0.05 or more
for higher quality; 0.05 for the others) sizes the network and steers the rate weight λ during
training so the file lands near it; --lam fixes λ instead, --size fixes the parameter count.
Time: --preset fast|medium|slow sets the epochs like x264's presets (medium: up to 90 epochs, its
training capped at 9 minutes: 240 frames at 320x180 take about 9 minutes on 2 cores); --time 5m
plans the epochs to end within a wall-clock budget.
Before training the encoder says what it will train and about how long it will take. Ctrl-C while
training stops it and writes the file with the network trained so far; a second Ctrl-C abandons.
CUDA is used when present (--device). Errors print one line and exit with status 2; an error
leaves no partial output."""


def _log(args, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)


def parse_size(text: str) -> int:
    """``150000``, ``150k`` or ``0.15M`` parameters."""
    t = text.strip().lower()
    mult = {"k": 1e3, "m": 1e6}.get(t[-1:], 1)
    try:
        v = float(t[:-1] if mult != 1 else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 150k, 0.2M)") from None
    if not 1000 <= v <= nerv.MAX_PARAMS:
        raise argparse.ArgumentTypeError(f"size {text} out of range 1k..{nerv.MAX_PARAMS}")
    return int(v)


def parse_count(text: str) -> int:
    """A limit: ``4096``, ``8M``, ``2G`` (powers of ten) or ``2^33``."""
    t = text.strip().lower()
    try:
        if "^" in t:
            base, exp = t.split("^")
            v = int(base) ** int(exp)
        else:
            mult = {"k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9}.get(t[-1:], 1)
            v = int(float(t[:-1] if mult != 1 else t) * mult)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 4096, 8M, 2^33)") from None
    if not 1 <= v <= 1 << 62:
        raise argparse.ArgumentTypeError(f"{text} out of range 1..2^62")
    return v


def parse_duration(text: str) -> float:
    """``300``, ``300s``, ``5m``, ``1.5h`` or ``1h30m`` → seconds."""
    import re

    t = text.strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", t)
    if not t or parts is None or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 5m, 1h30m)")
    h, m, sec = (float(x) if x else 0.0 for x in parts.groups())
    v = 3600 * h + 60 * m + sec
    if not 1 <= v <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"duration {text} out of range 1s..7 days")
    return v


def _fmt_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def parse_wxh(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return w, h


def _device(spec: str) -> str:
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {spec}: CUDA is not available on this machine")
    return spec


class _Bar:
    """tqdm bar with loss / PSNR / estimated bpp, updated at most a few times a second. When stderr
    is not a terminal (a log, a pipe), whole lines instead: at the start and every tenth of the
    steps, so no ``\r`` updates get glued to other lines."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = show_progress(quiet)
        self.bar = None
        self.last = 0.0
        self.tenth = -1

    def _line(self, step: int, total: int, info: dict) -> None:
        tenth = 10 * step // max(total, 1)
        if tenth != self.tenth:
            self.tenth = tenth
            print(f"training: {step}/{total} steps, psnr {info['psnr']:.2f} dB, bpp {info['bpp']:.4f}",
                  file=sys.stderr, flush=True)

    def __call__(self, step: int, total: int, info: dict) -> None:
        if self.quiet:
            return
        if not self.tty:
            return self._line(step, total, info)
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="step", desc="training", file=sys.stderr, dynamic_ncols=True)
        now = time.perf_counter()
        if total != self.bar.total:  # a time budget re-planned the epochs
            self.bar.total = total
        if now - self.last > 0.25 or step == total:
            self.bar.n = step
            post = {"loss": f"{info['loss']:.4g}", "psnr": f"{info['psnr']:.2f}", "bpp": f"{info['bpp']:.4f}"}
            if "group" in info:
                post["group"] = info["group"]
            self.bar.set_postfix(post, refresh=False)
            self.bar.refresh()
            self.last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_encode(args) -> None:
    """Encode; under ``torchrun`` every rank runs this, trains its share, and rank 0 writes the file."""
    from neural_codecs.models.inr import FitOptions
    from neural_codecs.models.inr import distributed as dd

    model_options = _model_options(args)
    out = Path(args.output) if args.output else Path(args.input).with_suffix(".nerv")
    bs.check_output(out, force=args.force, inputs=[args.input])
    video = read_video(args.input, start=args.start, count=args.frames, size=args.scale,
                       fps=Fraction(args.fps) if args.fps else None)
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")) or 1)
    threads = set_threads(args.threads, ranks)
    try:
        device = dd.init_from_env(_device(args.device))
    except (RuntimeError, ValueError) as err:  # torchrun's rendezvous, CUDA devices
        raise UsageError(f"could not join the distributed job: {err}") from None
    try:
        tm = dd.team()
        quiet = args.quiet or not tm.root
        epochs, budget = nerv.training_plan(args.model, args.preset, args.epochs, args.time)
        opts = FitOptions(epochs=epochs, lr=args.lr, lam=args.lam if args.lam is not None else FitOptions.lam,
                          batch=args.batch, seed=args.seed, device=device, time_budget=budget,
                          adapt_threads=args.threads is None, model=model_options)
        rate_control = args.lam is None and args.size is None
        cfg, opts = nerv.prepare(video.frames, video.fps, model=args.model, size=args.size, bpp=args.bpp,
                                 options=opts, group=args.group, rate_control=rate_control)
        where = f"{tm.size} ranks ({'nccl' if device.startswith('cuda') else 'gloo'}), " if tm.size > 1 else ""
        if not quiet:
            _log(args, f"{args.input}: {video.count} frames {video.width}x{video.height} @ {video.fps} fps")
            _log(args, _plan_line(args, video, cfg, opts, where, threads))
        bar = _Bar(quiet)
        try:
            res = nerv.encode_prepared(video.frames, video.fps, args.model, cfg, opts, progress=bar)
        finally:
            bar.close()
        if res is not None:  # rank 0 (a rank > 0 sent its groups to rank 0)
            bs.atomic_write(out, res.data, force=args.force, inputs=[args.input])
            T, H, W = video.count, video.height, video.width
            p = psnr(res.frames, video.frames)
            stopped = " (training stopped early by Ctrl-C)" if res.fitted.interrupted else ""
            _log(args, f"{out}: {len(res.data)} bytes, {8 * len(res.data) / (T * H * W):.4f} bpp, "
                       f"PSNR {p:.2f} dB, {res.fitted.seconds:.1f} s{stopped}")
        dd.leave(tm)  # a multi-rank job ends here (every rank together, no teardown: see leave)
    finally:
        dd.finish()


def _model_options(args):
    """The chosen kind's own options from its flags (a flag per field of its ``options`` class;
    None: its defaults). A flag of another kind's options is refused, naming the kinds it is for."""
    owners: dict[str, list[str]] = {}  # option field -> the kinds whose options have it
    for name in nerv.KINDS:
        options = get_kind(name).options
        for f in dataclasses.fields(options) if options else ():
            owners.setdefault(f.name, []).append(name)
    given = {f: getattr(args, f) for f in owners if getattr(args, f, None) is not None}
    for f in given:
        if args.model not in owners[f]:
            raise UsageError(f"--{f.replace('_', '-')} applies to --model {' or '.join(owners[f])} only, "
                             f"not {args.model}")
    return get_kind(args.model).options(**given) if given else None


def _plan_line(args, video, cfg, opts, where: str, threads: int) -> str:
    """What the encode will do and about how long it will take (timed steps on this machine)."""
    params = sum(math.prod(s) for s in nerv._shapes(args.model, cfg))
    if opts.target_bpp is not None:
        rate = f"target {opts.target_bpp:g} bpp (λ steered from {opts.lam:g})"
    else:
        rate = f"λ {opts.lam:g}"
    kind = get_kind(args.model)
    unit = " per group" if kind.weight_groups(cfg, video.count) > 1 else ""
    if args.time:
        plan = f"epochs planned to fit {_fmt_seconds(opts.time_budget)}"
    elif args.epochs:
        plan = f"{opts.epochs} epochs{unit}"
    else:
        cap = f", at most {_fmt_seconds(opts.time_budget)} of training" if opts.time_budget else ""
        plan = f"{opts.epochs} epochs{unit} (preset {args.preset}{cap})"
    secs = nerv.estimate_seconds(video.frames, args.model, cfg, opts)
    bound = "at most " if kind.stops_early(opts) else "about "
    busy = ", one while the machine is busy" if threads > 1 and opts.adapt_threads else ""
    return (f"training {args.model}, {params:,} parameters, {rate}, {plan} on {where}{opts.device} "
            f"({threads} thread{'s' if threads > 1 else ''}{busy}): {bound}{_fmt_seconds(secs)}")


def cmd_decode(args) -> None:
    out = args.output
    if out is None and args.input == "-":
        out = "-"
    elif out is None:  # as pcz's: beside the input, never the video it was made from
        src = Path(args.input)
        out = str(src.with_name(src.stem + (".decoded.mkv" if args.lossless else ".decoded.mp4")))
    check_video_output(out, force=args.force, inputs=[args.input] if args.input != "-" else [])
    source = read_input("-", MAX_STDIN_BYTES) if args.input == "-" else args.input
    with nerv.NervReader(source, name="stdin" if args.input == "-" else None, limits=_limits(args)) as r:
        if args.frame is not None:
            if not 0 <= args.frame < r.count:
                raise UsageError(f"--frame {args.frame} out of range (file holds {r.count} frames)", args.input)
            frames = r.frame(args.frame, device=_device(args.device))[None]
        else:
            t0 = time.perf_counter()
            frames = r.frames(device=_device(args.device))
            dt = max(time.perf_counter() - t0, 1e-9)
            _log(args, f"{args.input}: {r.count} frames decoded in {dt:.2f} s ({r.count / dt:.1f} fps)")
        fps = r.fps
    write_video(out, frames, fps, force=args.force, inputs=[args.input] if args.input != "-" else [],
                lossless=args.lossless, crf=args.crf,
                first=args.frame or 0)
    _log(args, f"{out}: {len(frames)} frames")


def _limits(args) -> nerv.Limits:
    return nerv.Limits(max_pixels=args.max_pixels, max_frames=args.max_frames, max_output=args.max_output,
                       max_params=args.max_params)


def _limit_flags(p) -> None:
    """Decoder limits, as Pillow's MAX_IMAGE_PIXELS: a file declaring more is refused before
    anything is built; raise a limit to decode a file you trust."""
    d = nerv.DEFAULT_LIMITS
    g = p.add_argument_group("limits (a file declaring more is refused before decoding; raise them for files you trust)")
    g.add_argument("--max-pixels", type=parse_count, default=d.max_pixels, metavar="N",
                   help="pixels of one frame (%(default)s)")
    g.add_argument("--max-frames", type=parse_count, default=d.max_frames, metavar="N", help="frames (%(default)s)")
    g.add_argument("--max-output", type=parse_count, default=d.max_output, metavar="N",
                   help="frames x pixels of the clip (%(default)s)")
    g.add_argument("--max-params", type=parse_count, default=d.max_params, metavar="N",
                   help="network parameters (%(default)s)")


def cmd_info(args) -> None:
    for f in args.files:
        d = nerv.info(f, limits=_limits(args))
        if args.json:
            print(json.dumps({"file": f, **d}, indent=1))
            continue
        print(f"{f}: nervcodec {d['model']}, {d['frames']} frames {d['width']}x{d['height']} @ {d['fps']} fps")
        print(f"  {d['bytes']} bytes = {d['bpp']:.4f} bpp; {d['parameters']} parameters in {d['weight_chunks']} "
              f"weight chunk(s) ({d['weight_bytes']} B)"
              + (f", {d['embedding_chunks']} embedding chunks ({d['embedding_bytes']} B)" if d["embedding_chunks"] else ""))
        print(f"  config: {json.dumps(d['config'], sort_keys=True)}")
        for k in ("psnr", "settings", "encoder"):
            if k in d:
                print(f"  {k}: {d[k]}")


def cmd_eval(args) -> None:
    ref = read_video(args.reference, start=args.start, count=args.frames, size=args.scale)
    if str(args.test).endswith(".nerv"):
        dist, _ = nerv.decode(args.test, name=args.test, device=_device(args.device), limits=_limits(args))
        nbytes = os.path.getsize(args.test)
    else:
        dist = read_video(args.test).frames
        nbytes = os.path.getsize(args.test) if os.path.isfile(args.test) else None
    if dist.shape != ref.frames.shape:
        raise UsageError(f"{args.test}: {dist.shape[0]} frames of {dist.shape[2]}x{dist.shape[1]}, reference has "
                             f"{ref.count} of {ref.width}x{ref.height}")
    res = {"frames": ref.count, "psnr-rgb": psnr(dist, ref.frames), "ms-ssim-rgb": ms_ssim(dist, ref.frames)}
    if nbytes is not None:
        res["bytes"] = nbytes
        res["bpp"] = 8 * nbytes / (ref.count * ref.width * ref.height)
    print(json.dumps(res, indent=1))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Video compression with neural representations "
                                 "(HNeRV, NeRV++, NIRVANA), weights quantized during training and entropy coded.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(ap)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p, force=True):
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
        if force:
            p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output (never an input)")
        p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")

    def selection(p):
        p.add_argument("--start", type=whole(0), default=0, help="first frame to use (%(default)s)")
        p.add_argument("--frames", type=whole(1), help="number of frames to use (default: all)")
        p.add_argument("--scale", type=parse_wxh, metavar="WxH", help="area-downscale frames to WxH first")

    p = sub.add_parser("encode", help="video -> .nerv", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Fit a network to the video and write its quantized, entropy-coded weights. "
                       "Input: anything PyAV opens (mp4, mkv, webm, y4m, ...) or a folder of PNG frames.")
    p.add_argument("input", metavar="IN")
    p.add_argument("-o", "--output", help="output .nerv (default: IN with .nerv)")
    p.add_argument("-m", "--model", choices=nerv.KINDS, default="hnerv", help="architecture (%(default)s)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--size", type=parse_size, help="network parameters, e.g. 100k (NIRVANA: all groups)")
    g.add_argument("--bpp", type=real(0, strict=True),
                   help="target bits per pixel: sizes the network and steers λ towards it (default: "
                        + ", ".join(f"{k} {nerv.default_bpp(k)}" for k in nerv.KINDS) + ")")
    p.add_argument("--preset", choices=tuple(nerv.PRESETS), default=nerv.DEFAULT_PRESET,
                   help="training effort, as x264's presets: epochs per model, training capped in time "
                        "(%(default)s; " + "; ".join(
                            f"{k}: " + ", ".join(f"{m} {e}" for m, e in v.items())
                            + (f", at most {nerv.PRESET_SECONDS[k] / 60:g} min" if nerv.PRESET_SECONDS[k] else "")
                            for k, v in nerv.PRESETS.items()) + ")")
    p.add_argument("--time", type=parse_duration, metavar="DURATION",
                   help="wall-clock budget for the training, e.g. 90s, 5m, 1h: the epochs are planned from "
                        "timed steps to end within it (at most --epochs when given)")
    p.add_argument("--epochs", type=whole(1),
                   help="training passes over the video (NIRVANA: per group); overrides --preset")
    p.add_argument("--lam", type=real(0),
                   help="fix the rate weight λ in MSE + λ·bpp (default: steered towards --bpp, from 0.02)")
    p.add_argument("--lr", type=real(0, strict=True), default=2e-3, help="Adam learning rate (%(default)s)")
    p.add_argument("--batch", type=whole(1),
                   help="frames per step (default 1, NeRV++ 4; NIRVANA: patches of that many frames)")
    p.add_argument("--group", type=whole(1), default=16, help="frames per group (NIRVANA) (%(default)s)")
    p.add_argument("--target-psnr", type=real(0, strict=True), metavar="DB",
                   help="NIRVANA: a group stops training after the first epoch at DB dB (at most --epochs), "
                        "so easy groups cost an epoch or two and the time goes to hard ones")
    p.add_argument("--first-epochs", type=whole(1), metavar="E",
                   help="NIRVANA: epochs of the first group, which starts cold (default: --epochs)")
    p.add_argument("--start-epochs", type=whole(0), metavar="E",
                   help="NIRVANA: epochs of the common start, one frame of every group, that the first "
                        "group begins from (default: --epochs; 0: begin from the seeded network)")
    p.add_argument("--burn-in", type=whole(0), metavar="N",
                   help="NIRVANA under torchrun: groups each rank after the first trains before its own "
                        "segment and does not keep, so its segment starts warm (default 2)")
    p.add_argument("--burn-epochs", type=whole(1), metavar="E",
                   help="NIRVANA under torchrun: epochs of each burn-in group (default: half of --epochs)")
    p.add_argument("--fps", help="frame rate of a PNG folder (e.g. 30000/1001); default 25")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=whole(1),
                   help="CPU threads, fixed (default: the cores this process may use, shared among torchrun's "
                        "ranks, dropping to one while another program keeps a core busy)")
    selection(p)
    common(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help=".nerv -> video or PNG frames",
                       description="Render the frames from the file. The output kind follows -o: .mp4/.mkv "
                       "(H.264 at --crf, or with --lossless exact ffv1 RGB in .mkv), .y4m, or a folder/ of PNGs.")
    p.add_argument("input", metavar="IN")
    p.add_argument("-o", "--output", help="OUT.mp4, OUT.mkv, OUT.y4m, DIR/, or - for YUV4MPEG2 on stdout "
                   "(default: IN.decoded.mp4, with --lossless IN.decoded.mkv; stdout when IN is -)")
    p.add_argument("--frame", type=whole(0), help="decode only this frame (reads only the chunks it needs)")
    p.add_argument("--lossless", action="store_true", help="store the decoded frames losslessly")
    p.add_argument("--crf", type=whole(0, 51), default=12, help="x264 quality of an mp4/mkv output (%(default)s)")
    common(p)
    _limit_flags(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="describe .nerv files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true")
    _limit_flags(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("eval", help="PSNR / MS-SSIM of a .nerv (or any video) against a reference",
                       description="Quality of TEST against REFERENCE (same frames after --start/--frames/--scale). "
                       "TEST may be a .nerv file (decoded here) or any video; prints JSON.")
    p.add_argument("reference", metavar="REFERENCE")
    p.add_argument("test", metavar="TEST")
    selection(p)
    common(p, force=False)
    _limit_flags(p)
    p.set_defaults(func=cmd_eval)
    return ap


def main(argv: list[str] | None = None) -> int:
    return run(PROG, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
