"""Distortion metrics for video (and image) codecs: RGB PSNR and MS-SSIM over uint8 clips.

Clips are uint8 (T, H, W, 3) RGB arrays (one (H, W, 3) image counts as a one-frame clip). The work
is done in chunks of frames, so memory stays bounded for long clips.
"""
from __future__ import annotations

import math

import numpy as np

#: Wang, Simoncelli & Bovik's MS-SSIM weights, finest scale first (pytorch_msssim's default).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN, _SIGMA = 11, 1.5


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("empty arrays")
    return a, b


def _psnr(sse: float, n: int, max_val: float) -> float:
    mse = sse / n
    return math.inf if mse == 0 else 10 * math.log10(max_val * max_val / mse)


def _sse(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.einsum("i,i->", d.ravel(), d.ravel()))


def psnr(a, b, max_val: float = 255) -> float:
    """PSNR in dB of two equally shaped arrays over all their values (pixels, channels, frames).

    For a clip that is the PSNR of the mean squared error over the whole clip (not the mean of
    per-frame PSNRs); ``inf`` when the arrays are equal.
    """
    a, b = _pair(a, b)
    fa, fb = a.reshape(-1), b.reshape(-1)
    step = 1 << 22
    sse = sum(_sse(fa[i:i + step], fb[i:i + step]) for i in range(0, fa.size, step))
    return _psnr(sse, fa.size, max_val)


def psnr_per_frame(a, b, max_val: float = 255) -> np.ndarray:
    """PSNR in dB of each frame of two (T, H, W, 3) clips (an (H, W, 3) image is one frame)."""
    a, b = _pair(a, b)
    if a.ndim == 3:
        a, b = a[None], b[None]
    return np.array([_psnr(_sse(x, y), x.size, max_val) for x, y in zip(a, b)])


def ms_ssim_levels(height: int, width: int) -> int:
    """Scales MS-SSIM uses for a frame: 5 when the smaller side exceeds 160, else as many as fit.

    Every scale halves the frame and the 11-tap window must still fit at the coarsest one, so
    ``L`` scales need a smaller side above ``10 * 2**(L - 1)``: 64x64 frames get 3 scales.
    """
    side = min(height, width)
    levels = 0
    while levels < len(MS_SSIM_WEIGHTS) and side > (_WIN - 1) * 2**levels:
        levels += 1
    if levels == 0:
        raise ValueError(f"frames of {width}x{height} are too small for (MS-)SSIM (smaller side must exceed {_WIN - 1})")
    return levels


def _gauss_window():
    import torch

    x = torch.arange(_WIN, dtype=torch.float32) - _WIN // 2
    g = torch.exp(-(x**2) / (2 * _SIGMA**2))
    return g / g.sum()


def _blur(x, g):
    """Separable Gaussian filter, 'valid' borders, each channel on its own."""
    import torch.nn.functional as F

    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _ms_ssim_reduced(x, y, weights, data_range: float = 255.0):
    """MS-SSIM per image of (N, C, H, W) float tensors with ``len(weights)`` scales.

    The same computation as ``pytorch_msssim.ms_ssim`` (Gaussian 11-tap window, sigma 1.5, K1 0.01,
    K2 0.03, 2x2 average pooling between scales) without its fixed 5-scale size check.
    """
    import torch
    import torch.nn.functional as F

    g = _gauss_window().to(x)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    factors = []
    for level in range(len(weights)):
        mx, my = _blur(x, g), _blur(y, g)
        sxx = _blur(x * x, g) - mx * mx
        syy = _blur(y * y, g) - my * my
        sxy = _blur(x * y, g) - mx * my
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        if level < len(weights) - 1:
            factors.append(torch.relu(cs.flatten(2).mean(-1)))
            pad = [s % 2 for s in x.shape[2:]]
            x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
        else:
            ssim = ((2 * mx * my + c1) / (mx * mx + my * my + c1)) * cs
            factors.append(torch.relu(ssim.flatten(2).mean(-1)))
    stacked = torch.stack(factors)  # (levels, N, C)
    w = torch.tensor(weights, dtype=stacked.dtype).view(-1, 1, 1)
    return torch.prod(stacked**w, dim=0).mean(1)


def ms_ssim_per_frame(a, b, *, batch: int = 8) -> np.ndarray:
    """MS-SSIM (data range 255, RGB channels averaged) of each frame of two uint8 clips.

    Frames whose smaller side exceeds 160 use ``pytorch_msssim.ms_ssim`` with its 5 scales and
    default weights. Smaller frames use fewer scales (:func:`ms_ssim_levels`; e.g. 3 for 64x64)
    with the first weights renormalised to sum to 1 -- the same computation, so values are
    comparable in kind but not identical to the 5-scale figure. Works on ``batch`` frames at a time.
    """
    import torch

    a, b = _pair(a, b)
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4 or a.shape[3] != 3:
        raise ValueError(f"expected (T, H, W, 3) or (H, W, 3) RGB, got {a.shape}")
    levels = ms_ssim_levels(a.shape[1], a.shape[2])
    weights = [w / sum(MS_SSIM_WEIGHTS[:levels]) for w in MS_SSIM_WEIGHTS[:levels]]
    out = []
    with torch.no_grad():
        for i in range(0, a.shape[0], batch):
            x = torch.from_numpy(np.ascontiguousarray(a[i:i + batch])).permute(0, 3, 1, 2).float()
            y = torch.from_numpy(np.ascontiguousarray(b[i:i + batch])).permute(0, 3, 1, 2).float()
            if levels == len(MS_SSIM_WEIGHTS):
                from pytorch_msssim import ms_ssim as _ms_ssim

                val = _ms_ssim(x, y, data_range=255, size_average=False)
            else:
                val = _ms_ssim_reduced(x, y, weights)
            out.append(val.double().numpy())
    return np.concatenate(out)


def ms_ssim(a, b, *, batch: int = 8) -> float:
    """Mean MS-SSIM over the frames of two uint8 (T, H, W, 3) clips or two (H, W, 3) images.

    See :func:`ms_ssim_per_frame` for the scales used on frames with a side of 160 or less.
    """
    return float(ms_ssim_per_frame(a, b, batch=batch).mean())
