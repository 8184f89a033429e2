"""A run's life: its settings resolved, its data chosen, trained (with resume, signals and
checkpoints), tested (metrics, per-image results, grids, full-resolution colorizations) and the
semantic classifier mode. main.py parses and validates the command line and calls train() or
test() here.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch

import colorize_data as cd
import metrics
import public_data
from models import backbones, config, hints
from trainers import REGISTRY, distributed, memory, photos, semantic
from trainers import checkpoint as ckpt_io
from trainers.base import TrainingDiverged, TrainingStopped, save_grid
from trainers.evaluation import NonFiniteColorization, evaluate, paste_hints
from trainers.inference import Colorizer, inference_weights
from trainers.photos import OutputConflict, colorize_files, input_files
from trainers.run_folder import RunFolder
from trainers.tracking import RunLog, log_checkpoints, log_test_table, start_wandb


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


def data_root(args, prepare: bool = True) -> Path:
    """The image folder a run reads: --data's folder, a named public set's (downloaded and laid
    out on first use; prepare=False only says where), or the demo set Dataset/ (built when empty)."""
    if public_data.is_name(args.data):
        if not prepare:
            return public_data.images_folder(args.data, args.data_root)
        return public_data.prepare(args.data, args.data_root)  # DataUnavailable: main prints it, exit 2
    if args.data is not None:
        return Path(args.data)
    root = Path("Dataset")
    if not cd.has_images(root):
        cd.build_demo_dataset(root, Path(args.input), seed=0)
    return root


def get_split(args, run_dir: Path, root: Path) -> dict:
    """The split saved with the run when it is of the same folder (and, for a fresh run, the same
    --seed; a resumed run keeps its split whatever --seed says), else a new one by --seed."""
    saved = RunFolder(run_dir).split
    if saved.exists():
        try:
            split = cd.load_split(saved)
        except cd.BadSplit as e:
            if args.resume:  # its images must be the ones it was trained on: not guessed
                raise
            print(f"note: {e}: a new split is drawn")
            return cd.make_split(root, args.seed, max_images=args.max_images)
        if split.get("root") == str(root.resolve()) and (args.resume or (
                split.get("seed") == args.seed and split.get("max_images", 0) == args.max_images)):
            return split
        if args.resume:  # another data folder: the same files moved there, or another data set
            moved = all((root / f).is_file() for part in ("train", "val", "test") for f in split[part])
            if not moved:
                raise UsageError(f"--resume: this run was trained on {split['root']}, and --data {root} does not "
                                 f"hold its images: resuming would make it another run. Resume without --data, or "
                                 f"start a new run (--run_name NAME) on {root}")
            print(f"note: the run's images were in {split['root']}; they are all in {root} now, and training goes "
                  f"on with them there")
            return {**split, "root": str(root.resolve())}
    return cd.make_split(root, args.seed, max_images=args.max_images)


def write_unless_same(path: Path, text: str) -> None:
    """Atomically, and not at all when the file already holds exactly this (a resume)."""
    try:
        if path.read_text() == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    ckpt_io.write_text_atomic(path, text)


def test_images(root: Path, split_file: Path, trained_on: dict | None) -> tuple[list[str], str]:
    """What test mode evaluates, and a phrase saying which. The run's own training folder is
    tested on the run's saved split (whatever --seed says now), or, without split.json, on the
    split its saved seed draws; any other folder is a test set: all of its held-out folder
    (test/), or all of it."""
    here = str(root.resolve())
    if split_file.is_file():
        split = cd.load_split(split_file)
        if split.get("root") == here:
            return split["test"] or split["val"], f"the run's test split of {root} ({split_file})"
    if trained_on and trained_on.get("data") and str(Path(trained_on["data"]).resolve()) == here:
        split = cd.make_split(root, trained_on.get("seed", 0))
        return split["test"] or split["val"], f"the run's test split of {root} (seed {trained_on.get('seed', 0)})"
    return cd.test_set(root)


def seen_in_training(root: Path, names: list[str], run: RunFolder | None) -> dict | None:
    """Test images whose content the weights were trained or validated on (the run's
    fingerprints.json against the test files' bytes, wherever they lie): {"train": n, "val": m,
    "of": len(names)} with a loud warning, or None when there are none (or the run kept no
    fingerprints: runs trained before they existed)."""
    if run is None or not run.fingerprints.is_file():
        return None
    try:
        known = json.loads(run.fingerprints.read_text())
        train, val = set(known["train"]) - {""}, set(known["val"]) - {""}
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        print(f"note: {run.fingerprints} cannot be read: the test images are not checked against the training set")
        return None
    mine = cd.fingerprints(root, names)
    seen = {"train": sum(f in train for f in mine), "val": sum(f in val and f not in train for f in mine),
            "of": len(names)}
    if not seen["train"] and not seen["val"]:
        return None
    print(f"WARNING: {seen['train'] + seen['val']} of {len(names)} test images are files this run trained on "
          f"({seen['train']}) or validated on ({seen['val']}): the figures below are not a held-out test "
          f"(recorded as seen_in_training in metrics.json; the report sets the run apart)")
    return seen


def training_record(split_file: Path, saved: dict | None) -> dict:
    """What the tested weights were trained on, for metrics.json (the report ranks together only
    runs trained alike): the data folder, the number of training images, --max_images and the
    seed, from the run's split.json (else its saved settings); {} for a family with nothing to
    learn."""
    if saved is None:
        return {}
    if split_file.is_file():
        return cd.trained_on(cd.load_split(split_file))
    given = saved["args"]
    return {"train_data": given.get("data"), "train_images": None, "max_images": given.get("max_images"),
            "seed": given.get("seed")}


def train_batches(args, root: Path, split: dict, device):
    """In memory (decoded once) when the data set fits in --cache_gb, else streamed from disk."""
    rank, _, world = distributed.world_from_env()
    size = max(args.load_size or args.image_size, args.image_size)
    gigabytes = len(split["train"]) * 3 * size * size / 2 ** 30
    if args.data_cache == "stream" or (args.data_cache == "auto" and gigabytes > args.cache_gb):
        print(f"streaming {len(split['train'])} training images from disk ({gigabytes:.1f} GB decoded) "
              f"with {args.workers} worker(s)")
        batches = cd.StreamingTrainBatches(root, split["train"], args.batch_size, args.image_size, args.load_size,
                                           args.crop, args.seed, device, rank, world, args.workers,
                                           args.max_image_pixels)
    else:
        images, _, report = cd.load_train_images(root, split["train"], args.image_size, args.load_size,
                                                 args.workers, args.max_image_pixels)
        report.warn("the training split")
        if not len(images):
            raise SystemExit(f"error: no usable colour training images under {root} "
                             f"({len(split['train'])} listed, {len(report.bad)} unreadable, {len(report.grey)} grey)")
        batches = cd.TrainBatches(images, args.batch_size, args.image_size, args.crop, args.seed, device, rank, world)
    # what names this data set for statistics cached across runs (colour-bin counts), hashed only if needed
    batches.data_id = (root, split["train"], (args.image_size, args.load_size, args.crop, args.seed, world))
    return batches


def eval_images(args, root: Path, rel_paths, what: str):
    images, paths, report = cd.load_eval_images(root, rel_paths, args.image_size, args.workers, args.max_image_pixels)
    report.warn(what)
    return images, paths


# ----------------------------------------------------------------------------------------------
# train and test
# ----------------------------------------------------------------------------------------------
# what a resumed run may change: its length, how it is watched and saved, where it runs. Anything
# else (learning rate, seed, loss, a family's training flags, ...) would make it another run.


def finished_same_run(args, given: set, run: RunFolder) -> bool:
    """Whether the run folder's last.pt finished every epoch it was started for, and every flag
    given now names what it was started with (so this command would train the same run again)."""
    try:
        saved = ckpt_io.load(run.last, family=args.model)
    except ckpt_io.CheckpointError:
        return False
    before = saved["args"]
    same = all(k in before and before[k] == getattr(args, k) for k in given - {"model", "mode"})
    return same and saved.get("epoch", 0) >= before.get("epochs", math.inf) and not saved.get("batch_in_epoch", 0)


def train(args, given, family, run_dir: Path) -> int:
    run = RunFolder(run_dir)
    saved = None
    if args.resume:
        saved = ckpt_io.load(run.last, family=(args.model, *family.trainer.compatible))
        check_resume_flags(args, saved["args"], given)
        missing = [k for k in ("optimizers", "rng") if not saved.get(k)]
        if family.trainer.needs_training and (saved.get("lean") or missing):
            raise UsageError(f"--resume: {run.last} holds no optimizer, schedule or random state (a lean checkpoint, "
                             f"such as best.pt or epoch_N.pt copied over it), so the run cannot go on as it was. "
                             f"Start a new run from its weights instead: --init_from {run.last} --run_name NEW")
    elif run.last.exists() and not args.overwrite:
        if finished_same_run(args, given, run):  # e.g. the README's first command, run again
            print(f"note: {run_dir} already holds this run, finished ({args.epochs if 'epochs' in given else 'all'} "
                  f"epochs): nothing to train. --overwrite trains it again, --run_name starts another")
            return 0
        raise SystemExit(f"error: {run_dir} already holds a run. Pass --resume to continue it, --overwrite to "
                         f"start afresh, or --run_name for a new run")
    init, init_path = (None, None)
    if args.init_from and not args.resume:  # a resumed run was initialised when it started
        init, init_path = load_init(args.init_from, args.results)
    settings = resolve(family, args, given, saved, {"model", "mode", "resume"}, init_from=init)
    args = settings.args
    device = distributed.setup(pick_device(args.device))
    main_process = distributed.world_from_env()[0] == 0
    if family.trainer.needs_training:  # before any data is loaded: a size that cannot fit is refused now
        memory.check_fits(family.network, settings.network, device, args.batch_size, args.image_size, f"{args.model}",
                          world=distributed.world_from_env()[2])
    say = print if main_process else (lambda *a, **k: None)
    root = data_root(args, prepare=main_process)
    distributed.barrier()  # the demo data set, if any, is built by the first process
    args.data = str(root)
    if main_process:
        if args.overwrite and not args.resume:
            clear_run(run_dir)
        elif not args.resume and run.training_leftovers():  # a run killed before its first checkpoint
            left = run.training_leftovers()
            for p in left:
                p.unlink()
            print(f"note: removed what a run killed before its first checkpoint left in {run_dir} "
                  f"({', '.join(sorted({p.name if p.parent == run_dir else p.parent.name + '/' for p in left}))})")
        if run.history.is_symlink():
            raise ckpt_io.WriteError(f"{run.history} is a symbolic link: refusing to write the run's log through it "
                                     f"(remove it; the run's own log is a plain file)")
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.rglob(".*.tmp"):  # a write that a kill -9 cut short
            stale.unlink()
        split = get_split(args, run_dir, root)
        write_unless_same(run.split, json.dumps(split, indent=1))
        if not run.fingerprints.is_file() or not args.resume:  # what test mode checks a test set against
            if len(split["train"]) + len(split["val"]) > 20000:
                print(f"hashing the {len(split['train']) + len(split['val'])} training and validation files (once per "
                      f"run: test mode checks test sets against them)")
            ckpt_io.write_text_atomic(run.fingerprints, json.dumps(
                {"train": cd.fingerprints(root, split["train"]), "val": cd.fingerprints(root, split["val"])}))
        write_unless_same(run.args, json.dumps(vars(args), indent=1, default=str))
    distributed.barrier()
    if not main_process:
        split = cd.load_split(run.split)
    say(f"{args.model}: data {root} (train {len(split['train'])}, val {len(split['val'])}, "
        f"test {len(split['test'])}), run folder {run_dir}")

    batches = train_batches(args, root, split, device)
    val, _ = eval_images(args, root, split["val"], "the validation split")
    if not len(val):
        say("note: no usable validation images: nothing is validated, and best.pt is the last epoch's checkpoint")
    wandb_run = start_wandb(args, run_dir, "train") if main_process else None
    trainer = family.make(args, device, run_dir, RunLog(run_dir if main_process else None, wandb_run),
                          name=args.model)
    trainer.setup_training(len(batches))
    if init is not None:
        weights = inference_weights(init)
        for module in (trainer.model, trainer.ema):
            if module is not None:
                module.load_state_dict(weights)
        say(f"initialised from {init_path} ({init.get('family')}, epoch {init.get('epoch', 0)}): its network's "
            f"weights; a new run with its own data, schedule and optimizer")
    if saved is not None:
        trainer.load_state_dict(saved)
        if main_process:
            trim_history(run, trainer.step)
        say(f"resuming {run_dir} after epoch {trainer.epoch} (step {trainer.step})")
    resume_hint = f"python main.py --model {args.model} --mode train --resume" + (
        f" --run_name {run_dir.name}" if run_dir.name != args.model else "") + (
        f" --results {args.results}" if args.results != "Results" else "")
    try:
        with stop_on_signals(trainer):
            last_val = trainer.fit(batches, val)
        if wandb_run is not None and args.log_checkpoints:
            log_checkpoints(wandb_run, run_dir, trainer.epoch)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        say(f"{e} in {run_dir / 'last.pt'}. Resume with: {resume_hint}")
        return 130
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    if last_val and main_process:
        ckpt_io.write_text_atomic(run.val_metrics,
                                  json.dumps({"epoch": trainer.epoch, **last_val}, indent=1))
    say(f"done: checkpoints, samples and history.jsonl in {run_dir}; "
        f"test with: python main.py --model {args.model} --mode test"
        + (f" --run_name {run_dir.name}" if run_dir.name != args.model else ""))
    return 0


def clear_run(run_dir: Path) -> None:
    """--overwrite: the previous run's files go, so nothing of it (its history, metrics, grids,
    colorized images, best.pt) can pass for the new run's. Other files are left alone."""
    removed = RunFolder(run_dir).clear()
    if removed:
        print(f"--overwrite: removed the previous run's {removed} file(s) and folder(s) from {run_dir}")


