"""Networks of the adversarial families.

Generator of `gan`: the UNet of models/unet.py without its skip connections, a plain
encoder-decoder (B, 1, H, W) L in [-1, 1] -> (B, 2, H, W) ab / 110. (`unetgan` uses the UNet itself.)

PatchDiscriminator (pix2pix, Isola et al. 2017): conditional, it sees L together with ab,
(B, 3, H, W) -> (B, 1, h, w) a grid of real/fake logits, one per overlapping patch, not one number
per image. Built by trainers/gan.py, which declares its flags."""
import torch
from torch import nn
from torch.nn.utils import spectral_norm as sn

from models import unet
from models.hints import conditioning, in_channels


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3, spectral_norm: bool = False):
        super().__init__()
        wrap = sn if spectral_norm else (lambda m: m)

        def block(c_in, c_out, stride, norm=True):
            mods = [wrap(nn.Conv2d(c_in, c_out, 4, stride, 1, bias=not norm or spectral_norm))]
            if norm and not spectral_norm:  # spectral norm replaces batch norm
                mods.append(nn.BatchNorm2d(c_out))
            return mods + [nn.LeakyReLU(0.2, inplace=True)]

        widths = [channels * min(2 ** i, 8) for i in range(layers + 1)]
        mods = block(in_channels, widths[0], 2, norm=False)
        for i in range(1, layers):
            mods += block(widths[i - 1], widths[i], 2)
        mods += block(widths[layers - 1], widths[layers], 1)
        mods.append(wrap(nn.Conv2d(widths[layers], 1, 4, 1, 1)))
        self.net = nn.Sequential(*mods)
        self.guided = in_channels > 3  # L and ab, and a hint map

    def forward(self, L: torch.Tensor, ab: torch.Tensor, *, hints=None) -> torch.Tensor:
        """L, the (guided: hint map) and ab, all the generator saw and made."""
        return self.net(torch.cat([conditioning(L, hints, self.guided), ab], dim=1))


Config = unet.Config
SMOKE = unet.SMOKE


def build(cfg: Config) -> unet.UNet:
    return unet.UNet(in_channels(cfg), channels=cfg.unet_channels, depth=cfg.unet_depth, skips=False, norm=cfg.norm,
                     encoder_cfg=cfg)


size_multiple = unet.size_multiple
