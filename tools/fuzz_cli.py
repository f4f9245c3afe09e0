"""The CLI contract under damaged files: each command, handed N mutated files, either
decodes, or refuses with exit status 2 and exactly one stderr line (``PROG: FILE: problem``),
leaving nothing on disk.

The mutations are :mod:`fuzz`'s (bit flips, truncations, chunk surgery with CRCs fixed, forged
header fields) on the same seed files. Each command runs as the installed console script would,
through its ``main(argv)``, in a worker process (a fresh interpreter per file would spend a second
importing torch each time); the worker arms an alarm per file, so a decode that runs past
``--time-limit`` is reported, not waited for.

    python tools/fuzz_cli.py --count 1000            # every command, 1,000 damaged files each
    python tools/fuzz_cli.py --command "pcz decompress" --count 200 -v
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing as mp
import random
import signal
import tempfile
import time
from pathlib import Path

import fuzz  # tools/fuzz.py: seeds and mutations (tools/ is on sys.path when run as a script)

#: command -> (seed family names, argv builder given the input path and an output folder)
COMMANDS = {
    "pcz decompress": (("pcz", "pcz-archive"), lambda f, out: ["decompress", f, "-o", str(out / "out.png")]),
    "pcz info": (("pcz", "pcz-archive"), lambda f, out: ["info", f]),
    "nervcodec decode": (("nerv",), lambda f, out: ["decode", f, "-o", str(out / "out.y4m")]),
    "nervcodec info": (("nerv",), lambda f, out: ["info", f]),
    "splitcodec decode": (("split",), lambda f, out: ["decode", f]),
}
PROGS = {"pcz": "neural_codecs.codec.cli.pcz", "nervcodec": "neural_codecs.codec.cli.nerv", "splitcodec": "neural_codecs.codec.cli.split"}


class _Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Alarm()


def check_one(job: tuple[str, bytes, int]) -> dict:
    """Run one command on one damaged file; classify what the user would see."""
    command, data, limit = job
    import importlib

    prog, _ = command.split(" ", 1)
    main = importlib.import_module(PROGS[prog]).main
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src, out = tmp / "damaged.bin", tmp / "out"
        src.write_bytes(data)
        out.mkdir()
        err, sink = io.StringIO(), io.StringIO()
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(limit)
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(sink):
                try:
                    status = main(COMMANDS[command][1](str(src), out))
                except SystemExit as e:
                    status = e.code if isinstance(e.code, int) else 2
        except _Alarm:
            return {"outcome": "timeout", "seconds": limit}
        except Exception as e:  # what would have been a traceback
            return {"outcome": "traceback", "detail": f"{type(e).__name__}: {e}"[:200]}
        finally:
            signal.alarm(0)
        dt = time.perf_counter() - t0
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        left = sorted(p.name for p in out.iterdir())
        if status == 0:
            return {"outcome": "decoded", "seconds": dt}
        ok = status == 2 and len(lines) == 1 and lines[0].startswith(f"{prog}: ") and not left
        detail = f"status {status}, {len(lines)} stderr lines, left {left}: {' | '.join(lines)[:200]}"
        return {"outcome": "refused" if ok else "broken", "seconds": dt, "detail": "" if ok else detail,
                "line": lines[0] if lines else ""}


def damaged_files(command: str, count: int, seed: int, seeds_dir: Path) -> list[bytes]:
    families = COMMANDS[command][0]
    seeds = [s for fam in families for s in fuzz.load_seeds(fam, seeds_dir)]
    rng = random.Random(f"{seed}/{command}")
    return [fuzz.mutate(rng, seeds)[0] for _ in range(count)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--command", choices=tuple(COMMANDS), action="append", help="default: all")
    ap.add_argument("--count", type=int, default=1000, help="damaged files per command (%(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--time-limit", type=int, default=30, help="seconds per file before it counts as a timeout")
    ap.add_argument("--out", default="fuzz-out", help="seeds folder and results JSON (%(default)s)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    ctx = mp.get_context("spawn")  # the parent may have used OpenMP (making seeds): no fork
    for command in args.command or COMMANDS:
        files = damaged_files(command, args.count, args.seed, out / "seeds")
        tally: dict[str, int] = {}
        broken: list[str] = []
        slowest, times = 0.0, []
        t0 = time.perf_counter()
        with ctx.Pool(args.jobs, maxtasksperchild=200) as pool:
            for i, r in enumerate(pool.imap(check_one, [(command, d, args.time_limit) for d in files])):
                tally[r["outcome"]] = tally.get(r["outcome"], 0) + 1
                if r["outcome"] == "refused":
                    slowest = max(slowest, r["seconds"])
                    times.append(r["seconds"])
                if r["outcome"] in ("broken", "traceback", "timeout"):
                    broken.append(f"#{i}: {r['outcome']} {r.get('detail', '')}")
                    if args.verbose:
                        print(f"  {command} #{i}: {r['outcome']} {r.get('detail', '')}")
        results[command] = {"files": len(files), **tally, "slowest_refusal_s": round(slowest, 3),
                            "median_refusal_s": round(sorted(times)[len(times) // 2], 4) if times else None,
                            "seconds": round(time.perf_counter() - t0, 1), "problems": broken[:20]}
        print(f"{command}: {len(files)} files: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
              + f"; refusals: median {results[command]['median_refusal_s']} s, slowest {slowest:.2f} s", flush=True)
    (out / "cli_contract.json").write_text(json.dumps({"seed": args.seed, "results": results}, indent=1))
    return 0 if all(not r["problems"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
