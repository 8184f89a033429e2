"""Reading a results folder's runs: each run's metrics.json checked and cleaned (a damaged or
hand-edited one is a BadRun, listed apart), its training record, samples and per-image metrics.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from reporting.tables import SUMMARY_COLUMNS, bootstrap_ci, trained_epochs
from util.run_folder import RunFolder


class BadRun(Exception):
    """A run folder whose results cannot be read at all; the report lists it, with why, and goes on."""


# what a metrics.json field must be; anything else is left out of the report (n/a) and said
INTEGER_FIELDS = ("n_images", "image_size", "epoch", "epochs", "fid_images", "num_samples", "sampling_steps",
                  "train_images", "max_images", "seed")


TEXT_FIELDS = ("model", "data", "test_images", "test_set", "weights", "sampler", "fid_weights", "train_data")


NUMBER_FIELDS = tuple(k for k, _, _ in SUMMARY_COLUMNS) + ("colorfulness_gt", "kid_std", "seconds")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _seen(v) -> bool:
    return isinstance(v, dict) and all(_count(v.get(x)) for x in ("train", "val", "of"))


def _hint_curve(v) -> bool:
    return isinstance(v, list) and all(
        isinstance(h, dict) and isinstance(h.get("count"), int) and not isinstance(h.get("count"), bool)
        and _finite(h.get("delta_e")) and _finite(h.get("psnr")) and (h.get("fid") is None or _finite(h["fid"]))
        for h in v)


# what each checked field of a metrics.json must be (numbers: finite, kept as floats); others pass as they are
FIELD_CHECKS = {**{k: _count for k in INTEGER_FIELDS}, **{k: lambda v: isinstance(v, str) for k in TEXT_FIELDS},
                "seen_in_training": _seen, "hints": _hint_curve, "hints_paste": _hint_curve}


def clean_metrics(raw: dict) -> tuple[dict, list[str]]:
    """A metrics.json as the report may use it, and what was wrong with it: numbers that are not
    finite numbers (a NaN must not take the bold from the real best, nor Infinity win it), counts
    that are not whole numbers, texts that are not texts, a hint curve that is not one, become
    missing (n/a), each named. The interval fields are the report's own, never read from the file."""
    r, problems = {}, []
    for k, v in raw.items():
        if not isinstance(k, str) or k.endswith("_ci") or k.endswith("_ci_low") or k.endswith("_ci_high"):
            continue
        if v is None:
            r[k] = None
            continue
        if k in NUMBER_FIELDS:
            ok = _finite(v)
            r[k] = float(v) if ok else None
        else:
            ok = FIELD_CHECKS.get(k, lambda v: True)(v)
            r[k] = v if ok else None
        if not ok:
            problems.append(f"{k} is {str(v)[:40]!r}" if not isinstance(v, float) else f"{k} is {v}")
    return r, problems


