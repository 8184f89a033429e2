"""The pieces of the trainer's epoch loop that keep count: what an epoch's steps add up to (Tally),
when to stop or write a mid-epoch checkpoint (StopClock), and what a non-finite loss does
(NanGuard, --nan_policy). trainers/base.py runs the loop with them.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict

import torch

from trainers import distributed

SYNC_EVERY = 25  # steps between the host reading losses back from the device (progress bar, NaN check)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


class NoTrainingData(TrainingDiverged):
    """An epoch in which not one training image could be used (every file grey or unreadable)."""


class TrainingStopped(Exception):
    """Training stopped on request (SIGINT/SIGTERM) after a step, with a checkpoint written."""


class Tally:
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

    def require_steps(self, batches, epoch: int) -> None:
        """NoTrainingData when a (fresh) epoch made no step: no training image could be used."""
        if not self.seen and not self.start:
            skipped = getattr(batches, "skipped", {})
            raise NoTrainingData(f"epoch {epoch} made no training step: no training image could be used"
                                 + (f" ({skipped.get(1, 0)} unreadable and {skipped.get(2, 0)} grey file(s) "
                                    f"skipped)" if skipped else "") + "; no checkpoint written")

    def scalars(self, epoch: int, world: int, optimizers: dict, extra: dict) -> dict:
        """The epoch's logged scalars: mean losses over every process, speed, `extra`, learning rates."""
        elapsed = time.time() - self.t0
        scalars = distributed.all_mean(self.means())
        scalars.update({"epoch": epoch, "train/images_per_s": self.seen * world / max(elapsed, 1e-9),
                        "train/epoch_seconds": elapsed, **extra})
        return scalars | {f"train/lr_{name}": opt.param_groups[0]["lr"] for name, opt in optimizers.items()}


def epoch_line(epoch: int, epochs: int, scalars: dict, val: dict | None) -> str:
    """The line printed after an epoch: its training scalars (no learning rates), val delta E and SSIM."""
    return (f"epoch {epoch}/{epochs}: " + ", ".join(
        f"{k.split('/', 1)[1]} {v:.4f}" for k, v in scalars.items() if k.startswith("train/") and "lr" not in k)
        + "".join(f", val {k} {v:.4f}" for k, v in (val or {}).items() if k in ("delta_e", "ssim")))


def finishing_batch_size(batches, epoch: int, batch_in_epoch: int, began_with: int, wanted: int, echo) -> int:
    """The batch size of an epoch: `wanted` (--batch_size), except for an epoch a resumed run stopped
    in with another one, which finishes with the size it began with (its position counts those batches)."""
    if batch_in_epoch and began_with != wanted:
        echo(f"note: the run stopped {batch_in_epoch} batches into epoch {epoch} with --batch_size {began_with}: "
             f"that epoch is finished with {began_with}, then --batch_size {wanted} applies")
        batches.set_batch_size(began_with)
        return began_with
    return wanted


class StopClock:
    """A stop request (set by the signal handler in runs/train.py) and --checkpoint_minutes: when
    a mid-epoch checkpoint is due."""

    def __init__(self, minutes: float):
        self.minutes, self.stop_requested, self.last_checkpoint = minutes, False, time.time()

    def checkpointed(self) -> None:
        self.last_checkpoint = time.time()

    def agreed(self, step: int, world: int, is_main: bool) -> tuple[bool, bool]:
        """(a stop was requested, a checkpoint is due), agreed by all processes: they look together
        every SYNC_EVERY steps, the first process's clock decides."""
        due = bool(self.minutes) and time.time() - self.last_checkpoint >= self.minutes * 60
        if world == 1:
            return self.stop_requested, due
        if step % SYNC_EVERY:
            return False, False
        flags = distributed.all_mean({"stop": float(self.stop_requested), "due": float(due and is_main)})
        return flags["stop"] > 0, flags["due"] > 0


class NanGuard:
    """--nan_policy: a non-finite loss stops the run (TrainingDiverged, naming the step), or with
    skip=True that optimizer step is skipped, counted, and its batch taken back out of BatchNorm's
    statistics; a run that skipped more than half its steps did not train and stops."""

    def __init__(self, skip: bool, where: str):
        self.skip, self.where = skip, where  # where: the run folder, for the message
        self.skipped_steps = 0
        self.skipped_now = False
        self._buffers = []

    def begin_step(self, modules) -> None:
        self.skipped_now = False
        self._buffers = [(b, b.clone()) for m in modules for b in m.buffers()] if self.skip else []

    def refuses(self, loss: torch.Tensor) -> bool:
        """True (and the step is skipped) for a non-finite loss under skip (reads the loss back: opt-in)."""
        if self.skip and not bool(torch.isfinite(loss.detach())):
            self.skipped_now = True
        return self.skipped_now

    def end_step(self) -> bool:
        """True when this step was skipped: its BatchNorm statistics restored, the step counted."""
        if self.skipped_now:
            for b, before in self._buffers:
                b.copy_(before)
            self.skipped_steps += 1
        self._buffers = []
        return self.skipped_now

    def check(self, first_bad: torch.Tensor, losses: dict, epoch: int) -> None:
        bad_step = int(first_bad)
        if bad_step >= 0:
            names = [k for k, v in losses.items() if not math.isfinite(float(v))] or list(losses)
            raise TrainingDiverged(f"non-finite {', '.join(names)} at step {bad_step} (epoch {epoch}); stopped. "
                                   f"The last good checkpoint, if any, is intact in {self.where}")

    def check_run(self, steps: int) -> None:
        if self.skip and self.skipped_steps * 2 > steps:
            raise TrainingDiverged(f"{self.skipped_steps} of {steps} steps were skipped for a non-finite loss "
                                   f"(--nan_policy skip): this run did not really train; lower --learning_rate?")
