"""The golden splitcodec files: how they were made.

``python tests/golden/split_sample.py`` rewrites ``split_tiny_edge.npz`` (a tiny edge model),
``split_tiny.split`` (one image coded with it) and ``split_tiny.json`` (what the test expects) --
only for a deliberate format change. ``... lite`` rewrites only the ``split_lite_tiny*`` trio: an
edge model of a student of the EfficientNet-Lite0 teacher (architecture ``efficientnet_lite0``,
input RGB in [0, 1]: mean 0, std 1), added with that teacher. The committed files, not this script, are what
``tests/test_split.py::test_golden_split_file`` checks.

The prior's quantiles are set narrow ([-2, 2] around the median) and the encoder's last
convolution is scaled up, so the latent has values beyond the table and the escape path is pinned.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
from neural_codecs.codec import split  # noqa: E402
from neural_codecs.models.split import EntropicStudent, StudentConfig  # noqa: E402

CONFIG = dict(arch="resnet18", num_classes=4, base_width=8, enc_channels=(8, 8), bottleneck=4,
              dec_channels=(8, 8), input_size=32)


def image() -> np.ndarray:
    """A 40 × 48 RGB test pattern (uint8)."""
    yy, xx = np.mgrid[0:40, 0:48]
    return np.stack([(xx * 11 + yy * 3) % 256, (yy * 13) % 256, ((xx - yy) * 7) % 256], -1).astype(np.uint8)


def latent_sha256(q: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(q, dtype="<i8").tobytes()).hexdigest()


LITE_CONFIG = dict(arch="efficientnet_lite0", num_classes=1000, enc_channels=(8, 8), bottleneck=4,
                   dec_channels=(8, 8), input_size=32)


def make_student(config: dict = CONFIG) -> EntropicStudent:
    torch.manual_seed(7)
    s = EntropicStudent(StudentConfig(**config)).eval()
    with torch.no_grad():
        s.encoder[4].weight.mul_(15.0)
        eb = s.entropy_bottleneck
        eb.quantiles.copy_(torch.tensor([-2.0, 0.0, 2.0]).repeat(eb.channels, 1, 1))
        eb.quantiles[:, 0, 1] += torch.linspace(-0.3, 0.3, eb.channels)
    return s


def main(stem: str = "split_tiny", config: dict = CONFIG, mean=split.IMAGENET_MEAN, std=split.IMAGENET_STD) -> None:
    torch.set_num_threads(1)
    edge = split.EdgeModel.from_student(make_student(config), mean=mean, std=std)
    edge.save(HERE / f"{stem}_edge.npz", force=True)
    edge = split.load_edge(HERE / f"{stem}_edge.npz")
    enc = split.EdgeEncoder(edge)
    q = enc.latent(image())
    data = split.encode_latent(q, edge)
    (HERE / f"{stem}.split").write_bytes(data)
    table = edge.table
    lo, hi = table.offsets[:, None, None], table.offsets[:, None, None] + table.lengths[:, None, None] - 2
    doc = {"edge_model": edge.hash.hex(), "latent_shape": list(q.shape), "latent_sha256": latent_sha256(q),
           "escapes": int(((q < lo) | (q > hi)).sum()), "bytes": len(data)}
    (HERE / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{stem}.split: {len(data)} bytes; {doc}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["lite"]:
        main("split_lite_tiny", LITE_CONFIG, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    else:
        main()
