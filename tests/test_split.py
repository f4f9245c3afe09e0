"""splitcodec: the Entropic Student's model parts, file format, service and command line.

Tiny models throughout (a ResNet-18 with torchvision's names at base width 16, 10 classes, 64×64
inputs; a student with reduced channels), so the whole file runs in well under a minute on one
thread.
"""
import contextlib
import http.client
import io
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from neural_codecs import bitstream as bs
from neural_codecs.bitstream import (AbsurdSizeError, BitstreamError, CRCMismatchError, MalformedError, ModelMismatchError,
                       TruncatedError)
from neural_codecs.codec import split
from neural_codecs.codec.cli.split import main as cli_main
from neural_codecs.codec.serve.split import RemoteError, make_server, predict_remote
from conftest import GOLDEN, ROOT
from neural_codecs.models.split import (GDN, IGDN, EntropicStudent, EntropyBottleneck, ResNetTail, latent_side,
                          resnet18, resnet34, resnet50)

torch.set_num_threads(1)

SMALL = dict(enc_channels=(16, 8), bottleneck=8, dec_channels=(32, 16), input_size=64)
CLASSES = [f"class{i}" for i in range(10)]


def make_student(seed: int) -> tuple[torch.nn.Module, EntropicStudent]:
    torch.manual_seed(seed)
    teacher = resnet18(num_classes=10, base_width=16).eval()
    student = EntropicStudent.from_teacher(teacher, **SMALL).eval()
    return teacher, student


def test_image(seed: int, h: int = 70, w: int = 90) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 3 + seed * 20, yy * 2, (xx + yy) * (seed + 1)], -1)
    return ((base + rng.integers(0, 40, (h, w, 3))) % 256).astype(np.uint8)


test_image.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    teacher, student = make_student(0)
    edge, server = split.save_models(student, CLASSES, d / "edge.npz", d / "server.npz")
    _, other = make_student(1)
    other_edge = split.EdgeModel.from_student(other)
    other_edge.save(d / "other_edge.npz")
    return {"dir": d, "teacher": teacher, "student": student, "edge_path": d / "edge.npz",
            "server_path": d / "server.npz", "edge": split.load_edge(d / "edge.npz"),
            "server": split.load_server(d / "server.npz"), "other_edge": other_edge}


@pytest.fixture(scope="module")
def codec(models):
    return split.EdgeEncoder(models["edge"]), split.ServerDecoder(models["server"], models["edge"])


# -- model parts ---------------------------------------------------------------------------------


def test_gdn_shapes_values_and_positivity():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7)
    g, ig = GDN(6), IGDN(6)
    assert g(x).shape == x.shape and ig(x).shape == x.shape
    # default init: beta = 1, gamma = 0.1 I  ->  x / sqrt(1 + 0.1 x^2)
    assert torch.allclose(g(x), x / torch.sqrt(1 + 0.1 * x * x), atol=1e-5)
    assert torch.allclose(ig(x), x * torch.sqrt(1 + 0.1 * x * x), atol=1e-5)
    with torch.no_grad():  # whatever the raw parameters, beta >= beta_min and gamma >= 0
        g.beta.fill_(-3.0)
        g.gamma.copy_(torch.randn(6, 6))
    beta, gamma = g.effective()
    assert (beta >= 1e-6 - 1e-12).all() and (gamma >= 0).all()
    assert torch.isfinite(g(x)).all()
    # a parameter stuck below its bound still gets a gradient that pushes it back up
    g.beta.grad = None
    (-g.effective()[0].sum()).backward()
    assert (g.beta.grad < 0).all()


