"""User-guided colorization (Zhang et al. 2017, "Real-Time User-Guided Image Colorization with
Learned Deep Priors"): a network that takes L may also take a sparse map of colour hints.

The hints are a named input of the network, `forward(L, ..., hints=None)`, as richzhang's
siggraph17 takes (input_A, input_B, mask_B): a hint map (B, CHANNELS, H, W) of hint a and hint b
(ab / 110 where a hint is, 0 elsewhere) and a mask (1 where a hint is). With no hint the map is all
zeros (hints=None means the same), and the network colorizes automatically. A network opts in by
deriving its Config from `HintInput` (the --guided switch), building the layer that reads L for
`in_channels(cfg)` channels and reading `conditioning(L, hints, guided)` there; trainers and
colorizers pass `**given(hints)`, so a network that takes no hints is never handed any.

Training hints are simulated as in the paper: per image a number of hints from a geometric
distribution on 0, 1, 2, ... with p = 1/8 (so 1/8 of the images get none and the model stays
automatic; the mean is 7), each at a uniformly random position, its colour the mean ab of a
square patch 1 to 9 px wide at 256 px (scaled to the image size) painted over that patch. Training
settings (trainers/base.TrainConfig, so a fine-tuning run may change them): --hint_p sets another
p, and --hint_none a further share of images with no hint, so that many hints (a small p) and an
automatic model (enough images without hints) need not be traded against each other. The hints
are drawn from torch's global generator, which checkpoints save: a resumed run draws the same.

Evaluation reveals `count` hints of the ground truth per image at positions seeded by the image's
index in the test set, nested (the first n of n + 1 hints are the n hints), so a curve over hint
counts compares like with like.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from models.config import setting

CHANNELS = 3                  # hint a, hint b, mask
GEOMETRIC_P = 1 / 8           # number of training hints ~ Geometric(p) on 0, 1, 2, ...
MAX_HINTS = 256               # a cap on that number (reached with probability (7/8)^256 ~ 1e-15)
PATCH_AT_256 = 9              # widest hint patch at 256 px, scaled with the image size
EVAL_SEED = 20170801          # positions of the revealed hints in evaluation


@dataclass(frozen=True)
class HintInput:
    """Mixed into a network's Config: the switch that adds the hint channels to its input. A Config
    that inherits it but whose network cannot use hints says why in HINTS_REFUSED (and declares
    `guided` without a flag)."""
    HINTS_REFUSED: ClassVar[str] = ""
    guided: bool = setting(False, "user-guided colorization (Zhang et al. 2017): the network also takes a sparse "
                                  "map of colour hints (ab and a mask), trained with simulated hints; test with "
                                  "--hint_counts, colorize with --hints FILE")


def hinted(network_cfg) -> bool:
    return bool(getattr(network_cfg, "guided", False))


def takes_hints(network_module) -> bool:
    """Whether a models/ module's network can be built to take hints."""
    return issubclass(network_module.Config, HintInput) and not network_module.Config.HINTS_REFUSED


def in_channels(network_cfg) -> int:
    """Channels of the network's conditioning input: L, plus the hint map when hinted."""
    return 1 + CHANNELS if hinted(network_cfg) else 1


def given(hints: torch.Tensor | None) -> dict:
    """The keyword arguments that hand a hint map to a network: none at all without hints."""
    return {} if hints is None else {"hints": hints}


def conditioning(L: torch.Tensor, hints: torch.Tensor | None, guided: bool) -> torch.Tensor:
    """What a network's first layer reads: L, or for a guided network L and the hint map (zeros
    when none is given). Hints for a network built without them are a ValueError."""
    if not guided:
        if hints is not None:
            raise ValueError("this network was built without colour hints (--guided)")
        return L
    return attach(L, hints)


