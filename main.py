"""Train and test colorization families from one command line.

    python main.py                                   # unet on the built-in demo data
    python main.py --model unet --mode train --data DIR --image_size 64
    python main.py --model unet --mode test          # test split + every image in TestImages/
    python main.py --model unet --mode colorize --input photo.jpg --sheet   # your own photos
    python main.py --model unet --help               # shows the family's own flags too

The command line (main.py's own options, the common training settings and the family's, all
generated from typed configs), its validation before any work, and dispatch to
runs/ (train, test, colorize, classifier) under one lock per run folder and mode.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import colorize_data as cd
import public_data
from models import backbones, config
from registry import REGISTRY
from runs import memory, photos
from runs.classifier import classifier
from runs.colorize import colorize
from runs.photos import input_files
from runs.serve import serve
from runs.settings import RUN_OPTIONS_FIRST, RunConfig, UsageError, check_architecture, pick_device
from runs.test import test
from runs.train import train
from trainers import checkpoint as ckpt_io
from trainers import distributed
from trainers.base import TrainConfig
from trainers.loop import TrainingDiverged
from util import files, images
from util.output_folder import OutputConflict
from util.run_folder import RunFolder


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, once: not for switches and empty defaults, nor where the help
    text already says what the default is."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False) or "(default" in text or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, but a refusal is its one line and a pointer to --help, not the whole usage block
    first (exit 2, as argparse)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n(python main.py --help lists every option)\n")


def common_parser(add_help: bool = True, conflict_handler: str = "error", family=None) -> argparse.ArgumentParser:
    """main.py's own options, and the training settings every family shares (TrainConfig, with
    `family`'s defaults when given)."""
    p = Parser(description="Automatic image colorization: train and compare model families.",
               add_help=add_help, formatter_class=HelpFormatter, conflict_handler=conflict_handler,
               allow_abbrev=False)  # --encoder is not short for --encoder_lr_scale
    config.add_fields(p, RunConfig, names=set(RUN_OPTIONS_FIRST))
    config.add_fields(p, family.trainer.Config if family else TrainConfig, names=set(config.names(TrainConfig)))
    config.add_fields(p, RunConfig, names=set(config.names(RunConfig)) - set(RUN_OPTIONS_FIRST))
    return p


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    pre, _ = common_parser(add_help=False).parse_known_args(argv)
    family = REGISTRY[pre.model]
    parser = common_parser(family=family)
    family.add_args(parser.add_argument_group(f"{pre.model} options ({family.description})"))
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        ignored = other_families_flags(unknown)
        if ignored is None:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        if "--guided" in ignored:  # not a tuning flag to skip quietly: the run would not be what was asked
            from models.hints import takes_hints

            guided = ", ".join(n for n, f in REGISTRY.items() if takes_hints(f.network))
            why = getattr(family.network.Config, "HINTS_REFUSED", "")
            parser.error(f"--guided: {args.model} takes no colour hints{f': {why}' if why else ''} (the families "
                         f"that do: {guided})")
        print(f"note: {' '.join(ignored)} belong to other families than {args.model}; ignored")
    given = {a.dest for a in parser._actions for s in a.option_strings
             if any(x == s or x.startswith(s + "=") for x in argv)}
    validate(parser, args, family, given)
    return parser, args, given


def other_families_flags(unknown: list[str]):
    """The flags in `unknown` when all of them are declared by some registered family (so one
    command line, as in script.sh, can carry every family's options), else None."""
    everything = common_parser(add_help=False, conflict_handler="resolve")
    for fam in REGISTRY.values():
        fam.add_args(everything)
    try:
        _, rest = everything.parse_known_args(unknown)
    except SystemExit:
        return None
    return None if rest else [u for u in unknown if u.startswith("--")]


def validate(parser, args, family, given: set = frozenset()) -> None:
    """Reject bad arguments before any work starts, saying what is valid: the first problem that
    the checks below find, in their order (what the typed configs declare is checked by them:
    config.problems)."""
    for check in (_configs, _device_and_architecture, _hints, _data, _input, _run, _folders, _processes):
        problem = check(args, family, given)
        if problem:
            parser.error(problem)


