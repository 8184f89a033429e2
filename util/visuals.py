"""Pictures a person looks at, drawn with PIL: labelled sample grids (validation and test), the
side-by-side sheets of colorized photos, and the report's comparison sheet. Tensors in, PNG files
out (written atomically); what goes into a picture is decided by the caller.
"""
from __future__ import annotations

from pathlib import Path

import torch

from util import files

GRID_CELL = 96  # smallest width (px) a sample-grid image is shown at, so its column label fits
LABEL_BAND = 16  # height (px) of a row of column labels


def to_pil(image: torch.Tensor):
    """(3, H, W) RGB in [0, 1] (float) or uint8 -> a PIL image."""
    from PIL import Image

    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 255).round().byte()
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())


def enlarge(tile, cell: int):
    """A square tile to cell x cell px: small images (CIFAR's 32 px) enlarged as pixels, not blurred;
    larger ones reduced smoothly."""
    from PIL import Image

    return tile.resize((cell, cell), Image.NEAREST if tile.width <= cell else Image.LANCZOS)


def save_grid(path, columns: list[tuple[str, torch.Tensor]]) -> None:
    """One row per image, one labelled column per (label, (B, 3, H, W) RGB in [0, 1]); small images
    are enlarged (nearest) to GRID_CELL px."""
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    rows = torch.stack([c.cpu().float() for _, c in columns], dim=1).flatten(0, 1)
    scale = -(-GRID_CELL // rows.shape[-1])
    if scale > 1:
        rows = torch.nn.functional.interpolate(rows, scale_factor=scale, mode="nearest")
    image = to_pil(make_grid(rows, nrow=len(columns), padding=2, pad_value=1.0))
    band = 14
    canvas = Image.new("RGB", (image.width, image.height + band), "white")
    canvas.paste(image, (0, band))
    draw, cell = ImageDraw.Draw(canvas), rows.shape[-1] + 2
    for i, (text, _) in enumerate(columns):
        draw.text((2 + i * cell + max(0, (cell - draw.textlength(text)) / 2), 2), text, fill="black")
    files.write_atomic(path, lambda f: canvas.save(f, format="png"))


def label_strip(width: int, labels: list[str], cell: int):
    """A white band of LABEL_BAND px with a label at the left of each `cell`-wide column."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, LABEL_BAND), "white")
    draw = ImageDraw.Draw(strip)
    for i, text in enumerate(labels):
        draw.text((i * cell + 4, 2), text, fill="black")
    return strip


def sheet_tile(image: torch.Tensor, height: int = 384):
    """One panel of a sheet: uint8 (3, H, W) scaled to `height` rows (a PIL image)."""
    from PIL import Image

    h, w = image.shape[1:]
    return to_pil(image).resize((max(1, round(w * height / h)), height), Image.BILINEAR)


def write_sheet(target: Path, panels: list, height: int, points: list | None = None,
                size: tuple[int, int] = (1, 1)) -> None:
    """Panels [(label, sheet_tile)] side by side under their labels; the colour hints `points`,
    [(x, y, (r, g, b))] in the pixels of the original of `size` (w, h), drawn as ringed dots on the
    first panel."""
    from PIL import Image, ImageDraw

    width = panels[0][1].size[0]
    sheet = Image.new("RGB", (width * len(panels), height + LABEL_BAND), "white")
    sheet.paste(label_strip(sheet.size[0], [name for name, _ in panels], width), (0, 0))
    for i, (_, tile) in enumerate(panels):
        if i == 0 and points:
            draw, r = ImageDraw.Draw(tile), 4
            for x, y, fill in points[:500]:
                cx, cy = (x + 0.5) * width / size[0], (y + 0.5) * height / size[1]
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline="white")
        sheet.paste(tile, (i * width, LABEL_BAND))
    files.write_atomic(target, lambda f: sheet.save(f, format="PNG"))


def compare_sheet(rows: list[tuple[str, torch.Tensor]], out: Path, cell: int = 96) -> Path:
    """Rows [(label, (N, 3, H, W) RGB in [0, 1])], each image scaled to one cell, rows labelled."""
    from PIL import Image, ImageDraw

    label, pad, n = 150, 2, len(rows[0][1])
    canvas = Image.new("RGB", (label + n * (cell + pad), len(rows) * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, images) in enumerate(rows):
        y = r * (cell + pad)
        lines = [line[:22] for line in name.split("\n")]
        draw.multiline_text((4, max(y, y + cell // 2 - 6 * len(lines))), "\n".join(lines), fill="black")
        for c, img in enumerate(images):
            canvas.paste(enlarge(to_pil(img), cell), (label + c * (cell + pad), y))
    canvas.save(out)
    return out
