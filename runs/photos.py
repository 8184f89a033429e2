"""Colorizing photo files at full resolution (--mode colorize, and test mode's --input): which files
an --input names, the names their colorizations get, the folder they are written to, and the
side-by-side sheets. The folder and what it may replace: util/output_folder.py.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch

from models import hints
from util import colour, files, hint_files, images, visuals
from util.output_folder import OutputFolder


class NonFiniteOutput(RuntimeError):
    """The model produced NaN or infinite colours (broken weights): nothing is written for it."""


def is_glob(spec: str) -> bool:
    """Whether --input is a glob pattern (holds *, ? or [), as the glob module reads one."""
    import glob

    return glob.has_magic(spec)


def input_name(spec: str) -> str:
    """--input's part of the default output folder's name: a file's or folder's name without its
    suffix; for a glob, the folder above its first wildcard and "-glob" ("scans/*.tif": "scans-glob"),
    never the wildcard itself."""
    parts = Path(spec).parts
    wild = next((i for i, part in enumerate(parts) if is_glob(part)), None)
    if wild is None:
        return Path(spec).stem or "input"
    return f"{Path(parts[wild - 1]).name if wild > 0 and parts[wild - 1] != '/' else 'input'}-glob"


def input_files(spec: str) -> tuple[list[Path], Path]:
    """--input: a file, a folder (searched recursively) or a glob pattern -> (image files, the
    folder output names are made relative to). Empty list when nothing matches."""
    import glob

    path = Path(spec)
    if path.is_file():
        return [path], path.parent
    if path.is_dir():
        return images.find_images(path), path
    matches = sorted(Path(p) for p in glob.glob(spec, recursive=True)
                     if Path(p).is_file() and Path(p).suffix.lower() in images.IMAGE_EXTENSIONS)
    if not matches:
        return [], path.parent
    root = Path(os.path.commonpath([str(p.parent.resolve()) for p in matches]))
    return [p.resolve() for p in matches], root


def output_names(rel_paths: list[Path]) -> list[Path]:
    """The PNG name of each input (relative paths, all different): a.jpg -> a.png, unless another
    input would get that name too (a.bmp beside a.tiff, or a.jpg beside a.jpg.png): then the whole
    name plus .png (a.bmp.png, a.tiff.png). Whole names are all different, so this ends."""
    names = [rel.with_suffix(".png") for rel in rel_paths]
    while True:
        count = Counter(names)
        clash = [i for i, n in enumerate(names) if count[n] > 1 and n != rel_paths[i].with_name(rel_paths[i].name
                                                                                                  + ".png")]
        if not clash:
            return names
        for i in clash:
            names[i] = rel_paths[i].with_name(rel_paths[i].name + ".png")


def write_sheet(target: Path, original: torch.Tensor, colorized: list, height: int = 384,
                points: list | None = None) -> None:
    """A side-by-side PNG a person can look at: the grey input (with the colour hints `points`,
    [(x, y, (r, g, b))], as ringed dots) | each colorization (sheet_tile()s, already scaled) | the
    original when it had colour; every panel `height` rows, columns labelled."""
    grey = (colour.grey_rgb(original[None].float() / 255)[0] * 255).round()
    panels = [("grey input" + (f" + {len(points)} hint(s)" if points else ""), visuals.sheet_tile(grey.byte(), height))]
    panels += [("colorized" if len(colorized) == 1 else f"sample {k + 1}", c) for k, c in enumerate(colorized)]
    if not (original[0] == original[1]).all() or not (original[1] == original[2]).all():
        panels.append(("original", visuals.sheet_tile(original, height)))
    h, w = original.shape[1:]
    visuals.write_sheet(target, panels, height, points, (w, h))


def colorize_files(colorizer, paths: list[Path], root: Path, out_dir: Path, image_size: int, max_pixels: int,
                   samples: int = 1, sheet: bool = False, progress: bool = False, hint_file: Path | None = None,
                   maker: dict | None = None, own: bool = False, overwrite: bool = False,
                   note=print) -> tuple[int, list[str]]:
    """Colorize each file at its own resolution (ab predicted at image_size and upsampled, the
    original L kept) into out_dir under its name relative to root (output_names), as PNG; K
    variants (name_sample1.png, ...) for a stochastic colorizer with samples K > 1, each written as
    soon as it is made (K full-resolution images are never held at once); with sheet, also
    sheets/name.png side by side; with hint_file (one image, a --guided colorizer) the colour hints
    of that file (models/hint_files.read_points) guide it. The folder is checked and its manifest written
    first (OutputFolder.begin: `maker`, `own`, `overwrite`). Returns (files colorized, unreadable
    files and why). A hint file that does not fit the image raises hint_files.HintError."""
    from PIL import Image
    from tqdm import tqdm

    colorizer.eval()
    k = samples if colorizer.stochastic else 1
    names = output_names([p.relative_to(root) for p in paths])
    variants = [[n] if k == 1 else [n.with_name(f"{n.stem}_sample{i + 1}.png") for i in range(k)] for n in names]
    targets = [t for vs in variants for t in vs] + ([Path("sheets") / n for n in names] if sheet else [])
    OutputFolder(out_dir).begin(maker or {}, targets, paths, own, overwrite, note)
    done, bad, same = 0, [], []
    for path, name, outputs in tqdm(list(zip(paths, names, variants)), desc="colorizing", unit="image",
                                    disable=not progress, dynamic_ncols=True, mininterval=1.0):
        try:
            rgb = images.load_rgb(path, max_pixels)
        except images.BadImage as e:
            bad.append(f"{path} ({e})")
            continue
        original = images.to_chw_tensor(rgb)
        hint_map, points = None, None
        if hint_file is not None:
            points = hint_files.read_points(hint_file, original.shape[2], original.shape[1])
            hint_map = hints.map_from_points(points, original.shape[2], original.shape[1], image_size)
        drawn = {}

        def predict(L, i, hint_map=hint_map, drawn=drawn, path=path):  # the K colorizations, drawn once
            if "ab" not in drawn:
                colorizer.check_hints(hint_map)
                given = None if hint_map is None else hint_map.to(L.device)
                with colorizer.autocast():
                    ab = colorizer.sample_ab(L, k, given) if k > 1 else colorizer.predict_ab(L, given)[None]
                if not torch.isfinite(ab).all():
                    raise NonFiniteOutput(f"the model's colours for {path} are not finite (NaN or infinite): "
                                          f"its weights are broken; nothing more is written")
                drawn["ab"] = ab.float()
            return drawn["ab"][i]

        tiles = []
        for i, target in enumerate(outputs):
            with torch.no_grad():  # uint8 in, uint8 out: the full-resolution arithmetic goes strip by strip
                out = colour.colorize_full_resolution(lambda L, i=i: predict(L, i), original[None].to(colorizer.device),
                                                  image_size)[0].cpu()
            picture = Image.fromarray(out.permute(1, 2, 0).numpy())
            (out_dir / target).parent.mkdir(parents=True, exist_ok=True)
            files.write_atomic(out_dir / target, lambda f, picture=picture: picture.save(f, format="PNG"))
            if sheet:
                tiles.append(visuals.sheet_tile(out))
            del out, picture
        if k > 1 and (drawn["ab"][1:] - drawn["ab"][0]).abs().max() * colour.AB_SCALE < 0.5:
            same.append(path)
        if sheet:
            (out_dir / "sheets" / name).parent.mkdir(parents=True, exist_ok=True)
            write_sheet(out_dir / "sheets" / name, original, tiles, points=points)
        done += 1
    if same:
        note(f"note: the {k} samples of {len(same)} of {done} image(s) are identical (within half an ab unit), "
             f"e.g. {same[0]}: this model's colours do not depend on its latent code (a collapsed posterior), "
             f"so it gives one colorization however many are asked for")
    return done, bad
