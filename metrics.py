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

Run as a script to write the comparison table: `python metrics.py summary Results`.
"""
from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from colorize_data import rgb_to_lab


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


@functools.lru_cache(maxsize=None)
def _pretrained_lpips():
    """Build LPIPS-AlexNet once per process, or None with one message when the backbone weights
    cannot be had (torchvision fetches them on first use; nothing is downloaded here)."""
    import warnings

    import lpips

    try:
        with warnings.catch_warnings():  # lpips calls torchvision with its deprecated `pretrained=`
            warnings.simplefilter("ignore", UserWarning)
            return lpips.LPIPS(net="alex", verbose=False).eval()
    except Exception as e:  # URLError, HTTPError, RuntimeError from a bad file, ...
        where = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
        print(f"LPIPS unavailable, reported as null: torchvision could not load AlexNet's weights "
              f"({type(e).__name__}: {e}). Put {ALEXNET_FILE} at {where} to enable it.", file=sys.stderr)
        return None


class LPIPS:
    """LPIPS per image on RGB in [0, 1] (scaled to [-1, 1] here). `available` is False, and calls
    return None, when the pretrained backbone is missing. `random_backbone=True` exists only to
    test the plumbing offline: its numbers mean nothing and are never reported."""

    def __init__(self, device="cpu", random_backbone: bool = False, enabled: bool = True):
        if not enabled:
            net = None
        elif random_backbone:
            import warnings

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
    AUC_TOLERANCE) into 0..AUC_MAX+1: (per-image counts (B, AUC_MAX + 2), per-ground-truth-bin counts (529, AUC_MAX + 2))."""
    from colorize_data import AB_BINS_PER_AXIS, AB_SCALE, ab_bin_index

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


# ----------------------------------------------------------------------------------------------
# The comparison table
# ----------------------------------------------------------------------------------------------
# column, header, which value is best ("min", "max", or "gt": closest to the ground truth's)
SUMMARY_COLUMNS = [("delta_e", "delta E 2000", "min"), ("ssim", "SSIM", "max"), ("psnr", "PSNR", "max"),
                   ("lpips", "LPIPS", "min"), ("colorfulness", "colourfulness", "gt"), ("auc", "AuC", "max"),
                   ("auc_rebalanced", "AuC rebal.", "max"), ("best_of_k_delta_e", "best-of-K delta E", "min"),
                   ("diversity_delta_e", "diversity", "max"), ("semantic_accuracy", "semantic acc.", "max")]
FOUR_DIGITS = ("ssim", "lpips", "auc", "auc_rebalanced", "semantic_accuracy")


