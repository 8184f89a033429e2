"""The report's tables: which runs compare (the same test images, training data and length),
the summary table (Markdown and HTML, best in bold, bootstrap intervals), the hint tables, and
the sentences that say what was compared.
"""
from __future__ import annotations

from pathlib import Path

import torch

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


def _test_setup(r: dict) -> tuple:
    return tuple(r.get(k, r.get("test_images")) if k == "test_set" else r.get(k) for k, _ in SAME_TEST)


def _fid_setup(r: dict):
    """(images, weights) of a run's FID, None for a run that measured none."""
    return (r.get("fid_images"), r.get("fid_weights")) if r.get("fid") is not None and r.get("fid_images") else None


def split_comparable(rows: list[dict]) -> tuple[list[dict], list[tuple[dict, str]]]:
    """(the largest group of comparable runs, [(another run, what differs), ...])."""
    clean = [r for r in rows if not leaks(r)] or rows  # a leaking test never sets the standard
    trained = [(_test_setup(r), trained_epochs(r), trained_on(r)) for r in clean if trained_epochs(r) is not None]
    keys = trained or [(_test_setup(r), None, None) for r in clean]
    main = max(keys, key=keys.count)  # the most common setup (first on a tie): (test setup, epochs, data)
    fids = [_fid_setup(r) for r in rows if _test_setup(r) == main[0] and _fid_setup(r)]
    main_fid = max(fids, key=fids.count) if fids else None  # the FID setup most of those runs used
    group, apart = [], []
    for r in rows:
        differs = _differences(r, main, main_fid)
        if differs:
            apart.append((r, ", ".join(differs)))
        else:
            group.append(r)
    return group, apart


def _differences(r: dict, main: tuple, main_fid) -> list[str]:
    """What sets run `r` apart from the main setup (test setup, epochs, training data) and FID setup, in words."""
    main_test, main_epochs, main_data = main
    differs = [words for (_, words), mine, theirs in zip(SAME_TEST, _test_setup(r), main_test) if mine != theirs]
    fid = _fid_setup(r)
    if fid and main_fid and fid[0] != main_fid[0]:
        differs.append(f"FID images ({fid[0]}, not {main_fid[0]})")
    elif fid and main_fid and fid[1] != main_fid[1]:
        differs.append(f"FID weights ({fid[1]}, not {main_fid[1]})")
    data = trained_on(r)
    if data is not None and main_data is not None and data[0] != main_data[0]:
        differs.append(f"training data ({Path(str(data[0])).name}, not {Path(str(main_data[0])).name})")
    elif data is not None and main_data is not None and data[1] != main_data[1]:
        differs.append(f"training images ({data[1]}, not {main_data[1]})")
    if trained_epochs(r) not in (None, main_epochs):
        differs.append(f"epochs ({trained_epochs(r)}, not {main_epochs})")
    if leaks(r):
        seen = r["seen_in_training"]
        differs.append(f"test images seen in training ({seen['train'] + seen['val']} of {seen['of']})")
    return differs


def bootstrap_ci(values: torch.Tensor, n: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over images."""
    g = torch.Generator().manual_seed(seed)
    v = values.double()
    means = v[torch.randint(0, len(v), (n, len(v)), generator=g)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(lo), float(hi)


def best_values(rows: list[dict]) -> dict:
    """The best value of each metric column among `rows` (colourfulness: closest to the truth's)."""
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
    return best


def metric_text(r: dict, key: str) -> str:
    """A metric's cell: n/a, or its value (4 or 2 digits) with its bootstrap interval when known."""
    v = r.get(key)
    text = "n/a" if v is None else f"{v:.4f}" if key in FOUR_DIGITS else f"{v:.2f}"
    if v is not None and f"{key}_ci" in r:
        lo, hi = r[f"{key}_ci"]
        text += f" [{lo:.4f}, {hi:.4f}]" if key in FOUR_DIGITS else f" [{lo:.2f}, {hi:.2f}]"
    return text


def table(rows: list[dict], rank: bool = True, why: list[str] | None = None) -> tuple[list[str], list[list]]:
    """(header, rows of (text, bold) cells): one row per run's metrics.json, with what it was
    trained and tested on; rank=True marks the best value of each column; `why` adds a column."""
    best = best_values(rows) if rank else {}
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
            cells.append((metric_text(r, key), v is not None and v == best.get(key)))
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


def md(text) -> str:
    """Text copied from a run folder (a run name, a path, a reason) made inert in a Markdown table:
    HTML escaped, Markdown's own characters backslashed, one line."""
    from html import escape

    text = escape(" ".join(str(text).split()), quote=False)
    inside_word = lambda i: 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()  # noqa: E731
    return "".join("\\" + c if c in "\\`*[]|#!{}" or (c == "_" and not inside_word(i)) else c
                   for i, c in enumerate(text))


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
        line, gain = _hint_rows(r, set_apart, counts, paste)
        lines.append(line)
        gains += [gain] if gain else []
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


def _hint_rows(r: dict, set_apart: bool, counts: list[int], paste: dict) -> tuple[str, str | None]:
    """A guided run's row of the hint table, and of the table of what it adds above pasting the
    hints (None when there is nothing to compare with)."""
    by = {h["count"]: h for h in r["hints"]}
    cells = ["-" if by.get(n) is None else f"{by[n]['delta_e']:.2f} / {by[n]['psnr']:.2f}"
             + (f" / {by[n]['fid']:.1f}" if by[n].get("fid") is not None else "") for n in counts]
    name = f"{md(r['run'])} (set apart, not comparable)" if set_apart else md(r["run"])
    mine = r.get("hints_paste") or (list(paste.values()) if not set_apart else [])
    base = {h["count"]: h for h in mine}
    gain = None
    if base:
        gain = f"| {name} | " + " | ".join(
            "-" if n not in by or n not in base else f"{base[n]['delta_e'] - by[n]['delta_e']:+.2f}"
            for n in counts) + " |"
    return f"| {name} | " + " | ".join(cells) + " |", gain


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