def test_entropy_bottleneck_likelihoods_and_quantization():
    torch.manual_seed(0)
    eb = EntropyBottleneck(3)
    with torch.no_grad():
        for p in eb.density_parameters():
            p.add_(0.3 * torch.randn_like(p))
        eb.quantiles[:, 0, 1] = torch.tensor([0.2, -0.4, 1.3])
    eb.eval()
    grid = torch.arange(-400, 401, dtype=torch.float32)
    x = grid.reshape(1, 1, -1, 1).repeat(1, 3, 1, 1) + eb.medians.detach().reshape(1, 3, 1, 1)
    with torch.no_grad():
        total = eb.likelihood(x).double().sum(dim=(0, 2, 3))
    assert torch.allclose(total, torch.ones(3, dtype=torch.float64), atol=1e-4), total
    y = torch.randn(2, 3, 4, 4) * 5
    y_hat, lik = eb(y)
    q = eb.quantize(y)
    assert q.dtype == torch.int64 and torch.equal(eb.dequantize(q), y_hat)
    assert torch.equal(q, torch.round(y - eb.medians.detach().reshape(1, 3, 1, 1)).long())
    assert ((lik > 0) & (lik <= 1)).all()
    eb.train()
    noisy, _ = eb(y)
    assert (noisy - y).abs().max() <= 0.5 and not torch.equal(noisy, y)


def test_cdf_table_follows_the_density_and_aux_loss_fits_quantiles():
    torch.manual_seed(1)
    eb = EntropyBottleneck(4)
    opt = torch.optim.Adam([eb.quantiles], lr=1.0)
    assert float(eb.aux_loss().detach()) > 100
    for _ in range(300):
        opt.zero_grad()
        loss = eb.aux_loss()
        loss.backward()
        opt.step()
    assert float(eb.aux_loss().detach()) < 1.0  # quantiles where the cumulative is 5e-10, 1/2, 1 - 5e-10
    F = torch.sigmoid(eb._logits_cumulative(eb.quantiles.detach()).detach().double())
    assert (F[:, 0, 0] < 1e-8).all() and torch.allclose(F[:, 0, 1], torch.full((4,), 0.5, dtype=torch.float64),
                                                        atol=0.01)
    table = eb.cdf_table()
    pmfs, tails, offsets = eb.pmfs()
    assert table.rows == 4 and (table.offsets == offsets).all()
    for r in range(4):
        assert table.lengths[r] == len(pmfs[r]) + 1
        freq = table.pmf(r) / float(1 << table.precision)
        assert abs(pmfs[r].sum() + tails[r] - 1) < 1e-6
        # quantised from the float64 pmf: off by at most the floor of one count per symbol
        assert np.abs(freq[:-1] - pmfs[r]).max() < table.lengths[r] / 2.0 ** table.precision
    assert bs.CdfTable.from_bytes(table.to_bytes())[0].to_bytes() == table.to_bytes()


def test_fit_quantiles_solves_the_aux_targets_exactly():
    torch.manual_seed(3)
    eb = EntropyBottleneck(5)
    with torch.no_grad():  # a density that is not the initial bump: shifted and sharpened per channel
        for b in eb._biases:
            b.add_(torch.randn_like(b))
        eb._matrices[0].add_(torch.linspace(0, 3, 5).reshape(5, 1, 1))
        eb.quantiles.copy_(torch.tensor([-1e3, 40.0, 1e3]).repeat(5, 1, 1))  # far off on both sides
    eb.fit_quantiles()
    assert float(eb.aux_loss().detach()) < 1e-2  # logits within float32 rounding of the targets
    q = eb.quantiles.detach()[:, 0]
    assert (q[:, 0] < q[:, 1]).all() and (q[:, 1] < q[:, 2]).all()
    F = torch.sigmoid(eb._logits_cumulative(eb.quantiles.detach()).detach().double())[:, 0]
    assert torch.allclose(F[:, 1], torch.full((5,), 0.5, dtype=torch.float64), atol=1e-5)
    # the auxiliary optimizer, given many steps, goes to the same place
    opt = torch.optim.Adam([eb.quantiles], lr=0.1)
    with torch.no_grad():
        eb.quantiles.add_(0.3)
    for _ in range(1000):
        opt.zero_grad()
        eb.aux_loss().backward()
        opt.step()
    assert torch.allclose(eb.quantiles.detach()[:, 0, 1], q[:, 1], atol=0.05)


