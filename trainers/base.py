"""The trainer base: epoch loop, progress bar, validation, metrics, sample grids, logs, checkpoints.

A family implements a few hooks and inherits the rest:

    add_args(parser)                     its own flags (static method; shown in --help)
    configure_optimizers(total_steps)    -> ({name: optimizer}, {name: scheduler})
    train_step(batch) -> {name: loss}    one optimisation step; batch holds "L", "ab" (model scale)
                                         and "rgb" (in [0, 1]), all (B, C, H, W) on the device
    predict_ab(L) -> ab                  inference; the default calls the network
    extra_state() / load_extra_state(d)  anything else a checkpoint must hold (EMA, a critic, ...)

Set `needs_training = False` for a family with nothing to learn (the grey baseline).
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

import metrics
from colorize_data import compose_rgb, rgb_to_model, uint8_to_float
from trainers import checkpoint


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


class RunLog:
    """Scalars and images of a run: appended to `history.jsonl` in the run folder and, when a
    wandb run is given, sent to it. Holds no global state; main.py owns the wandb run."""

    def __init__(self, run_dir=None, wandb_run=None):
        self.run_dir = Path(run_dir) if run_dir else None
        self.wandb = wandb_run

    def scalars(self, values: dict, step: int) -> None:
        values = {k: (float(v) if v is not None else None) for k, v in values.items()}
        if self.run_dir:
            with open(self.run_dir / "history.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in values.items() if v is not None}, step=step)

    def image(self, key: str, path, step: int, caption: str = "") -> None:
        if self.wandb is not None:
            import wandb

            self.wandb.log({key: wandb.Image(str(path), caption=caption)}, step=step)

    def summary(self, values: dict) -> None:
        if self.wandb is not None:
            self.wandb.summary.update({k: v for k, v in values.items() if v is not None})


def save_grid(path, L: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> None:
    """One row per image: grey input | prediction | ground truth."""
    from torchvision.utils import save_image

    grey = compose_rgb(L, torch.zeros_like(L).repeat(1, 2, 1, 1))
    rows = torch.stack([grey.cpu(), pred.cpu(), target.cpu()], dim=1).flatten(0, 1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_image(rows, str(path), nrow=3, padding=2, pad_value=1.0)


class Trainer:
    needs_training = True
    uses_flags: tuple = ()  # global flags beyond the common ones that this family honours

    @staticmethod
    def add_args(parser) -> None:
        pass

    def __init__(self, model: torch.nn.Module, args, device, run_dir=None, log: RunLog | None = None,
                 echo=print):
        self.model = model.to(device)
        self.args, self.device = args, torch.device(device)
        self.run_dir = Path(run_dir) if run_dir else None
        self.log = log or RunLog()
        self.echo = echo
        self.epoch = 0          # completed epochs
        self.step = 0           # completed optimisation steps
        self.best_metric = math.inf
        self.optimizers: dict = {}
        self.schedulers: dict = {}
        self._lpips = None

    # -- hooks -----------------------------------------------------------------------------
    def configure_optimizers(self, total_steps: int):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.args.learning_rate, betas=(0.9, 0.99),
                                weight_decay=0.0)
        scheds = {}
        if getattr(self.args, "lr_schedule", "cosine") == "cosine":
            scheds["model"] = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
        return {"model": opt}, scheds

    def train_step(self, batch: dict) -> dict:
        raise NotImplementedError

    def predict_ab(self, L: torch.Tensor) -> torch.Tensor:
        return self.model(L)

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # -- machinery -------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> dict:
        """uint8 (B, 3, H, W) on any device -> dict of rgb, L, ab on the trainer's device."""
        rgb = uint8_to_float(images.to(self.device, non_blocking=True))
        L, ab = rgb_to_model(rgb)
        return {"rgb": rgb, "L": L, "ab": ab}

    def setup_training(self, steps_per_epoch: int) -> None:
        if self.needs_training:
            self.optimizers, self.schedulers = self.configure_optimizers(steps_per_epoch * self.args.epochs)

    @property
    def lpips(self) -> metrics.LPIPS:
        if self._lpips is None:
            self._lpips = metrics.LPIPS(self.device, enabled=getattr(self.args, "lpips", "auto") == "auto")
        return self._lpips

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, batch_size: int, keep: int = 0):
        """Metrics over uint8 (N, 3, S, S) images; returns (MetricAccumulator, first `keep`
        (L, prediction, ground truth) for a grid)."""
        self.model.eval()
        acc = metrics.MetricAccumulator(self.lpips)
        kept = []
        for i in range(0, len(images), batch_size):
            b = self.prepare(images[i:i + batch_size])
            pred = compose_rgb(b["L"], self.predict_ab(b["L"]))
            acc.update(pred, b["rgb"])
            if sum(len(k[0]) for k in kept) < keep:
                kept.append((b["L"].cpu(), pred.cpu(), b["rgb"].cpu()))
        grid = [torch.cat(t)[:keep] for t in zip(*kept)] if kept else None
        return acc, grid

    def fit(self, loader, val_images: torch.Tensor | None) -> dict:
        """Train from epoch self.epoch + 1 to args.epochs; returns the last validation metrics."""
        args = self.args
        last_val = {}
        if not self.needs_training:  # nothing to learn: validate once and checkpoint
            last_val = self.validate(val_images)
            self.save_checkpoints(last_val)
            return last_val
        for epoch in range(self.epoch + 1, args.epochs + 1):
            t0, seen = time.time(), 0
            self.model.train()
            sums, counts = defaultdict(float), defaultdict(int)  # a term may be absent some steps
            bar = tqdm(loader, desc=f"{args.model} epoch {epoch}/{args.epochs}", leave=False,
                       dynamic_ncols=True, mininterval=1.0)
            for images in bar:
                batch = self.prepare(images)
                losses = {k: float(v) for k, v in self.train_step(batch).items()}
                bad = [k for k, v in losses.items() if not math.isfinite(v)]
                if bad:
                    raise TrainingDiverged(
                        f"non-finite {', '.join(bad)} at step {self.step + 1} (epoch {epoch}); stopped. "
                        f"The last good checkpoint, if any, is intact in {self.run_dir}")
                self.step += 1
                for s in self.schedulers.values():
                    s.step()
                n = len(images)
                seen += n
                for k, v in losses.items():
                    sums[k] += v * n
                    counts[k] += n
                bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
            self.epoch = epoch
            elapsed = time.time() - t0
            scalars = {f"train/{k}": v / counts[k] for k, v in sums.items()}
            scalars.update({"epoch": epoch, "train/images_per_s": seen / max(elapsed, 1e-9)})
            for name, opt in self.optimizers.items():
                scalars[f"train/lr_{name}"] = opt.param_groups[0]["lr"]
            self.log.scalars(scalars, self.step)
            val = {}
            if val_images is not None and len(val_images) and (epoch % args.val_every == 0 or epoch == args.epochs):
                val = last_val = self.validate(val_images)
            self.echo(f"epoch {epoch}/{args.epochs}: " + ", ".join(
                f"{k.split('/', 1)[1]} {v:.4f}" for k, v in scalars.items() if k.startswith("train/") and "lr" not in k)
                + "".join(f", val {k} {v:.4f}" for k, v in val.items() if k in ("delta_e", "ssim")))
            self.save_checkpoints(val)
        return last_val

    def validate(self, val_images) -> dict:
        if val_images is None or not len(val_images):
            return {}
        acc, grid = self.evaluate(val_images, self.args.batch_size, keep=self.args.num_images)
        val = acc.summary()
        self.log.scalars({f"val/{k}": v for k, v in val.items() if k != "n_images"}, self.step)
        if grid and self.run_dir:
            path = self.run_dir / "samples" / f"epoch_{self.epoch:04d}.png"
            save_grid(path, *grid)
            self.log.image("val/samples", path, self.step, caption="grey | prediction | ground truth")
        return val

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format_version": checkpoint.FORMAT_VERSION,
            "family": self.args.model,
            "args": {k: v for k, v in vars(self.args).items() if isinstance(v, (str, int, float, bool, type(None)))},
            "epoch": self.epoch,
            "step": self.step,
            "best_metric": self.best_metric,
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, ckpt: dict, training: bool = True) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.epoch, self.step = ckpt.get("epoch", 0), ckpt.get("step", 0)
        self.best_metric = ckpt.get("best_metric", math.inf)
        if training:
            for k, o in self.optimizers.items():
                if k in ckpt.get("optimizers", {}):
                    o.load_state_dict(ckpt["optimizers"][k])
            for k, s in self.schedulers.items():
                if k in ckpt.get("schedulers", {}):
                    s.load_state_dict(ckpt["schedulers"][k])
        self.load_extra_state(ckpt.get("extra", {}))

    def save_checkpoints(self, val: dict) -> None:
        """last.pt always; best.pt when validation delta E improves (or without validation);
        epoch_N.pt every --save_every epochs."""
        if self.run_dir is None:
            return
        state = self.state_dict()
        score = val.get("delta_e", math.inf) if val else math.inf
        improved = score < self.best_metric or (not val and not (self.run_dir / "best.pt").exists())
        if improved and val:
            self.best_metric = state["best_metric"] = score
        checkpoint.save_atomic(state, self.run_dir / "last.pt")
        if improved or not (self.run_dir / "best.pt").exists():
            checkpoint.save_atomic(state, self.run_dir / "best.pt")
        every = getattr(self.args, "save_every", 0)
        if every and self.epoch and self.epoch % every == 0:
            checkpoint.save_atomic(state, self.run_dir / f"epoch_{self.epoch:04d}.pt")
