"""The ResNet family (He et al., 2016) with torchvision's exact parameter names.

``resnet18`` / ``resnet34`` / ``resnet50`` build the same modules, in the same registration order,
with the same ``state_dict`` keys as ``torchvision.models.resnet*`` (``conv1``, ``bn1``,
``layer1.0.conv1``, ..., ``layer1.0.downsample.0`` / ``.1``, ``fc``), so a torchvision checkpoint
loads with ``load_state_dict`` and nothing from torchvision is needed. Bottleneck blocks put the
stride on the 3×3 convolution ("ResNet v1.5"), as torchvision does.

Two extensions that do not change any name: ``num_classes`` (the size of ``fc``) and
``base_width`` (channels of the stem and of layer1, 64 in the paper and in torchvision; layers 2–4
double it each time). A smaller ``base_width`` gives a tiny network with torchvision's key set,
which the tests use.

:meth:`ResNet.features` returns the outputs after layer1 … layer4 and the logits, which the
Entropic Student's distillation compares; :class:`ResNetTail` is the part after layer1 alone.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

ARCHS = {
    # name: (block, blocks per layer)
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided), 1×1 expand by 4, with a shortcut (ResNet-50)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _make_layer(block, inplanes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(_conv1x1(inplanes, planes * block.expansion, stride),
                                   nn.BatchNorm2d(planes * block.expansion))
    layers = [block(inplanes, planes, stride, downsample)]
    inplanes = planes * block.expansion
    layers += [block(inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), inplanes


def _init_weights(module: nn.Module) -> None:
    """torchvision's initialisation: Kaiming-normal convolutions (fan-out), unit BN scales."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def layer_channels(arch: str, base_width: int = 64) -> tuple[int, int, int, int]:
    """Output channels of layer1 … layer4 (e.g. 256, 512, 1024, 2048 for ResNet-50)."""
    block, _ = ARCHS[_check_arch(arch)]
    e = _BLOCKS[block].expansion
    return tuple(base_width * (1 << i) * e for i in range(4))


def _check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    return arch


class ResNet(nn.Module):
    """torchvision-compatible ResNet; ``arch`` is ``resnet18``, ``resnet34`` or ``resnet50``."""

    def __init__(self, arch: str = "resnet50", num_classes: int = 1000, base_width: int = 64):
        super().__init__()
        block_name, counts = ARCHS[_check_arch(arch)]
        if not 1 <= num_classes <= 1 << 20 or not 1 <= base_width <= 1024:
            raise ValueError("num_classes or base_width out of range")
        block = _BLOCKS[block_name]
        self.arch, self.num_classes, self.base_width = arch, num_classes, base_width
        self.inplanes = base_width
        self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c = base_width
        self.layer1, c = _make_layer(block, c, base_width, counts[0], 1)
        self.layer2, c = _make_layer(block, c, base_width * 2, counts[1], 2)
        self.layer3, c = _make_layer(block, c, base_width * 4, counts[2], 2)
        self.layer4, c = _make_layer(block, c, base_width * 8, counts[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, num_classes)
        _init_weights(self)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Input -> layer1's output (the part the Entropic Student replaces)."""
        return self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"layer1": …, "layer2": …, "layer3": …, "layer4": …, "logits": …}``."""
        h1 = self.stem(x)
        return {"layer1": h1, **_tail_forward(self, h1)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["logits"]


def _tail_forward(m, h1: torch.Tensor) -> dict[str, torch.Tensor]:
    h2 = m.layer2(h1)
    h3 = m.layer3(h2)
    h4 = m.layer4(h3)
    logits = m.fc(torch.flatten(m.avgpool(h4), 1))
    return {"layer2": h2, "layer3": h3, "layer4": h4, "logits": logits}


class ResNetTail(nn.Module):
    """layer2, layer3, layer4, avgpool and fc of a ResNet (the server side after the bottleneck).

    Its ``state_dict`` keys are the torchvision ones of those modules (``layer2.0.conv1.weight``,
    ``fc.bias``, ...).
    """

    def __init__(self, arch: str = "resnet50", num_classes: int = 1000, base_width: int = 64):
        super().__init__()
        full = ResNet(arch, num_classes, base_width)
        self._take(full)

    def _take(self, full: ResNet) -> None:
        self.arch, self.num_classes, self.base_width = full.arch, full.num_classes, full.base_width
        self.layer2, self.layer3, self.layer4 = full.layer2, full.layer3, full.layer4
        self.avgpool, self.fc = full.avgpool, full.fc

    @classmethod
    def from_resnet(cls, resnet: ResNet) -> "ResNetTail":
        """A copy (not shared) of ``resnet``'s layers after layer1."""
        tail = cls.__new__(cls)
        nn.Module.__init__(tail)
        tail._take(copy.deepcopy(resnet))
        return tail

    def forward(self, h1: torch.Tensor) -> dict[str, torch.Tensor]:
        """layer1's output -> ``{"layer2", "layer3", "layer4", "logits"}``."""
        return _tail_forward(self, h1)


def resnet18(num_classes: int = 1000, base_width: int = 64) -> ResNet:
    return ResNet("resnet18", num_classes, base_width)


def resnet34(num_classes: int = 1000, base_width: int = 64) -> ResNet:
    return ResNet("resnet34", num_classes, base_width)


def resnet50(num_classes: int = 1000, base_width: int = 64) -> ResNet:
    return ResNet("resnet50", num_classes, base_width)
