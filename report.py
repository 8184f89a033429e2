"""The comparison of runs: RESULTS/summary.md and summary.csv (one row per tested run, best in
bold, bootstrap intervals), summary.png (every metric), compare.png (the same test images, every
run) and curves.png (training curves). Reads each run's structured outputs through RunFolder.

Only comparable runs are ranked together: the same test images (data folder, split, image size,
number of images and of FID images, and FID's Inception weights) and, among runs that learn, the
same training data (folder and number of images) and number of epochs. The largest such group is
the comparison; any other run is listed apart, unranked, with what differs
(--mixed ranks every run in one table anyway, and says so).

    python report.py summary Results [--mixed]
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from trainers.run_folder import RunFolder

# column, header, which value is best ("min", "max", or "gt": closest to the ground truth's)
SUMMARY_COLUMNS = [("delta_e", "delta E 2000", "min"), ("ssim", "SSIM", "max"), ("psnr", "PSNR", "max"),
                   ("lpips", "LPIPS", "min"), ("fid", "FID", "min"), ("kid", "KID", "min"),
                   ("colorfulness", "colourfulness", "gt"), ("auc", "AuC", "max"),
                   ("auc_rebalanced", "AuC rebal.", "max"), ("best_of_k_delta_e", "best-of-K delta E", "min"),
                   ("diversity_delta_e", "diversity", "max"), ("semantic_accuracy", "semantic acc.", "max")]
FOUR_DIGITS = ("ssim", "lpips", "kid", "auc", "auc_rebalanced", "semantic_accuracy")
# what two runs must share for their figures to be compared, and the words for a difference
# (test_set: a fingerprint of the test images' names; older metrics.json files have test_images only).
# Runs that both measured FID must also have used as many images for it (fid_images); a run without
# FID is compared on the other metrics.
SAME_TEST = [("data", "data"), ("test_set", "test split"), ("image_size", "image size"),
             ("n_images", "number of test images")]


def trained_epochs(r: dict):
    """The epochs a run was trained for (its budget, whichever epoch its best.pt came from), or
    None for one with nothing to learn (the grey baseline). Older metrics.json files without
    "epochs" give the tested checkpoint's epoch."""
    return None if r.get("weights") in (None, "none") else r.get("epochs") or r.get("epoch")


def trained_on(r: dict) -> tuple | None:
    """(training data folder, number of training images) of a run that learns, None for one that
    does not; ("?", "?") where its metrics.json and run folder do not say."""
    if trained_epochs(r) is None:
        return None
    return (r.get("train_data") or "?", r.get("train_images") or "?")


def leaks(r: dict) -> bool:
    """Whether more than 1% of a run's test images are files it trained or validated on (test
    mode's seen_in_training): such a run is set apart. A few byte-identical duplicates in a data
    set are flagged by test mode but do not set every run on it apart."""
    seen = r.get("seen_in_training")
    return bool(seen) and (seen["train"] + seen["val"]) > 0.01 * max(seen["of"], 1)


