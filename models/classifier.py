"""A small image classifier for semantic interpretability (Zhang et al. 2016, section 3.2): trained
on the colour training images, then asked to recognise colour, grey and colorized test images.

(B, 3, H, W) RGB in [0, 1] -> (B, classes) logits. Three conv-BN-ReLU stages with max-pooling,
global average pooling, a linear layer: small enough to train in minutes on CIFAR-10."""
import torch
from torch import nn

from models.blocks import conv_bn_relu


class SmallClassifier(nn.Module):
    def __init__(self, classes: int, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn_relu(3, w), conv_bn_relu(w, w), nn.MaxPool2d(2),
            conv_bn_relu(w, 2 * w), conv_bn_relu(2 * w, 2 * w), nn.MaxPool2d(2),
            conv_bn_relu(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * w, classes)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features((rgb - 0.5) / 0.25))
