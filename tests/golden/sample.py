"""The golden container: how ``sample.ncf`` was made, and what it must decode to.

Everything here is integer arithmetic or exact float operations, so the expected symbols and
the model's probabilities are the same on every machine. ``python tests/golden/sample.py``
rewrites ``sample.ncf``; do that only for a deliberate format change (and bump the version).
"""
from fractions import Fraction
from pathlib import Path

import numpy as np

from neural_codecs import bitstream as bs

PATH = Path(__file__).with_name("sample.ncf")
HEADER = bs.Header(kind=bs.CodecKind.GENERIC, model_hash=bs.model_hash(b"golden model v1"),
                   width=28, height=28, channels=1, count=3, fps=Fraction(24000, 1001),
                   params=b"\x01\x02golden", archive=True)


def categorical_model(n=784, K=256):
    """A fixed 'model': integer-valued weights, exactly representable."""
    i = np.arange(n)[:, None]
    k = np.arange(K)[None, :]
    w = ((i * 7 + k * 13) % 31 + 1).astype(np.float64)
    w[:, 0] *= 64  # a skewed, MNIST-like background mode
    return w


def categorical_symbols(n=784, K=256):
    return (np.arange(n) * 37 % 11) * (np.arange(n) % 3 == 0) % K


def factorized_model():
    pmfs = [np.arange(1, 10, dtype=np.float64), np.ones(5)]
    return bs.CdfTable.from_pmfs(pmfs, offsets=[-4, 0], tail_mass=[0.01, 0.05])


def factorized_values():
    v = (np.arange(40) * 5 % 13) - 6
    v[::9] = [1000, -70000, 3, 2**39, -2**35]
    return v, np.arange(40) % 2


def build() -> bytes:
    enc = bs.Encoder()
    enc.encode_categorical(categorical_symbols(), categorical_model())
    item0 = enc.to_bytes()
    v, idx = factorized_values()
    item1 = bs.encode_factorized(v, factorized_model(), idx)
    item2 = factorized_model().to_bytes()
    return bs.pack_items(HEADER, [item0, item1, item2], batch_size=2,
                         extra_chunks=[bs.text_chunk("encoder", "neural-codecs golden sample")])


if __name__ == "__main__":
    PATH.write_bytes(build())
    print(f"wrote {PATH} ({PATH.stat().st_size} bytes)")
