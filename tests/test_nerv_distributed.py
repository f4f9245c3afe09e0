"""nervcodec across processes: two CPU ranks with gloo on a tiny clip.

NIRVANA goes through the real user path (``torchrun … -m neural_codecs.codec.cli.nerv encode``); HNeRV's
data-parallel training and a failing rank are driven with ``torch.multiprocessing.spawn``.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neural_codecs.codec import nerv
from neural_codecs.codec.eval.metrics import psnr
from neural_codecs.codec.io.video import write_video
from neural_codecs.models.inr import FitOptions, NirvanaOptions
from neural_codecs.models.inr.distributed import Team, leave, segment, share, team

ROOT = Path(__file__).resolve().parents[1]


def clip(T=8, H=20, W=28, seed=0) -> np.ndarray:
    """A smooth moving pattern (learnable in a few epochs) with a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    frames = [np.stack([128 + 90 * np.sin((xx + 2 * t) / 5), 128 + 90 * np.cos((yy - t) / 4),
                        128 + 60 * np.sin((xx + yy + 3 * t) / 7)], -1) for t in range(T)]
    return np.clip(np.stack(frames) + rng.normal(0, 3, (T, H, W, 3)), 0, 255).astype(np.uint8)


def test_segments_and_shares_cover_everything_once():
    for G in (1, 2, 5, 15):
        for n in (1, 2, 3, 4):
            runs = [segment(G, Team(r, n)) for r in range(n)]
            assert [g for run in runs for g in run] == list(range(G))
            assert max(map(len, runs)) - min(map(len, runs)) <= 1
    b = torch.arange(5)
    assert torch.cat([share(b, Team(r, 2)) for r in range(2)]).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        share(torch.arange(1), Team(0, 2))


def _loads(runs, burn):
    return [len(run) + (burn if r and len(run) else 0) for r, run in enumerate(runs)]


def test_segments_with_a_burn_in_cover_the_clip_and_balance_the_work():
    """Ranks after the first also train ``burn`` groups they do not keep: the cut gives the smallest
    possible largest load (checked against every contiguous cut)."""
    import itertools
    for G in (1, 2, 4, 7, 15):
        for n in (2, 3):
            for burn in (1, 2, 3):
                runs = [segment(G, Team(r, n), burn) for r in range(n)]
                assert [g for run in runs for g in run] == list(range(G))
                best = min(max(_loads([range(a, b) for a, b in zip((0, *cuts), (*cuts, G))], burn))
                           for cuts in itertools.combinations_with_replacement(range(G + 1), n - 1))
                assert max(_loads(runs, burn)) == best, (G, n, burn, runs)
    assert [list(segment(15, Team(r, 2), 2)) for r in range(2)] == [list(range(9)), list(range(9, 15))]
    # two burn-in groups at half the epochs are one group's work
    assert [list(segment(15, Team(r, 2), 1.0)) for r in range(2)] == [list(range(8)), list(range(8, 15))]


def test_a_later_rank_burns_in_and_keeps_only_its_segment(monkeypatch):
    """Rank 1 of 2, in one process: it trains the groups before its segment first (progress shows
    them), hands rank 0 only its own groups, and its first kept group has no reference."""
    fit_mod = sys.modules["neural_codecs.models.inr.fit"]
    chain = sys.modules["neural_codecs.models.inr.nirvana"]
    sent, seen, refs = {}, [], []
    real_set_reference = chain.QuantizedNet.set_reference
    monkeypatch.setattr(chain.QuantizedNet, "set_reference",
                        lambda self, r: refs.append(r is not None) or real_set_reference(self, r))
    for mod in (fit_mod, chain):
        monkeypatch.setattr(mod, "team", lambda: Team(1, 2))
    monkeypatch.setattr(chain, "broadcast_from_root", lambda obj, t: obj)
    monkeypatch.setattr(fit_mod, "barrier", lambda t: None)
    monkeypatch.setattr(chain, "gather_to_root", lambda obj, t: sent.setdefault("done", obj) and None)
    frames = clip()
    cfg = nerv.make_config("nirvana", 20, 28, 8, size=4000, group=2)
    res = fit_mod.fit(frames, "nirvana", cfg, FitOptions(epochs=2, model=NirvanaOptions(burn_in=2)),
                      progress=lambda step, total, info: seen.append((step, total, info["group"])))
    assert res is None
    # 4 groups; rank 1 of 2 with a burn-in of 2 groups at 1 epoch each (half of 2) keeps group 3
    assert [d["group"] for d in sent["done"]] == [3]
    assert [g for _, _, g in seen] == ["start", "start", 1, 2, 3, 3] and seen[-1][:2] == (6, 6)
    # the rate of group 2 is its residual against group 1; group 3's is of its own integers (the
    # file has no burn-in network to refer to)
    assert refs == [False, True, False]


