"""The golden .nerv files: how they were made.

``python tests/golden/nerv_sample.py`` writes ``nerv_tiny_v<N>.nerv`` (HNeRV) for the current format
version N and what the test expects from it -- only for a deliberate format change; the files of
earlier versions stay, so old files keep decoding. ``python tests/golden/nerv_sample.py nirvana``
writes ``nerv_tiny_nirvana_v<N>.nerv``: two NIRVANA groups, the second residual-coded. The committed
files, not this script, are what ``tests/test_nerv.py`` checks.
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from codec import nerv
from models.inr import FitOptions

HERE = Path(__file__).parent


def clip() -> np.ndarray:
    yy, xx = np.mgrid[0:16, 0:24]
    return np.stack([np.stack([(xx * 9 + t * 20) % 256, (yy * 13) % 256, ((xx + yy) * 5 + t * 7) % 256], -1)
                     for t in range(4)]).astype(np.uint8)


def main() -> None:
    stem = f"nerv_tiny_v{nerv.FORMAT_VERSION}"
    res = nerv.encode(clip(), 24, model="hnerv", size=2500, options=FitOptions(epochs=2, batch=4, seed=3))
    (HERE / f"{stem}.nerv").write_bytes(res.data)
    np.save(HERE / f"{stem}_frames.npy", res.frames, allow_pickle=False)
    h = hashlib.sha256()
    for t in res.fitted.groups[0]:
        h.update(t.ints.numpy().astype("<i8").tobytes())
    e = hashlib.sha256(np.stack([t.ints.numpy() for t in res.fitted.emb], axis=1).astype("<i8").tobytes())
    doc = {"weights_sha256": h.hexdigest(), "embedding_steps": [t.step for t in res.fitted.emb],
           "embeddings_sha256": e.hexdigest()}
    (HERE / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{stem}.nerv: {len(res.data)} bytes")


def nirvana() -> None:
    stem = f"nerv_tiny_nirvana_v{nerv.FORMAT_VERSION}"
    res = nerv.encode(clip(), 24, model="nirvana", size=2500, options=FitOptions(epochs=2, seed=3), group=2)
    (HERE / f"{stem}.nerv").write_bytes(res.data)
    np.save(HERE / f"{stem}_frames.npy", res.frames, allow_pickle=False)
    h = hashlib.sha256()
    for group in res.fitted.groups:
        for t in group:
            h.update(t.ints.numpy().astype("<i8").tobytes())
    (HERE / f"{stem}.json").write_text(json.dumps({"weights_sha256": h.hexdigest()}, indent=1) + "\n")
    print(f"{stem}.nerv: {len(res.data)} bytes")


if __name__ == "__main__":
    nirvana() if sys.argv[1:] == ["nirvana"] else main()
