"""Self-describing checkpoints, written atomically and loaded without running any pickled code.

A checkpoint is one dict:
    format_version, family, args (every argument of the run), network and training (the two
    configs), epoch, step, best_metric, model (state dict), ema, extra {the family's state},
    and, in a full checkpoint, where training stands: optimizers {name: state}, schedulers,
    scalers, rng. last.pt is always full (--resume continues it); best.pt and epoch_N.pt are lean
    (what inference and fine-tuning need) unless --full_checkpoints.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pickle
import time
import zipfile
from pathlib import Path

import torch

from trainers import distributed
from util import files
from util.run_folder import RunFolder

FORMAT_VERSION = 1
RESUME_ONLY = ("optimizers", "schedulers", "scalers", "rng")  # what a lean checkpoint leaves out


def lean(state: dict) -> dict:
    """The checkpoint without what only resuming needs (optimizer moments are twice the weights)."""
    return {**{k: v for k, v in state.items() if k not in RESUME_ONLY}, "lean": True}


class CheckpointError(Exception):
    """A file that is not a usable checkpoint; the message names it."""


def load(path, family: str | tuple | None = None) -> dict:
    """Load with weights_only=True (tensors and plain containers only) and check that it is a
    checkpoint of this framework, and of `family` (a name, or a tuple of compatible names) when given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        with open(path, "rb") as f:
            head = f.read(2)
        if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):  # neither torch's zip nor a pickle
            raise CheckpointError(f"{path} is not a readable checkpoint (not a file torch.save writes)") from None
        raise CheckpointError(f"refusing to load {path}: it holds objects other than tensors and plain "
                              f"containers (weights_only=True refused it: {str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or another kind of file: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of this framework (no format_version/model)")
    problem = schema_problem(ckpt)
    if problem:
        raise CheckpointError(f"{path} is not a valid checkpoint: {problem}")
    if ckpt["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format {ckpt['format_version']}, newer than this code's {FORMAT_VERSION}")
    names = (family,) if isinstance(family, str) else family
    if names and ckpt.get("family") not in names:
        raise CheckpointError(f"{path} is a checkpoint of family '{ckpt.get('family')}', not '{names[0]}'")
    return ckpt


def schema_problem(ckpt: dict) -> str | None:
    """What is wrong with the types of a loaded checkpoint's fields, or None (the first problem found)."""
    return _container_problem(ckpt) or _tensors_problem(ckpt, "model") or _progress_problem(ckpt) \
        or _tensors_problem(ckpt, "ema")


def _container_problem(ckpt: dict) -> str | None:
    if not isinstance(ckpt["format_version"], int) or isinstance(ckpt["format_version"], bool):
        return f"format_version is {type(ckpt['format_version']).__name__}, not an integer"
    if not isinstance(ckpt.get("args"), dict):
        return "its args (the run's arguments) are missing"
    for key in ("model", "ema", "extra", "optimizers", "schedulers", "scalers", "network", "training"):
        if key in ckpt and not isinstance(ckpt[key], dict):
            return f"{key} is {type(ckpt[key]).__name__}, not a dict"
    return None


def _tensors_problem(ckpt: dict, key: str) -> str | None:
    if key in ckpt and not all(isinstance(k, str) and torch.is_tensor(v) for k, v in ckpt[key].items()):
        return f"{key} holds something other than named tensors"
    return None


def _progress_problem(ckpt: dict) -> str | None:
    """Where the run stands (counts, best metric, names) and its random state."""
    for key in ("epoch", "step", "batch_in_epoch", "skipped_steps"):
        value = ckpt.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{key} is {value!r}, not a whole number of 0 or more"
    if "epoch_batch_size" in ckpt and (not isinstance(ckpt["epoch_batch_size"], int) or ckpt["epoch_batch_size"] < 1):
        return f"epoch_batch_size is {ckpt['epoch_batch_size']!r}, not a positive whole number"
    if not isinstance(ckpt.get("best_metric", 0.0), (int, float)) or isinstance(ckpt.get("best_metric"), bool):
        return f"best_metric is {ckpt['best_metric']!r}, not a number"
    for key in ("best_by", "best_phase", "family"):
        if key in ckpt and not isinstance(ckpt[key], str):
            return f"{key} is {ckpt[key]!r}, not a string"
    rng = ckpt.get("rng", {})
    if not isinstance(rng, dict) or not all(torch.is_tensor(v) and v.dtype == torch.uint8 for v in rng.values()):
        return "rng (the random state) is not a set of byte tensors"
    return None


