"""neural_codecs.models.split: the Entropic Student split-computing model (Matsubara et al., WACV 2022).

A torchvision-compatible ResNet teacher, the ImageNet-pretrained EfficientNet-Lite0 teacher, GDN/IGDN, a learned factorized prior with CDF-table export,
and the student (encoder, bottleneck, decoder, teacher tail) with its two training stages. File
formats live in :mod:`codec.split`.
"""
from .efficientnet_lite import EfficientNetLite0, EfficientNetLiteTail
from .entropy_model import MAX_HALF_RANGE, EntropyBottleneck
from .gdn import GDN, IGDN, NonNegative, lower_bound
from .resnet import ARCHS, BasicBlock, Bottleneck, ResNet, ResNetTail, layer_channels, resnet18, resnet34, resnet50
from .student import LITE_ARCH, EntropicStudent, StudentConfig, build_decoder, build_encoder, build_tail, latent_side

__all__ = [
    "MAX_HALF_RANGE", "EntropyBottleneck", "GDN", "IGDN", "NonNegative", "lower_bound", "ARCHS", "BasicBlock",
    "Bottleneck", "ResNet", "ResNetTail", "layer_channels", "resnet18", "resnet34", "resnet50", "EntropicStudent",
    "StudentConfig", "build_decoder", "build_encoder", "latent_side", "EfficientNetLite0", "EfficientNetLiteTail",
    "LITE_ARCH", "build_tail",
]
