"""neural_codecs.models.inr: video as a neural network — HNeRV, NeRV++ and NIRVANA, quantized during training.

The model half of nervcodec: architectures sized from a parameter budget, quantization in the
training loop with a differentiable rate estimate, and rendering frames from stored integers. File
formats live in :mod:`codec.nerv`.
"""
from .fit import KINDS, FitOptions, Fitted, build_net, decoder_from, dequantize_embeddings, fit, render
from .hnerv import EMB_RUN, HNeRVConfig, hnerv_config
from .nervpp import NeRVppConfig, nervpp_config
from .nirvana import NirvanaConfig, group_count, nirvana_params
from .quant import QuantizedNet, QuantizedTensor, load_quantized

__all__ = [
    "KINDS", "FitOptions", "Fitted", "build_net", "decoder_from", "dequantize_embeddings", "fit", "render",
    "EMB_RUN", "HNeRVConfig", "hnerv_config", "NeRVppConfig", "nervpp_config", "NirvanaConfig", "group_count",
    "nirvana_params", "QuantizedNet", "QuantizedTensor", "load_quantized",
]
