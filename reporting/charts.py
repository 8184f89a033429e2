"""The report's pictures: compare.png (the same test images, every run), summary.png (a bar
chart per metric), curves.png (training curves) and hints.png (the hint curves).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from reporting.runs import _finite, shared_samples
from reporting.tables import SUMMARY_COLUMNS, _hinted, paste_curve
from util import colour, visuals
from util.run_folder import RunFolder


def compare_image(runs: list[Path], out: Path, columns: int = 6, cell: int = 96) -> Path | None:
    """Results/compare.png: the same test images (by path, those every run tested) in columns;
    rows: the grey input, each run's colorization (the no-colour baseline's first, a stochastic
    run's samples 2 and 3 below its first when it was tested with --num_samples), the ground
    truth; a row that repeats an earlier one (a run tested again on the same checkpoint) is named
    on that row instead. Every run's own image size scaled to one cell size, rows labelled. Read
    from each run's test_samples.pt."""
    samples, common = shared_samples(sorted(runs, key=lambda d: _model(d) != "gray"), columns)
    if not common:
        return None
    truth = torch.stack([samples[0][1][p][1] for p in common]).float() / 255
    rows: list[tuple[str, torch.Tensor]] = []
    for name, s in samples:
        for k in range(1 + len(s[common[0]][2])):
            images = torch.stack([s[p][0] if k == 0 else s[p][2][k - 1] for p in common])
            label = name if k == 0 else f"{name} sample {k + 1}"
            same = next((i for i, (_, seen) in enumerate(rows) if torch.equal(seen, images)), None)
            if same is None:
                rows.append((label, images))
            else:
                rows[same] = (f"{rows[same][0]}\n= {label}", images)
    rows = [(label, images.float() / 255) for label, images in rows]
    return visuals.compare_sheet([("grey input", colour.grey_rgb(truth)), *rows, ("ground truth", truth)], out, cell)


