"""Smoke run of the whole evaluation suite (``tools/results.py run --quick``) on fake data made
here, so none of the benchmark scripts can rot: every step runs as a user would run it, the page
and plots are written, and every JSON is readable the way CompressAI's plotting reads it."""
import gzip
import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from neural_codecs.codec.io.video import write_video
from conftest import ROOT
from test_split_tools import _fake_imagenette

import results  # noqa: E402
import results_page  # noqa: E402


def _fake_data(root):
    rng = np.random.default_rng(0)
    (root / "mnist").mkdir(parents=True)
    digits = np.zeros((40, 28, 28), np.uint8)
    for i, d in enumerate(digits):
        d[6 + i % 5:22, 10:14 + i % 7] = rng.integers(150, 256, (16 - i % 5, 4 + i % 7))
    with gzip.open(root / "mnist" / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 40, 28, 28) + digits.tobytes())
    (root / "kodak").mkdir()
    yy, xx = np.mgrid[0:24, 0:32]
    img = np.stack([xx * 7, yy * 9, (xx + yy) * 4], -1) % 256
    Image.fromarray(img.astype(np.uint8)).save(root / "kodak" / "kodim01.png")
    (root / "video").mkdir()
    frames = np.stack([np.roll(np.stack([xx * 8, yy * 10, (xx * yy) % 256], -1) % 256, t, axis=1)
                       for t in range(10)]).astype(np.uint8)
    frames = np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2)  # 48 x 64
    write_video(root / "video" / "big_buck_bunny_360p.mkv", frames, 24, lossless=True)
    (root / "video" / "big_buck_bunny_360p.mkv").rename(root / "video" / "big_buck_bunny_360p.mp4")
    write_video(root / "video" / "short_hamilton_clip.mkv", frames[::-1].copy(), 30, lossless=True)
    (root / "video" / "short_hamilton_clip.mkv").rename(root / "video" / "short_hamilton_clip.mp4")
    _fake_imagenette(root / "imagenette")
    for i, d in enumerate(sorted((root / "imagenette" / "val").iterdir())):  # the ImageNet teacher's evaluation files
        (d / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes((d / "img_0.JPEG").read_bytes())
    return root


#: The results suite's smoke run (every step on tiny inputs, about 40 s): the slow tier.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("suite")
    data = _fake_data(tmp / "data")
    work, docs, page = tmp / "work", tmp / "docs" / "results", tmp / "RESULTS.md"
    cmd = [sys.executable, str(ROOT / "tools" / "results.py"), "run", "--quick", "--data", str(data),
           "--work", str(work), "--docs", str(docs), "--page", str(page)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {"cmd": cmd, "work": work, "docs": docs, "page": page, "out": r.stdout}


def test_every_step_ran_and_is_recorded(suite):
    done = json.loads((suite["work"] / "steps.json").read_text())
    names = [s.name for s in results.steps(suite["work"], suite["work"])]
    assert sorted(done) == sorted(names)
    assert all(v["seconds"] > 0 and v["quick"] for v in done.values())


def test_page_has_every_family_and_real_plots(suite):
    text = suite["page"].read_text()
    for part in ("## Lossless images", "### MNIST", "### Kodak", "## Video", "x264", "nervcodec hnerv",
                 "NIRVANA vs HNeRV", "## Split computing", "Entropic Student", "## Speed", "Full regeneration",
                 "smoke-sized"):
        assert part in text, part
    assert "not run" not in text and "Not measured" not in text
    assert "paper's scale" in text and "Small scale" in text
    for png in ("images.png", "video_rd.png", "time_to_psnr.png", "split_rate_accuracy.png", "split224_rate_accuracy.png"):
        p = suite["docs"] / png
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(p).size[0] > 300
        assert f"docs/results/{png}" in text


def test_json_reads_as_compressai_results(suite):
    files = sorted(suite["docs"].rglob("*.json"))
    assert len(files) >= 12
    metric = {"images": "bits_per_subpixel", "video": "psnr-rgb", "split": "top1", "split224": "top1",
              "speed": "speedup_batched"}
    for f in files:
        doc = json.loads(f.read_text())
        fam = f.relative_to(suite["docs"]).parts[0]
        if fam == "speed":
            assert doc["results"][metric[fam]][0] > 0
            continue
        x, y = results_page.compressai_series(doc, metric[fam])
        assert len(x) >= 1 and all(v > 0 for v in x), f


def test_a_second_run_resumes_and_skips_finished_steps(suite):
    r = subprocess.run(suite["cmd"] + ["--only", "images"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("done earlier") == 3 and "images-mnist" in r.stdout