def check_shapes(build, args, ckpt: dict) -> None:
    """Compare the checkpoint's weights with the network its arguments describe, built on the
    meta device (no memory): a file whose saved widths would build a huge network, or whose
    weights do not fit, is refused before anything is allocated."""
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build(args).state_dict().items()}
    except Exception:  # a builder that cannot run on the meta device: the real load checks later
        return
    saved = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
    if expected != saved:
        wrong = sorted(set(expected) ^ set(saved)) or [k for k in expected if expected[k] != saved[k]]
        raise CheckpointError(f"the checkpoint's weights do not fit the network built from its saved arguments "
                              f"({len(wrong)} tensor(s) differ, e.g. {wrong[0]}: "
                              f"{saved.get(wrong[0])} saved, {expected.get(wrong[0])} expected)")


def names_run_checkpoint(weights: str) -> bool:
    """Whether --weights names one of the run's own checkpoints (best, last, an epoch number), not a file."""
    return weights in ("best", "last") or weights.isdigit()


def resolve_weights(run_dir, weights: str) -> Path:
    """--weights: 'best', 'last', an epoch number (epoch_N.pt) or the path of a checkpoint file."""
    if not names_run_checkpoint(weights):
        return Path(weights)
    run = RunFolder(run_dir)
    if weights.isdigit():
        return run.epoch_checkpoint(int(weights))
    return run.best if weights == "best" else run.last


class RunLocked(CheckpointError):
    """Another live process is writing to the run folder."""


class RunLock:
    """One writer per run folder and mode: `RUN/.train.lock` (checkpoints, history, samples) or
    `RUN/.test.lock` (metrics, grids, colorized images), so a checkpoint can be tested while its
    run trains. The file holds the owner's pid, host and mode, created with O_EXCL. A lock whose
    process is gone (same host) is stale and taken over, with a note; one of a live process, or of
    another host, refuses the second writer with a clear error."""

    def __init__(self, run_dir, mode: str, echo=print):
        self.run_dir, self.mode, self.echo = Path(run_dir), mode, echo
        self.path = RunFolder(self.run_dir).lock(mode)
        self.created_dir = False
        self.held = False

    GRACE_S = 5.0  # a lock file that names no process after this long was cut short, not being written

    def _owner(self) -> dict:
        try:  # any bytes at all: a lock file of random bytes is no owner, not a crash
            text = self.path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return {}
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def _nameless_and_old(self) -> bool:

        try:
            return time.time() - self.path.stat().st_mtime > self.GRACE_S
        except OSError:
            return False

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, OverflowError, ValueError):  # gone, or no process number at all
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True

    def __enter__(self):
        import socket

        self.created_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        me = f"pid={os.getpid()}\nhost={socket.gethostname()}\nmode={self.mode}\n"
        for attempt in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                pid = int(owner["pid"]) if owner.get("pid", "").isdigit() else 0
                same_host = owner.get("host") == socket.gethostname()
                if attempt == 0 and same_host and pid and not self._alive(pid):
                    self.echo(f"note: removed a stale lock of {self.run_dir} (process {pid} is gone)")
                    self.path.unlink(missing_ok=True)
                    continue
                if attempt == 0 and not pid and self._nameless_and_old():  # empty, cut short or garbage
                    self.echo(f"note: removed a lock file of {self.run_dir} that names no process ({self.path})")
                    self.path.unlink(missing_ok=True)
                    continue
                self._tidy()
                where = f"process {pid} ({owner.get('mode', '?')})" + ("" if same_host else f" on {owner.get('host')}")
                raise RunLocked(f"{self.run_dir} is in use by {where}: one {self.mode} writer per run folder. "
                                f"Wait for it, use another --run_name, or delete {self.path} if that process is "
                                f"really gone") from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return self
        raise RunLocked(f"could not take the lock {self.path}")

    def _tidy(self) -> None:
        if self.created_dir:  # leave no empty folder behind
            try:
                self.run_dir.rmdir()
            except OSError:
                pass

    def __exit__(self, *exc):
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
            self._tidy()
        return False


