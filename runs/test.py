"""Test mode: metrics (with FID/KID and semantic accuracy), per-image results, grids, the hint curve of
a guided run, and full-resolution colorizations of TestImages/, into the run folder.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path

import torch

import metrics
import public_data
from realism import Realism
from runs import semantic
from runs.colorize import colorize_folder
from runs.data import data_root, eval_images, seen_in_training, test_images, training_record
from runs.settings import UsageError, pick_device, resolve
from runs.weights import load_colorizer, load_weights
from trainers import distributed
from trainers.evaluation import NonFiniteColorization, evaluate, paste_hints, write_sample_grid
from trainers.loop import TrainingDiverged
from util import files
from util.run_folder import RunFolder
from util.tracking import RunLog, log_test_table, start_wandb


def test(args, given, family, run_dir: Path) -> int:
    device = pick_device(args.device)
    if distributed.world_from_env()[2] > 1:
        raise SystemExit("error: test mode runs in one process; start it with python, not torchrun")
    saved, weights = load_weights(args, family, run_dir)
    settings = resolve(family, args, given, saved)
    args = settings.args
    root, split_file, names, which, seen, images, paths = test_data(args, saved, weights, run_dir)
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
    realism = Realism(device, enabled=settings.training.fid == "auto", max_images=settings.training.fid_images,
                              cache_dir=Path(args.results) / ".fid_reference", progress=True)
    realism.reference(images)
    torch.manual_seed(args.seed)  # a sampler's noise: the same for the automatic evaluation and every hint count
    try:
        evaluation = evaluate(colorizer, images, args.batch_size, lpips, keep=args.num_images,
                              num_samples=settings.training.num_samples if colorizer.stochastic else 1,
                              collect=judge is not None or wandb_run is not None, progress=True, realism=realism,
                              spread_grid=True)  # the grid and compare.png: images from across the test set
    except NonFiniteColorization as e:
        raise TrainingDiverged(str(e)) from None
    summary, per_image, grid = evaluation.summary, evaluation.per_image, evaluation.grid
    note_identical_samples(summary, getattr(settings.training, "num_samples", 1))
    curve = (hint_curve(colorizer, images, args.batch_size, lpips, realism, counts, summary, args.seed,
                        settings.training.num_samples if colorizer.stochastic else 1) if counts else None)
    result = {**tested(args, run_dir, weights, saved, root, which, names, split_file), **colorizer.sampling(),
              **({"seen_in_training": seen} if seen else {}), **summary,
              **({"hints": curve, "hints_paste": paste_hints(images, counts, args.batch_size)} if curve else {}),
              "seconds": round(time.time() - t0, 2)}
    if judge is not None:  # semantic interpretability: the classifier's accuracy on our colorizations
        result.update(semantic_score(judge, paths, evaluation.predictions, device))
    write_per_image(out, paths, per_image, grid, evaluation.grid_index)
    n_done, n_bad = colorize_folder(colorizer, args, out.colorized, weights)
    # last: a metrics.json says the whole test finished (script.sh skips runs that have one)
    files.write_text_atomic(out.metrics, json.dumps(result, indent=1))
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


def note_identical_samples(summary: dict, k: int) -> None:
    """A stochastic family whose K samples per image do not differ is said so (best-of-K is then its one)."""
    if summary.get("diversity_delta_e") is not None and summary["diversity_delta_e"] < 0.05:
        print(f"note: the {k} samples per image are identical (mean delta E between them "
              f"{summary['diversity_delta_e']:.4f}): this model's colours do not depend on its latent code (a "
              f"collapsed posterior), so best-of-K is its one colorization")


def tested(args, run_dir: Path, weights, saved, root, which: str, names, split_file) -> dict:
    """The head of metrics.json: which weights (and what they were trained on) were tested on which images."""
    return {"model": args.model, "run": run_dir.name, "weights": weights,
            "epoch": saved["epoch"] if saved else 0,  # the tested checkpoint's; "epochs": the run's budget
            "epochs": saved["args"].get("epochs") if saved else 0,
            "data": str(Path(root).resolve()), "test_images": which,
            "test_set": hashlib.sha1("\n".join(map(str, names)).encode()).hexdigest()[:12],
            "image_size": args.image_size, **training_record(split_file, saved)}


def test_data(args, saved, weights, run_dir: Path):
    """(root, the split file, test image names, what they are, what training saw of them, the
    images, their paths) of a test; a missing folder or no readable image is a one-line error."""
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
    return root, split_file, names, which, seen, images, paths


def semantic_score(judge, paths, predictions, device) -> dict:
    """{"semantic_accuracy": the classifier's accuracy on the colorizations}, or nothing (with a
    note) when some test images are in no class folder it knows."""
    labels = semantic.labels_for(paths, judge[1])
    if (labels >= 0).all():
        return {"semantic_accuracy": semantic.accuracy(judge[0], predictions, labels, device)}
    print(f"note: semantic accuracy left out: {int((labels < 0).sum())} of {len(labels)} test images are not "
          f"in a class folder the classifier knows ({', '.join(judge[1][:5])}, ...)")
    return {}


def write_per_image(out: RunFolder, paths, per_image: dict, grid, grid_index=None) -> None:
    """per_image.csv, and the test grid with the samples the report's compare sheet reads."""
    table = io.StringIO()
    w = csv.writer(table)
    w.writerow(["image"] + list(per_image))
    for i, p in enumerate(paths):
        w.writerow([p] + [f"{v[i].item():.5f}" for v in per_image.values()])
    files.write_text_atomic(out.per_image, table.getvalue())
    if grid:
        write_sample_grid(out.test_grid, *grid)
        first = grid[1][0] if grid[1].dim() == 5 else grid[1]  # a stochastic family's first colorization
        as_uint8 = lambda x: (x * 255).round().to(torch.uint8)  # noqa: E731
        shown = [paths[i] for i in grid_index] if grid_index is not None else list(paths[:len(first)])
        saved = {"paths": shown, "pred": as_uint8(first), "truth": as_uint8(grid[2])}
        if grid[1].dim() == 5 and len(grid[1]) > 1:  # and two more of its samples: the sheet shows they differ
            saved["samples"] = as_uint8(grid[1][1:3])
        files.save_atomic(saved, out.test_samples)


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


def test_outputs(run_dir: Path, weights: str | None) -> RunFolder:
    """Where test mode writes: the run folder itself for its best.pt (what the summary reads), or
    for any weights when the run has no checkpoint of its own (a unetddim run testing a unetddpm
    checkpoint); a folder of its own for other weights of a trained run (RUN/test_last/,
    RUN/test_epoch_0012/, RUN/test_FILE/), so tests of different weights never overwrite each other."""
    run = RunFolder(run_dir)
    if weights is None or Path(weights).resolve() == run.best.resolve() or not run.best.exists():
        return run
    return RunFolder(run_dir / f"test_{Path(weights).stem}")
