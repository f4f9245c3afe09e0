"""The Entropic Student (Matsubara, Yang, Levorato & Mandt, WACV 2022).

A classifier is split early: a ResNet after ``layer1``, EfficientNet-Lite0 after its stage 2
(:data:`.efficientnet_lite.SPLIT_BLOCK`; the same 1/4 side). The text below names ResNet's parts.
The *edge* runs a small learned encoder in place of the stem and layer1, quantizes its 24-channel
output and entropy codes it under a learned factorized prior; the *server* decodes the latent back
to layer1's shape and runs the teacher's remaining layers.

    encoder  Conv5×5/2 3→96 · GDN · Conv5×5/2 96→48 · GDN · Conv2×2 48→24 (padding 0)
    prior    EntropyBottleneck(24)
    decoder  Conv2×2 24→512 (padding 1) · IGDN · Conv2×2 512→256 (padding 0) · IGDN ·
             Conv2×2 256→C1 (padding 1)              (C1 = layer1's channels: 256 / 64)
    tail     the teacher's layer2, layer3, layer4, avgpool, fc

No convolution here has a bias. Every channel count is configurable
(:class:`StudentConfig`; the paper's are the defaults).

Shapes. A 5×5 stride-2 convolution with padding 2 maps a side n to ceil(n/2), exactly as the
teacher's 7×7/2 (padding 3) convolution and its 3×3/2 (padding 1) max-pool do, so after the
encoder's two strided convolutions the side is ceil(ceil(H/2)/2), layer1's side. The last encoder
convolution (2×2, padding 0) takes one off (56 → 55 for a 224 input), and the decoder's three 2×2
convolutions with paddings 1, 0, 1 add one back (55 → 56 → 55 → 56). So the decoder output has
layer1's exact shape for *every* input size of at least 5 pixels a side — no cropping or
interpolation is ever needed (``stage1_loss`` checks it against the teacher).

Training (the paper's two stages):

1. :meth:`EntropicStudent.train_stage1` — encoder, prior and decoder learn to reproduce the
   frozen teacher's features: Σ_l MSE(student_l, teacher_l) over layer1 (the decoder output) and
   layer2/3/4 (the teacher's own layers, frozen, run on the decoded features) plus β · bits per
   image; uniform noise stands in for rounding; Adam 1e-3 (the prior's density at 1e-2); the
   prior's quantiles follow with their own Adam on :meth:`~.entropy_model.EntropyBottleneck.aux_loss`
   and are solved exactly at the end (:meth:`~.entropy_model.EntropyBottleneck.fit_quantiles`).
2. :meth:`EntropicStudent.train_stage2` — encoder and prior frozen (the latent is *rounded*, as at
   test time); decoder and tail are fine-tuned on 0.5 · cross-entropy + 0.5 · KL(teacher ‖ student)
   at temperature 1. The paper uses SGD 1e-3, momentum 0.9 (``optimizer="sgd"``); the default here
   is Adam 1e-3 with a cosine decay, because a CPU-sized stage 2 of a few epochs barely moves
   under SGD 1e-3 (Imagenette at 64 px, one stage-1 student, 2 epochs of stage 2: SGD 1e-3
   52.2 % top-1, Adam 1e-3 58.0 % -- that sweep decayed Adam along a one-cycle schedule --,
   8 epochs of Adam 63.4 %).

The student's tail is a *copy* of the teacher's layers (frozen in stage 1, trained in stage 2), so
stage 2 never changes the teacher that provides its targets.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .efficientnet_lite import EfficientNetLite0, EfficientNetLiteTail, split_channels, tail_keys
from .entropy_model import EntropyBottleneck
from .gdn import GDN, IGDN
from .resnet import ARCHS, ResNet, ResNetTail, layer_channels

#: The ImageNet-pretrained teacher (:mod:`.efficientnet_lite`), split before its ``_blocks[3]``.
LITE_ARCH = "efficientnet_lite0"

Progress = Callable[[int, int | None, dict], None]

#: Stage 1's learning rate for the prior's density (see :meth:`EntropicStudent.train_stage1`).
PRIOR_LR = 1e-2


@dataclass(frozen=True)
class StudentConfig:
    """Architecture of the student and of the teacher it is cut from."""

    arch: str = "resnet50"
    num_classes: int = 1000
    base_width: int = 64  # the teacher's stem / layer1 width (torchvision: 64)
    enc_channels: tuple[int, int] = (96, 48)
    bottleneck: int = 24
    dec_channels: tuple[int, int] = (512, 256)
    input_size: int = 224  # the side the edge resizes / crops images to

    def __post_init__(self):
        object.__setattr__(self, "enc_channels", tuple(int(c) for c in self.enc_channels))
        object.__setattr__(self, "dec_channels", tuple(int(c) for c in self.dec_channels))
        for name in ("num_classes", "base_width", "bottleneck", "input_size"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"{name} must be an integer")
        if self.arch not in ARCHS and self.arch != LITE_ARCH:
            raise ValueError(f"unknown architecture {self.arch!r}")
        if len(self.enc_channels) != 2 or len(self.dec_channels) != 2:
            raise ValueError("enc_channels and dec_channels need two numbers each")
        for c in (*self.enc_channels, *self.dec_channels, self.bottleneck, self.base_width):
            if not 1 <= c <= 4096:
                raise ValueError("channel counts must lie in 1..4096")
        if not 1 <= self.num_classes <= 1 << 20 or not 8 <= self.input_size <= 4096:
            raise ValueError("num_classes or input_size out of range")

    @property
    def layer1_channels(self) -> int:
        """Channels of the teacher's features at the split (ResNet: layer1's output)."""
        if self.arch == LITE_ARCH:
            return split_channels()
        return layer_channels(self.arch, self.base_width)[0]

    @property
    def split_key(self) -> str:
        """The name of the split-point features in the teacher's ``features()`` dict."""
        return "split" if self.arch == LITE_ARCH else "layer1"

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """The features stage 1 distils: the split point's, then the tail's."""
        tail = tail_keys() if self.arch == LITE_ARCH else ("layer2", "layer3", "layer4")
        return (self.split_key, *tail)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["enc_channels"], d["dec_channels"] = list(self.enc_channels), list(self.dec_channels)
        return d


