"""The INR kinds registry: a model is one class, found by the name its files carry."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from neural_codecs.codec import nerv
from neural_codecs.models.inr import KINDS, FitOptions, get_kind, registry
from neural_codecs.models.inr.frame_fit import FrameKind


@dataclasses.dataclass
class TinyConfig:
    height: int
    width: int
    hidden: int

    @property
    def padded(self) -> tuple[int, int]:
        return self.height, self.width

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class TinyNet(nn.Module):
    """A frame's time → the whole frame, through one hidden layer."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.cfg = cfg
        self.a = nn.Linear(1, cfg.hidden)
        self.b = nn.Linear(cfg.hidden, 3 * cfg.height * cfg.width)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(self.b(torch.sin(self.a(t.view(-1, 1)))))
        return y.view(-1, 3, self.cfg.height, self.cfg.width)


class Tiny(FrameKind):
    """A model nervcodec has never heard of, written as a user adding one would."""

    name = "tiny"
    config = TinyConfig
    field_limits = {"hidden": 64}

    def build(self, cfg):
        return TinyNet(cfg)

    def size(self, height, width, frames, params, group):
        return TinyConfig(height, width, 8)


def test_a_new_kind_is_one_class_and_a_registry_entry(monkeypatch):
    """Registered (one entry), a new kind trains, is sized, packed, timed, and decodes bit-exactly
    to the encoder's frames, whole and one frame alone; the decoder finds it by the file's name."""
    monkeypatch.setitem(registry._KINDS, "tiny", Tiny())
    rng = np.random.default_rng(1)
    clip = rng.integers(0, 256, (3, 6, 10, 3), dtype=np.uint8)
    res = nerv.encode(clip, 25, model="tiny", bpp=4.0, options=FitOptions(epochs=2))
    frames, _ = nerv.decode(res.data)
    assert np.array_equal(frames, res.frames)
    with nerv.NervReader(res.data) as r:
        assert np.array_equal(r.frame(2), res.frames[2])
    assert nerv.info(res.data)["model"] == "tiny"
    cfg, opts = nerv.prepare(clip, 25, model="tiny", options=FitOptions(epochs=2))
    assert nerv.estimate_seconds(clip, "tiny", cfg, opts) > 0


def test_unknown_kinds_and_foreign_options_are_refused():
    with pytest.raises(ValueError, match="choose from hnerv, nervpp, nirvana"):
        get_kind("vit")
    assert KINDS == ("hnerv", "nervpp", "nirvana")
    with pytest.raises(ValueError, match="not options of"):
        nerv.encode(np.zeros((2, 8, 8, 3), np.uint8), model="hnerv", size=500,
                    options=FitOptions(epochs=1, model=get_kind("nirvana").options(target_psnr=30.0)))
