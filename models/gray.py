"""The trivial colorizer: keeps L, predicts ab = 0 (a grey image). No parameters, no training.

(B, 1, H, W) L in [-1, 1] -> (B, 2, H, W) zeros. The first row of every comparison: a model that
does not beat it on delta E has learned less than predicting no colour at all."""
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Config:
    """Nothing to configure."""


class Gray(nn.Module):
    def forward(self, L: torch.Tensor) -> torch.Tensor:  # takes no hints (no HintInput)
        return L.new_zeros(L.shape[0], 2, *L.shape[2:])


SMOKE: dict = {}


def build(cfg: Config) -> Gray:
    return Gray()


def size_multiple(cfg: Config) -> int:
    return 1
