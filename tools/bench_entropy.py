"""Benchmark of the foundation: entropy-layer overhead and speed, container overhead.

    python tools/bench_entropy.py [--repeats 5] [--json out.json]

- overhead: real coded bits of 10^5 symbols against the ideal -sum(log2 p) under the model's floats;
- speed: median of ``--repeats`` runs, symbols per second, and the ratio against calling
  constriction directly on the same floats in the same run (the cost of our deterministic
  quantization and bookkeeping);
- container: bytes around a 28x28 image's payload, and per item in a 10,000-item archive.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import constriction
import numpy as np

from neural_codecs import bitstream as bs


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _sample(p, rng):
    cs = np.cumsum(p, axis=1)
    return np.minimum((cs < rng.random((len(p), 1)) * cs[:, -1:]).sum(1), p.shape[1] - 1)


def overhead_rows(n=100_000, seed=0):
    rng = np.random.default_rng(seed)
    cases = {
        "K=256 Dirichlet(0.1)": rng.dirichlet(np.full(256, 0.1), size=n),
        "K=256 Dirichlet(1)": rng.dirichlet(np.ones(256), size=n),
        "K=2 Dirichlet(0.05)": rng.dirichlet(np.full(2, 0.05), size=n),
    }
    skew = np.full((n, 256), 1e-4)  # MNIST-like: mostly background
    skew[:, 0] = 0.9
    skew[:, 255] = 0.05
    cases["K=256 skewed (MNIST-like)"] = skew
    rows = []
    for name, p in cases.items():
        s = _sample(p, rng)
        enc = bs.Encoder()
        enc.encode_categorical(s, p)
        rep = enc.report()
        assert np.array_equal(bs.Decoder(enc.to_bytes()).decode_categorical(p), s)
        rows.append({"case": name, "symbols": n, "ideal_bits": round(rep.ideal_bits, 1),
                     "actual_bits": rep.actual_bits, "overhead_percent": 100 * rep.overhead,
                     "excess_bytes": (rep.actual_bits - rep.ideal_bits) / 8})
    return rows


def speed_rows(repeats, seed=1):
    rng = np.random.default_rng(seed)
    n, K = 100_000, 256
    p = rng.dirichlet(np.full(K, 0.3), size=n)
    s = _sample(p, rng)
    fam = constriction.stream.model.Categorical(perfect=False)

    def raw_encode():
        e = constriction.stream.queue.RangeEncoder()
        e.encode(s.astype(np.int32), fam, p)
        return e.get_compressed()

    raw_words = raw_encode()
    data = bs.encode_categorical(s, p)
    bs.decode_categorical(data, p)  # warm up numba
    t_enc = _median_time(lambda: bs.encode_categorical(s, p), repeats)
    t_dec = _median_time(lambda: bs.decode_categorical(data, p), repeats)
    t_raw_enc = _median_time(raw_encode, repeats)
    t_raw_dec = _median_time(lambda: constriction.stream.queue.RangeDecoder(raw_words).decode(fam, p), repeats)

    table = bs.CdfTable.from_pmfs([np.exp(-np.abs(np.arange(-20, 21)) / (1 + c / 4)) for c in range(24)],
                                  offsets=[-20] * 24, tail_mass=[1e-4] * 24)
    v = np.round(rng.laplace(size=(1, 24, 128, 128)) * 3).astype(np.int64)
    idx = np.broadcast_to(np.arange(24)[None, :, None, None], v.shape)
    fdata = bs.encode_factorized(v, table, idx)
    t_fenc = _median_time(lambda: bs.encode_factorized(v, table, idx), repeats)
    t_fdec = _median_time(lambda: bs.decode_factorized(fdata, table, idx), repeats)
    return [
        {"what": "categorical encode, K=256", "symbols_per_s": n / t_enc, "ratio_vs_raw_constriction": t_enc / t_raw_enc},
        {"what": "categorical decode, K=256", "symbols_per_s": n / t_dec, "ratio_vs_raw_constriction": t_dec / t_raw_dec},
        {"what": "factorized encode, 24 rows", "symbols_per_s": v.size / t_fenc, "ratio_vs_raw_constriction": None},
        {"what": "factorized decode, 24 rows", "symbols_per_s": v.size / t_fdec, "ratio_vs_raw_constriction": None},
    ]


def container_rows():
    h = bs.Header(kind=bs.CodecKind.PCZ, model_hash=bs.model_hash(b"m"), width=28, height=28, channels=1)
    ha = bs.Header(kind=bs.CodecKind.PCZ, model_hash=bs.model_hash(b"m"), width=28, height=28, channels=1,
                   count=10_000, archive=True)
    return [
        {"what": "one 28x28 image, 118-byte payload", "overhead_bytes": bs.container_overhead(h, [118])},
        {"what": "one 28x28 image, 200-byte payload", "overhead_bytes": bs.container_overhead(h, [200])},
        {"what": "archive of 10,000 x 118-byte items, per item",
         "overhead_bytes": bs.container_overhead(ha, [118] * 10_000) / 10_000},
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    res = {"overhead": overhead_rows(), "speed": speed_rows(args.repeats), "container": container_rows()}
    print("entropy layer overhead on 10^5 symbols")
    for r in res["overhead"]:
        print(f"  {r['case']:<28} ideal {r['ideal_bits']:>11.1f} bits  actual {r['actual_bits']:>9}  "
              f"overhead {r['overhead_percent']:.4f} %  ({r['excess_bytes']:.1f} bytes)")
    print(f"speed (median of {args.repeats})")
    for r in res["speed"]:
        ratio = f"  x{r['ratio_vs_raw_constriction']:.2f} the time of raw constriction" if r["ratio_vs_raw_constriction"] else ""
        print(f"  {r['what']:<28} {r['symbols_per_s'] / 1e6:6.2f} M symbols/s{ratio}")
    print("container overhead")
    for r in res["container"]:
        print(f"  {r['what']:<44} {r['overhead_bytes']:.2f} bytes")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
