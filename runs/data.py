"""A run's data: the folder (a public set by name, or the demo), its split (kept in split.json), the
training batches, the evaluation images, and what the test images share with training.
"""
from __future__ import annotations

import json
from pathlib import Path

import colorize_data as cd
import public_data
from runs.settings import UsageError
from trainers import distributed
from util import files, images
from util.batches import StreamingTrainBatches, TrainBatches
from util.run_folder import RunFolder


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
    if not images.has_images(root):
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
    files.write_text_atomic(path, text)


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
    mine = files.fingerprints(root, names)
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
        batches = StreamingTrainBatches(root, split["train"], args.batch_size, args.image_size, args.load_size,
                                           args.crop, args.seed, device, rank, world, args.workers,
                                           args.max_image_pixels)
    else:
        images, _, report = cd.load_train_images(root, split["train"], args.image_size, args.load_size,
                                                 args.workers, args.max_image_pixels)
        report.warn("the training split")
        if not len(images):
            raise SystemExit(f"error: no usable colour training images under {root} "
                             f"({len(split['train'])} listed, {len(report.bad)} unreadable, {len(report.grey)} grey)")
        batches = TrainBatches(images, args.batch_size, args.image_size, args.crop, args.seed, device, rank, world)
    # what names this data set for statistics cached across runs (colour-bin counts), hashed only if needed
    batches.data_id = (root, split["train"], (args.image_size, args.load_size, args.crop, args.seed, world))
    return batches


def eval_images(args, root: Path, rel_paths, what: str):
    images, paths, report = cd.load_eval_images(root, rel_paths, args.image_size, args.workers, args.max_image_pixels)
    report.warn(what)
    return images, paths
