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
import sys
from pathlib import Path

from reporting.charts import compare_image, plot_curves, plot_hints, plot_summary
from reporting.page import write_index
from reporting.runs import BadRun, load_run
from reporting.tables import SUMMARY_COLUMNS, bootstrap_ci, hint_table, md, setup_note, split_comparable, summary_table
from util.run_folder import RunFolder

__all__ = ["write_summary", "bootstrap_ci", "compare_image", "plot_hints", "summary_table"]  # what others use


def load_runs(results_dir: Path) -> tuple[list[Path], list[dict], list[tuple[str, str]]]:
    """(run folders, their rows, skipped (name, why)) of every run with a metrics.json; one damaged
    run folder never takes the others' summary with it. FileNotFoundError when none can be read."""
    found = sorted(d for d in results_dir.iterdir() if d.is_dir() and RunFolder(d).metrics.is_file()) \
        if results_dir.is_dir() else []
    runs, rows, skipped = [], [], []
    for d in found:
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
    return runs, rows, skipped


def notes_of(results_dir: Path, group: list[dict], mixed: bool) -> str:
    """The summary's opening notes: how to read the table, the semantic classifier, the setup."""
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
    return notes + setup_note(group, mixed)


def draw_charts(results_dir: Path, runs: list[Path], group: list[dict], apart_rows: list[dict]) -> list:
    """summary.png, compare.png, curves.png and hints.png (those that apply): [(file, title)]."""
    compare = compare_image(runs, results_dir / "compare.png")
    plot_summary(group, results_dir / "summary.png")
    curves = plot_curves(runs, results_dir / "curves.png")
    hinted = plot_hints(group, results_dir / "hints.png", apart_rows)
    if not hinted and (results_dir / "hints.png").exists():
        (results_dir / "hints.png").unlink()  # from an earlier summary: no guided run is left now
    return [(name, title) for name, title, made in (("summary.png", "Every metric, every run", True),
                                                    ("compare.png", "The same test images, every run", compare),
                                                    ("curves.png", "Training curves", curves),
                                                    ("hints.png", "Colour hints", hinted)) if made]


def set_apart_section(apart: list) -> str:
    if not apart:
        return ""
    return ("\n## Set apart: not comparable with the table above\n\nTested on other images or trained "
            "for another number of epochs, so not ranked (no bold) and left out of the charts; "
            "`python report.py summary DIR --mixed` ranks every run together.\n\n"
            + summary_table([r for r, _ in apart], rank=False, why=[w for _, w in apart]))


def problems_sections(flagged: list, skipped: list) -> tuple[str, str]:
    """The "Runs with problems" section of summary.md, and the same in a sentence (for the page)."""
    if not flagged:
        return "", ""
    section = ("\n## Runs with problems\n\nLeft out of the table (skipped), or shown with the values named "
               "here left out (n/a):\n\n" + "".join(f"- {md(name)}: {md(why)}"
                                                     + (" (skipped)" if (name, why) in skipped else "") + "\n"
                                                     for name, why in flagged))
    return section, ("Runs with problems (skipped, or shown with these values left out as n/a): "
                     + "; ".join(f"{name}: {why}" for name, why in flagged) + ".\n\n")


CSV_KEYS = (["run", "model", "data", "test_images", "image_size", "epoch", "train_data", "train_images",
             "max_images", "seed", "sampler", "sampling_steps", "num_samples", "n_images", "fid_images",
             "comparable"] + [k for k, _, _ in SUMMARY_COLUMNS]
            + ["kid_std", "fid_weights", "delta_e_ci_low", "delta_e_ci_high", "ssim_ci_low", "ssim_ci_high",
               "colorfulness_gt", "train_seconds", "train_images_per_s"])


def write_csv(path: Path, rows: list[dict], shown: set) -> None:
    """summary.csv: every run, ranked or not (its "comparable" column says), intervals as two columns."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_KEYS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            r["comparable"] = r["run"] in shown
            for key in ("delta_e", "ssim"):
                if f"{key}_ci" in r:
                    r[f"{key}_ci_low"], r[f"{key}_ci_high"] = r[f"{key}_ci"]
            w.writerow(r)


def write_summary(results_dir, mixed: bool = False) -> Path:
    """RESULTS/summary.md and summary.csv (one row per run with a metrics.json), summary.png,
    compare.png and curves.png: the largest group of comparable runs ranked (every run with
    mixed=True), the others listed apart."""
    results_dir = Path(results_dir)
    runs, rows, skipped = load_runs(results_dir)
    group, apart = (rows, []) if mixed else split_comparable(rows)
    shown = {r["run"] for r in group}
    runs = [d for d, r in zip(runs, rows) if r["run"] in shown]
    notes = notes_of(results_dir, group, mixed)
    apart_rows = [r for r, _ in apart]
    charts = draw_charts(results_dir, runs, group, apart_rows)
    flagged = [(r["run"], "; ".join(r["problems"])) for r in rows if r.get("problems")] + skipped
    problems, in_words = problems_sections(flagged, skipped)
    write_index(results_dir, runs, group, apart, notes + in_words, charts)
    made = {name for name, _ in charts}
    out = results_dir / "summary.md"
    out.write_text("# Results\n\n" + notes + summary_table(group) + set_apart_section(apart) + problems
                   + hint_table(group, apart_rows)
                   + "\n![every metric, every run](summary.png)\n"
                   + ("\n![the same test images, every run](compare.png)\n" if "compare.png" in made else "")
                   + ("\n![training curves](curves.png)\n" if "curves.png" in made else ""))
    write_csv(results_dir / "summary.csv", rows, shown)
    return out


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
