"""Train the splitcodec models that ship with the package (the "embedded defaults"), reproducibly.

    python tools/train_split_defaults.py [--data ../shared/data/imagenette] [--work bench_data/split_default]

One fixed, seeded recipe run through ``tools/train_split.py`` (printed before it runs, so each step
can also be run by hand): a ResNet-18 teacher at width 16 on 64×64 Imagenette *train* crops, then one
Entropic Student from it; the student's edge and server files are copied to ``codec/split/shipped/``
(``edge.npz``, ``server.npz``) with ``default.json`` beside them (recipe, val top-1, bytes per image,
hashes). The recipe is sized for 2 CPU cores (about a quarter of an hour), not for accuracy: it
exists so that ``splitcodec`` runs out of the box; train your own with ``tools/train_split.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from neural_codecs.codec import split  # noqa: E402
from tools import train_split  # noqa: E402

TEACHER = ["--res", "64", "--base-width", "16", "--epochs", "15", "--seed", "0"]
BETA = 0.25  # the one student's rate weight (bits per input pixel); larger ones cost accuracy
STUDENT = ["--betas", f"{BETA:g}", "--stage1-epochs", "6", "--schedule1", "constant", "--stage2-epochs", "10",
           "--dec-channels", "128,64", "--seed", "0"]  # the recipe the shipped model was trained with


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
                    / "imagenette", help="Imagenette folder with train/ and val/")
    ap.add_argument("--work", type=Path, default=ROOT / "bench_data" / "split_default",
                    help="where the teacher and the student are trained")
    ap.add_argument("--cache-dir", type=Path, help="decoded-split cache (default: WORK/cache)")
    ap.add_argument("--dest", type=Path, default=split.shipped_dir(), help="where the shipped files go")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    teacher = args.work / "teacher.npz"
    common = ["--data", str(args.data), "--cache-dir", str(args.cache_dir or args.work / "cache"), "--force"]
    steps = [["teacher", *common, *TEACHER, "-o", str(teacher)],
             ["student", *common, "--teacher", str(teacher), *STUDENT, "-o", str(args.work)]]
    t0 = time.time()
    for step in steps:
        print("python tools/train_split.py " + " ".join(step), flush=True)
        train_split.main(step)
    edge, server, meta = train_split.student_paths(args.work, BETA)
    args.dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(edge, args.dest / "edge.npz")
    shutil.copyfile(server, args.dest / "server.npz")
    info = json.loads(meta.read_text())
    info.update({"script": "tools/train_split_defaults.py", "teacher_recipe": TEACHER, "student_recipe": STUDENT,
                 "teacher": "ResNet-18 width 16 at 64 px (its layers after layer1 are in server.npz)",
                 "edge_hash": split.load_edge(args.dest / "edge.npz").hash.hex(),
                 "train_seconds": round(time.time() - t0)})
    (args.dest / "default.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    print(f"{args.dest}: edge {os.path.getsize(args.dest / 'edge.npz')} B, server "
          f"{os.path.getsize(args.dest / 'server.npz')} B, {info['train_seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
