"""Hints a person gives (--mode colorize --hints FILE): a JSON list of points with colours, or a
transparent PNG whose opaque pixels are the hints, read at the image's resolution into
[(x, y, (r, g, b))]. Anything that does not fit is a HintError that says what and where.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch


class HintError(ValueError):
    """A hint file that cannot be used (bad format, a point outside the image), or hints for a
    model that was trained without them."""



def _colour(value, where: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        s = value.strip().lstrip("#")
        if len(s) == 6:
            try:
                return int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16)
            except ValueError:
                pass
    elif isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        if all(0 <= v <= 255 for v in value):
            return tuple(int(round(v)) for v in value)
    raise HintError(f"{where}: a colour is \"#rrggbb\" or [r, g, b] with values 0-255, got {value!r}")



def read_points(path: Path, width: int, height: int) -> list[tuple[int, int, tuple[int, int, int]]]:
    """A hint file at an image's resolution -> [(x, y, (r, g, b))]. JSON: a list of [x, y, colour]
    or {"x": .., "y": .., "color": ..} (colour "#rrggbb" or [r, g, b]); PNG: a picture of the
    image's size whose non-transparent pixels are the hints. Points outside the image are refused."""
    path = Path(path)
    if not path.is_file():
        raise HintError(f"--hints {path}: no such file")
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HintError(f"--hints {path}: not valid JSON ({e})") from None
        except RecursionError:
            raise HintError(f"--hints {path}: nested too deeply to be a list of hints") from None
        return points_from_json(items, f"--hints {path}", width, height)
    return _picture_points(path, width, height)


def points_from_json(items, where: str, width: int, height: int) -> list[tuple[int, int, tuple[int, int, int]]]:
    """Parsed hint JSON (a list of [x, y, colour] or {"x", "y", "color"}) -> [(x, y, (r, g, b))];
    `where` names the source in messages."""
    if not isinstance(items, list):
        raise HintError(f"{where}: expected a JSON list of [x, y, colour], got a {type(items).__name__}")
    points = []
    for k, item in enumerate(items):
        at = f"{where}, hint {k + 1}"
        if isinstance(item, dict):
            item = [item.get("x"), item.get("y"), item.get("color", item.get("colour"))]
        if not isinstance(item, (list, tuple)) or len(item) != 3 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in item[:2]):
            raise HintError(f"{at}: expected [x, y, colour] with finite pixel coordinates, got {str(item)[:80]}")
        x, y = int(round(item[0])), int(round(item[1]))
        if not (0 <= x < width and 0 <= y < height):
            raise HintError(f"{at}: ({x}, {y}) is outside the {width} x {height} image")
        points.append((x, y, _colour(item[2], at)))
    return points


def _picture_points(path: Path, width: int, height: int) -> list[tuple[int, int, tuple[int, int, int]]]:
    """The opaque pixels of a transparent picture of the image's size, as hints."""
    import numpy as np
    from PIL import UnidentifiedImageError

    from util.images import BadImage, open_image

    try:
        with open_image(path, max_pixels=None) as im:  # its size, from the header, before decoding
            if im.size != (width, height):
                raise HintError(f"--hints {path}: the hint picture is {im.size[0]} x {im.size[1]}, the image "
                                f"{width} x {height}; draw the hints at the image's resolution")
            if "A" not in im.getbands() and "transparency" not in im.info:
                raise HintError(f"--hints {path}: the picture has no transparency, so every pixel would be a "
                                f"hint; draw the hints on a transparent picture (or give a JSON file)")
            rgba = im.convert("RGBA")
    except HintError:
        raise
    except (UnidentifiedImageError, OSError, BadImage, SyntaxError, ValueError) as e:
        raise HintError(f"--hints {path}: neither JSON nor a readable image ({e})") from None
    pixels = torch.from_numpy(np.asarray(rgba).copy())
    ys, xs = (pixels[..., 3] > 0).nonzero(as_tuple=True)
    return [(int(x), int(y), tuple(int(v) for v in pixels[y, x, :3])) for y, x in zip(ys, xs)]
