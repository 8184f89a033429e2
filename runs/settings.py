"""The run's settings: the device, the family's typed configs resolved from the command line and
a checkpoint's saved arguments, what a resume may change, --init_from.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from models import backbones, config
from trainers import REGISTRY
from trainers import checkpoint as ckpt_io
from trainers.inference import inference_weights
from trainers.run_folder import RunFolder


class UsageError(Exception):
    """A bad argument found only once a checkpoint's architecture is known (main() reports it as
    argparse does, exit 2)."""


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(name: str) -> torch.device:
    """--device: auto (CUDA, else MPS, else CPU) or a device that is there; ValueError otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here (use auto or cpu)")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"--device {name}: MPS (Apple GPUs) is not available here (use auto or cpu)")
    return dev


def check_architecture(args, family) -> None:
    """Arguments that must suit the network they describe (the checkpoint's, when one is loaded)."""
    multiple = family.network.size_multiple(config.from_values(family.network.Config, args))
    if args.image_size < 16 or args.image_size % multiple:
        raise UsageError(f"--image_size {args.image_size} does not suit {args.model}: it must be at least 16 "
                         f"and a multiple of {multiple}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """A run's resolved configuration: main.py's options (with every value, as args.json and the
    checkpoint record them), the network's Config and the trainer's Config."""
    args: argparse.Namespace
    network: object
    training: object


def resolve(family, args, given: set, saved: dict | None = None, keep_from_cli: set = frozenset(),
            init_from: dict | None = None) -> Settings:
    """The one place a run's settings are decided: the defaults, then a checkpoint's saved
    settings (its network's are forced: they must match its weights; a differing flag is noted
    and ignored), then the flags given on this command line, then what the trainer derives from
    them, then the checks that need the result. `init_from` (a checkpoint a new run starts from)
    forces only its network's settings."""
    values = dict(vars(args))
    if init_from is not None:
        source = init_from.get("network") or init_from["args"]
        for k in config.names(family.network.Config):
            if k in source:
                if k in given and getattr(args, k) != source[k]:
                    print(f"note: --{k} {getattr(args, k)} ignored; --init_from's network was built with {source[k]}")
                values[k] = source[k]
    if saved is not None:
        fixed = set(config.names(family.network.Config))
        saved_values = {**getattr(family.network, "LEGACY", {}),  # settings older checkpoints did not record
                        **getattr(family.trainer, "LEGACY", {}),
                        **saved["args"], **saved.get("network", {})}  # "network": checkpoints since issue 15
        values = {**values, **saved_values}
        for k in given | keep_from_cli:
            if k in fixed and k in saved_values and getattr(args, k) != saved_values[k]:
                print(f"note: --{k} {getattr(args, k)} ignored; the checkpoint was built with {saved_values[k]}")
                continue
            values[k] = getattr(args, k)
    merged = argparse.Namespace(**values)
    if saved is not None or init_from is not None:  # a file's settings: checked as the command line's were
        wrong = (config.problems(config.from_values(family.network.Config, merged))
                 + config.problems(config.from_values(family.trainer.Config, merged)))
        if wrong:
            raise ckpt_io.CheckpointError(f"the checkpoint's saved settings are not valid ({'; '.join(wrong[:3])})")
    network_cfg, training_cfg = family.configs(merged)
    if backbones.encoded(network_cfg):  # its weights, before any work (Unavailable: main says where they go)
        backbones.check(network_cfg.encoder)
    merged = argparse.Namespace(**{**vars(merged), **dataclasses.asdict(training_cfg)})  # derived values included
    check_architecture(merged, family)
    if saved is not None:
        ckpt_io.check_shapes(family.network.build, network_cfg, saved)
    if init_from is not None:
        try:
            ckpt_io.check_shapes(family.network.build, network_cfg, {"model": inference_weights(init_from)})
        except ckpt_io.CheckpointError as e:
            raise ckpt_io.CheckpointError(f"--init_from ({init_from.get('family')}) cannot start {family_name(args)}: "
                                          f"{e}") from None
    return Settings(merged, network_cfg, training_cfg)


def family_name(args) -> str:
    return getattr(args, "model", "this family")


def load_init(spec: str, results: str) -> tuple[dict, Path]:
    """--init_from: a checkpoint file, a run folder or a run name under --results (its best.pt,
    else its last.pt), loaded whatever its family."""
    path = Path(spec)
    if not path.exists() and (Path(results) / spec).is_dir():
        path = Path(results) / spec
    if path.is_dir():
        run = RunFolder(path)
        path = run.best if run.best.is_file() else run.last
    if not path.is_file():
        raise UsageError(f"--init_from {spec}: no such checkpoint, run folder or run under {results}")
    return ckpt_io.load(path), path


# what a resumed run may change: its length, how it is watched and saved, where it runs. Anything
# else (learning rate, seed, loss, a family's training flags, ...) would make it another run.
RESUME_MAY_CHANGE = {"data_root", "checkpoint_minutes", "epochs", "batch_size", "val_every", "save_every", "num_images",
                     "workers", "device", "amp", "compile", "data_cache", "cache_gb", "wandb", "wandb_project",
                     "log_checkpoints", "table_images", "lpips", "fid", "fid_images", "nan_policy", "best_by",
                     "max_image_pixels", "input",
                     "results", "run_name", "data", "sync_bn", "overwrite", "steps", "num_samples",
                     "full_checkpoints", "keep"}


def check_resume_flags(args, saved: dict, given: set) -> None:
    """--resume with a flag whose value the run was not started with, and that a resume may not
    change, is refused (it was silently ignored: the optimizer kept its own learning rate)."""
    may_change = RESUME_MAY_CHANGE | set(REGISTRY[args.model].trainer.resume_may_change)
    changed = [k for k in sorted(given - may_change - {"model", "mode", "resume"})
               if k in saved and getattr(args, k) != saved[k]]
    if changed:
        raise UsageError("--resume continues the run as it was started; these cannot change: " + ", ".join(
            f"--{k} (run: {saved[k]}, given: {getattr(args, k)})" for k in changed)
            + ". Start a new run for them (--run_name NAME, or --overwrite)")
