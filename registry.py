"""The registry: every `--model` name, its network and the trainer that trains it. main.py has no
branches on model names; adding a family is one entry here (docs/development.md, "Adding a family")."""
import dataclasses
from dataclasses import dataclass

import models.colorful
import models.diffusion
import models.gan
import models.gray
import models.resnet
import models.unet
import models.vae
from models import config
from trainers.base import TrainConfig, Trainer
from trainers.colorful import ColorfulTrainer
from trainers.diffusion import DDIMTrainer, DDPMTrainer
from trainers.gan import GANTrainer
from trainers.regression import NoTraining, RegressionTrainer
from trainers.vae import CVAEMDNTrainer, VAETrainer


@dataclass(frozen=True)
class Family:
    network: object           # a models/ module (or object) with Config, build, size_multiple
    trainer: type[Trainer]
    description: str

    def own_settings(self) -> list[str]:
        """The names of the family's own flags: its network's, and its trainer's beyond the common
        TrainConfig (those keep their place among the common flags)."""
        common = set(config.names(TrainConfig))
        return config.names(self.network.Config) + [n for n in config.names(self.trainer.Config) if n not in common]

    def add_args(self, parser) -> None:
        """The family's own flags (network first), on a parser or an argument group."""
        config.add_fields(parser, self.network.Config)
        config.add_fields(parser, self.trainer.Config, names=set(self.own_settings()))

    def smoke_flags(self) -> list[str]:
        """Command-line flags of a tiny version of the family (network and training), for tests."""
        return [x for k, v in {**self.network.SMOKE, **self.trainer.smoke}.items() for x in (f"--{k}", str(v))]

    def configs(self, values):
        """(network Config, trainer Config) from a Namespace or dict of values (missing: defaults),
        with what the trainer derives from them."""
        network_cfg = config.from_values(self.network.Config, values)
        return network_cfg, self.trainer.derive(config.from_values(self.trainer.Config, values), network_cfg)

    def make(self, values, device, run_dir=None, log=None, training: bool = True, name: str = "", **kw) -> Trainer:
        """The network and its trainer, from a Namespace or dict of settings."""
        network_cfg, cfg = self.configs(values)
        record = {**dataclasses.asdict(network_cfg), **dataclasses.asdict(cfg),
                  **(vars(values) if not isinstance(values, dict) else values)}
        return self.trainer(self.network.build(network_cfg), cfg, device, run_dir, log, training=training,
                            network_cfg=network_cfg, family=name, record=record, **kw)


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
