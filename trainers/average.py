"""An exponential moving average of a network's weights (--ema_decay), what inference uses when a
run keeps one."""
from __future__ import annotations

import copy

import torch


class MovingAverage:
    """A frozen copy of `model` that follows it: each update moves it towards the model's weights
    by 1 - decay, the decay warmed up as min(decay, (1 + n) / (10 + n)) after n updates, so the
    random initial weights are forgotten quickly (a constant 0.999 would still hold 0.999^n of
    them: 0.91 after 90 steps). Buffers (BatchNorm statistics) are copied."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, n: int) -> None:
        """One update, `n` the updates before it."""
        decay = min(self.decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(list(self.module.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)
