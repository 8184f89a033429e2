"""Batched image-quality metrics. One documented range: RGB tensors (B, 3, H, W) in [0, 1].

Every function returns one value per image, shape (B,); `MetricAccumulator` averages over images
(never over batches, so a short last batch weighs what its images weigh).

    delta_e_2000   CIEDE2000 between the Lab of both images, mean over pixels (lower is better)
    ssim           SSIM on RGB, 11x11 Gaussian window, sigma 1.5, data range 1, mean over channels
    psnr           10 log10(1 / MSE) on RGB
    colorfulness   Hasler and Suesstrunk (2003) on 0..255 RGB
    auc            Zhang et al. (2016): area under the share of pixels whose ab error is within t,
                   t = 0..150, as a fraction; auc_rebalanced weights ground-truth colour bins equally
    LPIPS          the `lpips` package, AlexNet; inputs are scaled to [-1, 1] here, not by callers

FID and KID, measured over a whole set of colorizations rather than per image, are realism.py.

The comparison of runs (summary table, charts, compare image) is report.py.
"""
from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from util.colour import rgb_to_lab


def delta_e_2000_lab(lab1: torch.Tensor, lab2: torch.Tensor, kL=1.0, kC=1.0, kH=1.0) -> torch.Tensor:
    """CIEDE2000 colour difference per pixel between Lab tensors with channels on dim 1.

    Sharma, Wu and Dalal (2005), in the form scikit-image's deltaE_ciede2000 uses."""
    lab1, lab2 = lab1.double(), lab2.double()
    L1, a1, b1 = lab1.unbind(1)
    L2, a2, b2 = lab2.unbind(1)
    c7 = (0.5 * (torch.hypot(a1, b1) + torch.hypot(a2, b2))) ** 7
    scale = 1 + 0.5 * (1 - torch.sqrt(c7 / (c7 + 25.0 ** 7)))  # a' = a (1 + G)
    C1, h1 = torch.hypot(a1 * scale, b1), torch.atan2(b1, a1 * scale) % (2 * math.pi)
    C2, h2 = torch.hypot(a2 * scale, b2), torch.atan2(b2, a2 * scale) % (2 * math.pi)

    tmp = (0.5 * (L1 + L2) - 50) ** 2
    L_term = (L2 - L1) / (kL * (1 + 0.015 * tmp / torch.sqrt(20 + tmp)))
    Cbar = 0.5 * (C1 + C2)
    C_term = (C2 - C1) / (kC * (1 + 0.045 * Cbar))

    h_diff, h_sum, CC = h2 - h1, h1 + h2, C1 * C2
    two_pi = 2 * math.pi  # (masks select with torch.where: bool * float would round to float32)
    dH = torch.where(h_diff > math.pi, h_diff - two_pi, torch.where(h_diff < -math.pi, h_diff + two_pi, h_diff))
    dH = torch.where(CC == 0, torch.zeros_like(dH), dH)
    dH_term = 2 * torch.sqrt(CC) * torch.sin(dH / 2)
    wrap = (CC != 0) & (h_diff.abs() > math.pi)
    Hbar = torch.where(wrap, torch.where(h_sum < two_pi, h_sum + two_pi, h_sum - two_pi), h_sum)
    Hbar = torch.where(CC == 0, Hbar * 2, Hbar) * 0.5
    T = (1 - 0.17 * torch.cos(Hbar - math.radians(30)) + 0.24 * torch.cos(2 * Hbar)
         + 0.32 * torch.cos(3 * Hbar + math.radians(6)) - 0.20 * torch.cos(4 * Hbar - math.radians(63)))
    H_term = dH_term / (kH * (1 + 0.015 * Cbar * T))

    c7 = Cbar ** 7
    Rc = 2 * torch.sqrt(c7 / (c7 + 25.0 ** 7))
    dtheta = math.radians(30) * torch.exp(-(((torch.rad2deg(Hbar) - 275) / 25) ** 2))
    R_term = -torch.sin(2 * dtheta) * Rc * C_term * H_term
    return torch.sqrt((L_term ** 2 + C_term ** 2 + H_term ** 2 + R_term).clamp_min(0))


