"""nervcodec across processes: wall clock, PSNR and bpp of one encode with 1 rank and with N ranks.

    python tools/bench_distributed.py bench_data/bbb_320x180_240.mkv --model nirvana --size 100k \\
        --epochs 60 --ranks 2 [--burn-in 2] [--repeats 3] [--out bench_data/dist]

Runs ``nervcodec encode`` as one plain process, then under ``torchrun --standalone
--nproc-per-node N`` (gloo, one thread per rank, ``OMP_NUM_THREADS=1``), on the same clip with
the same flags, ``--repeats`` times alternately; times each whole command (start-up and the final
gather included; the median is reported, and whether the repeats wrote identical files), decodes both
files and prints PSNR / MS-SSIM / bpp against the clip, the speed-up and the PSNR lost. Writes
``distributed.json`` in ``--out``.
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


def encode(cmd: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip")
    ap.add_argument("--model", default="nirvana", choices=("hnerv", "nervpp", "nirvana"))
    ap.add_argument("--size", default="100k")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--burn-in", type=int, default=2, help="NIRVANA: groups of burn-in per later rank (%(default)s)")
    ap.add_argument("--burn-epochs", type=int, help="NIRVANA: epochs per burn-in group (default: half of --epochs)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="encode pairs (1 rank, then N) to take the median wall clock of (%(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench_data" / "dist")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    flags = [args.clip, "--model", args.model, "--size", args.size, "--epochs", str(args.epochs), "--threads", "1",
             "--burn-in", str(args.burn_in), "-q", "-f"]
    if args.burn_epochs is not None:
        flags += ["--burn-epochs", str(args.burn_epochs)]
    one, many = args.out / f"{args.model}_1rank.nerv", args.out / f"{args.model}_{args.ranks}ranks.nerv"
    times: dict[int, list[float]] = {1: [], args.ranks: []}
    files: dict[int, set[bytes]] = {1: set(), args.ranks: set()}
    for _ in range(args.repeats):  # alternate, so slow spells of a noisy machine hit both
        times[1].append(encode([sys.executable, "-m", "neural_codecs.codec.cli.nerv", "encode", *flags, "-o", str(one)]))
        times[args.ranks].append(encode([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                         "--nproc-per-node", str(args.ranks), "-m", "neural_codecs.codec.cli.nerv", "encode",
                                         *flags, "-o", str(many)]))
        files[1].add(one.read_bytes())
        files[args.ranks].add(many.read_bytes())

    from neural_codecs.codec import nerv
    from neural_codecs.codec.eval.metrics import ms_ssim, psnr
    from neural_codecs.codec.io.video import read_video
    from neural_codecs.models.inr import NirvanaOptions

    ref = read_video(args.clip).frames
    T, H, W, _ = ref.shape
    rows = {}
    for ranks, path in ((1, one), (args.ranks, many)):
        frames, _ = nerv.decode(path.read_bytes())
        secs = statistics.median(times[ranks])
        rows[ranks] = {"seconds": secs, "all_seconds": times[ranks], "identical_files": len(files[ranks]) == 1,
                       "psnr": psnr(frames, ref), "ms_ssim": ms_ssim(frames, ref),
                       "bpp": 8 * path.stat().st_size / (T * H * W), "file": str(path)}
        r = rows[ranks]
        print(f"{ranks} rank(s): {secs:.1f} s (median of {', '.join(f'{t:.1f}' for t in times[ranks])}), "
              f"{r['psnr']:.2f} dB, MS-SSIM {r['ms_ssim']:.4f}, {r['bpp']:.5f} bpp"
              + ("" if r["identical_files"] else "; the repeats wrote DIFFERENT files"))
    a, b = rows[1], rows[args.ranks]
    burn_epochs = NirvanaOptions(burn_epochs=args.burn_epochs).burn_group_epochs(args.epochs)
    summary = {"speedup": a["seconds"] / b["seconds"],
               "pair_speedups": [x / y for x, y in zip(times[1], times[args.ranks])],
               "psnr_lost_db": a["psnr"] - b["psnr"],
               "bpp_ratio": b["bpp"] / a["bpp"]}
    print(f"speed-up {summary['speedup']:.2f}x (pairs: {', '.join(f'{x:.2f}' for x in summary['pair_speedups'])}), "
          f"PSNR lost {summary['psnr_lost_db']:.2f} dB, "
          f"bpp x{summary['bpp_ratio']:.3f}")
    (args.out / "distributed.json").write_text(json.dumps({"model": args.model, "size": args.size,
                                                           "epochs": args.epochs, "burn_in": args.burn_in,
                                                           "burn_epochs": burn_epochs,
                                                           "runs": rows, **summary},
                                                          indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