def bootstrap_ci(values: torch.Tensor, n: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over images."""
    g = torch.Generator().manual_seed(seed)
    v = values.double()
    means = v[torch.randint(0, len(v), (n, len(v)), generator=g)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(lo), float(hi)


def summary_table(rows: list[dict]) -> str:
    """Markdown table, one row per run's metrics.json, best value of each column in bold."""
    best = {}
    for key, _, rule in SUMMARY_COLUMNS:
        vals = [r[key] for r in rows if r.get(key) is not None]
        if not vals:
            continue
        if rule == "gt":
            gt = [r.get("colorfulness_gt") for r in rows if r.get("colorfulness_gt") is not None]
            target = sum(gt) / len(gt) if gt else max(vals)
            best[key] = min(vals, key=lambda v: abs(v - target))
        else:
            best[key] = (min if rule == "min" else max)(vals)
    head = (["run", "model", "images"] + [h for _, h, _ in SUMMARY_COLUMNS]
            + ["colourfulness (ground truth)", "training s", "training img/s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.get("run", "?"), r.get("model", "?"), str(r.get("n_images", "?"))]
        for key, _, _ in SUMMARY_COLUMNS:
            v = r.get(key)
            text = "n/a" if v is None else f"{v:.4f}" if key in FOUR_DIGITS else f"{v:.2f}"
            if v is not None and f"{key}_ci" in r:
                lo, hi = r[f"{key}_ci"]
                text += f" [{lo:.4f}, {hi:.4f}]" if key in FOUR_DIGITS else f" [{lo:.2f}, {hi:.2f}]"
            cells.append(f"**{text}**" if v is not None and v == best.get(key) else text)
        for key, fmt in (("colorfulness_gt", "{:.2f}"), ("train_seconds", "{:.0f}"), ("train_images_per_s", "{:.0f}")):
            cells.append("n/a" if r.get(key) is None else fmt.format(r[key]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_history(path: Path) -> list[dict]:
    """The rows of a run's history.jsonl; a last line cut short by a kill is left out."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows


def load_run(run_dir: Path) -> dict:
    """metrics.json of a run, with bootstrap intervals from per_image.csv and training time and
    speed from history.jsonl."""
    import csv

    r = json.loads((run_dir / "metrics.json").read_text())
    r.setdefault("run", run_dir.name)
    if (run_dir / "per_image.csv").exists():
        with open(run_dir / "per_image.csv") as f:
            table = list(csv.DictReader(f))
        for key in ("delta_e", "ssim"):
            if table and key in table[0]:
                r[f"{key}_ci"] = bootstrap_ci(torch.tensor([float(t[key]) for t in table]))
    if (run_dir / "history.jsonl").exists():
        epochs = read_history(run_dir / "history.jsonl")
        seconds = [e["train/epoch_seconds"] for e in epochs if "train/epoch_seconds" in e]
        speed = [e["train/images_per_s"] for e in epochs if "train/images_per_s" in e]
        r["train_seconds"] = sum(seconds) if seconds else None
        r["train_images_per_s"] = sum(speed) / len(speed) if speed else None
    return r


def compare_image(runs: list[Path], out: Path) -> Path | None:
    """Results/compare.png: the same test images side by side: grey input, every run's (first)
    colorization, ground truth; cut out of each run's test_grid.png (grey | prediction(s) | truth)."""
    from PIL import Image

    grids = [(d.name, Image.open(d / "test_grid.png").convert("RGB")) for d in runs if (d / "test_grid.png").exists()]
    if not grids:
        return None
    size = json.loads((runs[0] / "metrics.json").read_text()).get("image_size")
    cell = size + 2  # torchvision's save_image pads every cell by 2 pixels
    rows = min(g.size[1] // cell for _, g in grids)
    cols = [grids[0][1].crop((0, 0, cell, rows * cell))]
    cols += [g.crop((cell, 0, 2 * cell, rows * cell)) for _, g in grids]
    last = grids[0][1]
    cols.append(last.crop((last.size[0] - cell, 0, last.size[0], rows * cell)))
    canvas = Image.new("RGB", (cell * len(cols), rows * cell), "white")
    for i, c in enumerate(cols):
        canvas.paste(c, (i * cell, 0))
    canvas.save(out)
    (out.with_suffix(".txt")).write_text("columns: grey | " + " | ".join(n for n, _ in grids) + " | ground truth\n")
    return out


def plot_summary(rows: list[dict], out: Path) -> Path:
    """Results/summary.png: one bar chart per metric, a bar per run (95% intervals where known)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    shown = [(k, h, rule) for k, h, rule in SUMMARY_COLUMNS if any(r.get(k) is not None for r in rows)]
    cols = 3
    fig, axes = plt.subplots(-(-len(shown) // cols), cols, figsize=(5 * cols, 0.4 * len(rows) * -(-len(shown) // cols) + 2),
                             squeeze=False)
    names = [r["run"] for r in rows]
    for ax, (key, header, rule) in zip(axes.flat, shown):
        vals = [r.get(key) if r.get(key) is not None else float("nan") for r in rows]
        err = None
        if any(f"{key}_ci" in r for r in rows):
            err = [[v - r[f"{key}_ci"][0] if f"{key}_ci" in r else 0 for v, r in zip(vals, rows)],
                   [r[f"{key}_ci"][1] - v if f"{key}_ci" in r else 0 for v, r in zip(vals, rows)]]
        ax.barh(names, vals, xerr=err, color="#4c72b0")
        if key == "colorfulness":
            gt = [r["colorfulness_gt"] for r in rows if r.get("colorfulness_gt") is not None]
            if gt:
                ax.axvline(sum(gt) / len(gt), color="#dd8452", label="ground truth")
                ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{header} ({'lower' if rule == 'min' else 'closer to truth' if rule == 'gt' else 'higher'} is better)",
                     fontsize=10)
        ax.invert_yaxis()
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


NOT_LOSSES = {"train/images_per_s", "train/epoch_seconds", "train/kl_active_dims"}


def plot_curves(runs: list[Path], out: Path) -> Path | None:
    """Results/curves.png: validation delta E of every run on one chart (the comparison), then the
    training losses of each run in its own panel (their scales differ from family to family)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for d in runs:
        if not (d / "history.jsonl").exists():
            continue
        hist = read_history(d / "history.jsonl")
        epochs = {h["step"]: h["epoch"] for h in hist if "epoch" in h and "step" in h}
        losses = {k: [(h["epoch"], h[k]) for h in hist if "epoch" in h and k in h]
                  for k in sorted({k for h in hist for k in h if k.startswith("train/")} - NOT_LOSSES)
                  if not k.startswith("train/lr")}
        val = [(epochs.get(h.get("step"), h.get("step")), h["val/delta_e"]) for h in hist if "val/delta_e" in h]
        if val or any(losses.values()):
            curves.append((d.name, losses, val))
    if not curves:
        return None
    cols = min(4, len(curves) + 1)
    rows = -(-(len(curves) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.3 * rows), squeeze=False)
    axes = axes.flatten()
    for name, _, val in curves:
        if val:
            axes[0].plot(*zip(*val), marker=".", label=name)
    axes[0].set(title="validation delta E 2000 (lower is better)", xlabel="epoch")
    axes[0].legend(fontsize=7)
    for ax, (name, losses, _) in zip(axes[1:], curves):
        for key, points in losses.items():
            if points:
                ax.plot(*zip(*points), marker=".", label=key.removeprefix("train/"))
        ax.set(title=f"{name}: training losses", xlabel="epoch")
        if all(v > 0 for points in losses.values() for _, v in points):
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax in axes[len(curves) + 1:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_summary(results_dir) -> Path:
    """RESULTS/summary.md and summary.csv (one row per run with a metrics.json) and compare.png."""
    import csv

    results_dir = Path(results_dir)
    runs = sorted(f.parent for f in results_dir.glob("*/metrics.json"))
    if not runs:
        raise FileNotFoundError(f"no */metrics.json under {results_dir}: run some tests first")
    rows = [load_run(d) for d in runs]
    out = results_dir / "summary.md"
    notes = ("Test split, one row per run. Bold: best per column (colourfulness: closest to the ground "
             "truth's). [a, b]: 95% bootstrap interval of the mean over images. LPIPS n/a: the AlexNet "
             "weights were not available. Best-of-K and diversity: stochastic families tested with "
             "--num_samples K > 1.\n\n")
    judge = results_dir / "classifier" / "classifier.json"
    if judge.exists():
        c = json.loads(judge.read_text())
        notes += (f"Semantic accuracy: a classifier trained on the colour training images "
                  f"({len(c['classes'])} classes) recognises {c['accuracy_color']:.4f} of the colour test "
                  f"images and {c['accuracy_grey']:.4f} of their grey versions; the column gives its "
                  f"accuracy on each run's colorizations.\n\n")
    compare = compare_image(runs, results_dir / "compare.png")
    plot_summary(rows, results_dir / "summary.png")
    curves = plot_curves(runs, results_dir / "curves.png")
    out.write_text("# Results\n\n" + notes + summary_table(rows) + "\n![every metric, every run](summary.png)\n"
                   + ("\n![the same test images, every run](compare.png)\n" if compare else "")
                   + ("\n![training curves](curves.png)\n" if curves else ""))
    keys = ["run", "model", "n_images"] + [k for k, _, _ in SUMMARY_COLUMNS] + \
        ["delta_e_ci_low", "delta_e_ci_high", "ssim_ci_low", "ssim_ci_high", "colorfulness_gt",
         "train_seconds", "train_images_per_s"]
    with open(results_dir / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            for key in ("delta_e", "ssim"):
                if f"{key}_ci" in r:
                    r[f"{key}_ci_low"], r[f"{key}_ci_high"] = r[f"{key}_ci"]
            w.writerow(r)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "summary":
        sys.exit("usage: python metrics.py summary RESULTS_DIR")
    print(write_summary(sys.argv[2]).read_text())