def delta_e_2000(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 per image between two RGB batches in [0, 1]."""
    return delta_e_2000_lab(rgb_to_lab(pred.double()), rgb_to_lab(target.double())).flatten(1).mean(1).float()


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5, device=None, dtype=None) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)  # as scipy.ndimage.gaussian_filter: 11 taps for sigma 1.5
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5) -> torch.Tensor:
    """SSIM per image (Wang et al. 2004) as skimage's structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False): Gaussian-filtered statistics, averaged over the region
    that the window covers fully, then over channels."""
    x, y = pred.double(), target.double()
    w = _gaussian_window(sigma, device=x.device, dtype=x.dtype)
    k = w.numel()
    if min(x.shape[-2:]) < k:
        raise ValueError(f"SSIM needs images of at least {k}x{k} pixels, got {tuple(x.shape[-2:])}")
    c = x.shape[1]
    wy, wx = w.view(1, 1, k, 1).repeat(c, 1, 1, 1), w.view(1, 1, 1, k).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, wy, groups=c), wx, groups=c)

    ux, uy = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - ux * ux, blur(y * y) - uy * uy, blur(x * y) - ux * uy
    C1, C2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + C1) * (2 * vxy + C2)) / ((ux ** 2 + uy ** 2 + C1) * (vx + vy + C2))
    return s.mean(dim=(1, 2, 3)).float()


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    mse = ((pred.double() - target.double()) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return (10 * torch.log10(data_range ** 2 / mse)).float()


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler and Suesstrunk (2003), M3 = sigma_rgyb + 0.3 mu_rgyb, on RGB scaled to 0..255."""
    r, g, b = (rgb.double() * 255).flatten(2).unbind(1)
    rg, yb = r - g, 0.5 * (r + g) - b
    sigma = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False))
    mu = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return (sigma + 0.3 * mu).float()


# ----------------------------------------------------------------------------------------------
# LPIPS
# ----------------------------------------------------------------------------------------------
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = "https://download.pytorch.org/models/" + ALEXNET_FILE


@functools.lru_cache(maxsize=None)
def _pretrained_lpips():
    """Build LPIPS-AlexNet once per process, or None with one message when the backbone weights
    cannot be had. torchvision would fetch them on first use, announcing a download that then
    fails; they are fetched here first, quietly, so a failure is one clear line."""
    import lpips

    from util.files import fetch_quietly

    where = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    why = None if where.is_file() else fetch_quietly(ALEXNET_URL, where, hash_prefix=ALEXNET_FILE[-12:-4])
    if why is None:
        try:
            with warnings.catch_warnings():  # lpips calls torchvision with its deprecated `pretrained=`
                warnings.simplefilter("ignore", UserWarning)
                return lpips.LPIPS(net="alex", verbose=False).eval()
        except Exception as e:  # a bad file, ...
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if not _said_lately(where.with_name(ALEXNET_FILE + ".missing"), why):
        print(f"LPIPS unavailable, reported as null: AlexNet's weights could not be had ({why}). Put {ALEXNET_FILE} "
              f"(from {ALEXNET_URL}) at {where} to enable it.", file=sys.stderr)
    return None


def _said_lately(marker: Path, why: str, hours: float = 1.0) -> bool:
    """Whether this machine printed the same failure within the hour (a main job's test after its
    training, a script's next family): said once, not again every process. Marks it now."""
    try:
        lately = marker.read_text() == why and time.time() - marker.stat().st_mtime < hours * 3600
    except OSError:
        lately = False
    if not lately:
        with contextlib.suppress(OSError):
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(why)
    return lately


class LPIPS:
    """LPIPS per image on RGB in [0, 1] (scaled to [-1, 1] here). `available` is False, and calls
    return None, when the pretrained backbone is missing. `random_backbone=True` exists only to
    test the plumbing offline: its numbers mean nothing and are never reported."""

    def __init__(self, device="cpu", random_backbone: bool = False, enabled: bool = True):
        if not enabled:
            net = None
        elif random_backbone:
            import lpips

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
        else:
            net = _pretrained_lpips()
        self.net = None if net is None else net.to(device).requires_grad_(False)
        self.random_backbone = random_backbone

    @property
    def available(self) -> bool:
        return self.net is not None

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor):
        if self.net is None:
            return None
        return self.net(pred.float() * 2 - 1, target.float() * 2 - 1).flatten(1).mean(1)


AUC_MAX = 150  # Zhang et al. 2016: thresholds 0..150 on the ab error
# Errors this small (ab units) count as exact: a perfect colorization rebuilt through Lab and float32
# RGB is off by ~4e-5, which must not drop it below threshold 0 (that made a perfect AuC 0.9964)
AUC_TOLERANCE = 1e-3


