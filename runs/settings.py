"""The run's settings: the device, the family's typed configs resolved from the command line and
a checkpoint's saved arguments (main.py's own options are RunConfig), what a resume may change
(the settings of role "resume"), --init_from.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import torch

from models import backbones, config
from models.config import setting
from registry import REGISTRY
from trainers import checkpoint as ckpt_io
from trainers.inference import inference_weights
from util.images import DEFAULT_MAX_IMAGE_PIXELS
from util.run_folder import RunFolder

ROLE_ALWAYS = ("resume", "train", "test", "colorize", "serve")  # what is run: the command line's, always


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """main.py's own options: what to run and on what, where results go, how it is watched. With
    the network's and the trainer's Config they are every setting of a run (args.json)."""
    model: str = setting("unet", "family to train or test", choices=tuple(REGISTRY), role=ROLE_ALWAYS)
    mode: str = setting("train", "colorize: colorize --input with a trained run (no data, no metrics); serve: a "
                        "local page and API that colorize an uploaded photo, with colour hints (runs/serve.py); "
                        "classifier: train the semantic-interpretability classifier on a data set with class folders",
                        choices=("train", "test", "colorize", "serve", "classifier"), role=ROLE_ALWAYS)
    seed: int = setting(0, "random seed (also decides the data split)")
    deterministic: bool = setting(False, "figures that do not depend on the machine's thread count: one CPU "
                                  "thread, deterministic kernels (slower: the demo run takes 1.7x as long)",
                                  role="resume")
    data: str | None = setting(None, "image folder (searched recursively; train/ test/ val/ subfolders are used as "
                               "splits), or the name of a public set (cifar10, cifar100, stl10, stl10-unlabeled, lfw, "
                               "flowers102, places365, food101, imagenet, coco: downloaded once; an existing path "
                               "wins). Default: Dataset/, built from scikit-image's photos when empty", role="resume")
    data_root: str | None = setting(None, "where named data sets are downloaded and laid out (default: "
                                    "$COLORIZATION_DATA, else ~/.cache/colorization/datasets)", role="resume")
    max_images: int = setting(0, "train on N images of the training split only, picked by --seed (0: all); the "
                              "validation and test splits are kept whole", minimum=0)
    input: str = setting("TestImages", "images colorized at full resolution: a file, a folder (recursive) or a glob "
                         "(quote it); in test mode after the metrics (\"\": none), in colorize mode alone",
                         role=("resume", "colorize"))
    output: str | None = setting(None, "colorize mode: where the PNGs go (default: "
                                 "RESULTS/RUN/colorize/WEIGHTS-INPUT/)", role="colorize")
    sheet: bool = setting(False, "colorize mode: also a side-by-side image per photo (grey | colorization(s) | "
                          "original)", role="colorize")
    hints: str | None = setting(None, "colorize mode, a --guided run: colour hints for the one --input image, at its "
                                "resolution: a JSON list of [x, y, colour] (colour \"#rrggbb\" or [r, g, b]) or a PNG "
                                "whose opaque pixels are the hints", role="colorize")
    hint_counts: str | None = setting(None, "test mode, a --guided run: also evaluate with this many hints revealed "
                                      "from the true colours per image, e.g. 0,1,2,5,10,20,50 (delta E, PSNR, FID "
                                      "per count; 0 is the automatic result)")
    results: str = setting("Results", "where runs are written: RESULTS/RUN_NAME/", role="resume")
    run_name: str | None = setting(None, "name of the run folder (default: the model name)", role="resume")
    load_size: int | None = setting(None, "training images are kept with this shorter side, then cropped "
                                    "(default: image_size)")
    crop: str = setting("random", "training crop: a random window, or a random 50-100%% window resized",
                        choices=("random", "resized"))
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps", role="resume")
    workers: int = setting(min(4, os.cpu_count() or 1), "threads that decode images (worker processes when "
                           "streaming)", minimum=0, role="resume")
    data_cache: str = setting("auto", "keep the decoded training set in memory, or stream it from disk; auto: "
                              "memory up to --cache_gb", choices=("auto", "memory", "stream"), role="resume")
    cache_gb: float = setting(8.0, "largest decoded training set kept in memory", minimum=0.0, role="resume")
    weights: str = setting("best", "checkpoint for test mode: best, last, an epoch number, or a file",
                           role=("test", "colorize", "serve"))
    host: str = setting("127.0.0.1", "serve mode: the address served (another than localhost opens the page to "
                        "the network)", role="serve")
    port: int = setting(8000, "serve mode: the port (0: any free one)", minimum=0, maximum=65535, role="serve")
    resume: bool = setting(False, "continue the run in RESULTS/RUN_NAME from last.pt", role=("resume", "train"))
    overwrite: bool = setting(False, "train: start afresh over an existing run folder (its own files are removed); "
                              "colorize: replace what --output holds from another model, or files no colorize run "
                              "wrote", role="resume")
    init_from: str | None = setting(None, "fine-tune: start a new run from the network weights of another run (a "
                                    "checkpoint file, a run folder or a run name under --results; best.pt, else "
                                    "last.pt), same family or one whose network fits (unet to unetgan's generator); "
                                    "its architecture is taken from it")
    wandb: str = setting("auto", "auto: online with an API key, else offline into the run folder; WANDB_MODE wins "
                         "over auto", choices=("auto", "online", "offline", "disabled"), role="resume")
    wandb_project: str = setting("colorization", "the wandb project runs are logged to", role="resume")
    log_checkpoints: bool = setting(False, "upload best.pt and last.pt to wandb as an artifact", role="resume")
    table_images: int = setting(64, "test images in the wandb table of per-image results (images and metrics)",
                                minimum=0, role="resume")
    max_image_pixels: int = setting(DEFAULT_MAX_IMAGE_PIXELS, "decompression-bomb guard: larger images are skipped",
                                    minimum=1, role="resume")


# the options listed before the training settings in --help; the rest come after them
RUN_OPTIONS_FIRST = ("model", "mode", "seed", "deterministic", "data", "data_root", "max_images", "input", "output",
                     "sheet", "hints", "hint_counts", "results", "run_name", "load_size", "crop")


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


def resolve(family, args, given: set, saved: dict | None = None, *, init_from: dict | None = None) -> Settings:
    """The one place a run's settings are decided: the defaults, then a checkpoint's saved
    settings (its network's are forced: they must match its weights; a differing flag is noted
    and ignored), then the flags given on this command line, then what the trainer derives from
    them, then the checks that need the result. This mode's own settings (RunConfig's of its role)
    are always the command line's. `init_from` (a checkpoint a new run starts from) forces only its
    network's settings."""
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
        for k in given | config.with_role(args.mode, RunConfig):
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


def check_resume_flags(args, saved: dict, given: set) -> None:
    """--resume with a flag whose value the run was not started with, and that a resume may not
    change, is refused (it was silently ignored: the optimizer kept its own learning rate)."""
    family = REGISTRY[args.model]
    may_change = config.with_role("resume", RunConfig, family.trainer.Config, family.network.Config)
    changed = [k for k in sorted(given - may_change)
               if k in saved and getattr(args, k) != saved[k]]
    if changed:
        raise UsageError("--resume continues the run as it was started; these cannot change: " + ", ".join(
            f"--{k} (run: {saved[k]}, given: {getattr(args, k)})" for k in changed)
            + ". Start a new run for them (--run_name NAME, or --overwrite)")