def trim_history(run: RunFolder, step: int) -> None:
    """Drop what history.jsonl logged after the checkpoint being resumed (a run killed after an
    epoch's log line but before its checkpoint would otherwise log that epoch twice)."""
    if not run.history.is_file():
        return
    rows = run.read_history()  # without a line cut short by the kill
    kept = [r for r in rows if r.get("step", 0) <= step]
    if len(kept) != len(run.history.read_text().splitlines()):
        ckpt_io.write_text_atomic(run.history, "".join(json.dumps(r) + "\n" for r in kept))


class stop_on_signals:
    """SIGINT (Ctrl-C) and SIGTERM ask the trainer to stop after its current step and write a
    checkpoint; a second Ctrl-C interrupts at once."""

    def __init__(self, trainer):
        self.trainer, self.previous = trainer, {}

    def _handler(self, signum, frame):
        if self.trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.trainer.stop_requested = True
        if self.trainer.is_main:
            print(f"\n{signal.Signals(signum).name}: stopping after this step and writing a checkpoint "
                  f"(Ctrl-C again to interrupt at once)", file=sys.stderr)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        return False


def test(args, given, family, run_dir: Path) -> int:
    device = pick_device(args.device)
    if distributed.world_from_env()[2] > 1:
        raise SystemExit("error: test mode runs in one process; start it with python, not torchrun")
    saved, weights = load_weights(args, family, run_dir)
    settings = resolve(family, args, given, saved, {"model", "mode", "weights"})
    args = settings.args
    usable = args.data is None or public_data.is_name(args.data) or Path(args.data).is_dir()
    root = data_root(args) if usable else None
    if root is None:
        raise SystemExit(f"error: the data folder {args.data} of this run does not exist; pass --data")
    split_file = RunFolder(Path(weights).parent if saved else run_dir).split
    names, which = test_images(root, split_file, saved["args"] if saved else None)
    print(f"testing on {which}: {len(names)} image(s)")
    seen = seen_in_training(root, names, RunFolder(Path(weights).parent) if saved else None)
    images, paths = eval_images(args, root, names, "the test split")
    if not len(images):
        raise SystemExit(f"error: no readable test images under {root}")
    colorizer = load_colorizer(family, settings, saved, device)
    counts = getattr(args, "hint_counts", None) or []
    if counts and not colorizer.hinted:
        raise UsageError(f"--hint_counts: {weights} was trained without colour hints; train a run with --guided "
                         f"to test it with hints")
    out = test_outputs(run_dir, weights if saved else None)
    out.path.mkdir(parents=True, exist_ok=True)
    wandb_run = start_wandb(args, run_dir, "test")
    t0 = time.time()
    judge = semantic.load(args.results, args.image_size, device)
    lpips = metrics.LPIPS(device, enabled=settings.training.lpips == "auto")
    realism = metrics.Realism(device, enabled=settings.training.fid == "auto", max_images=settings.training.fid_images,
                              cache_dir=Path(args.results) / ".fid_reference", progress=True)
    realism.reference(images)
    torch.manual_seed(args.seed)  # a sampler's noise: the same for the automatic evaluation and every hint count
    try:
        evaluation = evaluate(colorizer, images, args.batch_size, lpips, keep=args.num_images,
                              num_samples=settings.training.num_samples if colorizer.stochastic else 1,
                              collect=judge is not None or wandb_run is not None, progress=True, realism=realism)
    except NonFiniteColorization as e:
        raise TrainingDiverged(str(e)) from None
    summary, per_image, grid = evaluation.summary, evaluation.per_image, evaluation.grid
    if summary.get("diversity_delta_e") is not None and summary["diversity_delta_e"] < 0.05:
        print(f"note: the {settings.training.num_samples} samples per image are identical (mean delta E between them "
              f"{summary['diversity_delta_e']:.4f}): this model's colours do not depend on its latent code (a "
              f"collapsed posterior), so best-of-K is its one colorization")
    curve = (hint_curve(colorizer, images, args.batch_size, lpips, realism, counts, summary, args.seed,
                        settings.training.num_samples if colorizer.stochastic else 1) if counts else None)
    result = {"model": args.model, "run": run_dir.name, "weights": weights,
              "epoch": saved["epoch"] if saved else 0,  # the tested checkpoint's; "epochs": the run's budget
              "epochs": saved["args"].get("epochs") if saved else 0,
              "data": str(Path(root).resolve()), "test_images": which,
              "test_set": hashlib.sha1("\n".join(map(str, names)).encode()).hexdigest()[:12],
              "image_size": args.image_size, **training_record(split_file, saved), **colorizer.sampling(),
              **({"seen_in_training": seen} if seen else {}), **summary,
              **({"hints": curve, "hints_paste": paste_hints(images, counts, args.batch_size)} if curve else {}),
              "seconds": round(time.time() - t0, 2)}
    if judge is not None:  # semantic interpretability: the classifier's accuracy on our colorizations
        labels = semantic.labels_for(paths, judge[1])
        if (labels >= 0).all():
            result["semantic_accuracy"] = semantic.accuracy(judge[0], evaluation.predictions, labels, device)
        else:
            print(f"note: semantic accuracy left out: {int((labels < 0).sum())} of {len(labels)} test images are not "
                  f"in a class folder the classifier knows ({', '.join(judge[1][:5])}, ...)")
    table = io.StringIO()
    w = csv.writer(table)
    w.writerow(["image"] + list(per_image))
    for i, p in enumerate(paths):
        w.writerow([p] + [f"{v[i].item():.5f}" for v in per_image.values()])
    ckpt_io.write_text_atomic(out.per_image, table.getvalue())
    if grid:
        save_grid(out.test_grid, *grid)
        first = grid[1][0] if grid[1].dim() == 5 else grid[1]  # a stochastic family's first colorization
        as_uint8 = lambda x: (x * 255).round().to(torch.uint8)
        ckpt_io.save_atomic({"paths": list(paths[:len(first)]), "pred": as_uint8(first), "truth": as_uint8(grid[2])},
                            out.test_samples)
    n_done, n_bad = colorize_folder(colorizer, args, out.colorized, weights)
    # last: a metrics.json says the whole test finished (script.sh skips runs that have one)
    ckpt_io.write_text_atomic(out.metrics, json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    extra = (f"; {n_done} image(s) of {args.input} colorized into {out.colorized}"
             + (f" ({n_bad} unreadable skipped)" if n_bad else "")) if args.input else " (--input \"\": none colorized)"
    print(f"test: {result['n_images']} images; metrics.json, per_image.csv, test_grid.png in {out.path}{extra}")
    if wandb_run is not None:
        RunLog(None, wandb_run).summary({f"test/{k}": v for k, v in result.items()})
        if grid:
            RunLog(None, wandb_run).image("test/samples", out.test_grid, 0)
        log_test_table(wandb_run, args, paths, images, evaluation.predictions, per_image)
        wandb_run.finish()
    return 0


HINT_CURVE_KEYS = ("delta_e", "psnr", "ssim", "colorfulness", "auc", "fid", "kid")


def hint_curve(colorizer, images, batch_size: int, lpips, realism, counts: list[int], automatic: dict,
               seed: int, samples: int = 1) -> list[dict]:
    """--hint_counts: the test set evaluated again with n hints per image revealed from the true
    colours (models/hints.reveal, seeded by image) for each n; n = 0 is the automatic evaluation
    already made, which started from torch.manual_seed(seed): so does every count, so that a
    stochastic sampler (diffusion) draws the same noise at every count and the curve shows the
    hints, not the noise. When that evaluation drew `samples` K > 1 colorizations per image, its
    later batches used other noise than one colorization per image would: 0 hints is then
    evaluated again, as every count is, with one.
    [{"count": n, delta_e, psnr, ssim, colorfulness, auc, fid, kid}, ...]"""
    rows = []
    for n in counts:
        if n == 0 and samples == 1:
            summary = automatic
        else:
            print(f"evaluating with {n} hint(s) per image")
            colorizer.hint_count = n
            realism.reset()
            torch.manual_seed(seed)
            try:
                summary = evaluate(colorizer, images, batch_size, lpips, progress=True, realism=realism).summary
            except NonFiniteColorization as e:
                raise TrainingDiverged(str(e)) from None
            finally:
                colorizer.hint_count = 0
        rows.append({"count": n, **{k: summary.get(k) for k in HINT_CURVE_KEYS}})
    return rows


def load_weights(args, family, run_dir: Path) -> tuple[dict | None, str]:
    """The checkpoint --weights names (None for a family with nothing to learn) and its path."""
    if not family.trainer.needs_training:
        return None, "none"
    path = ckpt_io.resolve_weights(run_dir, args.weights)
    if not path.is_file():
        have = sorted(p.name for p in run_dir.glob("*.pt")) if run_dir.is_dir() else []
        raise ckpt_io.CheckpointError(f"no checkpoint {path}. Train first (python main.py --model {args.model} "
                                      f"--mode train) or pick --weights from: "
                                      f"{', '.join(have) or 'none in ' + str(run_dir)}")
    return ckpt_io.load(path, family=(args.model, *family.trainer.compatible)), str(path)


def load_colorizer(family, settings: Settings, saved: dict | None, device) -> Colorizer:
    """The family's Colorizer from a checkpoint (no trainer, optimizer, critic or EMA twin); a
    family with nothing to learn (gray) from its settings alone."""
    if saved is not None:
        return Colorizer.from_checkpoint(family, saved, settings.network, settings.training, device)
    net = family.network.build(settings.network).to(device).eval()
    parts = family.trainer.Colorizer.parts(net, settings.training, settings.network, device, {})
    return family.trainer.Colorizer(net, settings.training, settings.network, device, **parts).eval()


def classifier(args) -> int:
    """--mode classifier: train the semantic-interpretability classifier (trainers/semantic.py)."""
    root = data_root(args)
    split = cd.make_split(root, args.seed)
    classes = sorted({semantic.class_of(p) for p in split["train"]} - {""})
    if len(classes) < 2:
        print(f"no class folders under {root}: the semantic-interpretability classifier is skipped")
        return 0
    device = pick_device(args.device)
    labelled = [p for p in split["train"] if semantic.class_of(p)]  # not STL-10's unlabeled images
    train_images, train_paths = eval_images(args, root, labelled, "the training split")
    tested = [p for p in split["test"] or split["val"] if semantic.class_of(p)]
    test_images, test_paths = eval_images(args, root, tested, "the test split")
    labels = semantic.labels_for(train_paths, classes)
    model = semantic.train_classifier(train_images, labels, len(classes), args.epochs, args.batch_size,
                                      args.learning_rate, device, args.seed)
    test_labels = semantic.labels_for(test_paths, classes)
    report = {"classes": classes, "n_test": len(test_paths), "image_size": args.image_size, "epochs": args.epochs,
              "accuracy_color": semantic.accuracy(model, test_images, test_labels, device),
              "accuracy_grey": semantic.accuracy(model, test_images, test_labels, device, transform=semantic.grey)}
    semantic.save(model, classes, args.image_size, Path(args.results) / "classifier", report)
    print(json.dumps(report, indent=1))
    print(f"classifier written to {Path(args.results) / 'classifier'}; each family's test mode now reports "
          f"semantic_accuracy")
    return 0


def colorize_folder(colorizer, args, out_dir: Path, weights: str) -> tuple[int, int]:
    """Test mode's --input (a file, a folder or a glob; the default TestImages/ may be absent):
    every image colorized at its own resolution into out_dir (the run's own folder: the previous
    test's colorizations there are replaced)."""
    paths, root = input_files(args.input) if args.input else ([], Path("."))
    done, bad = colorize_files(colorizer, paths, root, out_dir, args.image_size, args.max_image_pixels,
                               maker=maker_of(args, weights), own=True)
    if bad:
        print(f"warning: skipped {len(bad)} unreadable file(s) of {args.input}: {'; '.join(bad[:3])}")
    return done, len(bad)


def maker_of(args, weights: str, samples: int = 1, hint_file: str | None = None) -> dict:
    """What makes a folder's colorizations (photos.OutputFolder's manifest): the family, the checkpoint
    file and the training step it holds, the sampling."""
    step = None
    if weights not in (None, "none"):
        try:
            st = os.stat(weights)
            step = f"{st.st_size}-{st.st_mtime_ns}"
        except OSError:
            pass
    return {"model": args.model, "weights": str(Path(weights).resolve()) if weights not in (None, "none") else None,
            "checkpoint": step, "image_size": args.image_size, "samples": samples,
            "hints": str(Path(hint_file).resolve()) if hint_file else None}


def test_outputs(run_dir: Path, weights: str | None) -> RunFolder:
    """Where test mode writes: the run folder itself for its best.pt (what the summary reads), or
    for any weights when the run has no checkpoint of its own (a unetddim run testing a unetddpm
    checkpoint); a folder of its own for other weights of a trained run (RUN/test_last/,
    RUN/test_epoch_0012/, RUN/test_FILE/), so tests of different weights never overwrite each other."""
    run = RunFolder(run_dir)
    if weights is None or Path(weights).resolve() == run.best.resolve() or not run.best.exists():
        return run
    return RunFolder(run_dir / f"test_{Path(weights).stem}")


def inputs_apart_from(paths: list[Path], root: Path, out_dir: Path, spec: str) -> list[Path]:
    """--input without what lies in --output: an output folder inside the input folder holds earlier
    colorizations, left out (with a note); an output folder that is the input folder, or holds it,
    would mix the colorizations with the photos, and is refused."""
    if Path(spec).is_file():
        return paths  # one photo: its colorization may go beside it (an output over it is refused later)
    out, top = out_dir.resolve(), root.resolve()
    if out == top or out in top.parents:
        raise OutputConflict(f"--output {out_dir} is the input folder {root} or holds it: the colorizations would "
                             f"mix with the photos (and replace those of the same name); choose another --output")
    kept = [p for p in paths if out not in p.resolve().parents]
    if len(kept) < len(paths):
        print(f"note: left out {len(paths) - len(kept)} file(s) of --input under --output {out_dir} (earlier "
              f"colorizations)")
    return kept


def colorize(args, given, family, run_dir: Path) -> int:
    """--mode colorize: the images of --input (a file, a folder or a glob) colorized by a trained
    run's --weights into --output; no data folder, no metrics, only the family's Colorizer."""
    device = pick_device(args.device)
    saved, weights = load_weights(args, family, run_dir)
    settings = resolve(family, args, given, saved, {"model", "mode", "weights", "input", "output", "sheet", "hints"})
    args = settings.args
    paths, root = input_files(args.input)
    if not paths:
        raise UsageError(f"--input {args.input}: no image file ({', '.join(cd.IMAGE_EXTENSIONS)}) there")
    colorizer = load_colorizer(family, settings, saved, device)
    if args.hints is not None:
        if not colorizer.hinted:
            raise UsageError(f"--hints: {weights} was trained without colour hints; train a run with --guided "
                             f"to colorize with hints")
        if len(paths) != 1:
            raise UsageError(f"--hints {args.hints}: hints belong to one image, but --input {args.input} has "
                             f"{len(paths)}; give one image file")
        if not Path(args.hints).is_file():
            raise UsageError(f"--hints {args.hints}: no such file")
    out_dir = Path(args.output) if args.output else RunFolder(run_dir).colorize_output(
        Path(weights).stem if saved else "none",
        photos.input_name(args.input) + (f"+{Path(args.hints).stem}" if args.hints else ""))
    paths = inputs_apart_from(paths, root, out_dir, args.input)
    if not paths:
        raise UsageError(f"--input {args.input}: every image there lies under --output {out_dir}")
    k = settings.training.num_samples if colorizer.stochastic else 1
    print(f"colorizing {len(paths)} image(s) of {args.input} with {weights} into {out_dir}"
          + (f", {k} samples each" if k > 1 else ""))
    try:
        with ckpt_io.RunLock(out_dir, "colorize"):  # one writer per output folder
            done, bad = colorize_files(colorizer, paths, root, out_dir, args.image_size, args.max_image_pixels, k,
                                       sheet=args.sheet, progress=True, hint_file=args.hints and Path(args.hints),
                                       maker=maker_of(args, weights, k, args.hints), own=args.output is None,
                                       overwrite=args.overwrite)
    except hints.HintError as e:
        raise UsageError(str(e)) from None
    if bad:
        print(f"warning: skipped {len(bad)} unreadable file(s): {'; '.join(bad[:3])}"
              + (" ..." if len(bad) > 3 else ""))
    if not done:
        print(f"error: none of the {len(paths)} file(s) of --input {args.input} could be read", file=sys.stderr)
        return 2
    print(f"colorized {done} image(s) into {out_dir}" + (f"; side-by-side sheets in {out_dir / 'sheets'}"
                                                       if args.sheet else ""))
    return 0
