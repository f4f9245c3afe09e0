"""pcz's wavefront: the patch grid of a padded image, visited by anti-diagonal, and the coding of
one stream over it.

Each patch is coded given its already decoded neighbours (the row above and the column to the
left), so the patches on one anti-diagonal of the grid do not depend on each other and are coded
as one batch (vectorised, both cores), across all the images of one stream (an archive codes many
images per batch). :func:`_code_block` is the encoder's and the decoder's one loop: the same
conditionals in the same order on both sides, and an adaptive model's tables updated from each
step's patches once they are coded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neural_codecs import bitstream as bs
from neural_codecs.models.pc.coder import Stepper

from .model import PatchLayout, PczModel

#: Conditionals (floats) the encoder gathers before one call into the entropy layer.
_ENCODE_BUFFER = 1 << 18


@dataclass(frozen=True)
class _Tiling:
    """The patch grid of a padded image, visited by anti-diagonal wavefront.

    Patch (r, c) needs (r, c-1) and (r-1, c+1), both coded one step earlier, so it is coded at
    step ``c + 2r``. A grid one patch wide has no patch at the odd steps; :attr:`steps` lists only
    the steps that hold a patch. A step's index arrays are built when it is coded (:meth:`group`),
    never all at once: they would cost 32 bytes a variable of the whole image up front.
    """

    layout: PatchLayout
    R: int  # patch rows
    C: int  # patch columns

    @property
    def Hp(self) -> int:
        return self.R * self.layout.ph

    @property
    def Wp(self) -> int:
        return self.C * self.layout.pw

    @property
    def steps(self) -> range:
        return range(0, 2 * self.R - 1, 2) if self.C == 1 else range(self.C + 2 * self.R - 2)

    @property
    def widest(self) -> int:
        """Most patches one step holds."""
        return min(self.R, (self.C + 1) // 2)

    def group(self, t: int):
        """Step ``t``'s patches, top row first: (ys, xs, cs, valid), each (P, D)."""
        L = self.layout
        r = np.arange(max(0, -(-(t - self.C + 1) // 2)), min(self.R - 1, t // 2) + 1)
        c = t - 2 * r
        dy, dx, ch = L.offsets.T
        ys = r[:, None] * L.ph + dy[None]
        xs = c[:, None] * L.pw + dx[None]
        valid = (ys >= 0) & (ys < self.Hp) & (xs >= 0) & (xs < self.Wp)
        return np.where(valid, ys, 0), np.where(valid, xs, 0), np.broadcast_to(ch, ys.shape), valid


def _tiling(layout: PatchLayout, H: int, W: int) -> _Tiling:
    return _Tiling(layout, -(-H // layout.ph), -(-W // layout.pw))


def _pad(imgs: np.ndarray, Hp: int, Wp: int) -> np.ndarray:
    """(N, H, W, C) -> (N, Hp, Wp, C) by repeating the last row and column (decoder crops them)."""
    N, H, W, _ = imgs.shape
    return np.pad(imgs, ((0, 0), (0, Hp - H), (0, Wp - W), (0, 0)), mode="edge")


def _code_block(model: PczModel, canvas: np.ndarray, enc: bs.Encoder | None, dec: bs.Decoder | None,
                tiling: _Tiling, progress=None) -> None:
    """Code (or decode into) ``canvas`` (N, Hp, Wp, C): every patch of every image, one stream.

    An adaptive model's tables are updated from each wavefront step's patches once they are
    coded (encoder) or decoded (decoder): the same rows in the same order on both sides.
    ``progress(done, total)`` is called after each wavefront step, if given."""
    adapter = model.adapter()
    tables = model.tables
    N = canvas.shape[0]
    cv = tables.coded_vars
    n_idx = np.arange(N)[:, None, None]
    steps = tiling.steps
    for step, t in enumerate(steps):
        if progress is not None:
            progress(step, len(steps))
        if adapter is not None:
            tables = adapter.tables
        ys, xs, cs, valid = tiling.group(t)
        P = ys.shape[0]
        ev = canvas[n_idx, ys[None], xs[None], cs[None]].astype(np.int64)
        ev = np.where(valid[None], ev, -1).reshape(N * P, -1)
        ev, shift = model.layout.center(ev)
        stepper = Stepper(tables, ev)
        if enc is not None:
            # The encoder knows every value: gather several steps' conditionals and code them in
            # one call (same symbols, same order as the decoder's one-step-at-a-time calls).
            vals = ev[:, cv]
            rows = len(vals)
            per_call = max(1, _ENCODE_BUFFER // (rows * tables.V))
            for k0 in range(0, len(cv), per_call):
                ks = range(k0, min(k0 + per_call, len(cv)))
                qs = np.empty((len(ks), rows, tables.V))
                for j, k in enumerate(ks):
                    qs[j] = stepper.step(vals[:, k - 1] if k else None)
                enc.encode_categorical(vals[:, ks].T.ravel(), qs.reshape(-1, tables.V))
        else:
            vals = np.empty((N * P, len(cv)), dtype=np.int64)
            for k in range(len(cv)):
                q = stepper.step(vals[:, k - 1] if k else None)
                vals[:, k] = dec.decode_categorical(q)
            ev[:, cv] = vals
            vals = ((vals - shift[:, cv]) % 256).reshape(N, P, -1)
            canvas[n_idx, ys[None][..., cv], xs[None][..., cv], cs[None][..., cv]] = vals
        if adapter is not None:
            adapter.observe(ev)
