"""What makes a video INR a *kind* nervcodec can train, store and decode: one class per model.

A kind names its config class, builds its decoder-side network, sizes it for a parameter budget,
renders a frame from it, trains it (its own schedule) and resolves its default options. The codec
(:mod:`codec.nerv`) and the CLI ask the kind instead of switching on its name, so a new model is
one new file with its subclass and one line in :mod:`models.inr.registry`.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .control import ThreadGovernor
from .layout import crop_frames, to_uint8
from .quant import QuantizedTensor, load_quantized
from .train import FitOptions, Fitted, Progress, resolve_precision


class InrKind:
    """One video INR. Subclasses set the class attributes and implement the methods below."""

    #: the name files and the CLI use (``"model"`` in the file's header)
    name: str = ""
    #: the config dataclass (``from_dict``-able: built as ``config(**fields)``)
    config: type = object
    #: largest value of each structural config field a decoder accepts (checked before building)
    field_limits: dict[str, int] = {}
    #: frames per training step when the options leave ``batch`` unset
    default_batch: int = 1
    #: whether data-parallel ranks split a global batch (so each needs at least one frame of it);
    #: False where ranks train parts of the clip of their own
    ranks_share_batch: bool = True
    #: whether the file stores per-frame embeddings (``E`` chunks) beside the weights
    embeddings: bool = False
    #: target bits per pixel when the user names neither a size nor a rate
    default_bpp: float = 0.05
    #: epochs of each encoder preset (``codec.nerv.PRESETS``)
    preset_epochs: dict[str, int] = {}
    #: the kind's own options (a dataclass; None: it has none)
    options: type | None = None

    # -- structure --------------------------------------------------------------------------------
    def build(self, cfg) -> nn.Module:
        """The decoder-side network (what the file's weights load into)."""
        raise NotImplementedError

    def size(self, height: int, width: int, frames: int, params: int, group: int):
        """A config for ``height``×``width`` frames with about ``params`` parameters in all."""
        raise NotImplementedError

    def size_for_rate(self, height: int, width: int, frames: int, params: int, group: int, bits: float):
        """A config when sizing for a file of ``bits`` bits in all, ``params`` of them for the
        network: the same as :meth:`size` unless the kind splits the bits between its parts."""
        return self.size(height, width, frames, params, group)

    def weight_groups(self, cfg, frames: int) -> int:
        """Networks the file stores (one ``W`` chunk each), in clip order."""
        return 1

    def group_frames(self, cfg, frames: int, g: int) -> range:
        """The clip's frames network ``g`` renders."""
        return range(frames)

    def group_of(self, cfg, index: int) -> int:
        """The network that renders clip frame ``index``."""
        return 0

    # -- rendering --------------------------------------------------------------------------------
    def forward_frame(self, cfg, net: nn.Module, index: int, count: int, emb: torch.Tensor | None,
                      device: str) -> torch.Tensor:
        """Float frame (1, 3, H', W') of clip frame ``index`` of ``count`` (before cropping);
        ``emb``: that frame's dequantized embedding (1, C, h, w) for kinds that store them."""
        raise NotImplementedError

    @torch.no_grad()
    def render(self, cfg, net: nn.Module, *, count: int, frames: range, emb: torch.Tensor | None = None,
               device: str = "cpu") -> torch.Tensor:
        """uint8 frames (n, H, W, 3) of clip frames ``frames`` (of ``count``).

        ``emb``: the dequantized embeddings of exactly those frames, for kinds that store them.
        One forward pass per frame, so a frame's pixels never depend on which frames are decoded
        beside it (batched convolutions may round differently from single ones); on a CPU this is
        no slower than batching."""
        net = net.to(device).eval()
        out = []
        for k, i in enumerate(frames):
            y = self.forward_frame(cfg, net, i, count, None if emb is None else emb[k:k + 1], device)
            out.append(to_uint8(crop_frames(y, cfg.height, cfg.width)).cpu())
        return torch.cat(out) if out else torch.zeros((0, cfg.height, cfg.width, 3), dtype=torch.uint8)

    def decoder(self, cfg, tensors: list[QuantizedTensor]) -> nn.Module:
        """The network with the file's integers and steps loaded."""
        return load_quantized(self.build(cfg), tensors)

    def shapes(self, cfg) -> list[tuple[int, ...]]:
        """The shapes of the network's tensors, in file order (built on the meta device: no memory)."""
        with torch.device("meta"):
            return [tuple(p.shape) for p in self.build(cfg).parameters()]

    # -- training ---------------------------------------------------------------------------------
    def resolve(self, opts: FitOptions, ranks: int = 1) -> FitOptions:
        """``opts`` with this kind's defaults filled in: the batch (on ``ranks`` data-parallel ranks
        sharing a batch, at least one frame each: a smaller batch would have every rank compute
        the same frame), its own options, the precision. Resolving twice changes nothing."""
        if opts.model is not None and (self.options is None or not isinstance(opts.model, self.options)):
            raise ValueError(f"{type(opts.model).__name__} are not options of {self.name}")
        batch = opts.batch
        if batch is None:
            batch = max(self.default_batch, ranks) if self.ranks_share_batch else self.default_batch
        model = opts.model if opts.model is not None or self.options is None else self.options()
        return resolve_precision(dataclasses.replace(opts, batch=batch, model=model))

    def fit(self, target: torch.Tensor, cfg, opts: FitOptions, progress: Progress | None,
            governor: ThreadGovernor) -> Fitted | None:
        """Train on float frames (T, 3, H, W) in [0, 1] with resolved options; rank 0 gets the result."""
        raise NotImplementedError

    def probe(self, target: torch.Tensor, cfg, opts: FitOptions, frames: int):
        """(one training step as a callable, steps per epoch) on a throwaway network, for timing;
        ``target`` holds the first frames of the clip (a batch's worth). A training that changes
        form part way gives a list of (share of the steps, step callable) instead of one callable."""
        raise NotImplementedError

    def planned_epochs(self, cfg, opts: FitOptions, frames: int) -> float:
        """The training planned, in epochs of :meth:`probe`'s steps, plus the final render."""
        return opts.epochs * 1.05 + 0.4

    def stops_early(self, opts: FitOptions) -> bool:
        """Whether training may end before its planned epochs (a quality target)."""
        return False
