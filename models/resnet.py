"""ResNet-18-style encoder, truncated after its early stages, with an upsampling decoder.

(B, 1, H, W) L in [-1, 1] -> (B, 2, H, W) ab / 110, unbounded (a linear head, so every target
is reachable). The encoder is ResNet-18's stem (7x7 conv, stride 2, max-pool) and its first two
stages (64 and 128 channels, features at 1/8 resolution); three bilinear x2 upsampling steps bring
the features back to full resolution. Trained from scratch. H and W must be multiples of 8."""
from dataclasses import dataclass

import torch
from torch import nn

from models import backbones
from models.backbones import EncoderInput
from models.blocks import NORM_HELP, NORMS, Up, norm_layer
from models.config import setting
from models.hints import HintInput, conditioning, in_channels


@dataclass(frozen=True)
class Config(HintInput, EncoderInput):
    resnet_width: int = setting(64, "channels of the first stage", minimum=1)
    norm: str = setting("batch", NORM_HELP, choices=NORMS)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), norm_layer(norm, c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), norm_layer(norm, c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm_layer(norm, c_out)))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class ResNetColorizer(nn.Module):
    def __init__(self, width: int = 64, norm: str = "batch", in_channels: int = 1, encoder_cfg=None):
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, w, 7, 2, 3, bias=False), norm_layer(norm, w), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),                                            # 1/4
            BasicBlock(w, w, norm=norm), BasicBlock(w, w, norm=norm),         # layer1
            BasicBlock(w, 2 * w, 2, norm), BasicBlock(2 * w, 2 * w, norm=norm))  # layer2, 1/8
        self.decoder = nn.Sequential(Up(2 * w, w, norm), Up(w, w // 2, norm), Up(w // 2, w // 4, norm),
                                     nn.Conv2d(w // 4, 2, 3, 1, 1))
        self.encoded = backbones.join(encoder_cfg, 2 * w) if encoder_cfg is not None else None  # --encoder
        self.guided = in_channels > 1

    def forward(self, L: torch.Tensor, features=None, *, hints=None) -> torch.Tensor:
        x = self.encoder(conditioning(L, hints, self.guided))
        if self.encoded is not None:
            x = self.encoded(x, L, features)
        return self.decoder(x)


SMOKE = {"resnet_width": 8}  # the tests' tiny network


def build(cfg: Config) -> ResNetColorizer:
    return ResNetColorizer(cfg.resnet_width, cfg.norm, in_channels(cfg), encoder_cfg=cfg)


def size_multiple(cfg: Config) -> int:
    return 8