def test_shapes_match_layer1_for_every_input_size():
    teacher, student = make_student(0)
    with torch.no_grad():
        for h, w in ((64, 64), (33, 47), (224 // 4, 100), (8, 9)):
            x = torch.randn(1, 3, h, w)
            y = student.encoder(x)
            assert y.shape == (1, 8, latent_side(h), latent_side(w))
            assert student.decoder(y).shape == teacher.stem(x).shape


# -- torchvision compatibility -------------------------------------------------------------------

TV_RESNET18_KEYS = ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                    "bn1.num_batches_tracked", "layer1.0.conv1.weight", "layer1.0.bn2.running_var",
                    "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean", "layer4.1.conv2.weight",
                    "fc.weight", "fc.bias"]
TV_RESNET50_KEYS = ["layer1.0.conv3.weight", "layer1.0.bn3.weight", "layer1.0.downsample.0.weight",
                    "layer1.0.downsample.1.num_batches_tracked", "layer3.5.conv2.weight", "layer4.2.bn3.bias",
                    "fc.weight"]


def test_torchvision_key_names_and_parameter_counts():
    r18, r50 = resnet18(), resnet50()
    k18, k50 = list(r18.state_dict()), list(r50.state_dict())
    assert len(k18) == 122 and len(k50) == 320  # torchvision's state_dict sizes
    assert k18[:6] == TV_RESNET18_KEYS[:6] and k18[-2:] == ["fc.weight", "fc.bias"]
    assert set(TV_RESNET18_KEYS) <= set(k18) and set(TV_RESNET50_KEYS) <= set(k50)
    assert "layer1.0.downsample.0.weight" not in k18  # BasicBlock layer1 keeps its width: no shortcut conv
    assert sum(p.numel() for p in r18.parameters()) == 11_689_512  # torchvision resnet18
    assert sum(p.numel() for p in r50.parameters()) == 25_557_032  # torchvision resnet50
    assert sum(p.numel() for p in resnet34().parameters()) == 21_797_672
    assert tuple(r50.state_dict()["layer1.0.conv2.weight"].shape) == (64, 64, 3, 3)
    assert tuple(r50.state_dict()["fc.weight"].shape) == (1000, 2048)
    tail = ResNetTail("resnet50")
    assert list(tail.state_dict()) == [k for k in k50 if k.startswith(("layer2", "layer3", "layer4", "fc"))]


def test_state_dict_round_trip():
    torch.manual_seed(3)
    a = resnet18(num_classes=10, base_width=16).eval()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = resnet18(num_classes=10, base_width=16)
    b.load_state_dict(torch.load(buf, weights_only=True))
    b.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        f = a.features(x)
    assert [tuple(f[k].shape) for k in ("layer1", "layer2", "layer3", "layer4", "logits")] == \
        [(2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2), (2, 128, 1, 1), (2, 10)]


# -- bitstream -----------------------------------------------------------------------------------


def test_latent_round_trips_bit_exactly(models, codec):
    enc, dec = codec
    edge = models["edge"]
    rng = np.random.default_rng(0)
    q = rng.integers(-3, 4, size=(8, 5, 6))
    q[0, 0, 0], q[3, 2, 1], q[7, 4, 5] = 1_000_000 - 1, -70_000, 12_345  # escapes, far out
    data = split.encode_latent(q, edge)
    assert np.array_equal(dec.decode_latent(data), q)
    assert np.array_equal(split.decode_latent(data, edge), q)  # the edge model alone decodes it too
    img = test_image(0)
    q = enc.latent(img)
    data = enc.encode(img)
    assert q.shape == (8, 15, 15) and q.dtype == np.int64
    assert np.array_equal(dec.decode_latent(data), q)
    header, items = bs.read_container(data)
    assert header.kind == bs.CodecKind.SPLIT and header.model_hash == edge.hash
    assert (header.width, header.height, header.channels) == (15, 15, 8) and len(items) == 1


def test_edge_and_server_agree_with_the_student(models, codec):
    enc, dec = codec
    student = models["student"].eval()
    for seed in range(3):
        img = test_image(seed, 60 + 7 * seed, 90 - 9 * seed)
        x = enc.preprocess(img)
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        with torch.no_grad():
            out = student(x[None])
        res = dec.decode(enc.encode(img))
        assert np.array_equal(res["logits"], out["logits"][0].numpy())
        assert res["index"] == int(out["logits"][0].argmax()) and res["top1"] == CLASSES[res["index"]]
        assert len(res["topk"]) == 5 and abs(sum(p for _, p in res["topk"])) <= 1.0
        assert res["model"] == models["edge"].hash.hex()
    # a preprocessed float tensor goes straight in
    x = torch.randn(3, 40, 52)
    assert np.array_equal(enc.latent(x), models["student"].entropy_bottleneck.quantize(
        models["student"].encoder(x[None]).detach())[0].numpy())
    gray = test_image(5)[:, :, 0]
    assert enc.latent(gray).shape == (8, 15, 15)


def test_model_files(models, tmp_path):
    edge, server = models["edge"], models["server"]
    assert edge.hash == split.EdgeModel.from_student(models["student"]).hash  # hash of content, not of the zip
    assert server.edge_hash == edge.hash and server.class_names == CLASSES
    assert edge.table.to_bytes() == server.table.to_bytes()
    # the edge file has no decoder or teacher weights
    with np.load(models["edge_path"], allow_pickle=False) as z:
        assert not any(k.startswith(("decoder.", "tail.")) for k in z.files)
    with pytest.raises(split.SplitModelError, match="expected splitcodec-edge"):
        split.load_edge(models["server_path"])
    with pytest.raises(split.SplitModelError, match="expected splitcodec-server"):
        split.load_server(models["edge_path"])
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(split.SplitModelError):
        split.load_edge(junk)
    with np.load(models["edge_path"], allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    bad = dict(a, **{"encoder.0.weight": a["encoder.0.weight"][:, :, :4]})
    np.savez(tmp_path / "bad_shape.npz", **bad)
    with pytest.raises(split.SplitModelError, match="encoder.0.weight"):
        split.load_edge(tmp_path / "bad_shape.npz")
    tweaked = dict(a, **{"encoder.0.weight": a["encoder.0.weight"] * np.float32(1.001)})
    np.savez(tmp_path / "tweaked.npz", **tweaked)
    assert split.load_edge(tmp_path / "tweaked.npz").hash != edge.hash
    with pytest.raises(ModelMismatchError):
        split.ServerDecoder(server, models["other_edge"])
    with pytest.raises(ModelMismatchError):
        split.ServerDecoder(server, models["other_edge"].hash)
    with pytest.raises(ModelMismatchError):
        split.ServerDecoder(server, models["other_edge"].table)
    split.ServerDecoder(server, edge.hash.hex())  # the right hash (or table) is fine
    split.ServerDecoder(server, edge.table)


def test_bad_bitstreams_raise_typed_errors(models, codec):
    enc, dec = codec
    good = enc.encode(test_image(1))
    cases = {
        "truncated": (good[: len(good) - 7], TruncatedError),
        "crc": (good[:-3] + bytes([good[-3] ^ 0x10]) + good[-2:], CRCMismatchError),
        "empty": (b"", BitstreamError),
        "garbage": (b"GIF89a" + bytes(100), BitstreamError),
        "pcz file": ((GOLDEN / "tiny_rgb.pcz").read_bytes(), MalformedError),
        "other model": (split.EdgeEncoder(models["other_edge"]).encode(test_image(1)), ModelMismatchError),
    }
    h = models["edge"].hash
    huge = bs.Header(kind=bs.CodecKind.SPLIT, model_hash=h, width=1 << 20, height=1 << 20, channels=8)
    cases["absurd size"] = (bs.pack_items(huge, [b"\x01\x02"]), AbsurdSizeError)
    wrong_c = bs.Header(kind=bs.CodecKind.SPLIT, model_hash=h, width=3, height=3, channels=9)
    cases["wrong channels"] = (bs.pack_items(wrong_c, [b"\x01"]), MalformedError)
    two = bs.Header(kind=bs.CodecKind.SPLIT, model_hash=h, width=3, height=3, channels=8)
    cases["two items"] = (bs.pack_items(two, [b"\x01", b"\x02"]), MalformedError)
    for what, (data, err) in cases.items():
        with pytest.raises(err):
            dec.decode(data, name=what)
    assert dec.decode(good)["top1"] in CLASSES  # still fine afterwards


@pytest.mark.parametrize("stem", ["split_tiny", "split_lite_tiny"])
def test_golden_split_file(stem):
    """``tests/golden/split_tiny.split`` (made by ``split_sample.py``) keeps decoding: the integer
    latent exactly (entropy decoding is integer-only; it includes escaped values); re-encoding the
    test image gives the same latent up to float rounding of the encoder on another CPU, and coding
    the golden latent gives the golden bytes exactly. ``split_lite_tiny``: the same for an edge
    model of an EfficientNet-Lite0 student (its own architecture name and input scaling)."""
    import split_sample  # tests/golden is on pytest's pythonpath (pyproject.toml)
    expect = json.loads((GOLDEN / f"{stem}.json").read_text())
    data = (GOLDEN / f"{stem}.split").read_bytes()
    edge = split.load_edge(GOLDEN / f"{stem}_edge.npz")
    assert edge.config.arch == ("efficientnet_lite0" if "lite" in stem else "resnet18")
    assert edge.hash.hex() == expect["edge_model"] and len(data) == expect["bytes"]
    q = split.decode_latent(data, edge)
    assert list(q.shape) == expect["latent_shape"]
    assert split_sample.latent_sha256(q) == expect["latent_sha256"]
    assert split.encode_latent(q, edge) == data
    lo = edge.table.offsets[:, None, None]
    esc = (q < lo) | (q > lo + edge.table.lengths[:, None, None] - 2)
    assert int(esc.sum()) == expect["escapes"] > 0
    again = split.EdgeEncoder(edge).latent(split_sample.image())
    assert (again != q).mean() <= 0.02


# -- training ------------------------------------------------------------------------------------


def test_training_stages_smoke():
    teacher, student = make_student(2)
    torch.manual_seed(0)
    data = [(torch.randn(2, 3, 32, 32), torch.tensor([1, 7])) for _ in range(2)]
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    tail_before = {k: v.clone() for k, v in student.tail.state_dict().items()}
    seen = []
    h1 = student.train_stage1(teacher, data, epochs=1, beta=0.01, progress=lambda s, t, i: seen.append((s, t)))
    assert len(h1) == 2 and seen == [(1, 2), (2, 2)]
    assert all(np.isfinite([i["loss"], i["distortion"], i["bits"], i["aux"]]).all() for i in h1)
    assert all(torch.equal(v, student.tail.state_dict()[k]) for k, v in tail_before.items())  # frozen, BN too
    assert float(student.entropy_bottleneck.aux_loss().detach()) < 1e-2  # quantiles set exactly at the end
    # the prior has its own learning rate: at 0 the density stays put while the encoder learns
    density = [p.detach().clone() for p in student.entropy_bottleneck.density_parameters()]
    enc = [p.detach().clone() for p in student.encoder.parameters()]
    student.train_stage1(teacher, data, epochs=1, beta=0.01, prior_lr=0.0)
    assert all(torch.equal(a, b) for a, b in zip(density, student.entropy_bottleneck.density_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(enc, student.encoder.parameters()))
    enc_before = {k: v.clone() for k, v in student.encoder.state_dict().items()}
    eb_before = {k: v.clone() for k, v in student.entropy_bottleneck.state_dict().items()}
    dec_before = {k: v.clone() for k, v in student.decoder.state_dict().items()}
    h2 = student.train_stage2(teacher, data, epochs=3, max_steps=2)
    assert len(h2) == 2 and all(np.isfinite(i["loss"]) for i in h2)
    assert all(torch.equal(v, student.encoder.state_dict()[k]) for k, v in enc_before.items())
    assert all(torch.equal(v, student.entropy_bottleneck.state_dict()[k]) for k, v in eb_before.items())
    assert not all(torch.equal(v, student.decoder.state_dict()[k]) for k, v in dec_before.items())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    # the paper's SGD is still there (at lr 0 it must leave the decoder alone); a loader without a
    # length (no cosine horizon) still trains under Adam; an unknown optimizer is refused
    dec_before = {k: v.clone() for k, v in student.decoder.state_dict().items()}
    student.train_stage2(teacher, data, epochs=1, optimizer="sgd", lr=0.0)
    assert all(torch.equal(v, student.decoder.state_dict()[k]) for k, v in dec_before.items())
    assert len(student.train_stage2(teacher, iter(data), epochs=1)) == 2
    assert not all(torch.equal(v, student.decoder.state_dict()[k]) for k, v in dec_before.items())
    with pytest.raises(ValueError, match="optimizer"):
        student.train_stage2(teacher, data, optimizer="lbfgs")
    # stage 1 may decay its rates along a cosine; an unknown schedule is refused before training
    assert len(student.train_stage1(teacher, data, epochs=1, beta=0.01, schedule="cosine")) == 2
    with pytest.raises(ValueError, match="schedule"):
        student.train_stage1(teacher, data, schedule="step")
    logits, t_logits = torch.randn(4, 10), torch.randn(4, 10)
    y = torch.tensor([0, 1, 2, 3])
    assert torch.isclose(EntropicStudent.stage2_loss(t_logits, t_logits, y),
                         0.5 * torch.nn.functional.cross_entropy(t_logits, y), atol=1e-6)
    assert EntropicStudent.stage2_loss(logits, t_logits, y) > EntropicStudent.stage2_loss(t_logits, t_logits, y) - 5


def test_cosine_schedule_reaches_zero():
    from neural_codecs.models.split.student import _schedule

    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [w]}, {"params": [], "lr": 1e-2}], lr=1e-3)
    sched = _schedule(opt, "cosine", 4)
    lrs = []
    for _ in range(4):
        opt.step()
        sched.step()
        lrs.append([g["lr"] for g in opt.param_groups])
    assert lrs[0][0] < 1e-3 and lrs[0][1] < 1e-2 and lrs[-1] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert all(a[0] > b[0] for a, b in zip(lrs, lrs[1:]))  # every group decays, each from its own rate
    assert _schedule(opt, "constant", 4) is None and _schedule(opt, "cosine", None) is None


