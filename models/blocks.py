"""Small building blocks shared by the networks."""
from torch import nn


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class Up(nn.Module):
    """Bilinear x2 upsampling followed by conv-BN-ReLU (no checkerboard artefacts)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv = conv_bn_relu(c_in, c_out)

    def forward(self, x):
        return self.conv(self.up(x))