# ----------------------------------------------------------------------------------------------
# A trainer's checkpoints: what they hold, how they are restored, when best.pt is replaced
# ----------------------------------------------------------------------------------------------
def trainer_state(trainer) -> dict:
    """Everything a trainer is: its settings, where the run stands, weights, average, optimizers."""
    return {
        "format_version": FORMAT_VERSION,
        "family": trainer.family,
        "args": {k: v for k, v in trainer.record.items() if isinstance(v, (str, int, float, bool, type(None)))},
        "network": dataclasses.asdict(trainer.network_cfg) if trainer.network_cfg is not None else {},
        "training": dataclasses.asdict(trainer.cfg),
        "epoch": trainer.epoch,
        "step": trainer.step,
        "batch_in_epoch": trainer.batch_in_epoch,
        "epoch_batch_size": trainer.epoch_batch_size,
        "skipped_steps": trainer.nan.skipped_steps,
        "rng": {"torch": torch.get_rng_state(),
                **({"cuda": torch.cuda.get_rng_state(trainer.device)} if trainer.device.type == "cuda" else {})},
        "best_metric": trainer.best_metric,
        "best_by": trainer.cfg.best_by,
        "best_phase": trainer.best_phase_of_record,
        "model": trainer.model.state_dict(),
        **({"ema": trainer.ema.state_dict()} if trainer.ema is not None else {}),
        "optimizers": {k: o.state_dict() for k, o in trainer.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in trainer.schedulers.items()},
        "scalers": {k: s.state_dict() for k, s in trainer.scalers.items()},
        "extra": trainer.extra_state(),
    }


