"""The conditional denoiser of the diffusion families, and the noise schedule and samplers.

Denoiser: a UNet with a timestep embedding and self-attention at its two lowest resolutions.
    input  x_t (B, 2, H, W), noisy ab / 110, concatenated with L (B, 1, H, W) in [-1, 1],
           and the timestep t (B,) as integers in [0, T)
    output (B, 2, H, W), by --prediction: v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans and
           Ho 2022; the default), the noise eps that was added (Ho et al. 2020), or x0 itself. The
           samplers turn any of them into the predicted x0 (NoiseSchedule.predict_x0).
H and W must be multiples of 2**depth.

Schedule: one object holding the betas and abar_t = prod(1 - beta) (in float64, stored float32),
with q_sample (forward noising). Samplers take the network as an argument, so one checkpoint is
sampled by DDPM (ancestral, all T steps) or by DDIM (any number of steps, eta).

With colour hints (--guided, models/hints.py) the denoiser sees the hint map with L, and both
samplers also hold the hinted pixels to their hints: at every step the predicted x0 takes the
hint's ab where a hint is, before x_{t-1} is formed from it (the projection onto the known pixels
of Wang et al. 2023, "Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model",
for inpainting; RePaint, Lugmayr et al. 2022, is the same idea on x_t). So a hint is kept in the
sample, and the network harmonises the pixels around it, even while it has not learned much from
the hint channels: at the CPU protocol's two epochs the guided denoiser alone ignored them."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models import backbones
from models.backbones import EncoderInput
from models.config import setting
from models.hints import HintInput, conditioning, in_channels, known_colours


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017; Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(min(32, c_in // 4 or 1), c_in), nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(min(32, c_out // 4 or 1), c_out), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(min(32, channels // 4 or 1), channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)                  # (B, N, C)
        # the MultiheadAttention's own weights, applied here so that attention is one call of
        # scaled_dot_product_attention (fused kernels; runs/memory.py counts it as such)
        q, k, v = F.linear(tokens, self.attn.in_proj_weight, self.attn.in_proj_bias).chunk(3, dim=-1)
        heads = self.attn.num_heads
        q, k, v = (t.unflatten(-1, (heads, c // heads)).transpose(1, 2) for t in (q, k, v))  # (B, heads, N, C/heads)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        out = self.attn.out_proj(out)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Denoiser(nn.Module):
    def __init__(self, channels: int = 64, depth: int = 3, attention_levels: int = 2, in_channels: int = 1,
                 encoder_cfg=None):
        super().__init__()
        t_dim = 4 * channels
        self.channels = channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        widths = [channels * min(2 ** i, 4) for i in range(depth + 1)]
        attend = lambda level: level >= depth + 1 - attention_levels  # noqa: E731  the lowest resolutions
        self.stem = nn.Conv2d(2 + in_channels, widths[0], 3, 1, 1)  # x_t and the conditioning input
        self.guided = in_channels > 1  # L and a hint map (models/hints.py)
        self.down = nn.ModuleList()
        for i in range(depth):
            self.down.append(nn.ModuleList([ResBlock(widths[i], widths[i + 1], t_dim),
                                            SelfAttention(widths[i + 1]) if attend(i + 1) else nn.Identity()]))
        self.mid = nn.ModuleList([ResBlock(widths[-1], widths[-1], t_dim), SelfAttention(widths[-1]),
                                  ResBlock(widths[-1], widths[-1], t_dim)])
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            self.up.append(nn.ModuleList([ResBlock(2 * widths[i + 1], widths[i], t_dim),
                                          SelfAttention(widths[i]) if attend(i) else nn.Identity()]))
        self.out = nn.Sequential(nn.GroupNorm(min(32, widths[0] // 4 or 1), widths[0]), nn.SiLU(),
                                 nn.Conv2d(widths[0], 2, 3, 1, 1))
        self.encoded = backbones.join(encoder_cfg, widths[-1]) if encoder_cfg is not None else None  # --encoder

    def forward(self, x_t: torch.Tensor, L: torch.Tensor, t: torch.Tensor, features=None, *, hints=None
                ) -> torch.Tensor:
        """`features`: the encoder's features of L, when the caller has them (a sampler computes
        them once for all its steps); `hints`: a hint map (models/hints.py) for a guided denoiser."""
        temb = self.time_mlp(timestep_embedding(t, self.channels).to(x_t.dtype))
        x = self.stem(torch.cat([x_t, conditioning(L, hints, self.guided)], dim=1))
        skips = []
        for block, attn in self.down:
            x = attn(block(x, temb))
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        x = self.mid[0](x, temb)
        if self.encoded is not None:
            x = self.encoded(x, L, features)
        x = self.mid[2](self.mid[1](x), temb)
        for block, attn in self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = attn(block(torch.cat([x, skips.pop()], dim=1), temb))
        return self.out(x)


class NoiseSchedule:
    """betas and abar_t = prod_{s<=t} (1 - beta_s) for t in [0, T). cosine: Nichol and Dhariwal
    (2021), abar(t) = cos^2(((t/T + s)/(1 + s)) pi/2), s = 0.008, betas clipped at 0.999; linear:
    Ho et al. (2020), betas from 1e-4 to 0.02 (scaled to T)."""

    def __init__(self, timesteps: int = 1000, kind: str = "cosine"):
        T = timesteps
        if kind == "cosine":
            s = 0.008
            x = torch.arange(T + 1, dtype=torch.float64) / T
            f = torch.cos((x + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        elif kind == "linear":
            scale = 1000 / T
            betas = torch.linspace(1e-4 * scale, 0.02 * scale, T, dtype=torch.float64)
        else:
            raise ValueError(f"unknown schedule {kind}")
        self.T, self.kind = T, kind
        self.betas = betas.float()
        self.abar = torch.cumprod(1 - betas, 0).float()

    def at(self, values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """values[t] shaped (B, 1, 1, 1) on t's device, float32."""
        return values.to(t.device)[t].view(-1, 1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4)."""
        abar = self.at(self.abar, t)
        return abar.sqrt() * x0.float() + (1 - abar).sqrt() * noise.float()

    def predict_x0(self, x_t, t, out, prediction: str = "eps"):
        """x0 from the denoiser's output `out`, clipped to the ab range [-1, 1]:
        eps: x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (Ho et al. 2020, eq. 4 solved for x0);
        v:   x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v (Salimans and Ho 2022, section 4);
        x0:  out itself."""
        abar = self.at(self.abar, t)
        if prediction == "eps":
            x0 = (x_t - (1 - abar).sqrt() * out) / abar.sqrt()
        elif prediction == "v":
            x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * out
        elif prediction == "x0":
            x0 = out
        else:
            raise ValueError(f"unknown prediction {prediction!r}")
        return x0.clamp(-1, 1)

    def target(self, x0, t, noise, prediction: str = "eps"):
        """What the denoiser learns to output for x_t = q_sample(x0, t, noise): the noise, v =
        sqrt(abar_t) eps - sqrt(1 - abar_t) x0, or x0."""
        if prediction == "eps":
            return noise.float()
        if prediction == "x0":
            return x0.float()
        abar = self.at(self.abar, t)
        return abar.sqrt() * noise.float() - (1 - abar).sqrt() * x0.float()


@torch.no_grad()
def ddpm_sample(net_fn, schedule: NoiseSchedule, L: torch.Tensor, generator=None, prediction: str = "eps",
                hints: torch.Tensor | None = None) -> torch.Tensor:
    """Ancestral sampling over all T steps (Ho et al. 2020, Algorithm 2, with the posterior
    q(x_{t-1} | x_t, x0) of eq. 6-7 around the predicted x0). net_fn(x_t, L, t) -> the denoiser's
    output, an eps, v or x0 as `prediction` says. Hinted pixels keep their hints' ab (`hints`, the
    map net_fn was given)."""
    b, _, h, w = L.shape
    hinted = known_colours(hints)
    x = _noise_like(torch.empty(b, 2, h, w, device=L.device), generator)
    betas, abar = schedule.betas.to(L.device), schedule.abar.to(L.device)
    for i in reversed(range(schedule.T)):
        t = torch.full((b,), i, device=L.device, dtype=torch.long)
        x0 = _keep_hints(schedule.predict_x0(x, t, net_fn(x, L, t).float(), prediction), hinted)
        abar_prev = abar[i - 1] if i > 0 else torch.ones((), device=L.device)
        coef_x0 = betas[i] * abar_prev.sqrt() / (1 - abar[i])
        coef_xt = (1 - abar_prev) * (1 - betas[i]).sqrt() / (1 - abar[i])
        x = coef_x0 * x0 + coef_xt * x
        if i > 0:
            var = betas[i] * (1 - abar_prev) / (1 - abar[i])
            x = x + var.sqrt() * _noise_like(x, generator)
    return x


@torch.no_grad()
def ddim_sample(net_fn, schedule: NoiseSchedule, L: torch.Tensor, steps: int = 50, eta: float = 0.0,
                generator=None, prediction: str = "eps", hints: torch.Tensor | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) on `steps` evenly spaced timesteps; eta = 0 is deterministic,
    eta = 1 matches DDPM's variance. net_fn as for ddpm_sample; the eps of each step is the one
    consistent with the (clipped) predicted x0, whatever the denoiser predicts."""
    b, _, h, w = L.shape
    hinted = known_colours(hints)
    x = _noise_like(torch.empty(b, 2, h, w, device=L.device), generator)
    abar = schedule.abar.to(L.device)
    times = torch.linspace(schedule.T - 1, 0, min(steps, schedule.T), device=L.device)
    times = times.round().long().unique_consecutive()
    for j, i in enumerate(times.tolist()):
        t = torch.full((b,), i, device=L.device, dtype=torch.long)
        x0 = _keep_hints(schedule.predict_x0(x, t, net_fn(x, L, t).float(), prediction), hinted)
        eps = (x - abar[i].sqrt() * x0) / (1 - abar[i]).sqrt()  # consistent with the clipped x0
        abar_prev = abar[times[j + 1]] if j + 1 < len(times) else torch.ones((), device=L.device)
        sigma = eta * ((1 - abar_prev) / (1 - abar[i]) * (1 - abar[i] / abar_prev)).clamp_min(0).sqrt()
        x = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma ** 2).clamp_min(0).sqrt() * eps
        if j + 1 < len(times) and eta > 0:
            x = x + sigma * _noise_like(x, generator)
    return x


