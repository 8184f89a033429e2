"""Statistics of a training set that some families need before their first step: pixel counts
per ab bin (cached on disk per data set, summed over processes) and the class-rebalancing weights
of Zhang et al. 2016 built from them (colorful, cvae_mdn)."""
from __future__ import annotations

import torch

from trainers import distributed
from util import colour, files


@torch.no_grad()
def train_ab_counts(batches, device) -> torch.Tensor:
    """Pixel counts per ab bin (529,) over one pass (epoch 0) of the training batches, summed over
    the processes of a distributed run. Cached on disk per data set when the batches carry a
    `data_id` (root, paths, settings: see `data_key`), so every family and run on the same data
    counts it once."""
    path = None
    if getattr(batches, "data_id", None):
        root, paths, settings = batches.data_id
        path = files.cache_dir() / "ab_counts" / f"{files.data_key(root, paths, *settings)}.pt"
    cached = files.load_cache(path, _counts_ok) if path is not None else None  # damaged or foreign: counted again
    cached = cached.to(device) if cached is not None else None
    # use the cache only if every process has it (nodes need not share a disk)
    if distributed.all_mean({"hit": float(cached is not None)})["hit"] < 1:
        cached = None
    if cached is not None:
        return cached
    counts = distributed.all_sum(colour.ab_histogram((b for _, b in batches.epoch(0)), device))  # each its own share
    if path is not None and distributed.world_from_env()[0] == 0:
        files.save_cache(counts.cpu(), path)  # a read-only cache: counted again next time
    return counts


def _counts_ok(counts) -> bool:
    """Cached counts as train_ab_counts writes them: 529 finite, non-negative float64 counts, not all 0."""
    return (torch.is_tensor(counts) and counts.shape == (colour.AB_BINS_PER_AXIS ** 2,)
            and counts.dtype == torch.float64
            and bool(torch.isfinite(counts).all()) and bool((counts >= 0).all()) and bool(counts.sum() > 0))


def rebalancing_weights(counts: torch.Tensor, mix: float = 0.5, all_bins: bool = False) -> torch.Tensor:
    """w proportional to ((1 - mix) p + mix / Q)^-1, scaled so that the expected weight under p is 1
    (Zhang et al. 2016, eq. 4). Q: the bins that occur (others get 0), or every bin with all_bins."""
    p = counts.double() / counts.sum()
    support = torch.ones_like(p, dtype=torch.bool) if all_bins else p > 0
    w = torch.zeros_like(p)
    w[support] = 1.0 / ((1 - mix) * p[support] + mix / int(support.sum()))
    return (w / (p * w).sum()).float()
