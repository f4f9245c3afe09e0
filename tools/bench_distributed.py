"""nervcodec across processes: wall clock, PSNR and bpp of one encode with 1 rank and with N ranks.

    python tools/bench_distributed.py bench_data/bbb_320x180_240.mkv --model nirvana --size 100k \\
        --epochs 60 --ranks 2 [--out bench_data/dist]

Runs ``nervcodec encode`` as one plain process, then under ``torchrun --standalone
--nproc-per-node N`` (gloo, one thread per rank, ``OMP_NUM_THREADS=1``), on the same clip with
the same flags; times each whole command (start-up and the final gather included), decodes both
files and prints PSNR / MS-SSIM / bpp against the clip, the speed-up and the PSNR lost. Writes
``distributed.json`` in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
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
    ap.add_argument("--out", type=Path, default=ROOT / "bench_data" / "dist")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    flags = [args.clip, "--model", args.model, "--size", args.size, "--epochs", str(args.epochs), "--threads", "1",
             "-q", "-f"]
    one, many = args.out / f"{args.model}_1rank.nerv", args.out / f"{args.model}_{args.ranks}ranks.nerv"
    t1 = encode([sys.executable, "-m", "codec.cli.nerv", "encode", *flags, "-o", str(one)])
    tn = encode([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.ranks),
                 "-m", "codec.cli.nerv", "encode", *flags, "-o", str(many)])

    from codec import nerv
    from codec.metrics import ms_ssim, psnr
    from codec.video_io import read_video

    ref = read_video(args.clip).frames
    T, H, W, _ = ref.shape
    rows = {}
    for ranks, path, secs in ((1, one, t1), (args.ranks, many, tn)):
        frames, _ = nerv.decode(path.read_bytes())
        rows[ranks] = {"seconds": secs, "psnr": psnr(frames, ref), "ms_ssim": ms_ssim(frames, ref),
                       "bpp": 8 * path.stat().st_size / (T * H * W), "file": str(path)}
        r = rows[ranks]
        print(f"{ranks} rank(s): {secs:.1f} s, {r['psnr']:.2f} dB, MS-SSIM {r['ms_ssim']:.4f}, {r['bpp']:.5f} bpp")
    a, b = rows[1], rows[args.ranks]
    summary = {"speedup": a["seconds"] / b["seconds"], "psnr_lost_db": a["psnr"] - b["psnr"],
               "bpp_ratio": b["bpp"] / a["bpp"]}
    print(f"speed-up {summary['speedup']:.2f}x, PSNR lost {summary['psnr_lost_db']:.2f} dB, "
          f"bpp x{summary['bpp_ratio']:.3f}")
    (args.out / "distributed.json").write_text(json.dumps({"model": args.model, "size": args.size,
                                                           "epochs": args.epochs, "runs": rows, **summary},
                                                          indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
