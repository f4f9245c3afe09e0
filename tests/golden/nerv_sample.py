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

from neural_codecs.codec import nerv
from neural_codecs.models.inr import FitOptions

HERE = Path(__file__).parent


def clip(frames: int = 4) -> np.ndarray:
    yy, xx = np.mgrid[0:16, 0:24]
    return np.stack([np.stack([(xx * 9 + t * 20) % 256, (yy * 13) % 256, ((xx + yy) * 5 + t * 7) % 256], -1)
                     for t in range(frames)]).astype(np.uint8)


def weights_sha256(groups) -> str:
    """SHA-256 of every weight chunk's integers, group by group, tensor by tensor (int64 LE)."""
    h = hashlib.sha256()
    for group in groups:
        for t in group:
            h.update(t.ints.numpy().astype("<i8").tobytes())
    return h.hexdigest()


def write(stem: str, res, doc: dict) -> None:
    """The file, the encoder's frames and the expectations beside it."""
    (HERE / f"{stem}.nerv").write_bytes(res.data)
    np.save(HERE / f"{stem}_frames.npy", res.frames, allow_pickle=False)
    (HERE / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{stem}.nerv: {len(res.data)} bytes")


def main() -> None:
    # from v3 the embeddings' differences run across E chunks under context rows: 20 frames make
    # two chunks, a cut at frame 12 and 8 epochs without a rate term put values in every row
    # (v1, v2: 4 frames, 2 epochs, default lam)
    frames = clip(20)
    frames[12:] = 255 - frames[12:, ::-1]
    res = nerv.encode(frames, 24, model="hnerv", size=2500,
                      options=FitOptions(epochs=8, batch=4, seed=3, precision="fp32", lam=0.0))
    e = hashlib.sha256(np.stack([t.ints.numpy() for t in res.fitted.emb], axis=1).astype("<i8").tobytes())
    write(f"nerv_tiny_v{nerv.FORMAT_VERSION}", res,
          {"weights_sha256": weights_sha256(res.fitted.groups), "embedding_steps": [t.step for t in res.fitted.emb],
           "embeddings_sha256": e.hexdigest(), "embedding_chunks": -(-20 // nerv.EMB_RUNS[nerv.FORMAT_VERSION])})


def nirvana() -> None:
    res = nerv.encode(clip(), 24, model="nirvana", size=2500,
                      options=FitOptions(epochs=2, seed=3, precision="fp32"), group=2)
    write(f"nerv_tiny_nirvana_v{nerv.FORMAT_VERSION}", res, {"weights_sha256": weights_sha256(res.fitted.groups)})


if __name__ == "__main__":
    nirvana() if sys.argv[1:] == ["nirvana"] else main()
