"""Evaluation: a Colorizer's metrics over a set of images, the same for validation (the trainer's
colorizer, every few epochs) and test mode (one built from a checkpoint)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import metrics
from models import hints
from realism import Realism
from trainers import distributed
from util.colour import compose_rgb, grey_from_L, rgb_to_model, uint8_to_float


class NonFiniteColorization(RuntimeError):
    """The colorizer produced NaN or infinite ab: its metrics would be meaningless."""


@dataclass
class Evaluation:
    summary: dict           # metrics averaged over images
    per_image: dict         # name -> (N,) tensor, every image in order
    grid: list | None       # `keep` (L, prediction(s), ground truth, hint map or None), for a sample grid
    predictions: torch.Tensor | None = None  # collect=True: every (first) colorization, uint8 (N, 3, S, S)
    grid_index: list | None = None  # which images the grid shows (indices into the evaluated images)


def spread(n: int, keep: int) -> list[int]:
    """`keep` indices evenly spaced over n images (all of them when keep >= n): a data set sorted by
    class folder or by photo shows several classes or photos, not the first few of one."""
    return list(range(n)) if keep >= n else sorted({i * n // keep for i in range(keep)})


def _colorize(colorizer, b: dict, k: int) -> torch.Tensor:
    """A prepared batch's colorization(s) as RGB: (B, 3, H, W), or (K, B, 3, H, W) for K > 1."""
    with colorizer.autocast():
        ab = colorizer.sample_ab(b["L"], k, b["hints"]) if k > 1 else colorizer.predict_ab(b["L"], b["hints"])
    if not bool(torch.isfinite(ab).all()):  # one host read per evaluation batch
        raise NonFiniteColorization("the model's colorizations are not finite (NaN or infinite ab); "
                                    "its metrics would be meaningless")
    return torch.stack([compose_rgb(b["L"], a.float()) for a in ab]) if k > 1 else compose_rgb(b["L"], ab.float())


class _Grid:
    """The images a sample grid shows, kept as their batches pass: (L, prediction(s), truth, hints)."""

    def __init__(self, wanted: set):
        self.wanted, self.kept, self.shown = wanted, [], []  # shown: the indices kept (this process's)

    def add(self, start: int, b: dict, pred: torch.Tensor, k: int) -> None:
        rows = [j for j in range(len(b["L"])) if start + j in self.wanted]
        if rows:
            self.shown += [start + j for j in rows]
            self.kept.append((b["L"][rows].cpu(), (pred[:, rows] if k > 1 else pred[rows]).cpu(),
                              b["rgb"][rows].cpu(), None if b["hints"] is None else b["hints"][rows].cpu()))

    def result(self, keep: int, k: int) -> list | None:
        if not self.kept:
            return None
        L, pred, rgb, hint_maps = zip(*self.kept)
        pred = torch.cat(pred, dim=1)[:, :keep] if k > 1 else torch.cat(pred)[:keep]
        return [torch.cat(L)[:keep], pred, torch.cat(rgb)[:keep],
                None if hint_maps[0] is None else torch.cat(hint_maps)[:keep]]