def split_comparable(rows: list[dict]) -> tuple[list[dict], list[tuple[dict, str]]]:
    """(the largest group of comparable runs, [(another run, what differs), ...])."""
    def base(r):
        return tuple(r.get(k, r.get("test_images")) if k == "test_set" else r.get(k) for k, _ in SAME_TEST)

    def fid(r):  # (images, weights), None for a run that measured no FID
        return (r.get("fid_images"), r.get("fid_weights")) if r.get("fid") is not None and r.get("fid_images") else None

    clean = [r for r in rows if not leaks(r)] or rows  # a leaking test never sets the standard
    trained = [(base(r), trained_epochs(r), trained_on(r)) for r in clean if trained_epochs(r) is not None]
    keys = trained or [(base(r), None, None) for r in clean]
    main_base, main_epochs, main_data = max(keys, key=keys.count)  # the most common setup (first on a tie)
    fids = [fid(r) for r in rows if base(r) == main_base and fid(r)]
    main_fid = max(fids, key=fids.count) if fids else None  # the FID setup most of those runs used
    group, apart = [], []
    for r in rows:
        differs = [words for (k, words), mine, theirs in zip(SAME_TEST, base(r), main_base) if mine != theirs]
        if fid(r) and main_fid and fid(r)[0] != main_fid[0]:
            differs.append(f"FID images ({fid(r)[0]}, not {main_fid[0]})")
        elif fid(r) and main_fid and fid(r)[1] != main_fid[1]:
            differs.append(f"FID weights ({fid(r)[1]}, not {main_fid[1]})")
        data = trained_on(r)
        if data is not None and main_data is not None and data[0] != main_data[0]:
            differs.append(f"training data ({Path(str(data[0])).name}, not {Path(str(main_data[0])).name})")
        elif data is not None and main_data is not None and data[1] != main_data[1]:
            differs.append(f"training images ({data[1]}, not {main_data[1]})")
        if trained_epochs(r) not in (None, main_epochs):
            differs.append(f"epochs ({trained_epochs(r)}, not {main_epochs})")
        seen = r.get("seen_in_training")
        if leaks(r):
            differs.append(f"test images seen in training ({seen['train'] + seen['val']} of {seen['of']})")
        if differs:
            apart.append((r, ", ".join(differs)))
        else:
            group.append(r)
    return group, apart


