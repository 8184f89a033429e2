"""Inference: what a family needs to colorize, and nothing of training.

A Colorizer holds the network with the weights inference uses (the moving average when the run
kept one, else the weights themselves) and whatever its family's sampling needs: the ab bins and
temperature (colorful), the noise schedule and sampler (diffusion), the latent size, the mixture
network and its feature trunk (cvae_mdn). Test mode, colorizing and bench.py build it from a
checkpoint with `from_checkpoint` (no optimizer, no discriminator, no second copy for the EMA);
a trainer builds the same class around its own networks and validates with it.

    predict_ab(L, hints=None) -> ab  (B, 1, H, W) L in [-1, 1] -> (B, 2, H, W) ab / 110: the one
                                     colorization (the most likely, for stochastic families);
                                     `hints` a hint map for a guided network (models/hints.py)
    sample_ab(L, k, hints=None) -> (K, B, 2, H, W)  K colorizations, the first predict_ab's
    stochastic                       whether they differ (the family's Config includes Sampling)

A family's Colorizer subclass sits beside its trainer (trainers/<way>.py) and is named by the
trainer's `Colorizer` attribute; `parts(...)` builds what it needs beyond the network from the
settings and the checkpoint's extra state.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from models import hints
from models.config import setting
from models.hints import given
from trainers import checkpoint
from util import hint_files
from util.colour import rgb_to_model, uint8_to_float


@dataclass(frozen=True)
class Sampling:
    """Settings of a family with several colorizations per image (a stochastic family)."""
    num_samples: int = setting(1, "test mode: colorizations per image (best-of-K and diversity when > 1)",
                               minimum=1, role="resume")


def inference_weights(ckpt: dict, use_ema: bool = True) -> dict:
    """The weights a checkpoint colorizes with: its moving average when it kept one (and use_ema),
    else its weights. Older checkpoints kept the average in "extra"."""
    ema = ckpt.get("ema", ckpt.get("extra", {}).get("ema"))
    return ema if (ema is not None and use_ema) else ckpt["model"]


def amp_dtype(amp: str, device: torch.device):
    """--amp as a dtype for autocast (None: full precision); auto is bf16 on CUDA, off elsewhere."""
    amp = ("bf16" if device.type == "cuda" else "off") if amp == "auto" else amp
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


class Colorizer:
    hint_count = 0  # hints revealed per image by prepare() (a hinted network; test --hint_counts)

    def __init__(self, net: torch.nn.Module, cfg, network_cfg, device, **parts):
        self.net, self.cfg, self.network_cfg = net, cfg, network_cfg
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        self.channels_last = self.device.type == "cuda"
        for name, value in parts.items():
            setattr(self, name, value)

    @property
    def stochastic(self) -> bool:
        """Whether sample_ab's K colorizations differ: the family's settings include Sampling."""
        return isinstance(self.cfg, Sampling)

    # -- what a family overrides -------------------------------------------------------------
    def predict_ab(self, L: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(L, **given(hints))

    def sample_ab(self, L: torch.Tensor, k: int, hints: torch.Tensor | None = None) -> torch.Tensor:
        return self.predict_ab(L, hints)[None].expand(k, -1, -1, -1, -1)

    def proposals(self, L: torch.Tensor, k: int, hints: torch.Tensor | None = None) -> torch.Tensor:
        """Colours the model itself proposes at each pixel, most likely first (serve mode's palette,
        as Zhang et al. 2017's): (n <= k + 1, B, 2, H, W). By default its colorization, then for a
        stochastic family its first k samples; a family that predicts a distribution overrides it."""
        first = self.predict_ab(L, hints)[None]
        return torch.cat([first, self.sample_ab(L, k, hints)]) if self.stochastic and k > 0 else first

    def sampling(self) -> dict:
        """How it colorizes, where that matters when runs are compared (the report shows it): the
        number of samples of a stochastic family by default."""
        return {"num_samples": self.cfg.num_samples} if self.stochastic else {}

    @classmethod
    def parts(cls, net, cfg, network_cfg, device, extra: dict, echo=print) -> dict:
        """What sampling needs beyond the network, from the settings and the checkpoint's extra
        state (its trainer's extra_state()): none by default."""
        return {}

    # -- shared ----------------------------------------------------------------------------
    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def eval(self) -> Colorizer:
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module):
                value.eval()
        return self

    @property
    def hinted(self) -> bool:
        """Whether the network takes colour hints (models/hints.py): then L is L and a hint map."""
        return hints.hinted(self.network_cfg)

    def check_hints(self, hint_map: torch.Tensor | None) -> None:
        """Hints for a network trained without them are refused (HintError), before any work."""
        if hint_map is not None and not self.hinted:
            raise hint_files.HintError("this model was trained without colour hints, so it cannot take them; "
                                       "train one with --guided")

    def prepare(self, images: torch.Tensor, first_index: int = 0, simulated: bool = False) -> dict:
        """uint8 (B, 3, H, W) on any device -> dict of rgb, L, ab (float32) on this device, and
        "hints": None, or for a hinted network a hint map of `self.hint_count` hints revealed from
        the true colours, seeded by the images' indices first_index, first_index + 1, ... (0 hints:
        automatic), or with `simulated` training's random hints (models/hints.simulate)."""
        rgb = uint8_to_float(images.to(self.device, non_blocking=True))
        L, ab = rgb_to_model(rgb)
        hint_map = None
        if self.hinted:
            if simulated:
                hint_map = hints.simulate(ab, self.cfg.hint_p, self.cfg.hint_none)
            else:
                hint_map = hints.reveal(ab, self.hint_count, first_index)
        if self.channels_last:
            L, ab = L.contiguous(memory_format=torch.channels_last), ab.contiguous(memory_format=torch.channels_last)
            hint_map = hint_map.contiguous(memory_format=torch.channels_last) if hint_map is not None else None
        return {"rgb": rgb, "L": L, "ab": ab, "hints": hint_map}

    @classmethod
    def from_checkpoint(cls, family, ckpt: dict, network_cfg, cfg, device, echo=print) -> Colorizer:
        """The family's colorizer from a loaded checkpoint (trainers/checkpoint.load) and the run's
        resolved settings: the EMA weights when the run kept an average and --ema_decay is not 0,
        else the weights."""
        device = torch.device(device)
        weights = inference_weights(ckpt, use_ema=cfg.ema_decay > 0)
        broken = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if broken:  # it would colorize black (NaN) without a word
            raise checkpoint.CheckpointError(f"the checkpoint's weights are not finite (NaN or infinite in "
                                             f"{', '.join(broken[:3])}): it cannot colorize")
        net = family.network.build(network_cfg)
        try:
            net.load_state_dict(weights)
        except RuntimeError as e:  # e.g. a checkpoint from code whose defaults built another network
            detail = str(e).strip().splitlines()
            raise checkpoint.CheckpointError(
                f"the checkpoint's weights do not fit the network built from its saved arguments "
                f"({detail[1].strip() if len(detail) > 1 else detail[0]})") from None
        net = net.to(device).eval().requires_grad_(False)
        if device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        colorizer = family.trainer.Colorizer
        parts = colorizer.parts(net, cfg, network_cfg, device, ckpt.get("extra", {}), echo)
        return colorizer(net, cfg, network_cfg, device, **parts).eval()