def known_colours(hints: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A hint map as (ab (B, 2, H, W) at model scale, mask (B, 1, H, W)), or None without one."""
    if hints is None:
        return None
    return hints[:, :2], hints[:, 2:3]


def attach(L: torch.Tensor, hint_map: torch.Tensor | None = None) -> torch.Tensor:
    """L (B, 1, H, W) and a hint map (B, 3, H, W) (None: no hints) -> the conditioning input."""
    if hint_map is None:
        hint_map = L.new_zeros(L.shape[0], CHANNELS, *L.shape[2:])
    return torch.cat([L, hint_map.to(L)], dim=1)


def patch_limit(size: int) -> int:
    """Widest hint patch (px) at an image size: 9 px at 256 px, at least 1."""
    return max(1, round(PATCH_AT_256 * size / 256))


def paint(ab: torch.Tensor, patches: list[tuple[int, int, int, int]], limit: int) -> torch.Tensor:
    """The hint map (B, 3, H, W) of square patches on ab (B, 2, H, W): each patch (image, y, x,
    width), top-left corner (y, x) with the patch inside the image and width <= limit, gets the
    mean ab under it and mask 1, later patches painted over earlier ones. On ab's device, with no
    host synchronisation: the patches travel as one small tensor, every patch's pixels are listed
    (limit x limit slots each, the unused ones off), and the pixels go to the last patch over them."""
    b, _, h, w = ab.shape
    device = ab.device
    if not patches:
        return torch.zeros(b, CHANNELS, h, w, device=device)
    p = torch.tensor(patches, dtype=torch.long)
    p = p.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else p.to(device)
    image, y, x, width = p.unbind(1)
    k = len(patches)
    d = torch.arange(limit, device=device)
    dy, dx = d.repeat_interleave(limit), d.repeat(limit)                  # (limit^2,) offsets
    used = (dy[None] < width[:, None]) & (dx[None] < width[:, None])       # (K, limit^2)
    rows = (y[:, None] + dy[None]).clamp(max=h - 1)
    cols = (x[:, None] + dx[None]).clamp(max=w - 1)
    pixel = (image[:, None] * h + rows) * w + cols                        # flat index into B*H*W
    ab_pixels = ab.detach().float().permute(0, 2, 3, 1).reshape(-1, 2)
    means = (ab_pixels[pixel] * used[..., None]).sum(1) / (width * width)[:, None].float()  # (K, 2)
    order = torch.arange(1, k + 1, device=device, dtype=torch.int32)[:, None].expand_as(pixel)
    mine = torch.where(used, order, 0)
    last = torch.zeros(b * h * w, dtype=torch.int32, device=device)
    last.scatter_reduce_(0, pixel.reshape(-1), mine.reshape(-1), "amax")
    won = used & (last[pixel] == order)             # each painted pixel: the slot of its last patch
    # write (a, b, mask) at the won slots; the other slots write into one spare cell past the end
    plane = h * w
    at = (image[:, None] * CHANNELS * plane + rows * w + cols)[None] + plane * torch.arange(CHANNELS, device=device)[
        :, None, None]                                                        # (3, K, limit^2)
    at = torch.where(won[None], at, b * CHANNELS * plane)
    values = torch.stack([means[:, 0], means[:, 1], torch.ones_like(means[:, 0])])[:, :, None].expand_as(at)
    hint_map = torch.zeros(b * CHANNELS * plane + 1, device=device)
    hint_map.index_put_((at.reshape(-1),), values.reshape(-1))
    return hint_map[:-1].view(b, CHANNELS, h, w)


def draw(b: int, h: int, w: int, p: float = GEOMETRIC_P, none: float = 0.0,
         generator: torch.Generator | None = None) -> list:
    """Simulated hints for b images of h x w: per image a list of patches (y, x, width), top-left
    corners inside the image; their number ~ Geometric(p) on 0, 1, ..., or 0 for a share `none` of
    the images (on top of the geometric's own share p), widths uniform in 1..patch_limit. From
    torch's global generator unless one is given (CPU); none = 0 draws nothing extra, so the stream
    is that of the paper's sampling."""
    u = 1.0 - torch.rand(b, generator=generator, dtype=torch.float64)  # in (0, 1]
    counts = (u.log() / torch.log1p(torch.tensor(-p, dtype=torch.float64))).floor().clamp(max=MAX_HINTS).long()
    if none > 0:
        counts[torch.rand(b, generator=generator, dtype=torch.float64) < none] = 0
    limit = patch_limit(min(h, w))
    boxes = []
    for n in counts.tolist():
        widths = torch.randint(1, limit + 1, (n,), generator=generator).tolist() if n else []
        fy, fx = torch.rand(n, generator=generator).tolist(), torch.rand(n, generator=generator).tolist()
        boxes.append([(int(a * (h - wd + 1)), int(c * (w - wd + 1)), wd) for wd, a, c in zip(widths, fy, fx)])
    return boxes


def simulate(ab: torch.Tensor, p: float = GEOMETRIC_P, none: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Training hints for a batch of ab (B, 2, H, W) (model scale): the hint map (B, 3, H, W) of
    draw()'s patches, on ab's device (drawn on the host, painted on the device)."""
    b, _, h, w = ab.shape
    patches = [(i, y, x, wd) for i, boxes in enumerate(draw(b, h, w, p, none, generator)) for y, x, wd in boxes]
    return paint(ab, patches, patch_limit(min(h, w)))


def reveal(ab: torch.Tensor, count: int, first_index: int = 0, seed: int = EVAL_SEED) -> torch.Tensor:
    """Evaluation hints: `count` hints of the ground truth ab (B, 2, H, W) per image, each the mean
    of a patch of the middle width, at positions seeded by the image's index in the evaluated set
    (first_index + i), nested across counts. (B, 3, H, W) on ab's device; zeros for count 0."""
    b, _, h, w = ab.shape
    wd = (patch_limit(min(h, w)) + 1) // 2
    patches = []
    for i in range(b if count > 0 else 0):
        g = torch.Generator().manual_seed(seed * 1_000_003 + first_index + i)
        for _ in range(count):  # one hint at a time: the first n of n + 1 hints are the n hints
            y, x = (torch.rand(2, generator=g) * torch.tensor([h - wd + 1, w - wd + 1])).long().tolist()
            patches.append((i, y, x, wd))
    return paint(ab, patches, wd)


# ----------------------------------------------------------------------------------------------
# Hints a person gives (--mode colorize --hints FILE, read by util/hint_files.py), at the network's size
# ----------------------------------------------------------------------------------------------


def map_from_points(points, width: int, height: int, size: int) -> torch.Tensor:
    """Hints given at an image's resolution -> a (1, 3, size, size) hint map at the network's size
    (the image is squashed to size x size for the network): every cell holding hints gets their
    mean ab."""
    from util.colour import AB_SCALE, rgb_to_lab

    hint_map = torch.zeros(1, CHANNELS, size, size)
    if not points:
        return hint_map
    rgb = torch.tensor([c for _, _, c in points], dtype=torch.float32).T[None, :, :, None] / 255  # (1, 3, N, 1)
    ab = rgb_to_lab(rgb)[0, 1:, :, 0] / AB_SCALE                                              # (2, N)
    cy = torch.tensor([min(size - 1, y * size // height) for _, y, _ in points])
    cx = torch.tensor([min(size - 1, x * size // width) for x, _, _ in points])
    cell = cy * size + cx
    sums = torch.zeros(2, size * size).index_add_(1, cell, ab)
    counts = torch.zeros(size * size).index_add_(0, cell, torch.ones(len(points)))
    seen = counts > 0
    hint_map[0, :2].view(2, -1)[:, seen] = sums[:, seen] / counts[seen]
    hint_map[0, 2].view(-1)[seen] = 1.0
    return hint_map
