"""neural_codecs.models.inr: video as a neural network — HNeRV, NeRV++ and NIRVANA, quantized during training.

The model half of nervcodec: each architecture is a *kind* (:mod:`models.inr.kind`, listed in
:mod:`models.inr.registry`) sized from a parameter budget, trained with quantization in the loop
and a differentiable rate estimate, and rendering frames from stored integers. File formats live
in :mod:`codec.nerv`.
"""
from .fit import build_net, decoder_from, fit, render
from .hnerv import EMB_RUN, HNeRVConfig, dequantize_embeddings, hnerv_config
from .kind import InrKind
from .nervpp import NeRVppConfig, nervpp_config
from .nirvana import NirvanaConfig, NirvanaOptions, group_count, nirvana_config, nirvana_params
from .quant import QuantizedNet, QuantizedTensor, load_quantized
from . import registry
from .registry import KINDS, get_kind
from .train import FitOptions, Fitted

__all__ = [
    "KINDS", "FitOptions", "Fitted", "InrKind", "get_kind", "registry", "build_net", "decoder_from", "dequantize_embeddings",
    "fit", "render", "EMB_RUN", "HNeRVConfig", "hnerv_config", "NeRVppConfig", "nervpp_config", "NirvanaConfig",
    "NirvanaOptions", "group_count", "nirvana_config", "nirvana_params", "QuantizedNet", "QuantizedTensor",
    "load_quantized",
]