def build_encoder(cfg: StudentConfig) -> nn.Sequential:
    """Image (N, 3, H, W) -> latent (N, bottleneck, ceil(ceil(H/2)/2) - 1, …)."""
    c1, c2 = cfg.enc_channels
    return nn.Sequential(
        nn.Conv2d(3, c1, 5, stride=2, padding=2, bias=False), GDN(c1),
        nn.Conv2d(c1, c2, 5, stride=2, padding=2, bias=False), GDN(c2),
        nn.Conv2d(c2, cfg.bottleneck, 2, stride=1, padding=0, bias=False),
    )


def build_decoder(cfg: StudentConfig) -> nn.Sequential:
    """Latent -> layer1-shaped features (side + 1)."""
    d1, d2 = cfg.dec_channels
    return nn.Sequential(
        nn.Conv2d(cfg.bottleneck, d1, 2, stride=1, padding=1, bias=False), IGDN(d1),
        nn.Conv2d(d1, d2, 2, stride=1, padding=0, bias=False), IGDN(d2),
        nn.Conv2d(d2, cfg.layer1_channels, 2, stride=1, padding=1, bias=False),
    )


def build_tail(cfg: StudentConfig) -> nn.Module:
    """The teacher's layers after the split, freshly initialised, for ``cfg``."""
    if cfg.arch == LITE_ARCH:
        return EfficientNetLiteTail(cfg.num_classes)
    return ResNetTail(cfg.arch, cfg.num_classes, cfg.base_width)