def _keep_hints(x0: torch.Tensor, hinted: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """The predicted x0 with the hinted pixels set to their hints' ab (no hint channels: x0)."""
    if hinted is None:
        return x0
    ab, mask = hinted
    return torch.where(mask > 0, ab.to(x0.dtype), x0)


def _noise_like(x: torch.Tensor, generator=None) -> torch.Tensor:
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)


@dataclass(frozen=True)
class Config(HintInput, EncoderInput):
    diff_channels: int = setting(64, "channels of the denoiser's first level", minimum=1)
    diff_depth: int = setting(3, "halvings of the denoiser", minimum=1)
    prediction: str = setting("v", "what the denoiser predicts: v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans "
                              "and Ho 2022), the noise eps (Ho et al. 2020), or x0", choices=("v", "eps", "x0"))


LEGACY = {"prediction": "eps"}  # what checkpoints saved before a setting existed were trained with


SMOKE = {"diff_channels": 8, "diff_depth": 2}  # the tests' tiny network


def build(cfg: Config) -> Denoiser:
    return Denoiser(cfg.diff_channels, cfg.diff_depth, in_channels=in_channels(cfg), encoder_cfg=cfg)


def size_multiple(cfg: Config) -> int:
    return 2 ** cfg.diff_depth


def example_inputs(cfg: Config, L):
    """What forward takes in training (for the memory estimate): x_t, L and the timesteps."""
    return L.new_zeros(L.shape[0], 2, *L.shape[2:]), L, torch.zeros(L.shape[0], dtype=torch.long, device=L.device)
