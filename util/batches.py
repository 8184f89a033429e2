"""Training batches, as uint8 tensors on the device: in memory (TrainBatches) or streamed from the
files by DataLoader workers (StreamingTrainBatches). Crops and flips run batched on the device, drawn
from generators that depend only on (seed, epoch, batch, rank), so resumed runs and several
processes draw the same numbers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from util.images import DEFAULT_MAX_IMAGE_PIXELS, BadImage, is_grey, load_rgb, open_image, square_uint8


def augment_batch(images: torch.Tensor, image_size: int, crop: str, generator: torch.Generator) -> torch.Tensor:
    """Random crops and horizontal flips of a uint8 (B, 3, S, S) batch, in one go on its device.

    crop='random': a random image_size window; 'resized': a random window of 50-100% of the side
    (25-100% of the area), resized to image_size (bilinear, via roi_align). Random numbers come from
    `generator` (on the CPU) so that runs, resumed runs and several processes draw the same ones."""
    b, _, h, w = images.shape
    s = image_size
    dev = images.device
    flip = torch.rand(b, generator=generator) < 0.5
    if crop == "resized":
        from torchvision.ops import roi_align

        side = (torch.sqrt(torch.empty(b).uniform_(0.25, 1.0, generator=generator)) * min(h, w)).clamp(min=1)
        top = torch.rand(b, generator=generator) * (h - side)
        left = torch.rand(b, generator=generator) * (w - side)
        boxes = torch.stack([torch.arange(b, dtype=torch.float), left, top, left + side, top + side], 1)
        out = roi_align(images.float(), boxes.to(dev), output_size=(s, s), sampling_ratio=2, aligned=True)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    else:
        top = torch.randint(0, h - s + 1, (b,), generator=generator)
        left = torch.randint(0, w - s + 1, (b,), generator=generator)
        ar = torch.arange(s)
        rows = (top[:, None] + ar).to(dev)[:, :, None]             # (B, s, 1)
        cols = (left[:, None] + ar).to(dev)[:, None, :]            # (B, 1, s)
        idx = torch.arange(b, device=dev)[:, None, None]
        out = images[idx, :, rows, cols].permute(0, 3, 1, 2)       # (B, s, s, 3) -> (B, 3, s, s)
    flip = flip.to(dev)[:, None, None, None]
    return torch.where(flip, out.flip(-1), out).contiguous()



class TrainBatches:
    """The training batches of one epoch, as uint8 (B/world, 3, s, s) tensors on the device.

    In memory: the decoded (N, 3, S, S) uint8 tensor lives on the device (or in pinned host memory);
    each epoch a permutation drawn from (seed, epoch) picks global batches of `batch_size`,
    augmented in one batched call, and process `rank` of `world` takes its slice. Every process and
    every resumed run draws exactly the same numbers. The last partial batch is dropped when there
    is more than one batch."""

    def __init__(self, images: torch.Tensor, batch_size: int, image_size: int, crop: str, seed: int,
                 device, rank: int = 0, world: int = 1):
        self.device = torch.device(device)
        if self.device.type == "cuda":  # decoded once; kept on the GPU when it fits easily, else pinned
            free, _ = torch.cuda.mem_get_info(self.device)
            images = images.to(self.device) if images.numel() < 0.3 * free else images.pin_memory()
        self.images, self.batch_size, self.image_size, self.crop = images, batch_size, image_size, crop
        self.seed, self.rank, self.world = seed, rank, world

    def __len__(self):
        n = len(self.images)
        return max(1, n // self.batch_size) if n > self.batch_size else 1

    def set_batch_size(self, batch_size: int) -> None:
        """From the next epoch() on (a resumed run finishes an epoch with the batch size it began it with)."""
        self.batch_size = batch_size

    def epoch(self, epoch: int, start: int = 0):
        """(index, batch) for batches `start`, `start` + 1, ... of `epoch` (a resumed epoch skips
        the ones it did)."""
        n, bs = len(self.images), self.batch_size
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        for i in range(start, len(self)):
            idx = perm[i * bs:(i + 1) * bs]
            batch = augment_batch(self.images[idx.to(self.images.device)].to(self.device, non_blocking=True),
                                  self.image_size, self.crop, batch_rng(self.seed, epoch, i))
            per = -(-len(batch) // self.world)
            yield i, batch[self.rank * per:(self.rank + 1) * per]



def batch_rng(seed: int, epoch: int, index: int, rank: int = 0) -> torch.Generator:
    """The generator of one batch's augmentation: a function of where the batch is, nothing else."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 100_003 + index) * 101 + rank)



