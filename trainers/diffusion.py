"""Conditional diffusion for `unetddpm` and `unetddim`: one model, one checkpoint, two samplers.

Training is identical for both names: t uniform in [0, T), x_t = q_sample(ab, t, eps), loss
MSE(f_theta(x_t, L, t), target) with the target the network's --prediction: v (Salimans and Ho
2022, the default), eps (Ho et al. 2020) or x0. The trainer base's exponential moving average of
the weights is on by default here (--ema_decay 0.999, warmed up) and used for sampling.
`unetddpm` samples ancestrally over all T steps; `unetddim` with DDIM over --steps steps and --eta;
either can load the other's checkpoint.

Validation is cheap on purpose: the noise-prediction loss on the validation split (fixed t and
noise) plus colour metrics on a fixed handful of images (--val_images) sampled with a short DDIM
(--val_steps). The whole test split is sampled only in test mode."""
import copy
from dataclasses import dataclass
from typing import ClassVar

import torch

from models.config import setting
from models.diffusion import NoiseSchedule, ddim_sample, ddpm_sample
from models.hints import given
from trainers.base import TrainConfig, Trainer
from trainers.inference import Colorizer, Sampling


@dataclass(frozen=True)
class DiffusionConfig(Sampling, TrainConfig):
    learning_rate: float = setting(2e-4, "peak learning rate of AdamW", above=0.0)
    ema_decay: float = setting(0.999, "exponential moving average of the weights, used for sampling (warmed up as "
                               "min(decay, (1+n)/(10+n))); 0: off. At test, 0 uses the raw weights",
                               minimum=0.0, maximum=1.0)
    schedule: str = setting("cosine", "noise schedule", choices=("cosine", "linear"))
    timesteps: int = setting(1000, "T, the diffusion steps of training", minimum=1)
    snr_gamma: float = setting(5.0, "Min-SNR loss weighting (Hang et al. 2023): each timestep's loss weighted so "
                               "that it counts as min(SNR, gamma) in x0 terms (5, the paper's, chosen by "
                               "validation: BENCHMARKS.md); 0: unweighted",
                               minimum=0.0)
    steps: int = setting(50, "sampling steps of DDIM (unetddim; unetddpm samples all T)", minimum=1, role="resume")
    eta: float = setting(0.0, "DDIM noise: 0 deterministic, 1 DDPM-like", minimum=0.0, maximum=1.0, role="resume")
    val_images: int = setting(16, "validation images sampled each validation", minimum=0, role="resume")
    val_steps: int = setting(20, "DDIM steps of those validation samples", minimum=1, role="resume")


@dataclass(frozen=True)
class DDIM:
    """DDIM over `steps` of the T steps: eta 0 deterministic, 1 DDPM-like (Song et al. 2021)."""
    steps: int
    eta: float = 0.0
    name: ClassVar[str] = "ddim"


@dataclass(frozen=True)
class DDPM:
    """Ancestral sampling over all T steps (Ho et al. 2020)."""
    name: ClassVar[str] = "ddpm"


class DiffusionColorizer(Colorizer):
    """Samples ab from noise with the denoiser, the way its `sampler` (a DDIM or DDPM value) says:
    unetddim's is DDIM(--steps, --eta), unetddpm's DDPM(). with_sampler gives a copy that samples
    another way (validation: a short DDIM), this one unchanged."""

    @classmethod
    def parts(cls, net, cfg, network_cfg, device, extra, echo=print):
        return {"schedule": NoiseSchedule(cfg.timesteps, cfg.schedule), "sampler": cls.default_sampler(cfg)}

    @staticmethod
    def default_sampler(cfg):
        return DDIM(cfg.steps, cfg.eta)

    def with_sampler(self, sampler) -> "DiffusionColorizer":
        other = copy.copy(self)
        other.sampler = sampler
        return other

    def sample(self, L, generator=None, hints=None):
        L = L.float()
        encoded = getattr(self.net, "encoded", None)
        with self.autocast():  # a pretrained encoder's features of L (--encoder): once for every step
            features = encoded.features(L) if encoded is not None else None

        def denoise(x_t, L, t):
            with self.autocast():
                return self.net(x_t, L, t, features=features, **given(hints)).float()

        if isinstance(self.sampler, DDPM):
            return ddpm_sample(denoise, self.schedule, L, generator, self.network_cfg.prediction, hints)
        return ddim_sample(denoise, self.schedule, L, self.sampler.steps, self.sampler.eta, generator,
                           self.network_cfg.prediction, hints)

    def predict_ab(self, L, hints=None):
        return self.sample(L, hints=hints)

    def sampling(self) -> dict:
        steps = self.cfg.timesteps if isinstance(self.sampler, DDPM) else self.sampler.steps
        return {**super().sampling(), "sampler": self.sampler.name, "sampling_steps": steps}

    def sample_ab(self, L, k, hints=None):
        return torch.stack([self.sample(L, hints=hints) for _ in range(k)])