def _processes(args, family, given) -> str | None:
    world = distributed.world_from_env()[2]
    if args.batch_size % world:
        return (f"--batch_size {args.batch_size} must be a multiple of the number of processes ({world}): "
                f"it is the global batch, split evenly over them")
    return None


def _configs(args, family, given) -> str | None:
    problems = [p for cls in (RunConfig, family.network.Config, family.trainer.Config)  # ranges, choices, NaN, ...
                for p in config.problems(config.from_values(cls, args))]
    return problems[0] if problems else None


def _device_and_architecture(args, family, given) -> str | None:
    try:
        pick_device(args.device)
        if args.mode == "train" and not args.resume:  # else the architecture comes from a checkpoint: checked then
            check_architecture(args, family)
    except (ValueError, UsageError) as e:
        return str(e)
    return None


def _hints(args, family, given) -> str | None:
    for name in sorted({"hint_p", "hint_none"} & given):
        if not (getattr(args, "guided", False) or args.resume or args.init_from):  # those: guided if the run was
            return f"--{name} sets the simulated hints of --guided training; add --guided"
    if args.hints is not None and args.mode != "colorize":
        return "--hints FILE goes with --mode colorize (test mode reveals hints with --hint_counts)"
    if args.hint_counts is None:
        return None
    if args.mode != "test":
        return "--hint_counts goes with --mode test"
    try:
        args.hint_counts = sorted({int(c) for c in args.hint_counts.split(",") if c.strip()})
    except ValueError:
        return f"--hint_counts {args.hint_counts}: expected whole numbers separated by commas, e.g. 0,1,5"
    if not args.hint_counts or args.hint_counts[0] < 0:
        return "--hint_counts: expected numbers of hints, 0 or more, e.g. 0,1,2,5,10"
    return None


def _data(args, family, given) -> str | None:
    named = public_data.is_name(args.data)
    if args.data is not None and not named and not Path(args.data).is_dir():
        return (public_data.unknown(args.data) if public_data.looks_like_a_name(args.data)
                else f"--data {args.data}: no such folder")
    if args.data is not None and not named and not images.has_images(args.data):
        return f"--data {args.data}: no images ({', '.join(images.IMAGE_EXTENSIONS)}) in it or below it"
    if args.resume and args.mode != "train":
        return "--resume goes with --mode train"
    if args.init_from and (args.mode != "train" or args.resume):
        return "--init_from starts a new run: it goes with --mode train, without --resume"
    return None


def _input(args, family, given) -> str | None:
    # test mode: a given --input must exist too (--input "" colorizes nothing); the default may be absent
    if not (args.mode == "colorize" or (args.mode == "test" and "input" in given and args.input)) \
            or input_files(args.input)[0]:
        return None
    spec = Path(args.input)
    what = ("matches no image file" if photos.is_glob(args.input) else
            "a folder with no image file in it or below it" if spec.is_dir() else
            "not an image file" if spec.exists() else "no such file or folder")
    return f"--input {args.input}: {what} (a file, a folder or a glob of {', '.join(images.IMAGE_EXTENSIONS)})"


def _run(args, family, given) -> str | None:
    if args.run_name is not None and not plain_name(args.run_name):
        return (f"--run_name {args.run_name!r}: a run name is one plain folder name under --results (no '/', "
                f"not '.', '..' or hidden, not {', '.join(RESERVED_NAMES)})")
    run_dir = Path(args.results) / (args.run_name or args.model)
    if args.mode == "train" and args.resume and not (RunFolder(run_dir).last).is_file():
        return f"--resume: there is no {run_dir / 'last.pt'} to resume"
    if args.mode in ("test", "colorize", "serve") and not ckpt_io.names_run_checkpoint(args.weights) \
            and not Path(args.weights).is_file():
        return f"--weights {args.weights}: no such checkpoint file (or use best, last, an epoch number)"
    return None


def _folders(args, family, given) -> str | None:
    for flag, folder in (("results", args.results), ("output", args.output if args.mode == "colorize" else None)):
        problem = folder is not None and (in_source(folder) or unwritable(folder))
        if problem:
            return f"--{flag} {folder}: {problem}"
    return None


SOURCE_FOLDERS = ("models", "trainers", "runs", "reporting", "util", "tests", "docs", ".git")


