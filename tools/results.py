"""Regenerate every benchmark figure of the project and the results page, with one command.

    python tools/results.py run              # every step not yet done, then the page
    python tools/results.py run --only video # one family: images, video, split (speed rides along)
    python tools/results.py run --redo video-hnerv   # run a finished step again
    python tools/results.py run --steps video-clip,video-defaults-clip   # only these steps
    python tools/results.py page             # rewrite RESULTS.md and docs/results/ from what is done
    python tools/results.py list             # the steps, their commands, which are done

Each step is one of the family benchmarks in ``tools/`` run as its own process (its output is
shown live and kept in ``WORK/logs/STEP.log``): our codecs and the classical ones on the same
inputs in the same run, CompressAI-style JSON (``{"name", "description", "results": {metric:
[...]}}``) per codec. A finished step is recorded with its wall time in ``WORK/steps.json``; an
interrupted run resumes where it stopped (a step that did not finish is run again whole). The page
step copies the JSON into ``docs/results/<family>/``, draws the plots there, and writes
``RESULTS.md`` with the tables, the machine, and the time every step took.

Data: ``--data`` (default ``../shared/data`` beside the checkout; see ``data/README.md``). A step
whose data is missing fails with a one-line message; the others still run. ``--quick`` shrinks
every step to a smoke run on a few images/frames (the test suite uses it with fake data).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
DEFAULT_DATA = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
DEFAULT_WORK = ROOT / "bench_data" / "results"
FAMILIES = ("images", "video", "split")
#: NIRVANA's results run, set for its time-to-PSNR target (reach HNeRV's final PSNR in a fifth of
#: HNeRV's encode time): a wide network per group (800k budget), a small rate weight, the first
#: group trained from scratch for twice the epochs (no common start: on the clip's first 16 frames
#: that gave 28.5 dB where start + group gave 26.7, in less time), and every later group stopping at
#: 31 dB training PSNR or 80 epochs, so the time goes to the groups that need it.
NIRVANA_RUN = "size=800k,epochs=80,first_epochs=160,start_epochs=0,lr=5e-3,lam=0.001,psnr=31"


#: The 224 px students' rate weights (stage 1 weighs bits per image against the MSE of the split
#: point's features, whose variance is about 60).
SPLIT224_BETAS = "2e-4,1e-3"


@dataclass(frozen=True)
class Step:
    name: str
    family: str
    what: str
    argv: list[str]  # tools/<script> and its arguments


def steps(data: Path, work: Path, quick: bool = False) -> list[Step]:
    """The benchmark steps in order (later steps of a family read what earlier ones wrote)."""
    d, w = str(data), work
    clip = w / "video" / "clip.mkv"
    clip2 = w / "video" / "clip2.mkv"
    q = quick
    return [
        Step("images-mnist", "images", "pcz (shipped MNIST model) vs PNG / WebP / JPEG XL lossless on MNIST test",
             ["bench_pcz.py", "mnist", "--data", d, "--out", str(w / "images" / "mnist"),
              "--single", "20" if q else "2000", "--repeats", "1" if q else "3"] + (["--limit", "40"] if q else [])),
        Step("images-kodak", "images", "pcz (shipped natural-image model) vs the same on Kodak",
             ["bench_pcz.py", "kodak", "--data", d, "--out", str(w / "images" / "kodak")]
             + (["--limit", "1"] if q else [])),
        Step("speed-pcz", "images", "pcz coder: fast O(log D·|p|) vs naive O(D·|p|) conditionals, same digits",
             ["bench_pcz.py", "speed", "--data", d, "--out", str(w / "speed"),
              "--images", "3" if q else "20", "--repeats", "1" if q else "5"]),
        Step("video-clip", "video", "the benchmark clip: Big Buck Bunny frames 240-479 at 320x180",
             ["make_bench_clip.py", "--src", str(data / "video" / "big_buck_bunny_360p.mp4"), "-o", str(clip),
              "--force"] + (["--start", "0", "--count", "8", "--size", "64x36"] if q else [])),
        Step("video-baselines", "video", "x264 / x265 / SVT-AV1 (PyAV) on the clip",
             ["video_baselines.py", str(clip), "--out", str(w / "video" / "baselines")]
             + (["--codecs", "x264", "--crf-list", "30"] if q else [])),
        *[Step(f"video-{m}", "video", f"nervcodec {m} on the clip (encode, decode from the file, metrics)",
               ["bench_nerv.py", str(clip), "--out", str(w / "video" / m), "--baselines", "",
                "--run", f"{m}:size=3k,epochs=1" if q else f"{m}:{spec}", "--repeats", "1" if q else "3"])
          for m, spec in (("hnerv", "size=100k,epochs=300,batch=1"), ("nirvana", NIRVANA_RUN),
                          ("nervpp", "size=100k,epochs=150"))],
        Step("video-clip2", "video", "the second clip: the live-action Hamilton clip, frames 0-239 at 320x180",
             ["make_bench_clip.py", "--src", str(data / "video" / "short_hamilton_clip.mp4"), "-o", str(clip2),
              "--start", "0", "--force"] + (["--count", "8", "--size", "64x36"] if q else [])),
        Step("video-baselines2", "video", "x264 / x265 / SVT-AV1 (PyAV) on the second clip",
             ["video_baselines.py", str(clip2), "--out", str(w / "video" / "baselines2")]
             + (["--codecs", "x264", "--crf-list", "30"] if q else [])),
        *[Step(f"video-defaults-{tag}", "video", f"nervcodec encode's defaults (preset medium, default rate) on {what}",
               ["bench_nerv.py", str(path), "--out", str(w / "video" / f"defaults-{tag}"), "--baselines", "",
                "--run", "hnerv:size=3k,epochs=1" if q else "hnerv:", "--repeats", "1" if q else "3"])
          for tag, path, what in (("clip", clip, "the benchmark clip"), ("clip2", clip2, "the second clip"))],
        Step("split-teacher", "split", "teacher ResNet-18 (width 16, 64 px) on Imagenette train",
             ["train_split.py", "teacher", "--data", str(data / "imagenette"), "--res", "32" if q else "64",
              "--base-width", "8" if q else "16", "--epochs", "1" if q else "15", "-o", str(w / "split" / "teacher.npz"),
              "--cache-dir", str(w / "split" / "cache"), "--force"] + (["--batch", "16"] if q else [])),
        Step("split-students", "split", "Entropic Students for 4 rate weights β",
             ["train_split.py", "student", "--data", str(data / "imagenette"), "--teacher",
              str(w / "split" / "teacher.npz"), "--betas", "1.5,1,0.5,0.25", "--stage1-epochs", "1" if q else "16",
              "--schedule1", "cosine", "--stage2-epochs", "1" if q else "24", "--dec-channels", "16,8" if q else "128,64", "-o", str(w / "split" / "students"),
              "--cache-dir", str(w / "split" / "cache"), "--force"] + (["--batch", "16", "--enc-channels", "8,8", "--bottleneck", "4"] if q else [])),
        Step("split-bench", "split", "top-1 vs bytes: students vs JPEG / WebP into the same teacher; edge latency",
             ["bench_split.py", "--data", str(data / "imagenette"), "--teacher", str(w / "split" / "teacher.npz"),
              "--students", str(w / "split" / "students"), "--out", str(w / "split" / "bench"),
              "--cache-dir", str(w / "split" / "cache")]
             + (["--jpeg", "10,50", "--webp", "10,50", "--latency-images", "2"] if q else [])),
        Step("split224-cache", "split", "the ImageNet teacher's targets on Imagenette's ImageNet-train images, 224 px",
             ["train_split_imagenet.py", "cache", "--data", str(data / "imagenette"), "--out", str(w / "split224" / "cache"),
              "--force"] + (["--limit", "8", "--batch", "4"] if q else [])),
        Step("split224-students", "split", f"Entropic Students of EfficientNet-Lite0 for rate weights β {SPLIT224_BETAS}",
             ["train_split_imagenet.py", "student", "--beta", SPLIT224_BETAS, "--cache", str(w / "split224" / "cache"),
              "--out", str(w / "split224" / "students"), "--force"]
             + (["--stage1-steps", "2", "--stage2-steps", "1", "--batch1", "2", "--batch2", "2", "--window", "64"]
                if q else [])),
        Step("split224-bench", "split", "224 px: top-1 vs bytes, students vs JPEG / WebP into the teacher; edge latency",
             ["bench_split_imagenet.py", "run", "--data", str(data / "imagenette"),
              "--students", str(w / "split224" / "students"), "--out", str(w / "split224" / "bench")]
             + (["--jpeg", "10,50", "--webp", "10", "--latency-images", "2", "--repeats", "2"] if q else [])),
    ]


def _load_done(work: Path) -> dict:
    p = work / "steps.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _save_done(work: Path, done: dict) -> None:
    tmp = work / "steps.json.part"
    tmp.write_text(json.dumps(done, indent=1) + "\n")
    os.replace(tmp, work / "steps.json")


def run_step(step: Step, work: Path, index: str) -> tuple[bool, float]:
    """Run one step as its own process, streaming its output to the terminal and its log."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(TOOLS / step.argv[0]), *step.argv[1:]]
    print(f"\n[{index}] {step.name}: {step.what}\n    {' '.join(cmd[1:])}", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with open(logs / f"{step.name}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            sys.stdout.write("    " + line)
            sys.stdout.flush()
            log.write(line)
        rc = proc.wait()
    dt = time.perf_counter() - t0
    print(f"    -> {'done' if rc == 0 else f'FAILED (exit {rc})'} in {dt:.0f} s", flush=True)
    return rc == 0, dt


def machine() -> str:
    import torch

    from bench_common import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def cmd_run(args) -> int:
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    todo = [s for s in steps(args.data, work, args.quick) if (not args.only or s.family in args.only)
            and (not args.steps or s.name in args.steps)]
    unknown = set(args.steps or []) - {s.name for s in steps(args.data, work, args.quick)}
    if unknown:
        print(f"results: unknown step(s) {', '.join(sorted(unknown))} (see: results.py list)", file=sys.stderr)
        return 2
    done = _load_done(work)
    for name in args.redo or []:
        done.pop(name, None)
    failed = []
    t_all = time.perf_counter()
    for i, s in enumerate(todo):
        if s.name in done:
            print(f"[{i + 1}/{len(todo)}] {s.name}: done earlier ({done[s.name]['seconds']:.0f} s); skipped "
                  f"(--redo {s.name} to run it again)", flush=True)
            continue
        if any(f.family == s.family for f in failed):
            print(f"[{i + 1}/{len(todo)}] {s.name}: skipped (an earlier {s.family} step failed)", flush=True)
            continue
        ok, dt = run_step(s, work, f"{i + 1}/{len(todo)}")
        if not ok:
            failed.append(s)
            continue
        done[s.name] = {"seconds": round(dt, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "command": "python tools/" + " ".join(s.argv), "machine": machine(), "quick": args.quick}
        _save_done(work, done)
    print(f"\nthis run: {time.perf_counter() - t_all:.0f} s", flush=True)
    if not args.no_page:
        import results_page

        results_page.write(work, args.docs, args.page)
    if failed:
        print("failed: " + ", ".join(f"{s.name} (log: {work / 'logs' / (s.name + '.log')})" for s in failed),
              file=sys.stderr)
        return 1
    return 0


def cmd_page(args) -> int:
    import results_page

    results_page.write(args.work, args.docs, args.page)
    return 0


def cmd_list(args) -> int:
    done = _load_done(args.work)
    for s in steps(args.data, args.work, args.quick):
        mark = f"done, {done[s.name]['seconds']:.0f} s" if s.name in done else "to do"
        print(f"{s.name:<16} [{mark}] {s.what}\n    python tools/{' '.join(s.argv)}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, fn in (("run", cmd_run), ("page", cmd_page), ("list", cmd_list)):
        p = sub.add_parser(name)
        p.set_defaults(func=fn)
        p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (%(default)s)")
        p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="raw results and logs (%(default)s)")
        p.add_argument("--docs", type=Path, default=ROOT / "docs" / "results", help="page assets (%(default)s)")
        p.add_argument("--page", type=Path, default=ROOT / "RESULTS.md", help="the results page (%(default)s)")
        p.add_argument("--quick", action="store_true", help="smoke-sized steps (a few images / frames)")
        if name == "run":
            p.add_argument("--only", type=lambda s: s.split(","), help="families: " + ",".join(FAMILIES))
            p.add_argument("--redo", action="append", metavar="STEP", help="run a finished step again (repeatable)")
            p.add_argument("--steps", type=lambda s: s.split(","), metavar="STEP,...",
                           help="run only these steps (and skip the others)")
            p.add_argument("--no-page", action="store_true", help="do not rewrite the page afterwards")
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
