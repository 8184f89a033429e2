"""Zhang et al. (2016), "Colorful Image Colorization": colour as classification over ab bins.

The gamut: ab bins of 10 x 10 on a grid with centres at multiples of 10 (`ab_gamut`, computed from
all 256^3 sRGB colours, cached on disk): by default the corners of every grid cell that some sRGB
colour falls in (309 bins; Zhang et al. report 313), or with --gamut inside only the bins that some
sRGB colour falls in (261).

The network (ECCV16 design, widths scaled by `width`, 64 in the paper): eight blocks of 3x3
convolutions with BatchNorm; blocks 1-3 halve the resolution, blocks 5-6 are dilated (2), block
8 upsamples by 2, so the class logits come out at a quarter of the input resolution.
    input  L (B, 1, H, W) in [-1, 1];  output logits (B, Q, H/4, W/4) over the Q gamut bins
`trunk(L)` gives the block-7 features (B, 8 width, H/8, W/8). H and W must be multiples of 8.
`halvings` < 3 (--colorful_halvings) lets only the first blocks halve the resolution, for small
images: with 1, a 32 px input keeps a 16 x 16 trunk and 32 x 32 logits (the paper's layout ends
at a 4 x 4 trunk and 8 x 8 logits there); same weights' shapes, more computation.
--guided (models/hints.py): the hint map enters the first block with L, and each logit cell that
holds a hint also gets its hints' colour bins added to the logits (ColorfulNet.hint_bins).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from models import backbones
from models.backbones import EncoderInput
from models.config import setting
from models.hints import CHANNELS, HintInput, conditioning, in_channels, known_colours
from util.colour import AB_BIN, AB_BINS_PER_AXIS, AB_SCALE, rgb_to_lab
from util.files import cache_dir, load_cache, save_cache

GAMUTS = ("corners", "inside")


@functools.lru_cache(maxsize=None)
def ab_gamut(kind: str = "corners") -> tuple[torch.Tensor, torch.Tensor]:
    """(centres (Q, 2) in ab units, sorted by grid index; one sRGB example in [0, 1] per bin (Q, 3)).

    Every sRGB colour (256^3) is converted to Lab; its ab lies in one cell of the grid whose
    corners are the bin centres (multiples of 10) and is nearest to one of those corners.
      "inside":  the bins some sRGB colour falls in (is nearest to): 261 bins. No grid of 10,
                 whatever its origin, holds more than 267 (tests/test_colorful.py tries 25).
      "corners": the four corners of every cell some sRGB colour falls in: 309 bins, Zhang et al.
                 report 313. Every sRGB ab is then a convex (bilinear) combination of gamut bins,
                 so the mean over bins can reach it and a colour at the edge of the gamut is
                 soft-encoded over bins on both sides of it, as it is inside.
    The example of a bin is a colour that falls in it ("inside") or in a cell it is a corner of.
    Computed once (about a second), then read from disk."""
    if kind not in GAMUTS:
        raise ValueError(f"unknown gamut {kind!r}; one of {GAMUTS}")
    with torch.device("cpu"):  # a cached constant: never on the device of a caller's context (e.g. meta)
        return _ab_gamut(kind)


def _ab_gamut(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    path = cache_dir() / f"ab_gamut_{kind}_v2.pt"
    cached = load_cache(path, _gamut_ok)
    if cached is not None:
        return cached["centres"], cached["examples"]
    n, half = AB_BINS_PER_AXIS, AB_BINS_PER_AXIS // 2
    v = torch.arange(256, dtype=torch.float32) / 255
    best = torch.full((n * n,), -1, dtype=torch.long)  # per bin (or per cell): the largest code seen
    for r in range(256):  # one red level at a time: 65,536 colours
        g, b = torch.meshgrid(v, v, indexing="ij")
        rgb = torch.stack([torch.full_like(g, float(v[r])), g, b])[None]
        ab = rgb_to_lab(rgb)[0, 1:].reshape(2, -1) / AB_BIN
        q = (ab.round() if kind == "inside" else ab.floor()).long() + half  # the bin, or the cell's low corner
        codes = r * 65536 + torch.arange(65536)
        best.scatter_reduce_(0, q[0] * n + q[1], codes, reduce="amax")
    if kind == "corners":  # a cell's example stands for its four corners
        cells = best.view(n, n)
        best = torch.full((n + 1, n + 1), -1, dtype=torch.long)
        for da in (0, 1):
            for db in (0, 1):
                best[da:da + n, db:db + n] = torch.maximum(best[da:da + n, db:db + n], cells)
        if (best[n] >= 0).any() or (best[:, n] >= 0).any():
            raise RuntimeError("the gamut does not fit the 23 x 23 grid")
        best = best[:n, :n].flatten()
    kept = (best >= 0).nonzero()[:, 0]
    centres = (torch.stack([kept // n, kept % n], 1).float() - half) * AB_BIN
    code = best[kept]
    examples = torch.stack([code // 65536, (code // 256) % 256, code % 256], 1).float() / 255
    save_cache({"centres": centres, "examples": examples}, path)  # not at all in a read-only home: computed again
    return centres, examples


def _gamut_ok(cached) -> bool:
    """A cached gamut as _ab_gamut writes it: Q bin centres on the 10-unit grid, one RGB example each."""
    if not isinstance(cached, dict):
        return False
    c, e = cached.get("centres"), cached.get("examples")
    return (torch.is_tensor(c) and torch.is_tensor(e) and c.dtype == e.dtype == torch.float32 and c.ndim == 2
            and c.shape[1] == 2 and e.shape == (len(c), 3) and 0 < len(c) <= AB_BINS_PER_AXIS ** 2
            and bool(torch.isfinite(c).all()) and bool(((e >= 0) & (e <= 1)).all())
            and bool((c.abs() <= AB_BIN * (AB_BINS_PER_AXIS // 2)).all()))


def _block(c_in, c_out, n, stride_last=1, dilation=1):
    layers = []
    for i in range(n):
        stride = stride_last if i == n - 1 else 1
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, stride, dilation, dilation=dilation), nn.ReLU(True)]
    return nn.Sequential(*layers, nn.BatchNorm2d(c_out))


HINT_GAIN = 5.0  # initial weight of a hint's bins in the logits (a guided network learns it further)


class ColorfulNet(nn.Module):
    """The ECCV16 network. With hint channels (in_channels > 1, --guided) the hint map enters the
    first block with L, as in every hinted family, and a shortcut takes the hints' colours to the
    logits: each logit cell holding a hint gets the soft encoding over the gamut bins (`centres`)
    of its hints' mean colour, times a learned gain (HINT_GAIN at first), added to its logits.
    Without the shortcut this layout (no skips, logits at a quarter of the resolution) learned to
    ignore 1-px hints at the CPU protocol's budget: delta E 11.96 at 0 and at 50 hints; with it,
    11.94 to 7.06 (BENCHMARKS.md, issue 20). A hint reaches the cells around its own only through
    the trunk, which learns that slowly."""

    def __init__(self, classes: int, width: int = 64, halvings: int = 3, in_channels: int = 1,
                 centres: torch.Tensor | None = None, encoder_cfg=None):
        super().__init__()
        w = width
        s1, s2, s3 = (2 if i < halvings else 1 for i in range(3))
        self.trunk_blocks = nn.Sequential(
            _block(in_channels, w, 2, stride_last=s1), _block(w, 2 * w, 2, stride_last=s2),
            _block(2 * w, 4 * w, 3, stride_last=s3),
            _block(4 * w, 8 * w, 3), _block(8 * w, 8 * w, 3, dilation=2), _block(8 * w, 8 * w, 3, dilation=2),
            _block(8 * w, 8 * w, 3))
        self.head = nn.Sequential(nn.ConvTranspose2d(8 * w, 4 * w, 4, 2, 1), nn.ReLU(True),
                                  nn.Conv2d(4 * w, 4 * w, 3, 1, 1), nn.ReLU(True),
                                  nn.Conv2d(4 * w, 4 * w, 3, 1, 1), nn.ReLU(True),
                                  nn.Conv2d(4 * w, classes, 1))
        self.classes, self.hinted = classes, in_channels > 1
        if self.hinted:
            if centres is None or len(centres) != classes:
                raise ValueError("a hinted ColorfulNet needs the centres of its gamut bins")
            self.register_buffer("lookup", grid_to_gamut(centres), persistent=False)
            self.hint_gain = nn.Parameter(torch.tensor(HINT_GAIN))
        self.encoded = backbones.join(encoder_cfg, 8 * w) if encoder_cfg is not None else None  # --encoder

    def trunk(self, L, features=None, hints=None):
        """The trunk's features (B, 8 width, h, w), a pretrained encoder's joined at its end (--encoder)."""
        x = self.trunk_blocks(conditioning(L, hints, self.hinted))
        return self.encoded(x, L, features) if self.encoded is not None else x

    def hint_bins(self, hints: torch.Tensor, size) -> torch.Tensor:
        """The hint map -> (B, Q, h, w): per cell of size (h, w), the soft encoding of the mean colour
        of the hints in it; zeros where it holds none."""
        ab, mask = (x.float() for x in known_colours(hints))
        count = nn.functional.adaptive_avg_pool2d(mask, size)
        mean = nn.functional.adaptive_avg_pool2d(ab * mask, size) / count.clamp(min=1e-6) * AB_SCALE
        index, weight = soft_encode(mean, self.lookup)
        bins = mean.new_zeros(len(mean), self.classes, *size)
        return bins.scatter_(1, index, weight) * (count > 0)

    def forward(self, L, features=None, *, hints=None):
        if self.hinted and hints is None:  # no hint given: an empty map, for the trunk and the bins alike
            hints = L.new_zeros(L.shape[0], CHANNELS, *L.shape[2:])
        logits = self.head(self.trunk(L, features, hints))
        if not self.hinted:
            return logits
        return logits + self.hint_gain * self.hint_bins(hints, logits.shape[-2:])


@dataclass(frozen=True)
class Config(HintInput, EncoderInput):
    colorful_width: int = setting(64, "channels of the first block (ECCV16: 64)", minimum=1)
    colorful_halvings: int = setting(3, "how many of blocks 1-3 halve the resolution (3: the paper, logits at a "
                                     "quarter of the input; 1: at full resolution, for small images)",
                                     choices=(1, 2, 3))
    gamut: str = setting("corners", "ab bins: corners of the grid cells sRGB reaches (309, near Zhang's 313) or "
                         "the bins sRGB falls in (261)", choices=GAMUTS)


SMOKE = {"colorful_width": 8}  # the tests' tiny network


def build(cfg: Config) -> ColorfulNet:
    centres = ab_gamut(cfg.gamut)[0]
    return ColorfulNet(len(centres), cfg.colorful_width, cfg.colorful_halvings, in_channels(cfg), centres,
                       encoder_cfg=cfg)


def size_multiple(cfg: Config) -> int:
    return 2 ** cfg.colorful_halvings


def grid_to_gamut(centres: torch.Tensor) -> torch.Tensor:
    """(529,) lookup from the 23 x 23 ab grid index to the gamut index, -1 outside the gamut."""
    q = (centres / AB_BIN).round().long() + AB_BINS_PER_AXIS // 2
    lookup = torch.full((AB_BINS_PER_AXIS ** 2,), -1, dtype=torch.long)
    lookup[q[:, 0] * AB_BINS_PER_AXIS + q[:, 1]] = torch.arange(len(centres))
    return lookup


def soft_encode(ab: torch.Tensor, lookup: torch.Tensor, k: int = 5, sigma: float = 5.0):
    """Zhang et al.'s soft target: the k nearest gamut bins of each pixel, with Gaussian weights
    (sigma in ab units) summing to 1. ab (B, 2, h, w) in ab units -> (index (B, k, h, w) into the
    gamut, weight (B, k, h, w)), nearest first. Candidates are the 4 x 4 grid bins around the
    pixel, which hold its k = 5 nearest bins wherever those are in the gamut."""
    half = AB_BINS_PER_AXIS // 2
    base = torch.floor(ab / AB_BIN).long()
    offsets = torch.arange(-1, 3, device=ab.device).view(1, 4, 1, 1)
    qa = (base[:, :1] + offsets)[:, :, None]                     # (B, 4, 1, h, w)
    qb = (base[:, 1:] + offsets)[:, None, :]                     # (B, 1, 4, h, w)
    qa, qb = torch.broadcast_tensors(qa, qb)
    inside = (qa.abs() <= half) & (qb.abs() <= half)
    grid = ((qa + half) * AB_BINS_PER_AXIS + (qb + half)).clamp(0, AB_BINS_PER_AXIS ** 2 - 1)
    gamut = torch.where(inside, lookup.to(ab.device)[grid], torch.full_like(grid, -1)).flatten(1, 2)
    d2 = ((ab[:, :1, None] - qa * AB_BIN) ** 2 + (ab[:, 1:, None] - qb * AB_BIN) ** 2).flatten(1, 2)
    d2 = torch.where(gamut >= 0, d2, torch.full_like(d2, float("inf")))
    d2, order = d2.topk(k, dim=1, largest=False)
    index = gamut.gather(1, order).clamp_min(0)
    weight = torch.exp(-d2 / (2 * sigma ** 2))
    return index, weight / weight.sum(1, keepdim=True)


def annealed_mean(logits: torch.Tensor, centres: torch.Tensor, temperature: float) -> torch.Tensor:
    """f_T(z) = exp(log z / T) / sum exp(log z / T), i.e. softmax(logits / T); then the expected
    bin centre under f_T. T = 1: the mean; T -> 0: the mode. (B, Q, h, w) -> (B, 2, h, w) ab units."""
    f = torch.softmax(logits.float() / temperature, dim=1)
    return torch.einsum("bqhw,qc->bchw", f, centres.to(f))


def smoothed_prior(grid_counts: torch.Tensor, centres: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Bin frequencies (529 grid counts) smoothed by a 2-D Gaussian of `sigma` ab units in ab
    space, restricted to the gamut bins and normalised: (Q,)."""
    s = sigma / AB_BIN  # in grid cells
    r = max(1, int(3 * s + 0.5))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-x ** 2 / (2 * s ** 2))
    kernel = (g[:, None] * g[None, :]) / (g.sum() ** 2)
    grid = grid_counts.double().cpu().view(1, 1, AB_BINS_PER_AXIS, AB_BINS_PER_AXIS)
    smooth = torch.nn.functional.conv2d(grid, kernel[None, None], padding=r).flatten()
    p = smooth[grid_to_gamut(centres) >= 0]  # grid order = gamut order (both sorted by grid index)
    return (p / p.sum()).float()