def bootstrap_ci(values: torch.Tensor, n: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over images."""
    g = torch.Generator().manual_seed(seed)
    v = values.double()
    means = v[torch.randint(0, len(v), (n, len(v)), generator=g)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(lo), float(hi)


def table(rows: list[dict], rank: bool = True, why: list[str] | None = None) -> tuple[list[str], list[list]]:
    """(header, rows of (text, bold) cells): one row per run's metrics.json, with what it was
    trained and tested on; rank=True marks the best value of each column; `why` adds a column."""
    best = {}
    for key, _, rule in SUMMARY_COLUMNS if rank else []:
        vals = [r[key] for r in rows if r.get(key) is not None]
        if not vals:
            continue
        if rule == "gt":
            gt = [r.get("colorfulness_gt") for r in rows if r.get("colorfulness_gt") is not None]
            target = sum(gt) / len(gt) if gt else max(vals)
            best[key] = min(vals, key=lambda v: abs(v - target))
        else:
            best[key] = (min if rule == "min" else max)(vals)
    head = (["run", "model", "data", "size", "epochs", "trained on", "sampling", "images"]
            + [h for _, h, _ in SUMMARY_COLUMNS]
            + ["colourfulness (ground truth)", "training s", "training img/s"]
            + (["not comparable: differs in"] if why else []))
    body = []
    for i, r in enumerate(rows):
        epochs = trained_epochs(r)
        cells = [(str(x), False) for x in (r.get("run", "?"), r.get("model", "?"), Path(str(r.get("data") or "?")).name,
                                            r.get("image_size", "?"), "-" if epochs is None else epochs,
                                            training_text(r), sampling_text(r), r.get("n_images", "?"))]
        for key, _, _ in SUMMARY_COLUMNS:
            v = r.get(key)
            text = "n/a" if v is None else f"{v:.4f}" if key in FOUR_DIGITS else f"{v:.2f}"
            if v is not None and f"{key}_ci" in r:
                lo, hi = r[f"{key}_ci"]
                text += f" [{lo:.4f}, {hi:.4f}]" if key in FOUR_DIGITS else f" [{lo:.2f}, {hi:.2f}]"
            cells.append((text, v is not None and v == best.get(key)))
        for key, fmt in (("colorfulness_gt", "{:.2f}"), ("train_seconds", "{:.0f}"), ("train_images_per_s", "{:.3g}")):
            cells.append(("n/a" if r.get(key) is None else fmt.format(r[key]), False))
        if why:
            cells.append((why[i], False))
        body.append(cells)
    return head, body


def summary_table(rows: list[dict], rank: bool = True, why: list[str] | None = None) -> str:
    """The table in Markdown, best values in bold."""
    head, body = table(rows, rank, why)
    copied = set(range(7)) | ({len(head) - 1} if why else set())  # texts from the run folders: made inert
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(f"**{t}**" if bold else md(t) if i in copied else t
                                for i, (t, bold) in enumerate(cells)) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def html_table(rows: list[dict], rank: bool = True, why: list[str] | None = None) -> str:
    """The table in HTML, best values in bold."""
    from html import escape

    head, body = table(rows, rank, why)
    out = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td><b>{escape(t)}</b></td>" if bold else f"<td>{escape(t)}</td>" for t, bold in cells)
            + "</tr>" for cells in body]
    return "\n".join(out + ["</table>"]) + "\n"


def training_text(r: dict) -> str:
    """"cifar10 x 10000, seed 0": the training data's folder name, its number of images and the
    seed; "-" for a run with nothing to learn."""
    data = trained_on(r)
    if data is None:
        return "-"
    seed = r.get("seed")
    return f"{Path(str(data[0])).name} x {data[1]}" + ("" if seed is None else f", seed {seed}")


def sampling_text(r: dict) -> str:
    """How a run colorized the test images: a diffusion sampler and its steps, K samples."""
    parts = []
    if r.get("sampler"):
        parts.append(f"{r['sampler'].upper()} {r.get('sampling_steps', '?')} steps")
    if (r.get("num_samples") or 1) > 1:
        parts.append(f"K={r['num_samples']}")
    return ", ".join(parts) or "-"


class BadRun(Exception):
    """A run folder whose results cannot be read at all; the report lists it, with why, and goes on."""


# what a metrics.json field must be; anything else is left out of the report (n/a) and said
INTEGER_FIELDS = ("n_images", "image_size", "epoch", "epochs", "fid_images", "num_samples", "sampling_steps",
                  "train_images", "max_images", "seed")
TEXT_FIELDS = ("model", "data", "test_images", "test_set", "weights", "sampler", "fid_weights", "train_data")
NUMBER_FIELDS = tuple(k for k, _, _ in SUMMARY_COLUMNS) + ("colorfulness_gt", "kid_std", "seconds")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
        elif k in NUMBER_FIELDS:
            r[k] = float(v) if _finite(v) else None
            ok = r[k] is not None
        elif k in INTEGER_FIELDS:
            r[k] = v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None
            ok = r[k] is not None
        elif k in TEXT_FIELDS:
            r[k] = v if isinstance(v, str) else None
            ok = r[k] is not None
        elif k == "seen_in_training":
            ok = isinstance(v, dict) and all(isinstance(v.get(x), int) and not isinstance(v.get(x), bool)
                                             and v[x] >= 0 for x in ("train", "val", "of"))
            r[k] = v if ok else None
        elif k in ("hints", "hints_paste"):
            ok = isinstance(v, list) and all(
                isinstance(h, dict) and isinstance(h.get("count"), int) and not isinstance(h.get("count"), bool)
                and _finite(h.get("delta_e")) and _finite(h.get("psnr")) and (h.get("fid") is None or _finite(h["fid"]))
                for h in v)
            r[k] = v if ok else None
        else:
            r[k], ok = v, True
        if v is not None and not ok:
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
        try:
            epochs = json.loads(run.args.read_text()).get("epochs")
            r["epochs"] = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None
        except (OSError, ValueError, AttributeError, RecursionError):
            problems.append("args.json cannot be read")
    if "train_data" not in raw and trained_epochs(r) is not None:  # older metrics.json files: the run's split
        r.update(training_record(run_dir, r.get("weights")))
    table, why = read_per_image(run_dir)
    if why:
        problems.append(why)
    for key in ("delta_e", "ssim"):
        if table and all(key in t for t in table.values()):
            r[f"{key}_ci"] = bootstrap_ci(torch.tensor([t[key] for t in table.values()]))
    if run.history.exists():
        epochs = run.read_history()
        seconds = [e["train/epoch_seconds"] for e in epochs if _finite(e.get("train/epoch_seconds"))]
        speed = [e["train/images_per_s"] for e in epochs if _finite(e.get("train/images_per_s"))]
        r["train_seconds"] = sum(seconds) if seconds else None
        r["train_images_per_s"] = sum(speed) / len(speed) if speed else None
    if run.test_samples.exists() and read_samples(run_dir) is None:
        problems.append("test_samples.pt cannot be read (left out of the pictures)")
    r["problems"] = problems
    return r


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
    """{test image path: (colorization, truth) uint8 (3, S, S)} from a run's test_samples.pt, or
    None when it is missing or not what test mode writes."""
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
    return dict(zip(paths, zip(pred, truth)))


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


def grey_of(rgb: torch.Tensor) -> torch.Tensor:
    """What the colorizers were given: the L of RGB in [0, 1], shown without colour."""
    from colorize_data import compose_rgb, rgb_to_model

    return compose_rgb(rgb_to_model(rgb)[0], torch.zeros(len(rgb), 2, *rgb.shape[2:]))


def compare_image(runs: list[Path], out: Path, columns: int = 6, cell: int = 96) -> Path | None:
    """Results/compare.png: the same test images (by path, those every run tested) in columns;
    rows: the grey input, each run's (first) colorization, the ground truth; every run's own
    image size scaled to one cell size, rows labelled. Read from each run's test_samples.pt."""
    from PIL import Image, ImageDraw

    samples, common = shared_samples(runs, columns)
    if not common:
        return None
    truth = torch.stack([samples[0][1][p][1] for p in common]).float() / 255
    rows = [("grey input", grey_of(truth))] + [(name, torch.stack([s[p][0] for p in common]).float() / 255)
                                               for name, s in samples] + [("ground truth", truth)]
    label, pad = 150, 2
    canvas = Image.new("RGB", (label + len(common) * (cell + pad), len(rows) * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, images) in enumerate(rows):
        y = r * (cell + pad)
        draw.text((4, y + cell // 2 - 6), name[:22], fill="black")
        for c, img in enumerate(images):
            tile = Image.fromarray((img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
            canvas.paste(tile.resize((cell, cell), Image.BILINEAR), (label + c * (cell + pad), y))
    canvas.save(out)
    return out


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


def md(text) -> str:
    """Text copied from a run folder (a run name, a path, a reason) made inert in a Markdown table:
    HTML escaped, Markdown's own characters backslashed, one line."""
    from html import escape

    text = escape(" ".join(str(text).split()), quote=False)
    inside_word = lambda i: 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()  # noqa: E731
    return "".join("\\" + c if c in "\\`*[]|#!{}" or (c == "_" and not inside_word(i)) else c
                   for i, c in enumerate(text))


PAGE_STYLE = """body { font-family: sans-serif; margin: 1.5em; color: #222 }
table { border-collapse: collapse; font-size: 13px; margin-bottom: 1em }
td, th { border: 1px solid #bbb; padding: 3px 6px; text-align: right }
th { background: #eee }
table.images td { text-align: center; vertical-align: top; font-size: 11px }
table.images img { width: 128px; height: 128px; image-rendering: pixelated; display: block; margin: auto }
img.chart { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0 }"""


def write_index(results_dir: Path, runs: list[Path], group: list[dict], apart: list, notes: str,
                charts: list[str], first: int = 8) -> Path:
    """RESULTS/index.html, a static page (open it in a browser, no server): the table, the runs
    set apart, for the first `first` test images every run's colorization side by side (labelled
    columns, per-image delta E, SSIM and colourfulness beneath each), and the charts. Its images
    are PNG files in RESULTS/index_files/."""
    from html import escape

    from PIL import Image

    files = results_dir / "index_files"
    files.mkdir(exist_ok=True)
    for old in files.glob("*.png"):
        old.unlink()

    def png(tensor, name) -> str:
        rgb = tensor.float() / 255 if tensor.dtype == torch.uint8 else tensor
        Image.fromarray((rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(files / name)
        return f"index_files/{name}"

    samples, common = shared_samples(runs, first)
    scores = {name: per_image_metrics(results_dir / name) for name, _ in samples}
    grid = []
    if common:
        grid.append("<h2>The same test images, every run</h2>\n<table class=\"images\">")
        grid.append("<tr><th>test image</th><th>grey input</th>" + "".join(f"<th>{escape(n)}</th>" for n, _ in samples)
                    + "<th>ground truth</th></tr>")
        for i, path in enumerate(common):
            truth = samples[0][1][path][1]
            grey = png(grey_of(truth[None].float() / 255)[0], f"{i}_input.png")
            cells = [f"<td>{escape(Path(path).name)}</td>", f"<td><img src=\"{grey}\" alt=\"grey input\"></td>"]
            for j, (name, s) in enumerate(samples):
                m = scores[name].get(path, {})
                below = " &middot; ".join(f"{label} {m[k]:{fmt}}" for k, label, fmt in
                                          (("delta_e", "&Delta;E", ".2f"), ("ssim", "SSIM", ".3f"),
                                           ("colorfulness", "colourfulness", ".1f")) if k in m)
                cells.append(f"<td><img src=\"{png(s[path][0], f'{i}_run{j}.png')}\" alt=\"{escape(name)}\">"
                             f"{below}</td>")
            gt = scores[samples[0][0]].get(path, {}).get("colorfulness_gt")
            cells.append(f"<td><img src=\"{png(truth, f'{i}_truth.png')}\" alt=\"ground truth\">"
                         + (f"colourfulness {gt:.1f}" if gt is not None else "") + "</td>")
            grid.append("<tr>" + "".join(cells) + "</tr>")
        grid.append("</table>")
    set_apart = ""
    if apart:
        set_apart = ("<h2>Set apart: not comparable with the table above</h2>\n<p>Tested on other images or "
                     "trained for another number of epochs: not ranked, not in the charts.</p>\n"
                     + html_table([r for r, _ in apart], rank=False, why=[w for _, w in apart]))
    paragraphs = "".join(f"<p>{escape(p.strip())}</p>\n" for p in notes.split("\n\n") if p.strip())
    title = "Colorization results" + ("" if results_dir.name.lower() == "results" else f": {results_dir.name}")
    page = (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>\n{PAGE_STYLE}\n</style>"
            f"</head>\n<body>\n<h1>{escape(title)}</h1>\n{paragraphs}"
            + html_table(group) + set_apart + "\n".join(grid) + "\n"
            + "".join(f"<h2>{escape(t)}</h2>\n<img class=\"chart\" src=\"{escape(name)}\" alt=\"{escape(t)}\">\n"
                      for name, t in charts)
            + "</body></html>\n")
    out = results_dir / "index.html"
    out.write_text(page, encoding="utf-8")
    return out


def plot_summary(rows: list[dict], out: Path) -> Path:
    """Results/summary.png: one bar chart per metric, a bar per run (95% intervals where known)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    shown = [(k, h, rule) for k, h, rule in SUMMARY_COLUMNS if any(r.get(k) is not None for r in rows)]
    cols = 3
    grid_rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(grid_rows, cols, figsize=(5 * cols, 0.4 * len(rows) * grid_rows + 2), squeeze=False)
    names = [r["run"] for r in rows]
    for ax, (key, header, rule) in zip(axes.flat, shown):
        vals = [r.get(key) if r.get(key) is not None else float("nan") for r in rows]
        err = None
        if any(f"{key}_ci" in r for r in rows):
            # (clamped at 0: a mean in float32 can sit a rounding error outside its float64 interval)
            err = [[max(0.0, v - r[f"{key}_ci"][0]) if f"{key}_ci" in r else 0 for v, r in zip(vals, rows)],
                   [max(0.0, r[f"{key}_ci"][1] - v) if f"{key}_ci" in r else 0 for v, r in zip(vals, rows)]]
        ax.barh(names, vals, xerr=err, color="#4c72b0")
        if key == "colorfulness":
            gt = [r["colorfulness_gt"] for r in rows if r.get("colorfulness_gt") is not None]
            if gt:
                ax.axvline(sum(gt) / len(gt), color="#dd8452", label="ground truth")
                ax.legend(loc="lower right", fontsize=8)
        better = "lower" if rule == "min" else "closer to truth" if rule == "gt" else "higher"
        ax.set_title(f"{header} ({better} is better)", fontsize=10)
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
        if not RunFolder(d).history.exists():
            continue
        hist = [{k: v for k, v in h.items() if _finite(v)} for h in RunFolder(d).read_history()]  # numbers only
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
    colours = plt.get_cmap("tab20").colors  # 20 distinct colours: one per run, none shared up to 20 runs
    for i, (name, _, val) in enumerate(curves):
        if val:
            axes[0].plot(*zip(*val), marker="o", markersize=4, label=name, color=colours[i % len(colours)])
    axes[0].set(title="validation delta E 2000 (lower is better)", xlabel="epoch")
    if axes[0].get_legend_handles_labels()[0]:  # no run validated: no legend (matplotlib would warn)
        axes[0].legend(fontsize=7)
    for ax, (name, losses, _) in zip(axes[1:], curves):
        for key, points in losses.items():
            if points:
                ax.plot(*zip(*points), marker=".", label=key.removeprefix("train/"))
        ax.set(title=f"{name}: training losses", xlabel="epoch")
        if all(v > 0 for points in losses.values() for _, v in points):
            ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
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


def write_summary(results_dir, mixed: bool = False) -> Path:
    """RESULTS/summary.md and summary.csv (one row per run with a metrics.json), summary.png,
    compare.png and curves.png: the largest group of comparable runs ranked (every run with
    mixed=True), the others listed apart."""
    import csv

    results_dir = Path(results_dir)
    found = sorted(d for d in results_dir.iterdir() if d.is_dir() and RunFolder(d).metrics.is_file()) \
        if results_dir.is_dir() else []
    runs, rows, skipped = [], [], []
    for d in found:  # one damaged run folder must not take the others' summary with it
        try:
            rows.append(load_run(d))
            runs.append(d)
        except BadRun as e:
            skipped.append((d.name, str(e)))
        except Exception as e:  # what no check foresaw: the run is skipped and said, never a traceback
            skipped.append((d.name, f"unreadable ({type(e).__name__}: {str(e)[:80]})"))
    for name, why in skipped:
        print(f"warning: {results_dir / name} skipped: {why}", file=sys.stderr)
    if not runs:
        raise FileNotFoundError(f"no */metrics.json under {results_dir}" + (" that can be read" if skipped else "")
                                + ": run some tests first"
                                + (f" ({len(skipped)} run folder(s) could not be read)" if skipped else ""))
    group, apart = (rows, []) if mixed else split_comparable(rows)
    shown = {r["run"] for r in group}
    runs = [d for d, r in zip(runs, rows) if r["run"] in shown]
    out = results_dir / "summary.md"
    notes = ("Test split, one row per run. Bold: best per column (colourfulness: closest to the ground "
             "truth's). [a, b]: 95% bootstrap interval of the mean over images. LPIPS n/a: the AlexNet "
             "weights were not available. Best-of-K and diversity: stochastic families tested with "
             "--num_samples K > 1.\n\n")
    judge = results_dir / "classifier" / "classifier.json"
    if judge.exists():
        try:
            c = json.loads(judge.read_text())
            notes += (f"Semantic accuracy: a classifier trained on the colour training images "
                      f"({len(c['classes'])} classes) recognises {float(c['accuracy_color']):.4f} of the colour "
                      f"test images and {float(c['accuracy_grey']):.4f} of their grey versions; the column gives "
                      f"its accuracy on each run's colorizations.\n\n")
        except (OSError, ValueError, TypeError, KeyError, RecursionError):
            notes += f"{judge} cannot be read: the semantic classifier's own accuracy is not shown.\n\n"
    notes += setup_note(group, mixed)
    compare = compare_image(runs, results_dir / "compare.png")
    plot_summary(group, results_dir / "summary.png")
    curves = plot_curves(runs, results_dir / "curves.png")
    apart_rows = [r for r, _ in apart]
    hinted = plot_hints(group, results_dir / "hints.png", apart_rows)
    if not hinted and (results_dir / "hints.png").exists():
        (results_dir / "hints.png").unlink()  # from an earlier summary: no guided run is left now
    set_apart = ""
    if apart:
        set_apart = ("\n## Set apart: not comparable with the table above\n\nTested on other images or trained "
                     "for another number of epochs, so not ranked (no bold) and left out of the charts; "
                     "`python report.py summary DIR --mixed` ranks every run together.\n\n"
                     + summary_table(apart_rows, rank=False, why=[w for _, w in apart]))
    charts = [(name, title) for name, title, made in (("summary.png", "Every metric, every run", True),
                                                      ("compare.png", "The same test images, every run", compare),
                                                      ("curves.png", "Training curves", curves),
                                                      ("hints.png", "Colour hints", hinted)) if made]
    flagged = [(r["run"], "; ".join(r["problems"])) for r in rows if r.get("problems")] + skipped
    problems = ""
    if flagged:
        problems = ("\n## Runs with problems\n\nLeft out of the table (skipped), or shown with the values named "
                    "here left out (n/a):\n\n" + "".join(f"- {md(name)}: {md(why)}"
                                                          + (" (skipped)" if (name, why) in skipped else "") + "\n"
                                                          for name, why in flagged))
    in_words = ("Runs with problems (skipped, or shown with these values left out as n/a): "
                + "; ".join(f"{name}: {why}" for name, why in flagged) + ".\n\n") if flagged else ""
    write_index(results_dir, runs, group, apart, notes + in_words, charts)
    out.write_text("# Results\n\n" + notes + summary_table(group) + set_apart + problems
                   + hint_table(group, apart_rows)
                   + "\n![every metric, every run](summary.png)\n"
                   + ("\n![the same test images, every run](compare.png)\n" if compare else "")
                   + ("\n![training curves](curves.png)\n" if curves else ""))
    keys = ["run", "model", "data", "test_images", "image_size", "epoch", "train_data", "train_images", "max_images",
            "seed", "sampler", "sampling_steps",
            "num_samples", "n_images", "fid_images", "comparable"] + [k for k, _, _ in SUMMARY_COLUMNS] + \
        ["kid_std", "fid_weights", "delta_e_ci_low", "delta_e_ci_high", "ssim_ci_low", "ssim_ci_high",
         "colorfulness_gt", "train_seconds", "train_images_per_s"]
    with open(results_dir / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            r["comparable"] = r["run"] in shown
            for key in ("delta_e", "ssim"):
                if f"{key}_ci" in r:
                    r[f"{key}_ci_low"], r[f"{key}_ci_high"] = r[f"{key}_ci"]
            w.writerow(r)
    return out


def _hinted(rows: list[dict], apart: list[dict]) -> list[tuple[dict, bool]]:
    """The runs with a hint curve, each with whether it is set apart: the ranked ones first."""
    return [(r, False) for r in rows if r.get("hints")] + [(r, True) for r in apart if r.get("hints")]


def paste_curve(rows: list[dict], apart: list[dict] = ()) -> list[dict] | None:
    """The hint curve of pasting the revealed hints into the grey image, no model (metrics.json's
    "hints_paste"), of the first hinted run that has one: a ranked run's when any has it (every
    ranked run was tested on the same images with the same hints)."""
    return next((r["hints_paste"] for r, _ in _hinted(rows, apart) if r.get("hints_paste")), None)


def hint_table(rows: list[dict], apart: list[dict] = ()) -> str:
    """The colour-hint curves of the runs tested with --hint_counts (Markdown): per run and number
    of hints revealed per image, delta E, PSNR and FID (0 hints: the automatic figures). Runs set
    apart from the ranked group (`apart`) keep their curve, marked as not comparable: a curve
    compares a run with itself, so it still says what hints do for that run."""
    hinted = _hinted(rows, apart)
    if not hinted:
        return ""
    counts = sorted({h["count"] for r, _ in hinted for h in r["hints"]})
    lines = ["| run | " + " | ".join(f"{n} hint{'s' if n != 1 else ''}" for n in counts) + " |",
             "|---|" + "---|" * len(counts)]
    paste = {h["count"]: h for h in paste_curve(rows, apart) or []}
    if paste:
        lines.append("| the hints pasted into grey, no model | " + " | ".join(
            "-" if n not in paste else f"{paste[n]['delta_e']:.2f} / {paste[n]['psnr']:.2f}" for n in counts) + " |")
    gains = []
    for r, set_apart in hinted:
        by = {h["count"]: h for h in r["hints"]}
        cells = []
        for n in counts:
            h = by.get(n)
            cells.append("-" if h is None else f"{h['delta_e']:.2f} / {h['psnr']:.2f}"
                         + (f" / {h['fid']:.1f}" if h.get("fid") is not None else ""))
        name = f"{md(r['run'])} (set apart, not comparable)" if set_apart else md(r["run"])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        mine = r.get("hints_paste") or (list(paste.values()) if not set_apart else [])
        base = {h["count"]: h for h in mine}
        if base:
            gains.append(f"| {name} | " + " | ".join(
                "-" if n not in by or n not in base else f"{base[n]['delta_e'] - by[n]['delta_e']:+.2f}"
                for n in counts) + " |")
    text = ("\n## Colour hints\n\nUser-guided runs (--guided) tested with --hint_counts: n hints per image revealed "
            "from the true colours at seeded positions (the same for every run). Each cell: delta E 2000 / PSNR "
            "(dB) / FID where measured; 0 hints is the automatic result. A run marked set apart is not comparable "
            "with the ranked ones (see above); its curve only compares it with itself. The first row is no model "
            "at all: the same hints pasted into the grey image, no colour elsewhere.\n\n" + "\n".join(lines) + "\n")
    if gains:
        text += ("\nWhat the model adds above pasting the hints: delta E of the pasted hints minus the run's, at "
                 "each count (positive: better than the hints alone).\n\n| run | "
                 + " | ".join(f"{n} hint{'s' if n != 1 else ''}" for n in counts) + " |\n|---|" + "---|" * len(counts)
                 + "\n" + "\n".join(gains) + "\n")
    return text + "\n![the hint curves](hints.png)\n"


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


def setup_note(group: list[dict], mixed: bool) -> str:
    """One sentence on what the ranked runs share (or, mixed, that they may not)."""
    if mixed:
        return ("Mixed: every run is ranked in one table although their test images or training length may "
                "differ (see the data, size, epochs and images columns).\n\n")
    r = group[0]
    epochs = sorted({trained_epochs(x) for x in group} - {None})
    fid = f", FID and KID on {r['fid_images']} of them ({md(r.get('fid_weights'))})" if r.get("fid_images") else ""
    data = next((trained_on(x) for x in group if trained_on(x) is not None), None)
    seeds = sorted({x.get("seed") for x in group if trained_on(x) is not None and x.get("seed") is not None})
    trained = ""
    if epochs:
        trained = f", trained {epochs[0]} epoch(s)"
        if data is not None:
            trained += f" on {data[1]} images of {md(data[0])}"
        if seeds:
            trained += f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"
    return (f"Ranked together: {len(group)} run(s) tested on the same {r.get('n_images')} images "
            f"({md(r.get('test_images'))}, {r.get('image_size')} px){fid}{trained}.\n\n")


if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):  # asked for: the usage and what it does, exit 0
        print("usage: python report.py summary RESULTS_DIR [--mixed]\n\n" + __doc__.strip())
        sys.exit(0)
    args = [a for a in sys.argv[1:] if a != "--mixed"]
    if len(args) != 2 or args[0] != "summary":
        sys.exit("usage: python report.py summary RESULTS_DIR [--mixed]")
    try:
        print(write_summary(args[1], mixed="--mixed" in sys.argv).read_text())
    except FileNotFoundError as e:  # no run tested yet (or every run of a script.sh batch failed)
        sys.exit(f"error: {e}")
