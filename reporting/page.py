"""The report's static page, RESULTS/index.html (open it in a browser, no server).
"""
from __future__ import annotations

from pathlib import Path

import torch

from reporting.runs import per_image_metrics, shared_samples
from reporting.tables import html_table
from util.colour import grey_rgb

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
        grid.append("<h2>Each test image, every run's colorization</h2>\n<table class=\"images\">")
        grid.append("<tr><th>test image</th><th>grey input</th>"
                    + "".join(f"<th>{escape(n)}</th>" + "".join(f"<th>{escape(n)} sample {k + 2}</th>"
                                                             for k in range(len(s[common[0]][2])))
                              for n, s in samples)
                    + "<th>ground truth</th></tr>")
        for i, path in enumerate(common):
            truth = samples[0][1][path][1]
            grey = png(grey_rgb(truth[None].float() / 255)[0], f"{i}_input.png")
            cells = [f"<td>{escape(Path(path).name)}</td>", f"<td><img src=\"{grey}\" alt=\"grey input\"></td>"]
            for j, (name, s) in enumerate(samples):
                m = scores[name].get(path, {})
                below = " &middot; ".join(f"{label} {m[k]:{fmt}}" for k, label, fmt in
                                          (("delta_e", "&Delta;E", ".2f"), ("ssim", "SSIM", ".3f"),
                                           ("colorfulness", "colourfulness", ".1f")) if k in m)
                cells.append(f"<td><img src=\"{png(s[path][0], f'{i}_run{j}.png')}\" alt=\"{escape(name)}\">"
                             f"{below}</td>")
                cells += [f"<td><img src=\"{png(more, f'{i}_run{j}_sample{k + 2}.png')}\" "
                          f"alt=\"{escape(name)} sample {k + 2}\"></td>" for k, more in enumerate(s[path][2])]
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
