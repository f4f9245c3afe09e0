"""The golden .nerv file: how it was made.

``python tests/golden/nerv_sample.py`` rewrites ``nerv_tiny.nerv`` and what the test expects from
it -- only for a deliberate format change. The committed files, not this script, are what
``tests/test_nerv.py::test_golden_nerv_file`` checks.
"""
import hashlib
import json
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
    res = nerv.encode(clip(), 24, model="hnerv", size=2500, options=FitOptions(epochs=2, batch=4, seed=3))
    (HERE / "nerv_tiny.nerv").write_bytes(res.data)
    np.save(HERE / "nerv_tiny_frames.npy", res.frames, allow_pickle=False)
    h = hashlib.sha256()
    for t in res.fitted.groups[0]:
        h.update(t.ints.numpy().astype("<i8").tobytes())
    doc = {"weights_sha256": h.hexdigest(), "embedding_steps": [t.step for t in res.fitted.emb]}
    (HERE / "nerv_tiny.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"nerv_tiny.nerv: {len(res.data)} bytes")


if __name__ == "__main__":
    main()