def ab_error_histograms(pred: torch.Tensor, target: torch.Tensor):
    """Per-pixel ab error (Euclidean, ab units) of RGB batches, bucketed by its ceiling (less
    AUC_TOLERANCE) into 0..AUC_MAX+1: (per-image counts (B, AUC_MAX + 2), per-ground-truth-bin
    counts (529, AUC_MAX + 2))."""
    from util.colour import AB_BINS_PER_AXIS, AB_SCALE, ab_bin_index

    lab_p, lab_t = rgb_to_lab(pred.float()), rgb_to_lab(target.float())
    err = (lab_p[:, 1:] - lab_t[:, 1:]).norm(dim=1)                       # (B, H, W)
    bucket = (err - AUC_TOLERANCE).ceil().clamp(0, AUC_MAX + 1).long()
    width = AUC_MAX + 2
    b = len(err)
    per_image = torch.bincount((torch.arange(b, device=err.device)[:, None, None] * width + bucket).flatten(),
                               minlength=b * width).view(b, width)
    gt_bin = ab_bin_index(lab_t[:, 1:] / AB_SCALE)
    per_bin = torch.bincount((gt_bin * width + bucket).flatten(),
                             minlength=AB_BINS_PER_AXIS ** 2 * width).view(-1, width)
    return per_image, per_bin


def auc_from_histogram(counts: torch.Tensor) -> torch.Tensor:
    """Area under the curve of the share of pixels with error <= t, t = 0..AUC_MAX, as a fraction
    of the largest possible area (rows of counts as made by ab_error_histograms)."""
    within = counts.double().cumsum(-1)[..., :AUC_MAX + 1] / counts.double().sum(-1, keepdim=True).clamp_min(1)
    return within.mean(-1)


def rebalanced_auc(per_bin: torch.Tensor) -> float | None:
    """Zhang et al.'s class-rebalanced AuC: every ground-truth colour bin weighs the same, i.e.
    pixels are weighted by the inverse frequency of their bin."""
    seen = per_bin.sum(-1) > 0
    return float(auc_from_histogram(per_bin[seen]).mean()) if seen.any() else None


def diversity(samples: torch.Tensor, target: torch.Tensor) -> dict:
    """K colorizations (K, B, 3, H, W) of the same images against the ground truth (B, 3, H, W):
    best_of_k_delta_e, the lowest delta E of the K per image, and diversity_delta_e, the mean delta
    E between the K(K-1)/2 pairs of colorizations per image (0 when they are identical)."""
    k = samples.shape[0]
    errors = torch.stack([delta_e_2000(s, target) for s in samples])
    pairs = [delta_e_2000(samples[i], samples[j]) for i in range(k) for j in range(i + 1, k)]
    return {"best_of_k_delta_e": errors.min(0).values,
            "diversity_delta_e": torch.stack(pairs).mean(0) if pairs else torch.zeros_like(errors[0])}


# ----------------------------------------------------------------------------------------------
# Averaging over images
# ----------------------------------------------------------------------------------------------
class MetricAccumulator:
    """Per-image metrics of a stream of batches; `summary()` averages them over images."""

    def __init__(self, lpips_metric: LPIPS | None = None):
        self.lpips = lpips_metric
        self.values: dict[str, list[torch.Tensor]] = {}
        self.per_bin = None  # ab-error histogram per ground-truth colour bin, for the rebalanced AuC

    def _add(self, name, v):
        self.values.setdefault(name, []).append(v.detach().float().cpu())

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self._add("delta_e", delta_e_2000(pred, target))
        self._add("ssim", ssim(pred, target))
        self._add("psnr", psnr(pred, target))
        self._add("colorfulness", colorfulness(pred))
        self._add("colorfulness_gt", colorfulness(target))
        per_image, per_bin = ab_error_histograms(pred, target)
        self._add("auc", auc_from_histogram(per_image))
        self.per_bin = per_bin if self.per_bin is None else self.per_bin + per_bin
        lp = self.lpips(pred, target) if self.lpips is not None else None
        if lp is not None:
            self._add("lpips", lp)

    @torch.no_grad()
    def update_samples(self, samples: torch.Tensor, target: torch.Tensor) -> None:
        """K colorizations per image: headline metrics of the first (the most likely), plus diversity."""
        self.update(samples[0], target)
        if samples.shape[0] > 1:
            for name, v in diversity(samples, target).items():
                self._add(name, v)

    def per_image(self) -> dict[str, torch.Tensor]:
        return {k: torch.cat(v) for k, v in self.values.items()}

    def summary(self) -> dict:
        return summarize(self.per_image(), self.per_bin)


def summarize(per_image: dict, per_bin: torch.Tensor | None = None) -> dict:
    """Means over images of per-image metrics (lpips None when it was not computed), and the
    class-rebalanced AuC from the pooled per-bin histogram."""
    out = {k: float(v.mean()) for k, v in per_image.items()}
    out.setdefault("lpips", None)
    if per_bin is not None:
        out["auc_rebalanced"] = rebalanced_auc(per_bin)
    out["n_images"] = int(per_image["delta_e"].numel()) if per_image else 0
    return out
