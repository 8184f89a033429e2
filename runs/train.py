"""Training a run: fresh, resumed or fine-tuned, stopped cleanly by SIGINT/SIGTERM, its checkpoints and
history written through the trainer.
"""
from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path

import colorize_data as cd
from runs import memory
from runs.data import data_root, eval_images, get_split, train_batches, write_unless_same
from runs.settings import UsageError, check_resume_flags, load_init, pick_device, resolve
from trainers import checkpoint as ckpt_io
from trainers import distributed
from trainers.inference import inference_weights
from trainers.loop import TrainingDiverged, TrainingStopped
from util import files
from util.run_folder import RunFolder
from util.tracking import RunLog, log_checkpoints, start_wandb


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
    saved, finished = previous_run(args, given, family, run)
    if finished:
        return 0
    init, init_path = (None, None)
    if args.init_from and not args.resume:  # a resumed run was initialised when it started
        init, init_path = load_init(args.init_from, args.results)
    settings = resolve(family, args, given, saved, init_from=init)
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
    split = prepare_folder(args, run, root) if main_process else None
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
    return fit(args, trainer, batches, val, run, wandb_run, say)


def previous_run(args, given, family, run: RunFolder) -> tuple[dict | None, bool]:
    """(the checkpoint --resume continues, or None; whether this very run is already finished).
    A folder that holds another run is refused unless --resume or --overwrite."""
    if args.resume:
        saved = ckpt_io.load(run.last, family=(args.model, *family.trainer.compatible))
        check_resume_flags(args, saved["args"], given)
        missing = [k for k in ("optimizers", "rng") if not saved.get(k)]
        if family.trainer.needs_training and (saved.get("lean") or missing):
            raise UsageError(f"--resume: {run.last} holds no optimizer, schedule or random state (a lean checkpoint, "
                             f"such as best.pt or epoch_N.pt copied over it), so the run cannot go on as it was. "
                             f"Start a new run from its weights instead: --init_from {run.last} --run_name NEW")
        return saved, False
    if run.last.exists() and not args.overwrite:
        if finished_same_run(args, given, run):  # e.g. the README's first command, run again
            print(f"note: {run.path} already holds this run, finished ({args.epochs if 'epochs' in given else 'all'} "
                  f"epochs): nothing to train. --overwrite trains it again, --run_name starts another")
            return None, True
        raise SystemExit(f"error: {run.path} already holds a run. Pass --resume to continue it, --overwrite to "
                         f"start afresh, or --run_name for a new run")
    return None, False


def prepare_folder(args, run: RunFolder, root: Path) -> dict:
    """The first process's part: the run folder cleared (--overwrite) or cleaned of a killed run's
    leftovers, then its split, fingerprints and arguments written; returns the split."""
    run_dir = run.path
    if args.overwrite and not args.resume:
        clear_run(run_dir)
    elif not args.resume and run.training_leftovers():  # a run killed before its first checkpoint
        left = run.training_leftovers()
        for p in left:
            p.unlink()
        print(f"note: removed what a run killed before its first checkpoint left in {run_dir} "
              f"({', '.join(sorted({p.name if p.parent == run_dir else p.parent.name + '/' for p in left}))})")
    if run.history.is_symlink():
        raise files.WriteError(f"{run.history} is a symbolic link: refusing to write the run's log through it "
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
        files.write_text_atomic(run.fingerprints, json.dumps(
            {"train": files.fingerprints(root, split["train"]), "val": files.fingerprints(root, split["val"])}))
    write_unless_same(run.args, json.dumps(vars(args), indent=1, default=str))
    return split


def fit(args, trainer, batches, val, run: RunFolder, wandb_run, say) -> int:
    """Train to the end (0), or until stopped by a signal (130, a checkpoint written) or diverged (2)."""
    run_dir = run.path
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
    if last_val and trainer.is_main:
        files.write_text_atomic(run.val_metrics,
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
        files.write_text_atomic(run.history, "".join(json.dumps(r) + "\n" for r in kept))


class stop_on_signals:
    """SIGINT (Ctrl-C) and SIGTERM ask the trainer to stop after its current step and write a
    checkpoint; a second Ctrl-C interrupts at once."""

    def __init__(self, trainer):
        self.trainer, self.previous = trainer, {}

    def _handler(self, signum, frame):
        if self.trainer.clock.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.trainer.clock.stop_requested = True
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