def load_run(run_dir: Path) -> dict:
    """metrics.json of a run (checked by clean_metrics), with bootstrap intervals from per_image.csv
    and training time and speed from history.jsonl; "problems" lists what was wrong and left out.
    BadRun when there is no usable metrics.json."""
    run = RunFolder(run_dir)
    try:
        raw = json.loads(run.metrics.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise BadRun(f"metrics.json cannot be read ({type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise BadRun(f"metrics.json is a JSON {type(raw).__name__}, not an object")
    r, problems = clean_metrics(raw)
    r["run"] = run_dir.name  # the folder's name: what the user sees, one per run
    if r.get("epochs") is None and "epochs" not in raw and run.args.is_file():  # older metrics.json files
        r["epochs"] = _epochs_from_args(run, problems)
    if "train_data" not in raw and trained_epochs(r) is not None:  # older metrics.json files: the run's split
        r.update(training_record(run_dir, r.get("weights")))
    table, why = read_per_image(run_dir)
    if why:
        problems.append(why)
    for key in ("delta_e", "ssim"):
        if table and all(key in t for t in table.values()):
            r[f"{key}_ci"] = bootstrap_ci(torch.tensor([t[key] for t in table.values()]))
    if run.history.exists():
        r.update(_training_time(run))
    if run.test_samples.exists() and read_samples(run_dir) is None:
        problems.append("test_samples.pt cannot be read (left out of the pictures)")
    r["problems"] = problems
    return r


def _epochs_from_args(run: RunFolder, problems: list):
    """--epochs from args.json (older metrics.json files do not say), None when it is not a count."""
    try:
        epochs = json.loads(run.args.read_text()).get("epochs")
        return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None
    except (OSError, ValueError, AttributeError, RecursionError):
        problems.append("args.json cannot be read")
        return None


def _training_time(run: RunFolder) -> dict:
    """{"train_seconds", "train_images_per_s"} from history.jsonl (None where it has none)."""
    epochs = run.read_history()
    seconds = [e["train/epoch_seconds"] for e in epochs if _finite(e.get("train/epoch_seconds"))]
    speed = [e["train/images_per_s"] for e in epochs if _finite(e.get("train/images_per_s"))]
    return {"train_seconds": sum(seconds) if seconds else None,
            "train_images_per_s": sum(speed) / len(speed) if speed else None}


def training_record(run_dir: Path, weights) -> dict:
    """{"train_data", "train_images", "max_images", "seed"} from the split.json beside the tested
    weights (else the run folder's), for metrics.json files written before test mode recorded
    them; {} when there is none to read."""
    from colorize_data import BadSplit, load_split, trained_on

    folder = Path(str(weights)).parent if weights else run_dir
    for path in (RunFolder(folder).split, RunFolder(run_dir).split):
        if path.is_file():
            try:
                return trained_on(load_split(path))
            except BadSplit:
                return {}
    return {}


def read_samples(run_dir: Path) -> dict | None:
    """{test image path: (colorization, truth, more samples)} from a run's test_samples.pt: uint8
    (3, S, S) each, more samples a tuple (a stochastic run tested with --num_samples K > 1: its
    samples 2 and 3, else empty); None when it is missing or not what test mode writes."""
    path = RunFolder(run_dir).test_samples
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        paths, pred, truth = saved["paths"], saved["pred"], saved["truth"]
    except Exception:  # missing, truncated, random bytes, another structure: all mean "no pictures of it"
        return None
    if not (isinstance(paths, list) and all(isinstance(p, str) for p in paths) and torch.is_tensor(pred)
            and torch.is_tensor(truth) and pred.dtype == truth.dtype == torch.uint8 and pred.shape == truth.shape
            and pred.ndim == 4 and pred.shape[0] == len(paths) and pred.shape[1] == 3 and 0 < pred.shape[2]):
        return None
    more = saved.get("samples")
    if not (torch.is_tensor(more) and more.dtype == torch.uint8 and more.ndim == 5 and more.shape[1:] == pred.shape):
        more = pred.new_empty((0, *pred.shape))  # none, or not what test mode writes: the first colorization only
    return {p: (pred[i], truth[i], tuple(more[:, i])) for i, p in enumerate(paths)}


def shared_samples(runs: list[Path], first: int) -> tuple[list, list[str]]:
    """([(run name, {test image path: (colorization, truth) uint8 (3, S, S)})], the first `first`
    paths that every run's test_samples.pt holds); runs without usable samples are left out."""
    samples = [(d.name, s) for d in runs for s in [read_samples(d)] if s is not None]
    if not samples:
        return [], []
    common = [p for p in samples[0][1] if all(p in s for _, s in samples)][:first]
    if not common:
        print("note: the tested runs share no test image: no side-by-side images")
    return samples, common


def read_per_image(run_dir: Path) -> tuple[dict, str | None]:
    """({test image path: {metric: value}} from a run's per_image.csv, empty when it has none), and
    what is wrong with it, if anything (then it is not used: an unreadable row would skew the
    intervals)."""
    import csv

    run = RunFolder(run_dir)
    if not run.per_image.exists():
        return {}, None
    try:
        with open(run.per_image, newline="", encoding="utf-8") as f:
            table = {}
            for row in csv.DictReader(f):
                image = row.pop("image", None)
                values = {k: float(v) for k, v in row.items() if isinstance(k, str) and v not in ("", None)}
                if image is None or not all(math.isfinite(v) for v in values.values()):
                    raise ValueError("a row without an image, or a value that is not a finite number")
                table[image] = values
        return table, None
    except (OSError, ValueError, TypeError, UnicodeDecodeError, csv.Error) as e:
        return {}, f"per_image.csv cannot be used ({type(e).__name__}: {str(e)[:60]})"


def per_image_metrics(run_dir: Path) -> dict:
    """{test image path: {metric: value}} from a run's per_image.csv (empty when it has none or it
    cannot be used)."""
    return read_per_image(run_dir)[0]
