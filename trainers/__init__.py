"""The registry: every `--model` name, its network and the trainer that trains it. main.py has no
branches on model names; adding a family is one entry here (see README, "Adding a family")."""
from dataclasses import dataclass

import models.colorful
import models.diffusion
import models.gan
import models.gray
import models.resnet
import models.unet
import models.vae
from trainers.base import Trainer
from trainers.colorful import ColorfulTrainer
from trainers.diffusion import DDIMTrainer, DDPMTrainer
from trainers.gan import GANTrainer
from trainers.regression import NoTraining, RegressionTrainer
from trainers.vae import CVAEMDNTrainer, VAETrainer


@dataclass(frozen=True)
class Family:
    network: object           # a models/ module (or object) with add_args, build, size_multiple
    trainer: type[Trainer]
    description: str

    def add_args(self, parser) -> None:
        self.network.add_args(parser)
        self.trainer.add_args(parser)


REGISTRY = {
    "gray": Family(models.gray, NoTraining, "trivial baseline: keeps L, predicts no colour"),
    "resnet": Family(models.resnet, RegressionTrainer, "truncated ResNet-18 encoder + upsampling decoder"),
    "unet": Family(models.unet, RegressionTrainer, "UNet with skip connections"),
    "gan": Family(models.gan, GANTrainer, "encoder-decoder generator (no skips) + conditional PatchGAN"),
    "unetgan": Family(models.unet, GANTrainer, "UNet generator + conditional PatchGAN"),
    "basicvae": Family(models.vae.BASIC, VAETrainer, "conditional VAE, decoder without skips"),
    "unetvae": Family(models.vae.UNET, VAETrainer, "conditional VAE, UNet decoder with skips"),
    "cvae_mdn": Family(models.vae.CVAE_MDN, CVAEMDNTrainer, "CVAE + mixture density network (Deshpande et al. 2017)"),
    "colorful": Family(models.colorful, ColorfulTrainer, "Zhang et al. 2016: classification over ab bins"),
    "unetddpm": Family(models.diffusion, DDPMTrainer, "conditional diffusion UNet, ancestral DDPM sampling"),
    "unetddim": Family(models.diffusion, DDIMTrainer, "conditional diffusion UNet, DDIM sampling (--steps, --eta)"),
}