def restore(trainer, ckpt: dict) -> None:
    """The weights (and EMA, extra state) always; when training, also where the run stands:
    optimizers, schedulers, random state, the unfinished epoch."""
    training = trainer.training
    try:
        trainer.model.load_state_dict(ckpt["model"])
    except RuntimeError as e:  # e.g. a checkpoint from code whose defaults built another network
        detail = str(e).strip().splitlines()
        raise CheckpointError(
            f"the checkpoint's weights do not fit the network built from its saved arguments "
            f"({detail[1].strip() if len(detail) > 1 else detail[0]})") from None
    trainer.epoch, trainer.step = ckpt.get("epoch", 0), ckpt.get("step", 0)
    trainer.batch_in_epoch = ckpt.get("batch_in_epoch", 0) if training else 0
    began_with = ckpt.get("training", {}).get("batch_size", ckpt["args"].get("batch_size", trainer.cfg.batch_size))
    trainer.epoch_batch_size = (ckpt.get("epoch_batch_size", began_with) if trainer.batch_in_epoch
                                else trainer.cfg.batch_size)
    trainer.nan.skipped_steps = ckpt.get("skipped_steps", 0)
    same_metric = ckpt.get("best_by", "delta_e") == trainer.cfg.best_by
    trainer.best_metric = ckpt.get("best_metric", math.inf) if same_metric else math.inf
    trainer.best_phase_of_record = ckpt.get("best_phase", "")
    from trainers.inference import inference_weights  # (it imports this module)

    if trainer.ema is not None:  # older diffusion checkpoints kept it in "extra"; none at all: the weights
        trainer.ema.load_state_dict(inference_weights(ckpt))
    if training:
        try:  # a crafted or damaged file: a clear error, not a trace from deep inside torch
            rng = ckpt.get("rng", {})
            if "torch" in rng:
                torch.set_rng_state(rng["torch"])
            if "cuda" in rng and trainer.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], trainer.device)
            for group in ("optimizers", "schedulers", "scalers"):
                for k, obj in getattr(trainer, group).items():
                    if k in ckpt.get(group, {}):
                        obj.load_state_dict(ckpt[group][k])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise CheckpointError(f"the checkpoint's training state (random state, optimizer or "
                                             f"schedule) cannot be restored: {type(e).__name__}: "
                                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
        for s in trainer.schedulers.values():  # resumed with another --epochs: stretch the cosine
            if isinstance(s, torch.optim.lr_scheduler.CosineAnnealingLR) and s.T_max != trainer.total_steps:
                s.T_max = max(1, trainer.total_steps)
                for group, lr in zip(s.optimizer.param_groups, s._get_closed_form_lr()):
                    group["lr"] = lr
    trainer.load_extra_state(ckpt.get("extra", {}))


def selection_score(trainer, val: dict) -> float:
    """The --best_by validation metric as a score to minimise (delta E when it is missing)."""
    key = trainer.cfg.best_by
    if val and val.get(key) is None and key != "delta_e":
        if not getattr(trainer, "_said_best_by", False):
            trainer.echo(f"note: no validation {key} (is it off?); best.pt is picked by delta_e")
            trainer._said_best_by = True
        key = "delta_e"
    value = val.get(key) if val else None
    if value is None:
        return math.inf
    return value if key in ("delta_e", "lpips") else -value


def save(trainer, val: dict, only_last: bool = False) -> None:
    """last.pt always; best.pt when the --best_by validation metric improves within the current
    best_phase() (the first checkpoint of a new phase always replaces it; a phase of None never
    writes it), or without validation when there is none yet; epoch_N.pt every --save_every
    epochs. Only the first process writes."""
    refuse_non_finite(trainer)
    if only_last:  # a run stopped mid-epoch, or a --checkpoint_minutes checkpoint
        trainer.clock.checkpointed()
        if trainer.run_dir is not None:
            files.save_atomic(trainer.state_dict(), RunFolder(trainer.run_dir).last)
        distributed.barrier()
        return
    improved = new_best(trainer, val)
    trainer.clock.checkpointed()
    if trainer.run_dir is not None:
        state, run = trainer.state_dict(), RunFolder(trainer.run_dir)
        files.save_atomic(state, run.last)
        state = state if trainer.cfg.full_checkpoints else lean(state)  # best.pt, epoch_N.pt
        if improved:
            files.save_atomic(state, run.best)
        every = trainer.cfg.save_every
        if every and trainer.epoch and trainer.epoch % every == 0:
            files.save_atomic(state, run.epoch_checkpoint(trainer.epoch))
            if trainer.cfg.keep:  # a long run must not fill the disk
                for old in run.epoch_checkpoints()[:-trainer.cfg.keep]:
                    old.unlink()
    distributed.barrier()


def refuse_non_finite(trainer) -> None:
    """Never write a checkpoint of non-finite weights: it would pass for a model (one host read)."""
    from trainers.loop import TrainingDiverged

    tensors = [(k, v) for m in (*trainer.modules, trainer.ema) if m is not None
               for k, v in m.state_dict().items() if v.is_floating_point()]
    finite = torch.stack([v.isfinite().all() for _, v in tensors]).tolist() if tensors else []
    bad = [k for (k, _), ok in zip(tensors, finite) if not ok]
    if bad:
        raise TrainingDiverged(f"the weights became non-finite ({', '.join(bad[:3])}) at step {trainer.step}; "
                               f"no checkpoint written. The last good one, if any, is intact in "
                               f"{trainer.run_dir or 'the run folder'}")


def new_best(trainer, val: dict) -> bool:
    """Whether this checkpoint becomes best.pt (and the trainer's record of the best, updated)."""
    phase = trainer.best_phase()
    if phase is None:
        return False
    score = selection_score(trainer, val)
    # a new phase's first checkpoint replaces best.pt whatever its score; so does every
    # checkpoint of a run that has never been validated (the latest is then the best guess)
    if phase != trainer.best_phase_of_record or score < trainer.best_metric or score == trainer.best_metric == math.inf:
        trainer.best_metric, trainer.best_phase_of_record = score, phase
        return True
    return trainer.run_dir is not None and not RunFolder(trainer.run_dir).best.exists()