class _FileImages(torch.utils.data.Dataset):
    """One training file -> ((3, S, S) uint8, status): 0 usable, 1 unreadable, 2 grey. JPEGs are
    decoded by torchvision (libjpeg-turbo), everything else through load_rgb's careful path."""

    def __init__(self, root, paths, size: int, max_pixels):
        self.root, self.paths, self.size, self.max_pixels = Path(root), list(paths), size, max_pixels

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from torchvision.io import ImageReadMode, decode_image, read_file

        path = self.root / self.paths[i]
        try:
            if path.suffix.lower() in (".jpg", ".jpeg"):
                open_image(path, self.max_pixels).close()  # the size guard, from the header
                try:
                    chw = decode_image(read_file(str(path)), ImageReadMode.RGB, apply_exif_orientation=True)
                    rgb = chw.permute(1, 2, 0).numpy()
                except RuntimeError:  # CMYK and other JPEGs that libjpeg-turbo's RGB path refuses
                    rgb = load_rgb(path, self.max_pixels)
            else:
                rgb = load_rgb(path, self.max_pixels)
        except (BadImage, OSError):
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), 1
        if is_grey(rgb):
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), 2
        return square_uint8(rgb, self.size), 0



class _RankBatches:
    """Batch sampler: this process's share of each global batch of an epoch's permutation."""

    def __init__(self, n, batch_size, seed, rank, world):
        self.n, self.bs, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.start = 0, 0

    def __len__(self):
        return max(1, self.n // self.bs) if self.n > self.bs else 1

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))
        for i in range(self.start, len(self)):
            batch = perm[i * self.bs:(i + 1) * self.bs]
            per = -(-len(batch) // self.world)
            yield batch[self.rank * per:(self.rank + 1) * per].tolist()



class StreamingTrainBatches:
    """TrainBatches for data sets too large to keep in memory: DataLoader worker processes decode
    each epoch's files (pinned memory, persistent workers); crops, flips and the Lab conversion then
    run batched on the device as for the in-memory path. Unreadable and grey files are dropped from
    their batch, counted, and reported once after the first epoch."""

    def __init__(self, root, paths, batch_size, image_size, load_size, crop, seed, device, rank=0, world=1,
                 workers=4, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
        self.device, self.image_size, self.crop = torch.device(device), image_size, crop
        self.seed, self.rank = seed, rank
        self.paths = list(paths)
        self.sampler = _RankBatches(len(self.paths), batch_size, seed, rank, world)
        files = _FileImages(root, self.paths, max(load_size or image_size, image_size), max_pixels)
        self.loader = torch.utils.data.DataLoader(
            files, batch_sampler=self.sampler, num_workers=workers, persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if workers > 0 else None)
        self.skipped = {1: 0, 2: 0}
        self.reported = False

    def __len__(self):
        return len(self.sampler)

    def set_batch_size(self, batch_size: int) -> None:
        self.sampler.bs = batch_size

    def epoch(self, epoch: int, start: int = 0):
        self.sampler.epoch, self.sampler.start = epoch, start
        for i, (images, status) in enumerate(self.loader, start):
            for code in (1, 2):
                self.skipped[code] += int((status == code).sum())
            images = images[status == 0]
            if len(images):
                yield i, augment_batch(images.to(self.device, non_blocking=True), self.image_size, self.crop,
                                       batch_rng(self.seed, epoch, i, self.rank))
        if not self.reported and (self.skipped[1] or self.skipped[2]):
            print(f"note: streaming skipped {self.skipped[1]} unreadable and {self.skipped[2]} grey training file(s)")
        self.reported = True
