"""Networks of the variational families: conditional VAEs and the mixture density network.

ConditionalVAE: q(z | ab, L) by a small convolutional encoder -> (mu, logvar), each (B, latent_dim);
the decoder is the UNet of models/unet.py on L with z joined at its bottleneck:
    basicvae  no skip connections: the decoder sees L only through the bottleneck (and z)
    unetvae   skips: the decoder gets multi-scale L features (z is then easy to ignore)
    cvae_mdn  Deshpande et al. (2017): the posterior encoder sees ab only; the conditional encoder
              on L feeds the decoder at every scale (skips)
decode(L, z) -> ab (B, 2, H, W), ab / 110, unbounded.

MDN (Deshpande et al. 2017): from grey-image features (the bottleneck of the conditional
encoder, (B, C, h, w)) to a mixture of K Gaussians over z: logits (B, K) and means (B, K, latent_dim).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from models import unet
from models.blocks import conv_bn_relu
from models.config import setting
from models.hints import conditioning, given, in_channels


@dataclass(frozen=True)
class Config(unet.Config):
    latent_dim: int = setting(64, "latent size of the variational families", minimum=1)


@dataclass(frozen=True)
class BasicConfig(Config):
    """basicvae's settings: those of the others, without --guided."""
    HINTS_REFUSED: ClassVar[str] = (
        "its decoder has no skip connections, so hints of a pixel or a few reach it only through the "
        "bottleneck, where they are lost (tested on CIFAR-10: delta E 10.63 with 0 and with 10 hints); "
        "unetvae, the same network with skips, takes them")
    guided: bool = setting(False, "no colour hints for basicvae", cli=False)


class PosteriorEncoder(nn.Module):
    def __init__(self, in_channels: int, latent_dim: int, channels: int = 32, depth: int = 3):
        super().__init__()
        layers, c = [], in_channels
        for i in range(depth):
            layers.append(conv_bn_relu(c, channels * 2 ** i, stride=2))
            c = channels * 2 ** i
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.mu, self.logvar = nn.Linear(c, latent_dim), nn.Linear(c, latent_dim)

    def forward(self, x):
        h = self.features(x)
        return self.mu(h), self.logvar(h).clamp(-10, 10)


class ConditionalVAE(nn.Module):
    def __init__(self, latent_dim: int, channels: int = 32, depth: int = 4, skips: bool = True,
                 posterior_sees_L: bool = True, norm: str = "batch", in_channels: int = 1, encoder_cfg=None):
        super().__init__()
        self.latent_dim, self.posterior_sees_L = latent_dim, posterior_sees_L
        self.encoder = PosteriorEncoder(in_channels + 2 if posterior_sees_L else 2, latent_dim, channels, min(depth, 4))
        self.decoder = unet.UNet(in_channels, 2, channels, depth, skips=skips, norm=norm, latent_dim=latent_dim,
                                 encoder_cfg=encoder_cfg)

    def posterior(self, L, ab, hints=None):
        if not self.posterior_sees_L:
            return self.encoder(ab)
        return self.encoder(torch.cat([conditioning(L, hints, self.decoder.guided), ab], 1))

    def decode(self, L, z, hints=None):
        return self.decoder(L, z, **given(hints))

    def forward(self, L, ab, *, hints=None):
        """Training pass: (ab prediction from a posterior sample, mu, logvar)."""
        mu, logvar = self.posterior(L, ab, hints)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decode(L, z, hints), mu, logvar


class MDN(nn.Module):
    def __init__(self, in_channels: int, latent_dim: int, components: int = 8, hidden: int = 256):
        super().__init__()
        self.k, self.latent_dim = components, latent_dim
        self.net = nn.Sequential(conv_bn_relu(in_channels, hidden), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, components * (1 + latent_dim)))

    def forward(self, features):
        out = self.net(features)
        return out[:, :self.k], out[:, self.k:].view(-1, self.k, self.latent_dim)


def mdn_loss(logits: torch.Tensor, means: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Deshpande et al. (2017): -log pi_k* + ||z - mu_k*||^2 with k* the component nearest to z,
    averaged over the batch."""
    d2 = ((means - z[:, None, :]) ** 2).sum(-1)           # (B, K)
    nearest = d2.argmin(1)
    log_pi = torch.log_softmax(logits, 1)
    rows = torch.arange(len(z), device=z.device)
    return (-log_pi[rows, nearest] + d2[rows, nearest]).mean()


class VAENetwork:
    """The `models/` interface (Config, build, size_multiple) of one variational family."""

    Config = Config
    SMOKE = {**unet.SMOKE, "latent_dim": 8}  # the tests' tiny network

    def __init__(self, skips: bool, posterior_sees_L: bool):
        self.skips, self.posterior_sees_L = skips, posterior_sees_L
        if not skips:
            self.Config = BasicConfig

    def build(self, cfg: Config) -> ConditionalVAE:
        return ConditionalVAE(cfg.latent_dim, cfg.unet_channels, cfg.unet_depth, self.skips,
                              self.posterior_sees_L, cfg.norm, in_channels(cfg), encoder_cfg=cfg)

    def size_multiple(self, cfg: Config) -> int:
        return unet.size_multiple(cfg)

    def example_inputs(self, cfg: Config, L):
        """What forward takes in training (for the memory estimate): L and the true ab."""
        return L, L.new_zeros(L.shape[0], 2, *L.shape[2:])


BASIC = VAENetwork(skips=False, posterior_sees_L=True)
UNET = VAENetwork(skips=True, posterior_sees_L=True)
CVAE_MDN = VAENetwork(skips=True, posterior_sees_L=False)