class DDPMColorizer(DiffusionColorizer):
    @staticmethod
    def default_sampler(cfg):
        return DDPM()


class DiffusionTrainer(Trainer):
    LEGACY = {"snr_gamma": 0.0}  # what runs saved before --snr_gamma existed were trained with
    Config = DiffusionConfig
    Colorizer = DiffusionColorizer
    compatible = ("unetddpm", "unetddim")
    smoke = {"timesteps": 10, "steps": 3, "val_images": 2, "val_steps": 2}

    def __init__(self, model, cfg, device, run_dir=None, log=None, echo=print, training=True, **kw):
        super().__init__(model, cfg, device, run_dir, log, echo, training, **kw)
        self.schedule = NoiseSchedule(cfg.timesteps, cfg.schedule)

    def configure_optimizers(self, total_steps):
        opt = self.adam(self.model.parameters(), self.cfg.learning_rate, betas=(0.9, 0.999))
        return {"model": opt}, self.cosine({"model": opt}, total_steps)

    def noise_loss(self, net, ab, L, generator=None, hints=None):
        b = len(ab)
        t = torch.randint(0, self.schedule.T, (b,), generator=generator).to(ab.device)
        if generator is None:
            noise = torch.randn_like(ab)
        else:
            noise = torch.randn(ab.shape, generator=generator).to(ab.device)
        x_t = self.schedule.q_sample(ab, t, noise)  # float32 schedule arithmetic, outside autocast
        with self.autocast():
            pred = net(x_t, L, t, **given(hints))
        prediction = self.network_cfg.prediction
        error = (pred.float() - self.schedule.target(ab, t, noise, prediction)) ** 2
        if not self.cfg.snr_gamma:
            return error.mean()
        # Min-SNR-gamma: an x0 error weighted min(SNR, gamma); the eps and v errors are x0 errors
        # times SNR and SNR + 1, so divide by those (Hang et al. 2023, eq. 7 and table 1)
        snr = self.schedule.at(self.schedule.abar, t) / (1 - self.schedule.at(self.schedule.abar, t))
        per = {"eps": snr, "v": snr + 1, "x0": torch.ones_like(snr)}[prediction]
        return (error.mean((1, 2, 3)) * (snr.clamp(max=self.cfg.snr_gamma) / per).flatten()).mean()

    def train_step(self, batch):
        loss = self.noise_loss(self.net, batch["ab"], batch["L"], hints=batch["hints"])
        self.optimize("model", loss)
        return {"loss": loss.detach()}

    def validate(self, val_images):
        if val_images is None or not len(val_images):
            return {}
        self.model.eval()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            losses = []
            for i in range(0, len(val_images), self.cfg.batch_size):
                b = self.prepare(val_images[i:i + self.cfg.batch_size])
                losses.append(self.noise_loss(self.eval_model, b["ab"], b["L"], g, b["hints"]) * len(b["ab"]))
            val_loss = float(torch.stack(losses).sum()) / len(val_images)
        val = super().validate(val_images[: self.cfg.val_images])
        val["loss"] = val_loss
        self.log.scalars({"val/loss": val_loss}, self.step)
        return val

    def validation_colorizer(self):
        return self.colorizer.with_sampler(DDIM(self.cfg.val_steps, self.cfg.eta))  # short, whatever the family

    def benchmark_sampling(self, batch_size: int, iters: int) -> float:
        """DDIM sampling images/s at the trainer's image size (bench.py)."""
        import time

        L = torch.zeros(batch_size, 1, self.cfg.image_size, self.cfg.image_size, device=self.device)
        ddim = self.colorizer.with_sampler(DDIM(self.cfg.steps, self.cfg.eta))
        ddim.sample(L)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        for _ in range(max(1, iters // 10)):
            ddim.sample(L)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return batch_size * max(1, iters // 10) / (time.perf_counter() - t0)


class DDPMTrainer(DiffusionTrainer):
    Colorizer = DDPMColorizer


class DDIMTrainer(DiffusionTrainer):
    Colorizer = DiffusionColorizer
