"""Regression on ab: one network, one pixel loss. Used by `resnet` and `unet`; `gray` subclasses it.

Losses on ab scaled by 1/110: l1, mse, or smooth_l1 (Huber with beta 0.05, about 5.5 ab units:
quadratic for small errors, L1 beyond). The default is chosen in docs/development.md ("Choices and their reasons")."""
from dataclasses import dataclass

import torch.nn.functional as F

from models.config import setting
from models.hints import given
from trainers.base import TrainConfig, Trainer

LOSSES = {
    "l1": F.l1_loss,
    "mse": F.mse_loss,
    "smooth_l1": lambda pred, target: F.smooth_l1_loss(pred, target, beta=0.05),
}


@dataclass(frozen=True)
class RegressionConfig(TrainConfig):
    loss: str = setting("l1", "pixel loss on ab", choices=tuple(sorted(LOSSES)))


class RegressionTrainer(Trainer):
    Config = RegressionConfig

    def train_step(self, batch):
        with self.autocast():
            pred = self.net(batch["L"], **given(batch["hints"]))
        loss = LOSSES[self.cfg.loss](pred.float(), batch["ab"])
        self.optimize("model", loss)
        return {"loss": loss.detach()}


class NoTraining(Trainer):
    """For families with nothing to learn: `fit` only validates and writes a checkpoint."""
    needs_training = False