# -- HTTP service --------------------------------------------------------------------------------


@pytest.fixture
def service(codec):
    _, dec = codec
    server = make_server(dec, "127.0.0.1", 0, max_bytes=4096, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()
    thread.join(5)
    assert not thread.is_alive()


def _post(url, body: bytes) -> tuple[int, dict]:
    try:
        return 200, predict_remote(url, body, timeout=30)
    except RemoteError as err:
        return err.status, {"error": err.message}


def test_http_service(service, codec, models):
    enc, dec = codec
    with contextlib.closing(http.client.HTTPConnection(service.split("//")[1], timeout=30)) as c:
        c.request("GET", "/health")
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["model"] == models["edge"].hash.hex()
    good = enc.encode(test_image(2))
    status, doc = _post(service, good)
    assert status == 200 and doc["top1"] == dec.decode(good)["top1"] and doc["model"] == models["edge"].hash.hex()
    assert len(doc["topk"]) == 5
    bad = {"garbage": b"hello world", "truncated": good[:-5],
           "wrong model": split.EdgeEncoder(models["other_edge"]).encode(test_image(2)),
           "pcz": (GOLDEN / "tiny_rgb.pcz").read_bytes()}
    for what, body in bad.items():
        status, doc = _post(service, body)
        assert status == 400 and doc["error"], (what, status, doc)
    status, doc = _post(service + "/predict", bytes(5000))
    assert status == 413 and "exceeds" in doc["error"]
    with contextlib.closing(http.client.HTTPConnection(service.split("//")[1], timeout=30)) as c:
        c.putrequest("POST", "/predict")
        c.endheaders()
        assert c.getresponse().status == 411
    assert _post(service, good) == (200, predict_remote(service, good))  # still serving
    # four clients at once, each with its own image
    images = [enc.encode(test_image(10 + i)) for i in range(4)]
    want = [dec.decode(b)["top1"] for b in images]
    got = [None] * 4

    def client(i):
        got[i] = [predict_remote(service, images[i], timeout=60)["top1"] for _ in range(3)]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == [[w] * 3 for w in want]


# -- command line --------------------------------------------------------------------------------


def splitcodec(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli_main([str(a) for a in args])
        except SystemExit as e:
            rc = e.code
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def assert_one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("splitcodec: error: ") and r.stderr.count("\n") == 1, r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


def test_cli_encode_decode(models, codec, tmp_path):
    from PIL import Image

    enc, dec = codec
    png = tmp_path / "photo.png"
    Image.fromarray(test_image(3)).save(png)
    r = splitcodec("encode", png, "-m", models["edge_path"])
    assert r.returncode == 0, r.stderr
    out = tmp_path / "photo.split"
    assert out.read_bytes() == enc.encode(test_image(3))
    r = splitcodec("decode", out, "-m", models["server_path"], "--edge", models["edge_path"], "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["top1"] == dec.decode(out.read_bytes())["top1"] and doc["bytes"] == out.stat().st_size
    r = splitcodec("decode", out, "-m", models["server_path"], "-k", "2")
    assert r.returncode == 0 and r.stdout.startswith(f"{out}: {doc['top1']}") and len(r.stdout.splitlines()) == 3
    # eval over a folder of class subfolders
    for i, c in enumerate(CLASSES[:2]):
        (tmp_path / "val" / c).mkdir(parents=True)
        Image.fromarray(test_image(20 + i)).save(tmp_path / "val" / c / "a.png")
    r = splitcodec("eval", tmp_path / "val", "--edge", models["edge_path"], "--server", models["server_path"])
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert e["images"] == 2 and 0 <= e["top1"] <= 1 and e["bytes_per_image"] > 0


def test_cli_errors(models, tmp_path):
    from PIL import Image

    png = tmp_path / "p.png"
    Image.fromarray(test_image(4)).save(png)
    out = tmp_path / "p.split"
    out.write_bytes(b"keep")
    assert_one_line_error(splitcodec("encode", png, "-m", models["edge_path"], "-o", out), "already exists")
    assert out.read_bytes() == b"keep"
    before = png.read_bytes()
    assert_one_line_error(splitcodec("encode", png, "-m", models["edge_path"], "-o", png, "--force"), "input")
    assert png.read_bytes() == before
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    for src, model, frag in ((text, models["edge_path"], "notes.png"), (tmp_path / "missing.png", models["edge_path"],
                             "missing.png"), (png, models["server_path"], "expected splitcodec-edge"),
                             (png, tmp_path / "nomodel.npz", "nomodel.npz")):
        o = tmp_path / "o.split"
        assert_one_line_error(splitcodec("encode", src, "-m", model, "-o", o), frag)
        assert not o.exists()
    good = tmp_path / "g.split"
    assert splitcodec("encode", png, "-m", models["edge_path"], "-o", good).returncode == 0
    data = good.read_bytes()
    for name, content in {"trunc.split": data[:-4], "flip.split": data[:-2] + bytes([data[-2] ^ 1]) + data[-1:],
                          "pcz.split": (GOLDEN / "tiny_rgb.pcz").read_bytes(), "empty.split": b""}.items():
        (tmp_path / name).write_bytes(content)
        assert_one_line_error(splitcodec("decode", tmp_path / name, "-m", models["server_path"]), name)
    other = tmp_path / "other.split"
    other.write_bytes(split.EdgeEncoder(models["other_edge"]).encode(test_image(4)))
    assert_one_line_error(splitcodec("decode", other, "-m", models["server_path"]), "edge model")
    assert_one_line_error(splitcodec("decode", good, "-m", models["server_path"], "--edge",
                                     models["dir"] / "other_edge.npz"), "pairs with")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_help_teaches():
    r = subprocess.run([sys.executable, "-m", "neural_codecs.codec.cli.split", "--help"], capture_output=True, text=True, cwd=ROOT,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and "examples:" in r.stdout and "splitcodec encode" in r.stdout
    r = splitcodec("serve", "--help")
    assert "--port" in r.stdout and "--max-bytes" in r.stdout


def test_shipped_default_models_work_out_of_the_box(tmp_path):
    """The models in codec/split/shipped (tools/train_split_defaults.py): they load by the name
    "default", pair, stay small, and `splitcodec encode` / `decode` use them without -m."""
    from PIL import Image
    from skimage import data as skdata

    edge, server = split.load_edge(), split.load_server()
    assert server.edge_hash == edge.hash
    info = json.loads((split.shipped_dir() / "default.json").read_text())
    assert info["edge_hash"] == edge.hash.hex() and len(server.class_names) == 10
    sizes = [(split.shipped_dir() / f).stat().st_size for f in ("edge.npz", "server.npz")]
    assert sum(sizes) < 8 << 20 and sizes[0] < 1 << 20  # the edge side is the small one
    photo = skdata.chelsea()  # a cat; the model knows only Imagenette's 10 classes
    enc, dec = split.EdgeEncoder(edge), split.ServerDecoder(server, edge, topk=3)
    bits = enc.encode(photo)
    res = dec.decode(bits)
    assert len(bits) < 4096 and res["top1"] in server.class_names and len(res["topk"]) == 3
    png = tmp_path / "cat.png"
    Image.fromarray(photo).save(png)
    r = splitcodec("encode", png, "-q")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cat.split").read_bytes() == bits
    r = splitcodec("decode", tmp_path / "cat.split", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["top1"] == res["top1"]


def test_cli_pipes_and_output_names(tmp_path):
    """``splitcodec encode - < photo.png | splitcodec decode -``, with the shipped models; an output
    not named .split is refused."""
    from neural_codecs.codec.io.images import encode_png

    png = encode_png(np.full((40, 50, 3), 90, np.uint8))
    cli = [sys.executable, "-m", "neural_codecs.codec.cli.split"]
    enc = subprocess.run([*cli, "encode", "-"], input=png, capture_output=True, cwd=tmp_path, timeout=300)
    assert enc.returncode == 0, enc.stderr
    dec = subprocess.run([*cli, "decode", "-", "--json"], input=enc.stdout, capture_output=True, cwd=tmp_path,
                         timeout=300)
    assert dec.returncode == 0, dec.stderr
    assert json.loads(dec.stdout)["bytes"] == len(enc.stdout) and list(tmp_path.iterdir()) == []
    (tmp_path / "p.png").write_bytes(png)
    bad = subprocess.run([*cli, "encode", "p.png", "-o", "p.png.jpg"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert bad.returncode == 2 and ".split" in bad.stderr and bad.stderr.count("\n") == 1
