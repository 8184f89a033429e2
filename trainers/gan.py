"""Adversarial training, pix2pix style (Isola et al. 2017), for `gan` and `unetgan`.

The two families differ only in the generator they build (models/gan.py, models/unet.py). The
discriminator is conditional (it sees L with ab) and judges patches. Per step: a D step on (real,
detached fake), then a G step with D frozen; G's loss is the adversarial term plus
lambda_l1 * L1(ab). For the first --pretrain_epochs epochs G learns from L1 alone (the idea behind
DeOldify's "NoGAN"), so D starts against a generator that already colours plausibly; those
epochs never become best.pt of a run that goes on to adversarial epochs.

Adversarial losses, on D's logits:
    bce    non-saturating: D minimises BCE(real, 1) + BCE(fake, 0); G minimises BCE(D(fake), 1)
    lsgan  least squares (Mao et al. 2017): (D(real) - 1)^2 + D(fake)^2; G: (D(fake) - 1)^2
    hinge  (Lim and Ye 2017; Miyato et al. 2018): relu(1 - D(real)) + relu(1 + D(fake)); G: -D(fake)
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models import hints
from models.config import setting
from models.gan import PatchDiscriminator
from trainers.base import TrainConfig, Trainer


def d_loss_fn(kind, real, fake):
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    if kind == "lsgan":
        return ((real - 1) ** 2).mean() + (fake ** 2).mean()
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def g_loss_fn(kind, fake):
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind == "lsgan":
        return ((fake - 1) ** 2).mean()
    return -fake.mean()


@dataclass(frozen=True)
class GANConfig(TrainConfig):
    learning_rate: float = setting(2e-4, "peak learning rate of AdamW (pix2pix's, with betas (0.5, 0.999))",
                                   above=0.0)
    gan_loss: str = setting("bce", "adversarial loss: non-saturating BCE, least squares, or hinge",
                            choices=("bce", "lsgan", "hinge"))
    lambda_l1: float = setting(100.0, "weight of L1 on ab in G's loss", minimum=0.0)
    pretrain_epochs: int = setting(0, "epochs of L1-only generator warm-up", minimum=0)
    lr_d: float | None = setting(None, "discriminator learning rate (None: --learning_rate)", above=0.0)
    d_channels: int = setting(64, "channels of D's first layer", minimum=1)
    d_layers: int = setting(3, "stride-2 layers of D (pix2pix's 70x70 PatchGAN: 3); fewer for small images",
                            minimum=1)
    spectral_norm: bool = setting(False, "spectral normalisation in D (instead of BN)")


class GANTrainer(Trainer):
    Config = GANConfig

    def __init__(self, model, cfg, device, run_dir=None, log=None, echo=print, training=True, **kw):
        super().__init__(model, cfg, device, run_dir, log, echo, training, **kw)
        self.disc = self.disc_net = None  # the critic exists only to train: test and colorize never build it
        if training:
            layers = max(1, min(cfg.d_layers, int(math.log2(cfg.image_size)) - 3))
            d_in = 2 + hints.in_channels(self.network_cfg)  # ab and what the generator sees (L, and hints)
            self.disc, self.disc_net = self.wrap(PatchDiscriminator(d_in, cfg.d_channels, layers, cfg.spectral_norm))

    def configure_optimizers(self, total_steps):
        a = self.cfg
        opts = {"generator": self.adam(self.model.parameters(), a.learning_rate, betas=(0.5, 0.999)),
                "discriminator": self.adam(self.disc.parameters(), a.lr_d or a.learning_rate, betas=(0.5, 0.999))}
        return opts, self.cosine(opts, total_steps)

    def train_step(self, batch):
        a, L, ab, hinted = self.cfg, batch["L"], batch["ab"], hints.given(batch["hints"])
        with self.autocast():
            fake = self.net(L, **hinted)
        out = {}
        adversarial = self.epoch >= a.pretrain_epochs  # self.epoch counts completed epochs
        if adversarial:
            self.disc.requires_grad_(True)
            with self.autocast():
                d_real, d_fake = self.disc_net(L, ab, **hinted), self.disc_net(L, fake.detach(), **hinted)
            d_real, d_fake = d_real.float(), d_fake.float()
            loss_d = d_loss_fn(a.gan_loss, d_real, d_fake)
            self.optimize("discriminator", loss_d)
            threshold = 0.5 if a.gan_loss == "lsgan" else 0.0
            out.update(d_loss=loss_d.detach(), d_acc_real=(d_real > threshold).float().mean(),
                       d_acc_fake=(d_fake < threshold).float().mean())
        self.disc.requires_grad_(False)
        l1 = F.l1_loss(fake.float(), ab)
        loss_g = a.lambda_l1 * l1
        if adversarial:
            with self.autocast():  # the bare module: D is not updated here, so DDP has nothing to sync
                judged = self.disc(L, fake, **hinted)
            g_adv = g_loss_fn(a.gan_loss, judged.float())
            loss_g = loss_g + g_adv
            out["g_adv"] = g_adv.detach()
        self.optimize("generator", loss_g)
        out.update(g_l1=l1.detach(), g_loss=loss_g.detach())
        return out

    def best_phase(self):
        """The L1-only warm-up epochs are not the adversarial method: best.pt comes from the
        adversarial epochs, unless the run is all warm-up."""
        a = self.cfg
        if self.epoch > a.pretrain_epochs:
            return ""
        return "pretrain" if a.pretrain_epochs >= a.epochs else None

    def extra_state(self):
        return {"discriminator": self.disc.state_dict()} if self.disc is not None else {}

    def load_extra_state(self, state):
        if "discriminator" in state and self.disc is not None:
            self.disc.load_state_dict(state["discriminator"])
