"""CPU cost of a nervcodec training step with the other cores idle and busy.

Each setting runs in a fresh process (OpenMP reads its spin policy when torch loads): an HNeRV
network sized as ``nervcodec encode`` sizes it for a 240-frame 320x180 clip at the default rate,
trained (``fit``, ``--epochs`` over ``--frames`` random frames) after a warm-up; CPU seconds and
wall seconds per step are the medians of ``--repeats`` runs. "Busy" starts one spinning process per core but one (what
a user's machine looks like with a build or a browser running). The ratio busy/idle of the CPU per
step is what should stay near 1: CPU burnt by waiting threads is the oversubscription cost.

    python tools/bench_nerv_threads.py [--frames 24] [--epochs 4] [--repeats 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, os, sys, time
from neural_codecs.codec.cpu import calm_spinning, set_threads
if {calm}:
    calm_spinning()
import numpy as np, torch
from neural_codecs.codec import nerv
from neural_codecs.models.inr import FitOptions, fit
threads = set_threads({threads} or None)
rng = np.random.default_rng(0)
frames = rng.integers(0, 256, ({frames}, 180, 320, 3), dtype=np.uint8)
cfg = nerv.make_config("hnerv", 180, 320, 240)
opts = FitOptions(epochs={epochs}, adapt_threads={adapt}, lam=1e-4)
fit(frames[:2], "hnerv", cfg, FitOptions(epochs=1))  # warm-up
c0, w0 = time.process_time(), time.perf_counter()
fit(frames, "hnerv", cfg, opts)
steps = {frames} * {epochs}
print(json.dumps({{"threads": threads, "cpu": (time.process_time() - c0) / steps,
                  "wall": (time.perf_counter() - w0) / steps}}))
"""


def run_setting(threads: int, calm: bool, adapt: bool, frames: int, epochs: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = WORKER.format(root=str(ROOT), calm=calm, threads=threads, adapt=adapt, frames=frames, epochs=epochs)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def spinners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24, help="random 320x180 frames trained on")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the measurements here")
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    settings = [("1 thread", 1, True, False), ("default threads, fixed, short spin", 0, True, False),
                ("default threads, fixed, OpenMP's spin", 0, False, False),
                ("default threads + governor (nervcodec)", 0, True, True)]
    rows = []
    for load in ("idle", "busy"):
        procs = spinners(max(1, cores - 1)) if load == "busy" else []
        try:
            time.sleep(0.5 if procs else 0)
            for label, threads, calm, adapt in settings:
                runs = [run_setting(threads, calm, adapt, args.frames, args.epochs) for _ in range(args.repeats)]
                row = {"setting": label, "load": load, "threads": runs[0]["threads"],
                       "cpu_ms": 1000 * statistics.median(r["cpu"] for r in runs),
                       "wall_ms": 1000 * statistics.median(r["wall"] for r in runs)}
                rows.append(row)
                print(f"{load:<5} {label:<42} {row['threads']} threads: {row['cpu_ms']:7.1f} CPU-ms/step "
                      f"{row['wall_ms']:7.1f} ms/step", flush=True)
        finally:
            for p in procs:
                p.kill()
                p.wait()
    print(f"\n{cores} cores; busy = {max(1, cores - 1)} spinning process(es). CPU per step, busy / idle:")
    for label, *_ in settings:
        idle = next(r for r in rows if r["setting"] == label and r["load"] == "idle")
        busy = next(r for r in rows if r["setting"] == label and r["load"] == "busy")
        print(f"  {label:<42} {busy['cpu_ms'] / idle['cpu_ms']:.2f}   (wall {busy['wall_ms'] / idle['wall_ms']:.2f})")
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
