"""UNet (Ronneberger et al. 2015): encoder-decoder with skip connections at every scale.

(B, 1, H, W) L in [-1, 1] -> (B, 2, H, W) ab / 110, unbounded (linear head). `depth` halvings, so
H and W must be multiples of 2**depth; channels double at each level from `channels`. With the
defaults (32 channels, depth 4) it has about 8.6 M parameters. Also the generator of `unetgan`;
with skips=False it is the plain encoder-decoder generator of `gan` (models/gan.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models import backbones
from models.backbones import EncoderInput
from models.blocks import NORM_HELP, NORMS, Up, conv_bn_relu
from models.config import setting
from models.hints import HintInput, conditioning, in_channels


@dataclass(frozen=True)
class Config(HintInput, EncoderInput):
    unet_channels: int = setting(32, "channels at full resolution", minimum=1)
    unet_depth: int = setting(4, "number of halvings", minimum=1)
    norm: str = setting("batch", NORM_HELP, choices=NORMS)


class UNet(nn.Module):
    def __init__(self, in_channels: int = 1, out_channels: int = 2, channels: int = 32, depth: int = 4,
                 skips: bool = True, norm: str = "batch", latent_dim: int = 0, encoder_cfg=None):
        super().__init__()
        self.skips, self.latent_dim = skips, latent_dim
        self.bottleneck_channels = channels * 2 ** depth
        widths = [channels * 2 ** i for i in range(depth + 1)]
        def double(c_in, c_out):
            return nn.Sequential(conv_bn_relu(c_in, c_out, norm=norm), conv_bn_relu(c_out, c_out, norm=norm))

        self.stem = double(in_channels, widths[0])
        self.guided = in_channels > 1  # L and a hint map (models/hints.py)
        self.down = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), double(widths[i], widths[i + 1]))
                                  for i in range(depth))
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], norm) for i in reversed(range(depth)))
        self.merge = nn.ModuleList(double((2 if skips else 1) * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        if latent_dim:  # a latent code joins the features at the bottleneck (the VAE decoders)
            self.fuse = nn.Sequential(nn.Conv2d(widths[-1] + latent_dim, widths[-1], 1), nn.ReLU(inplace=True))
        self.encoded = (backbones.join(encoder_cfg, widths[-1], tuple(reversed(widths[:-1])))
                        if encoder_cfg is not None else None)

    def encode(self, L: torch.Tensor, features=None, hints=None):
        """Bottleneck features (B, C, h, w), with a pretrained encoder's features of the grey image
        joined when the network has one (--encoder), and the skip features of every scale."""
        x = self.stem(conditioning(L, hints, self.guided))
        skips = []
        for down in self.down:
            skips.append(x)
            x = down(x)
        if self.encoded is not None:
            x = self.encoded(x, L, features)
        return x, skips

    def forward(self, L: torch.Tensor, z: torch.Tensor | None = None, features=None, *, hints=None) -> torch.Tensor:
        if self.encoded is not None and self.encoded.levels and features is None:
            features = self.encoded.features(L)  # once, for the bottleneck and every decoder level
        x, skips = self.encode(L, features, hints)
        if self.latent_dim:
            z = x.new_zeros(x.shape[0], self.latent_dim) if z is None else z.to(x.dtype)
            x = self.fuse(torch.cat([x, z[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1))
        for level, (up, merge) in enumerate(zip(self.up, self.merge), 1):
            x = up(x)
            skip = skips.pop()
            x = merge(torch.cat([x, skip], dim=1) if self.skips else x)
            if self.encoded is not None and self.encoded.levels:
                x = self.encoded(x, L, features, level)
        return self.head(x)


SMOKE = {"unet_channels": 8, "unet_depth": 2}  # the tests' tiny network


def build(cfg: Config) -> UNet:
    return UNet(in_channels(cfg), channels=cfg.unet_channels, depth=cfg.unet_depth, norm=cfg.norm, encoder_cfg=cfg)


def size_multiple(cfg: Config) -> int:
    return 2 ** cfg.unet_depth