def in_source(folder: str) -> str | None:
    """Why a folder is no place for results: the project's own code (runs/ is a package, so
    `--results runs` would mix run folders into it)."""
    path, root = Path(folder).resolve(), Path(__file__).resolve().parent
    for name in SOURCE_FOLDERS:
        if path == root / name or root / name in path.parents:
            where = "" if path == root / name else " inside"
            return (f"that is{where} this project's own {name}/ folder (code, not results); choose another, "
                    f"e.g. Results or ~/colorization-results")
    return None


RESERVED_NAMES = ("logs", "classifier", "index_files")  # what script.sh and report.py keep beside the runs


def plain_name(name: str) -> bool:
    """One path component that names a folder of its own under --results: --overwrite deletes
    inside RESULTS/NAME, so '.', '..', 'a/b' or an absolute path would reach other folders."""
    return (bool(name) and name == Path(name).name and not name.startswith(".") and "/" not in name
            and (os.sep not in name) and name not in RESERVED_NAMES)


def unwritable(folder: str) -> str | None:
    """Why a folder cannot be created or written to, or None."""
    path = Path(folder).resolve()
    if path.exists() and not path.is_dir():
        return "it is a file, not a folder"
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        return (f"cannot create or write a folder there ({existing} is "
                f"{'not writable' if existing.is_dir() else 'not a folder'})")
    try:  # a real probe: root may 'write' everywhere by os.access, yet not under /proc or /sys
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as e:
        return f"cannot create a folder in {existing} ({e.strerror})"
    return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_deterministic() -> None:
    """--deterministic: figures that do not depend on the machine's thread count. One CPU
    thread (a float sum split over more threads adds in another order: on the demo run, 1 and 2
    threads differ in the third digit, BENCHMARKS.md "Reproducibility"), deterministic kernels
    where torch has a choice (an error where it has none), no cuDNN autotuning."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS: reproducible reductions
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def where_note(args, given: set) -> str | None:
    """Run from outside the project folder with the default folders: say where they go."""
    here = Path.cwd().resolve()
    if here == Path(__file__).resolve().parent:
        return None
    defaults = [f"{name}/" for name, flag in (("Results", "results"), ("Dataset", "data")) if flag not in given]
    if args.mode == "colorize" or not defaults:
        return None
    return (f"note: {' and '.join(defaults)} {'are' if len(defaults) > 1 else 'is'} under the current folder {here}, "
            f"not the project's ({Path(__file__).resolve().parent}); pass --results and --data to choose")


def main(argv=None) -> int:
    parser, args, given = parse_args(argv)
    note = where_note(args, given)
    if note and distributed.world_from_env()[0] == 0:
        print(note)
    family = REGISTRY[args.model]
    run_dir = Path(args.results) / (args.run_name or args.model)
    seed_everything(args.seed)
    torch.backends.cudnn.benchmark = True  # fixed image sizes: let cuDNN pick the fastest kernels
    if args.deterministic:
        make_deterministic()
    try:
        if args.mode == "classifier":
            return classifier(args)
        # one writer per run folder and mode (the first process of several); --overwrite also
        # removes test outputs, so it waits for no test either
        if args.mode == "colorize":  # reads a checkpoint, writes only its own output folder: no lock
            return colorize(args, given, family, run_dir)
        if args.mode == "serve":  # reads a checkpoint, writes nothing: no lock
            return serve(args, given, family, run_dir)
        modes = ["train", "test"] if args.mode == "train" and args.overwrite else [args.mode]
        with contextlib.ExitStack() as locks:
            if distributed.world_from_env()[0] == 0:
                for mode in modes:
                    locks.enter_context(ckpt_io.RunLock(run_dir, mode))
            return (train if args.mode == "train" else test)(args, given, family, run_dir)
    except (ckpt_io.CheckpointError, public_data.DataUnavailable, OutputConflict, photos.NonFiniteOutput,
            cd.BadSplit, backbones.Unavailable, files.WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except UsageError as e:
        parser.error(str(e))
    except memory.TooLarge as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:  # test mode (training catches its own)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
            raise
        print(f"error: out of memory at --image_size {args.image_size} with --batch_size {args.batch_size} on "
              f"{args.device}: lower either (the last checkpoint, if any, is intact; --resume continues "
              f"it, a smaller --batch_size included)", file=sys.stderr)
        return 2
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    sys.exit(main())