def _tail_matches(tail: nn.Module, cfg: StudentConfig) -> bool:
    if cfg.arch == LITE_ARCH:
        return isinstance(tail, EfficientNetLiteTail) and tail.num_classes == cfg.num_classes
    return (getattr(tail, "arch", None), getattr(tail, "num_classes", None),
            getattr(tail, "base_width", None)) == (cfg.arch, cfg.num_classes, cfg.base_width)


def latent_side(n: int) -> int:
    """Latent side for an input side ``n`` (layer1's side minus one)."""
    return -(-(-(-n // 2)) // 2) - 1


def _batch(item) -> tuple[torch.Tensor, object, object]:
    """A loader item → (images, second, third): images alone, (images, labels) or (images, labels,
    teacher logits) for stage 2; (images, {feature name: teacher features}) for stage 1 from
    precomputed targets."""
    if isinstance(item, (tuple, list)):
        return item[0], (item[1] if len(item) > 1 else None), (item[2] if len(item) > 2 else None)
    return item, None, None


def _bn_eval(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _total_steps(loader, epochs: int, max_steps: int | None) -> int | None:
    try:
        total = epochs * len(loader)
    except TypeError:
        total = None
    if max_steps is not None:
        total = max_steps if total is None else min(total, max_steps)
    return total


def _schedule(opt, schedule: str, total: int | None):
    """The per-step scheduler for ``schedule`` ("constant": none; "cosine": to 0 over ``total``
    steps, none when the run's length is unknown)."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', not {schedule!r}")
    if schedule == "cosine" and total:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    return None


def _batches(loader, epochs: int, max_steps: int | None):
    """The loader's items, ``epochs`` passes over it, stopping after ``max_steps`` items (no
    batch is loaded past that point)."""
    return itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader, epochs)), max_steps)


def _freeze(module: nn.Module, frozen: bool = True) -> None:
    for p in module.parameters():
        p.requires_grad_(not frozen)


class EntropicStudent(nn.Module):
    """Encoder + entropy bottleneck + decoder, followed by the teacher's layers after the split
    (ResNet: layer2 … fc; EfficientNet-Lite0: ``_blocks[3:]`` … fc)."""

    def __init__(self, config: StudentConfig | None = None, tail: nn.Module | None = None):
        super().__init__()
        self.config = cfg = config or StudentConfig()
        self.encoder = build_encoder(cfg)
        self.entropy_bottleneck = EntropyBottleneck(cfg.bottleneck)
        self.decoder = build_decoder(cfg)
        if tail is None:
            tail = build_tail(cfg)
        if not _tail_matches(tail, cfg):
            raise ValueError("the tail does not match the config")
        self.tail = tail

    @classmethod
    def from_teacher(cls, teacher: ResNet | EfficientNetLite0, **overrides) -> "EntropicStudent":
        """A student for ``teacher`` (its architecture, classes and width), its tail a copy of the
        teacher's layers after the split. ``overrides``: other :class:`StudentConfig` fields."""
        if isinstance(teacher, EfficientNetLite0):
            cfg = StudentConfig(arch=LITE_ARCH, num_classes=teacher._fc.out_features, **overrides)
            return cls(cfg, EfficientNetLiteTail.from_network(teacher))
        cfg = StudentConfig(arch=teacher.arch, num_classes=teacher.num_classes, base_width=teacher.base_width,
                            **overrides)
        return cls(cfg, ResNetTail.from_resnet(teacher))

    def to_split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The edge and the decoder only: ``{"likelihoods", "y", "y_hat", <split_key>}``."""
        y = self.encoder(x)
        y_hat, likelihoods = self.entropy_bottleneck(y)
        return {"y": y, "y_hat": y_hat, "likelihoods": likelihoods, self.config.split_key: self.decoder(y_hat)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"logits", "likelihoods", "y", "y_hat", <feature_keys>}`` (ResNet: "layer1" — the
        decoder output —, "layer2", "layer3", "layer4"). ``y_hat`` is y plus noise in training
        mode, rounded at eval."""
        out = self.to_split(x)
        return {**out, **self.tail(out[self.config.split_key])}

    def from_latent(self, y_hat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Server side: dequantized latent -> features and logits."""
        h1 = self.decoder(y_hat)
        return {self.config.split_key: h1, **self.tail(h1)}

    # -- losses ----------------------------------------------------------------------------------
    @staticmethod
    def rate_bits(likelihoods: torch.Tensor) -> torch.Tensor:
        """Bits per image: -Σ log2 p over each image's latent, averaged over the batch."""
        return -torch.log2(likelihoods).sum() / likelihoods.shape[0]

    def stage1_loss(self, out: dict, teacher_feats: dict, beta: float,
                    keys: Iterable[str] | None = None) -> tuple[torch.Tensor, dict]:
        """Σ_keys MSE(student, teacher) + β · bits per image; returns (loss, info). ``keys``: the
        features to match, by default all of :attr:`StudentConfig.feature_keys` (ResNet:
        layer1 … layer4)."""
        dist = 0.0
        for key in (self.config.feature_keys if keys is None else keys):
            s, t = out[key], teacher_feats[key]
            if s.shape != t.shape:
                raise ValueError(f"student {key} {tuple(s.shape)} != teacher {tuple(t.shape)}")
            dist = dist + F.mse_loss(s, t)
        rate = self.rate_bits(out["likelihoods"])
        loss = dist + beta * rate
        return loss, {"loss": float(loss.detach()), "distortion": float(dist.detach()), "bits": float(rate.detach())}

    @staticmethod
    def stage2_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                    temperature: float = 1.0, alpha: float = 0.5) -> torch.Tensor:
        """(1 - α) · CE(logits, targets) + α · T² · KL(softmax(teacher/T) ‖ softmax(student/T))."""
        T = temperature
        ce = F.cross_entropy(logits, targets)
        kl = F.kl_div(F.log_softmax(logits / T, 1), F.log_softmax(teacher_logits / T, 1),
                      reduction="batchmean", log_target=True)
        return (1 - alpha) * ce + alpha * T * T * kl

    # -- training loops --------------------------------------------------------------------------
    def train_stage1(self, teacher: nn.Module | None, loader: Iterable, *, epochs: int = 1, beta: float = 0.01,
                     device: str | torch.device = "cpu", lr: float = 1e-3, prior_lr: float = PRIOR_LR,
                     aux_lr: float = 1e-3, max_steps: int | None = None, schedule: str = "constant",
                     keys: Iterable[str] | None = None, progress: Progress | None = None) -> list[dict]:
        """Stage 1 (feature distillation + rate). ``loader`` yields images or (images, labels),
        or (images, {feature name: teacher features}) when the targets were computed beforehand
        (``teacher`` may then be None).

        ``keys``: the features to match (default all of :attr:`StudentConfig.feature_keys`); the
        split point's alone (``[config.split_key]``, head network distillation) skips the tail.

        ``schedule``: ``"constant"`` (the paper's Adam ``lr``) or ``"cosine"`` (``lr`` and
        ``prior_lr`` decay to 0 along a cosine over the run when its length is known).

        ``prior_lr`` is the density's own Adam rate (10× ``lr`` by default): its few hundred parameters
        start as a wide bump (several bits per latent whatever the encoder does) and, at the
        encoder's rate, need far more steps to tighten than a short CPU run has. At the end the
        quantiles are set exactly (:meth:`~.entropy_model.EntropyBottleneck.fit_quantiles`), so the
        medians stage 2 rounds around and the table ranges do not depend on how far the auxiliary
        optimizer got. Returns one info dict per step (loss, distortion, bits per image, aux loss)."""
        device = torch.device(device)
        self.to(device)
        if teacher is not None:
            teacher.to(device).eval()
            _freeze(teacher)
        keys = tuple(self.config.feature_keys if keys is None else keys)
        split_only = keys == (self.config.split_key,)
        _freeze(self.tail)
        _freeze(self.encoder, False), _freeze(self.decoder, False), _freeze(self.entropy_bottleneck, False)
        eb = self.entropy_bottleneck
        opt = torch.optim.Adam([{"params": [*self.encoder.parameters(), *self.decoder.parameters()]},
                                {"params": eb.density_parameters(), "lr": prior_lr}],
                               lr=lr)
        aux_opt = torch.optim.Adam([eb.quantiles], lr=aux_lr)
        total = _total_steps(loader, epochs, max_steps)
        sched = _schedule(opt, schedule, total)
        history = []
        for step, item in enumerate(_batches(loader, epochs, max_steps), 1):
            x, given, _ = _batch(item)
            x = x.to(device)
            self.train()
            self.tail.eval()  # frozen teacher layers: running statistics, not batch ones
            if isinstance(given, dict):
                target = {k: v.to(device) for k, v in given.items()}
            else:
                with torch.no_grad():
                    target = teacher.features(x)
            out = self.to_split(x) if split_only else self(x)
            loss, info = self.stage1_loss(out, target, beta, keys)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            aux = eb.aux_loss()
            aux_opt.zero_grad(set_to_none=True)
            aux.backward()
            aux_opt.step()
            info["aux"] = float(aux.detach())
            history.append(info)
            if progress is not None:
                progress(step, total, info)
        eb.fit_quantiles()
        self.eval()
        return history

    def train_stage2(self, teacher: nn.Module | None, loader: Iterable, *, epochs: int = 1,
                     device: str | torch.device = "cpu", lr: float = 1e-3, optimizer: str = "adam",
                     momentum: float = 0.9, weight_decay: float = 0.0, temperature: float = 1.0,
                     alpha: float = 0.5, max_steps: int | None = None, freeze_bn: bool = False,
                     progress: Progress | None = None) -> list[dict]:
        """Stage 2 (classification fine-tuning). ``loader`` yields (images, labels), or (images,
        labels, teacher logits) when those were computed beforehand (``teacher`` may then be None).

        ``freeze_bn``: batch norms keep the teacher's running statistics (eval mode) while their
        weights learn, for a pretrained tail fine-tuned in small batches.

        Encoder and prior are frozen and run at eval (the latent is rounded around the medians);
        decoder and tail learn. ``optimizer``: ``"adam"`` (default; ``lr`` decays to 0 along a
        cosine over the run when its length is known) or ``"sgd"`` (the paper's: constant ``lr``,
        ``momentum``). Returns one info dict per step (loss)."""
        device = torch.device(device)
        self.to(device)
        if teacher is not None:
            teacher.to(device).eval()
            _freeze(teacher)
        _freeze(self.encoder), _freeze(self.entropy_bottleneck)
        _freeze(self.decoder, False), _freeze(self.tail, False)
        params = [*self.decoder.parameters(), *self.tail.parameters()]
        total = _total_steps(loader, epochs, max_steps)
        sched = None
        if optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        elif optimizer == "adam":
            opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
            sched = _schedule(opt, "cosine", total)
        else:
            raise ValueError(f"optimizer must be 'adam' or 'sgd', not {optimizer!r}")
        history = []
        for step, item in enumerate(_batches(loader, epochs, max_steps), 1):
            x, labels, t_logits = _batch(item)
            if labels is None:
                raise ValueError("stage 2 needs (images, labels) batches")
            x, labels = x.to(device), labels.to(device)
            self.train()
            self.encoder.eval()
            self.entropy_bottleneck.eval()
            if freeze_bn:
                _bn_eval(self)
            with torch.no_grad():
                t_logits = teacher(x) if t_logits is None else t_logits.to(device, torch.float32)
                y_hat, _ = self.entropy_bottleneck(self.encoder(x))
            out = self.from_latent(y_hat)
            loss = self.stage2_loss(out["logits"], t_logits, labels, temperature, alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            info = {"loss": float(loss.detach())}
            history.append(info)
            if progress is not None:
                progress(step, total, info)
        self.eval()
        return history