def _worker(rank, size, init, kind, src, out, opts, fail_rank):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    try:
        def fail(step, total, info):
            raise RuntimeError(f"rank {rank} fails on purpose")

        res = nerv.encode(np.load(src), 25, model=kind, size=4000, options=opts, group=2,
                          progress=fail if rank == fail_rank else None)
        assert (res is None) == (rank != 0)
        if res is not None:
            Path(out).write_bytes(res.data)
            np.save(str(out) + ".frames.npy", res.frames)
        leave(team())  # as the CLI ends a rank
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, kind, opts, fail_rank=-1):
    src, out = tmp_path / "clip.npy", tmp_path / f"{kind}.nerv"
    np.save(src, clip())
    init = (tmp_path / "rendezvous").as_uri()
    mp.spawn(_worker, args=(2, init, kind, str(src), str(out), opts, fail_rank), nprocs=2, join=True)
    return out


@pytest.mark.slow  # torchrun with 2 ranks
def test_hnerv_data_parallel_matches_one_process(tmp_path):
    opts = FitOptions(epochs=40, batch=4, seed=1)
    out = _spawn(tmp_path, "hnerv", opts)
    frames, _ = nerv.decode(out.read_bytes())
    assert np.array_equal(frames, np.load(str(out) + ".frames.npy"))  # decodes to rank 0's evaluation
    single = nerv.encode(clip(), 25, model="hnerv", size=4000, options=opts, group=2)
    p2, p1 = psnr(frames, clip()), psnr(single.frames, clip())
    print(p1, p2)
    assert abs(p2 - p1) < 1.0, (p1, p2)  # the same optimisation, split over two processes
    assert p1 > 12.3  # and it learned something (the first epochs sit near 11 dB; the 4k budget now holds)


@pytest.mark.slow  # torchrun with 2 ranks
def test_a_failing_rank_ends_the_job_and_nothing_is_written(tmp_path):
    with pytest.raises(mp.ProcessRaisedException, match="fails on purpose"):
        _spawn(tmp_path, "nirvana", FitOptions(epochs=3), fail_rank=1)
    assert not (tmp_path / "nirvana.nerv").exists()


@pytest.mark.slow  # torchrun with 2 ranks
def test_torchrun_nirvana_writes_one_file_like_one_process(tmp_path):
    src = tmp_path / "frames"
    write_video(src, clip(), 25)
    out = tmp_path / "two.nerv"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "neural_codecs.codec.cli.nerv", "encode", str(src), "-o", str(out), "--model", "nirvana", "--size", "4000",
           "--epochs", "15", "--group", "2", "--threads", "1", "-q"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    # torchrun puts the failing rank's own traceback first and its summary last: show both
    assert r.returncode == 0, (f"exit {r.returncode}, output {'written' if out.exists() else 'not written'}\n"
                               f"{r.stderr[:4000]}\n[...]\n{r.stderr[-2000:]}")
    two, _ = nerv.decode(out.read_bytes())
    one = nerv.encode(clip(), 25, model="nirvana", size=4000, options=FitOptions(epochs=15), group=2)
    info = nerv.info(out)
    assert info["weight_chunks"] == 4 and info["frames"] == 8  # one file, every group, same format
    p2, p1 = psnr(two, clip()), psnr(one.frames, clip())
    print(p1, p2)
    assert p2 > p1 - 1.0, (p1, p2)


@pytest.mark.slow  # torchrun with 2 ranks
def test_distributed_benchmark_tool_runs(tmp_path):
    """``tools/bench_distributed.py`` (1 rank vs 2 under torchrun) on a tiny clip."""
    src = tmp_path / "frames"
    write_video(src, clip(T=4), 25)
    cmd = [sys.executable, str(ROOT / "tools" / "bench_distributed.py"), str(src), "--model", "nirvana",
           "--size", "3k", "--epochs", "1", "--ranks", "2", "--out", str(tmp_path / "out")]
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "out" / "distributed.json").read_text())
    assert set(res["runs"]) == {"1", "2"} and res["speedup"] > 0 and "speed-up" in r.stdout