def _model(run: Path) -> str | None:
    """The family a run's metrics.json names (None when it cannot be read)."""
    try:
        return json.loads(RunFolder(run).metrics.read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return None


def plot_summary(rows: list[dict], out: Path) -> Path:
    """Results/summary.png: one bar chart per metric, a bar per run (95% intervals where known)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    shown = [(k, h, rule) for k, h, rule in SUMMARY_COLUMNS if any(r.get(k) is not None for r in rows)]
    cols = 3
    grid_rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(grid_rows, cols, figsize=(5 * cols, 0.4 * len(rows) * grid_rows + 2), squeeze=False)
    for ax, column in zip(axes.flat, shown):
        _metric_bars(ax, rows, *column)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _metric_bars(ax, rows: list[dict], key: str, header: str, rule: str) -> None:
    """One metric's panel of summary.png: a bar per run, its 95% interval, the truth's colourfulness."""
    vals = [r.get(key) if r.get(key) is not None else float("nan") for r in rows]
    err = None
    if any(f"{key}_ci" in r for r in rows):
        # (clamped at 0: a mean in float32 can sit a rounding error outside its float64 interval)
        err = [[max(0.0, v - r[f"{key}_ci"][0]) if f"{key}_ci" in r else 0 for v, r in zip(vals, rows)],
               [max(0.0, r[f"{key}_ci"][1] - v) if f"{key}_ci" in r else 0 for v, r in zip(vals, rows)]]
    ax.barh([r["run"] for r in rows], vals, xerr=err, color="#4c72b0")
    if key == "colorfulness":
        gt = [r["colorfulness_gt"] for r in rows if r.get("colorfulness_gt") is not None]
        if gt:
            ax.axvline(sum(gt) / len(gt), color="#dd8452", label="ground truth")
            ax.legend(loc="lower right", fontsize=8)
    better = "lower" if rule == "min" else "closer to truth" if rule == "gt" else "higher"
    ax.set_title(f"{header} ({better} is better)", fontsize=10)
    ax.invert_yaxis()


NOT_LOSSES = {"train/images_per_s", "train/epoch_seconds", "train/kl_active_dims"}


def plot_curves(runs: list[Path], out: Path) -> Path | None:
    """Results/curves.png: validation delta E of every run on one chart (the comparison), then the
    training losses of each run in its own panel (their scales differ from family to family)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [c for c in map(_curves_of, runs) if c is not None]
    if not curves:
        return None
    cols = min(4, len(curves) + 1)
    rows = -(-(len(curves) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.3 * rows), squeeze=False)
    axes = axes.flatten()
    colours = plt.get_cmap("tab20").colors  # 20 distinct colours: one per run, none shared up to 20 runs
    for i, (name, _, val) in enumerate(curves):
        if val:
            axes[0].plot(*zip(*val), marker="o", markersize=4, label=name, color=colours[i % len(colours)])
    axes[0].set(title="validation delta E 2000 (lower is better)", xlabel="epoch")
    if axes[0].get_legend_handles_labels()[0]:  # no run validated: no legend (matplotlib would warn)
        axes[0].legend(fontsize=7)
    for ax, (name, losses, _) in zip(axes[1:], curves):
        _loss_panel(ax, name, losses)
    epochs = [e for _, losses, val in curves for e, _ in val + [p for ps in losses.values() for p in ps]]
    last = int(math.ceil(max(epochs + [1])))
    for ax in axes[:len(curves) + 1]:  # whole epochs, from 0.5 (one epoch is a dot at 1, not on a 0.96-1.04 axis)
        ax.set_xticks(range(1, last + 1, max(1, -(-last // 10))))
        ax.set_xlim(0.5, last + 0.5)
    for ax in axes[len(curves) + 1:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _curves_of(run: Path):
    """(name, {loss: [(epoch, value)]}, [(epoch, validation delta E)]) of a run's history, or None."""
    if not RunFolder(run).history.exists():
        return None
    hist = [{k: v for k, v in h.items() if _finite(v)} for h in RunFolder(run).read_history()]  # numbers only
    epochs = {h["step"]: h["epoch"] for h in hist if "epoch" in h and "step" in h}
    losses = {k: [(h["epoch"], h[k]) for h in hist if "epoch" in h and k in h]
              for k in sorted({k for h in hist for k in h if k.startswith("train/")} - NOT_LOSSES)
              if not k.startswith("train/lr")}
    val = [(epochs.get(h.get("step"), h.get("step")), h["val/delta_e"]) for h in hist if "val/delta_e" in h]
    return (run.name, losses, val) if val or any(losses.values()) else None


def _loss_panel(ax, name: str, losses: dict) -> None:
    for key, points in losses.items():
        if points:
            ax.plot(*zip(*points), marker=".", label=key.removeprefix("train/"))
    ax.set(title=f"{name}: training losses", xlabel="epoch")
    if all(v > 0 for points in losses.values() for _, v in points):
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def plot_hints(rows: list[dict], out: Path, apart: list[dict] = ()) -> Path | None:
    """RESULTS/hints.png: delta E and PSNR against the number of hints, a line per guided run (runs
    set apart from the ranked group dashed, labelled as not comparable)."""
    hinted = _hinted(rows, apart)
    if not hinted:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = plt.get_cmap("tab20").colors
    paste = paste_curve(rows, apart)
    if paste:
        for ax, key in zip(axes, ("delta_e", "psnr")):
            ax.plot([h["count"] for h in paste], [h[key] for h in paste], "s:", color="grey",
                    label="hints pasted into grey (no model)")
    for i, (r, set_apart) in enumerate(hinted):
        xs = [h["count"] for h in r["hints"]]
        label = f"{r['run']} (set apart)" if set_apart else r["run"]
        for ax, key in zip(axes, ("delta_e", "psnr")):
            ax.plot(xs, [h[key] for h in r["hints"]], "o--" if set_apart else "o-",
                    color=colours[i % len(colours)], label=label)
    from matplotlib.ticker import NullLocator

    counts = sorted({h["count"] for r, _ in hinted for h in r["hints"]})
    for ax, title in zip(axes, ("delta E 2000 (lower is better)", "PSNR, dB (higher is better)")):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(counts, [str(n) for n in counts])  # the counts tested, as numbers (not 10^0, 10^1)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("hints per image")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