@torch.no_grad()
def evaluate(colorizer, images: torch.Tensor, batch_size: int, lpips: metrics.LPIPS, keep: int = 0,
             num_samples: int = 1, collect: bool = False, progress: bool = False,
             realism: Realism | None = None, spread_grid: bool = False) -> Evaluation:
    """Metrics over uint8 (N, 3, S, S) images, batched on the colorizer's device, shared out over
    processes (torchrun). A stochastic colorizer with num_samples K > 1 adds best-of-K and
    diversity, and its grid shows the K colorizations. collect=True also returns every (first)
    colorization (one process); progress=True shows a progress bar (sampling can take minutes).
    `realism` (one process, its reference set to `images`) adds FID and KID of the (first) colorizations.
    The grid shows the first `keep` images, or with spread_grid `keep` spread evenly over them."""
    from tqdm import tqdm

    rank, _, world = distributed.world_from_env()
    k = num_samples if colorizer.stochastic else 1
    collected = []
    grid = _Grid(set(spread(len(images), keep) if spread_grid else range(min(keep, len(images)))))
    colorizer.eval()
    acc = metrics.MetricAccumulator(lpips)
    chunk = -(-len(images) // world)
    mine = images[rank * chunk:(rank + 1) * chunk]
    for i in tqdm(range(0, len(mine), batch_size), desc="evaluating", unit="batch", leave=False,
                  disable=not progress or rank != 0, mininterval=1.0, dynamic_ncols=True):
        b = colorizer.prepare(mine[i:i + batch_size], first_index=rank * chunk + i)
        pred = _colorize(colorizer, b, k)
        (acc.update_samples if k > 1 else acc.update)(pred, b["rgb"])
        first = pred[0] if k > 1 else pred  # a stochastic family's first (most likely) colorization
        if realism is not None:
            realism.update(first)
        if collect:
            collected.append((first * 255).round().to(torch.uint8).cpu())
        grid.add(rank * chunk + i, b, pred, k)
    per_image = distributed.gather_cat(acc.per_image())
    per_bin = acc.per_bin if acc.per_bin is not None else torch.zeros(  # a process may have had no images
        529, metrics.AUC_MAX + 2, dtype=torch.long, device=colorizer.device)
    summary = metrics.summarize(per_image, distributed.all_sum(per_bin))
    if realism is not None:
        summary.update(realism.compute())
    shown = grid.result(keep, k)
    return Evaluation(summary, per_image, shown, torch.cat(collected) if collected else None,
                      grid.shown if shown else None)


PASTE_KEYS = ("delta_e", "psnr", "ssim", "colorfulness", "auc")


@torch.no_grad()
def paste_hints(images: torch.Tensor, counts: list[int], batch_size: int) -> list[dict]:
    """The hint curve of no model at all: for each count n, the grey image with the n hints that
    --hint_counts reveals (the same patches, models/hints.reveal, seeded by image index) pasted
    in, and no colour elsewhere. What a hinted family gains above this is its own; the rest is
    the revealed pixels themselves. [{"count": n, delta_e, psnr, ssim, colorfulness, auc}, ...]"""
    rows = []
    for n in counts:
        acc = metrics.MetricAccumulator(None)
        for i in range(0, len(images), batch_size):
            rgb = uint8_to_float(images[i:i + batch_size])
            L, ab = rgb_to_model(rgb)
            acc.update(compose_rgb(L, hints.reveal(ab, n, first_index=i)[:, :2]), rgb)
        summary = metrics.summarize(acc.per_image(), acc.per_bin)
        rows.append({"count": n, **{k: summary.get(k) for k in PASTE_KEYS}})
    return rows


def write_sample_grid(path, L: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                      hint_map: torch.Tensor | None = None) -> None:
    """An Evaluation's grid as a picture: one row per image, grey input (with its colour hints, for
    a hinted network) | colorization (or K samples, pred (K, B, 3, H, W)) | ground truth."""
    from util import visuals

    preds = list(pred) if pred.dim() == 5 else [pred]
    hinted = hints.known_colours(hint_map)  # a hinted network's (models/hints.py): the grey column shows them
    grey = grey_from_L(L, visible_hints(*hinted) if hinted else None)
    samples = [("colorization", preds[0])] if len(preds) == 1 else [(f"sample {i + 1}", p) for i, p in enumerate(preds)]
    label = "grey input" if not hinted else "grey + hints" if bool(hinted[1].any()) else "grey, 0 hints"
    visuals.save_grid(path, [(label, grey), *samples, ("ground truth", target)])


def visible_hints(ab: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A hint map's colours spread over a square around each hint (3 px at 32 px, wider for larger
    images; the mean where squares meet), so that a hint of one pixel can be seen in a grid."""
    radius = max(1, mask.shape[-1] // 32)
    k = 2 * radius + 1
    count = torch.nn.functional.avg_pool2d(mask.float(), k, 1, radius) * k * k
    total = torch.nn.functional.avg_pool2d((ab * mask).float(), k, 1, radius) * k * k
    return total / count.clamp(min=1e-6) * (count > 0.5)


def validate(trainer, val_images) -> dict:
    """A trainer's validation: its validation_colorizer() over `val_images` with random numbers of
    its own (fixed, so samples compare across epochs; training's are left untouched, so a run
    resumed after a validation is the same run); the metrics logged, the epoch's sample grid
    written. Non-finite colorizations stop the run (TrainingDiverged)."""
    from trainers.loop import TrainingDiverged
    from util.run_folder import RunFolder

    if val_images is None or not len(val_images):
        return {}
    trainer.model.eval()
    with torch.random.fork_rng(devices=[trainer.device] if trainer.device.type == "cuda" else []):
        torch.manual_seed(0)
        try:
            result = evaluate(trainer.validation_colorizer(), val_images, trainer.cfg.batch_size, trainer.lpips,
                              keep=trainer.cfg.num_images)
        except NonFiniteColorization as e:
            raise TrainingDiverged(f"{e} (step {trainer.step}). The last good checkpoint, if any, is intact in "
                                   f"{trainer.run_dir or 'the run folder'}") from None
    trainer.log.scalars({f"val/{k}": v for k, v in result.summary.items() if k != "n_images"}, trainer.step)
    if result.grid and trainer.run_dir:
        path = RunFolder(trainer.run_dir).sample_grid(trainer.epoch)
        write_sample_grid(path, *result.grid)
        trainer.log.image("val/samples", path, trainer.step, caption="grey | prediction | ground truth")
    return result.summary
