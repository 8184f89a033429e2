"""Small building blocks shared by the networks."""
from torch import nn

NORMS = ("batch", "group")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """BatchNorm, or GroupNorm (groups of up to 8 channels: independent of the batch, so several
    processes or tiny batches train exactly as one large batch would)."""
    if kind == "group":
        return nn.GroupNorm(max(1, channels // 8), channels)
    return nn.BatchNorm2d(channels)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), norm_layer(norm, c_out),
                         nn.ReLU(inplace=True))


class Up(nn.Module):
    """Bilinear x2 upsampling followed by conv-norm-ReLU (no checkerboard artefacts)."""

    def __init__(self, c_in: int, c_out: int, norm: str = "batch"):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv = conv_bn_relu(c_in, c_out, norm=norm)

    def forward(self, x):
        return self.conv(self.up(x))


NORM_HELP = "normalisation layers of the network"
