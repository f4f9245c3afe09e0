"""nervcodec benchmark: every model on the benchmark clip, beside x264 / x265 / SVT-AV1, in one run.

For each nervcodec run it writes the real ``.nerv`` file and measures its bpp (file bytes), RGB
PSNR and MS-SSIM of the decoded frames (decoded from the file, not taken from the encoder),
encode time, decode fps (median of ``--repeats`` decodes of the file), and the training curve
(PSNR against seconds, for time-to-PSNR comparisons). Classical codecs run in the same process on
the same frames (``tools/video_baselines.py``). Results: one CompressAI-style JSON per codec in
``--out``, a ``summary.md`` table and ``rd.png`` (if matplotlib is installed).

    python tools/make_bench_clip.py                         # bench_data/bbb_320x180_240.mkv
    python tools/bench_nerv.py bench_data/bbb_320x180_240.mkv --out bench_data/nerv \\
        --run hnerv:size=100k,epochs=60 --run nirvana:size=100k,epochs=40 --baselines x264,svtav1

``--run MODEL:key=value,...`` (keys: size, bpp, epochs, preset, time (seconds), lam, lr, batch,
group; NIRVANA's start_epochs, first_epochs, and psnr: target_psnr, a group stops at this training
PSNR) may be repeated; ``--run hnerv:`` is exactly ``nervcodec encode``'s defaults (preset medium,
the default rate with λ steered towards it; a ``lam`` or ``size`` key fixes λ as the CLI's flags do);
runs finish one by one and their JSON is rewritten after each, so an interrupted benchmark keeps
what it finished.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from neural_codecs.codec.cpu import calm_spinning  # noqa: E402

calm_spinning()  # before torch loads (codec/cpu.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_common import pyplot  # noqa: E402
from neural_codecs.codec import nerv  # noqa: E402
from neural_codecs.codec.cli.nerv import parse_size  # noqa: E402
from neural_codecs.codec.eval.metrics import ms_ssim, psnr  # noqa: E402
from neural_codecs.codec.io.video import read_video  # noqa: E402
from neural_codecs.models.inr import FitOptions, NirvanaOptions  # noqa: E402

DEFAULT_RUNS = ["hnerv:size=100k,epochs=60", "nervpp:size=100k,epochs=60", "nirvana:size=100k,epochs=40"]


def parse_run(spec: str) -> tuple[str, dict]:
    model, _, rest = spec.partition(":")
    if model not in nerv.KINDS:
        raise SystemExit(f"bench_nerv: unknown model in --run {spec!r}")
    kw: dict = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        if k == "size":
            kw[k] = parse_size(v)
        elif k in ("epochs", "batch", "group", "start_epochs", "first_epochs"):
            kw[k] = int(v)
        elif k in ("bpp", "lam", "lr", "psnr", "time"):
            kw[k] = float(v)
        elif k == "preset" and v in nerv.PRESETS:
            kw[k] = v
        else:
            raise SystemExit(f"bench_nerv: unknown key {k!r} in --run {spec!r}")
    return model, kw


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def run_nerv(frames: np.ndarray, fps, model: str, kw: dict, out: Path, repeats: int, device: str,
             log=print) -> dict:
    epochs, budget = nerv.training_plan(model, kw.get("preset", nerv.DEFAULT_PRESET), kw.get("epochs"), kw.get("time"))
    own = {"target_psnr": kw.get("psnr"), **{k: kw[k] for k in ("start_epochs", "first_epochs") if k in kw}}
    own = {k: v for k, v in own.items() if v is not None}
    opts = FitOptions(device=device, epochs=epochs, time_budget=budget,
                      model=NirvanaOptions(**own) if own else None,
                      **{k: kw[k] for k in ("lam", "lr", "batch") if k in kw})
    last = [0.0]

    def progress(step, total, info):
        now = time.perf_counter()
        if now - last[0] > 30 or step == total:
            last[0] = now
            log(f"  {model} step {step}/{total} psnr {info['psnr']:.2f} est bpp {info['bpp']:.4f}")

    t0 = time.perf_counter()
    res = nerv.encode(frames, fps, model=model, size=kw.get("size"), bpp=kw.get("bpp"), options=opts,
                      group=kw.get("group", 16), progress=progress,
                      rate_control="lam" not in kw and "size" not in kw)
    enc_s = time.perf_counter() - t0
    tag = f"{model}-" + ("-".join(f"{k}{v}" for k, v in sorted(kw.items())) or "defaults")
    path = out / f"{tag}.nerv"
    path.write_bytes(res.data)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        dec, _ = nerv.decode(path, device=device)
        times.append(time.perf_counter() - t)
    if not np.array_equal(dec, res.frames):
        raise SystemExit(f"bench_nerv: {path}: decoded frames differ from the encoder's final evaluation")
    T, H, W, _ = frames.shape
    extra: dict = {}
    if device != "cpu":  # the same file decoded on the CPU: how far apart do the two devices land?
        cpu, _ = nerv.decode(path, device="cpu")
        diff = np.abs(cpu.astype(np.int16) - dec.astype(np.int16))
        extra = {"cpu_decode_max_diff": int(diff.max()), "cpu_decode_diff_fraction": float((diff > 0).mean()),
                 "cpu_decode_psnr": psnr(cpu, frames)}
    hist = res.fitted.history
    if hist and "epoch" in hist[0]:
        extra["seconds_per_epoch"] = hist[-1]["seconds"] / len(hist)
    return {**extra, "tag": tag, "model": model, "settings": kw, "bytes": len(res.data),
            "bpp": 8 * len(res.data) / (T * H * W), "psnr": psnr(dec, frames), "ms_ssim": ms_ssim(dec, frames),
            "encode_s": enc_s, "decode_fps": T / statistics.median(times), "est_bpp": res.fitted.est_bits / (T * H * W),
            "curve": [(h["seconds"], h["psnr"]) for h in res.fitted.history]}


def write_json(out: Path, name: str, description: str, points: list[dict]) -> None:
    points = sorted(points, key=lambda p: p["bpp"])
    keys = {"bpp": "bpp", "psnr-rgb": "psnr", "ms-ssim-rgb": "ms_ssim", "encode_s": "encode_s", "decode_fps": "decode_fps"}
    doc = {"name": name, "description": description,
           "results": {k: [p[v] for p in points] for k, v in keys.items()}}
    (out / f"{name.replace(' ', '_')}.json").write_text(json.dumps(doc, indent=1) + "\n")


def summarize(out: Path, rows: list[tuple[str, dict]], header: str) -> str:
    lines = [header, "", "| codec | bpp | PSNR (dB) | MS-SSIM | encode (s) | decode (fps) |", "|---|---|---|---|---|---|"]
    for name, p in rows:
        lines.append(f"| {name} | {p['bpp']:.4f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} | {p['encode_s']:.1f} | "
                     f"{p['decode_fps']:.1f} |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def plot(out: Path, groups: dict[str, list[dict]]) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in groups.items():
        pts = sorted(pts, key=lambda p: p["bpp"])
        ax.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], "o-", label=name)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("RGB PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rd.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip", help="the benchmark clip (tools/make_bench_clip.py) or any video")
    ap.add_argument("--out", default="bench_data/nerv", help="results folder (%(default)s)")
    ap.add_argument("--run", action="append", help="MODEL:key=value,... (repeatable); default: "
                    + " ".join(DEFAULT_RUNS))
    ap.add_argument("--baselines", default="x264,x265,svtav1", help="classical codecs to run beside ('' for none)")
    ap.add_argument("--crf", default="", help="classical qualities, e.g. 30,34,38 (default: video_baselines' list)")
    ap.add_argument("--frames", type=int, help="use only the first N frames")
    ap.add_argument("--repeats", type=int, default=3, help="decode timing repeats (median)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    args = ap.parse_args(argv)
    from neural_codecs.codec.cpu import set_threads

    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    video = read_video(args.clip, count=args.frames)
    frames, fps = video.frames, video.fps
    T, H, W, _ = frames.shape
    where = f"{args.clip} ({T} frames {W}x{H}), {machine()}, device {args.device}"
    print(f"bench_nerv: {where}", flush=True)
    rows: list[tuple[str, dict]] = []
    groups: dict[str, list[dict]] = {}

    if args.baselines:
        import video_baselines as vb

        crfs = [int(c) for c in args.crf.split(",") if c] or None
        for codec in args.baselines.split(","):
            if not vb.available(codec):
                print(f"  {codec}: encoder missing in this PyAV build; skipped", flush=True)
                continue
            name = vb.LABELS[codec].format(preset=vb.CODECS[codec][2])
            pts = []
            for q in (crfs or vb.CODECS[codec][4]):
                p = vb.encode_classical(frames, fps, codec, crf=q)
                p["settings"] = {"crf": q}
                pts.append(p)
                rows.append((f"{name} crf {q}", p))
                print(f"  {codec} crf {q}: {p['bpp']:.4f} bpp {p['psnr']:.2f} dB", flush=True)
            groups[name] = pts
            write_json(out, name, f"{name} via PyAV on {where}", pts)

    runs = [parse_run(s) for s in (args.run or DEFAULT_RUNS)]
    results: dict[str, list[dict]] = {}
    for model, kw in runs:
        print(f"nervcodec {model} {kw} ...", flush=True)
        p = run_nerv(frames, fps, model, kw, out, args.repeats, args.device)
        print(f"  {p['tag']}: {p['bytes']} B, {p['bpp']:.4f} bpp (est {p['est_bpp']:.4f}), {p['psnr']:.2f} dB, "
              f"MS-SSIM {p['ms_ssim']:.4f}, encode {p['encode_s']:.0f} s, decode {p['decode_fps']:.1f} fps", flush=True)
        results.setdefault(model, []).append(p)
        rows.append((f"nervcodec {p['tag']}", p))
        groups[f"nervcodec {model}"] = results[model]
        write_json(out, f"nervcodec {model}", f"nervcodec {model} on {where}; runs: "
                   + "; ".join(f"{q['tag']}" for q in results[model]), results[model])
        (out / "runs.json").write_text(json.dumps({k: v for k, v in results.items()}, indent=1) + "\n")
        print(summarize(out, rows, f"Measured on {where}."), flush=True)
        plot(out, groups)
    return 0


if __name__ == "__main__":
    sys.exit(main())
