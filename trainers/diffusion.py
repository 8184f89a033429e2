"""Conditional diffusion for `unetddpm` and `unetddim`: one model, one checkpoint, two samplers.

Training is identical for both names: t uniform in [0, T), x_t = q_sample(ab, t, eps), loss
MSE(eps_theta(x_t, L, t), eps) (Ho et al. 2020). The trainer base's exponential moving average of
the weights is on by default here (--ema_decay 0.999, warmed up) and used for sampling.
`unetddpm` samples ancestrally over all T steps; `unetddim` with DDIM over --steps steps and --eta;
either can load the other's checkpoint.

Validation is cheap on purpose: the noise-prediction loss on the validation split (fixed t and
noise) plus colour metrics on a fixed handful of images (--val_images) sampled with a short DDIM
(--val_steps). The whole test split is sampled only in test mode."""
import torch
import torch.nn.functional as F

from models.diffusion import NoiseSchedule, ddim_sample, ddpm_sample
from trainers.base import Trainer


class DiffusionTrainer(Trainer):
    stochastic = True
    compatible = ("unetddpm", "unetddim")
    uses_flags = ("steps", "num_samples")
    resume_may_change = ("eta", "val_images", "val_steps")  # sampling only
    sampler = "ddim"

    @staticmethod
    def add_args(parser):
        parser.add_argument("--schedule", choices=["cosine", "linear"], default="cosine", help="noise schedule")
        parser.add_argument("--timesteps", type=int, default=1000, help="T, the diffusion steps of training")
        parser.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 DDPM-like")
        parser.add_argument("--val_images", type=int, default=16, help="validation images sampled each validation")
        parser.add_argument("--val_steps", type=int, default=20, help="DDIM steps of those validation samples")
        parser.set_defaults(learning_rate=2e-4, ema_decay=0.999)

    def __init__(self, model, args, device, run_dir=None, log=None, echo=print, training=True):
        super().__init__(model, args, device, run_dir, log, echo, training)
        self.schedule = NoiseSchedule(args.timesteps, args.schedule)

    def configure_optimizers(self, total_steps):
        opt = self.adam(self.model.parameters(), self.args.learning_rate, betas=(0.9, 0.999))
        return {"model": opt}, self.cosine({"model": opt}, total_steps)

    def noise_loss(self, net, ab, L, generator=None):
        b = len(ab)
        t = torch.randint(0, self.schedule.T, (b,), generator=generator).to(ab.device)
        noise = torch.randn(ab.shape, generator=generator).to(ab.device) if generator is not None else torch.randn_like(ab)
        x_t = self.schedule.q_sample(ab, t, noise)  # float32 schedule arithmetic, outside autocast
        with self.autocast():
            pred = net(x_t, L, t)
        return F.mse_loss(pred.float(), noise)

    def train_step(self, batch):
        loss = self.noise_loss(self.net, batch["ab"], batch["L"])
        self.optimize("model", loss)
        return {"loss": loss.detach()}

    def _eps(self, x_t, L, t):
        with self.autocast():
            return self.eval_model(x_t, L, t).float()

    def sample(self, L, sampler=None, steps=None, generator=None):
        L = L.float()
        if (sampler or self.sampler) == "ddpm":
            return ddpm_sample(self._eps, self.schedule, L, generator)
        return ddim_sample(self._eps, self.schedule, L, steps or self.args.steps, self.args.eta, generator)

    def predict_ab(self, L):
        return self.sample(L)

    def sample_ab(self, L, k):
        return torch.stack([self.sample(L) for _ in range(k)])

    def validate(self, val_images):
        if val_images is None or not len(val_images):
            return {}
        self.model.eval()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            losses = []
            for i in range(0, len(val_images), self.args.batch_size):
                b = self.prepare(val_images[i:i + self.args.batch_size])
                losses.append(self.noise_loss(self.eval_model, b["ab"], b["L"], g) * len(b["ab"]))
            val_loss = float(torch.stack(losses).sum()) / len(val_images)
        handful = val_images[: self.args.val_images]
        sampler, steps = self.sampler, self.args.steps
        self.sampler, self.args.steps = "ddim", self.args.val_steps  # a short DDIM, whatever the family
        try:
            val = super().validate(handful)
        finally:
            self.sampler, self.args.steps = sampler, steps
        val["loss"] = val_loss
        self.log.scalars({"val/loss": val_loss}, self.step)
        return val

    def benchmark_sampling(self, batch_size: int, iters: int) -> float:
        """DDIM sampling images/s at the trainer's image size (bench.py)."""
        import time

        L = torch.zeros(batch_size, 1, self.args.image_size, self.args.image_size, device=self.device)
        self.sample(L, "ddim")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        for _ in range(max(1, iters // 10)):
            self.sample(L, "ddim")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return batch_size * max(1, iters // 10) / (time.perf_counter() - t0)


class DDPMTrainer(DiffusionTrainer):
    sampler = "ddpm"


class DDIMTrainer(DiffusionTrainer):
    sampler = "ddim"
