"""Measuring what a codec gives: quality metrics (:mod:`codec.eval.metrics`: PSNR, MS-SSIM)."""
