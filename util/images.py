"""Image files: decoding any supported file robustly to uint8 sRGB (with a decompression-bomb guard
read from the header), finding images in a folder, resizing and cropping.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")



DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # PIL's own default guard



class BadImage(Exception):
    """A file that cannot be used as a colour photograph; the message says why."""



def open_image(path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS):
    """A PIL image opened lazily (its header read, nothing decoded), or BadImage when it has more
    than `max_pixels` pixels (None: no limit). The size is checked here, per call, from the header,
    before anything is decoded: Pillow's own guard is a process-wide limit whose warning becomes an
    error only under a warnings filter, both shared by every thread, so changing them around a decode
    let threads that load at once undo each other's guard. It is neither changed nor relied on."""
    from PIL import Image

    try:
        im = Image.open(path)
    except Image.DecompressionBombError:  # Pillow's own refusal, beyond twice its limit (179 MP by default)
        if max_pixels is not None and max_pixels <= 2 * (Image.MAX_IMAGE_PIXELS or 0):
            raise BadImage(f"larger than the decompression-bomb limit of {max_pixels} pixels; raise it with "
                           f"--max_image_pixels if the file is trusted") from None
        im = _open_past_pillows_limit(path)  # --max_image_pixels allows more than Pillow does
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise BadImage(f"{w} x {h} = {w * h} pixels, larger than the decompression-bomb limit of {max_pixels}; "
                       f"raise it with --max_image_pixels if the file is trusted")
    return im



def _open_past_pillows_limit(path):
    """Image.open without Pillow's global size check: the format plugin that accepts the file's
    first bytes parses its header, as Image.open does before checking."""
    from PIL import Image

    Image.init()
    with open(path, "rb") as f:
        prefix = f.read(16)
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        verdict = accept(prefix) if accept is not None else True
        if verdict and not isinstance(verdict, str):  # a string is Pillow's "almost, but no"
            fp = open(path, "rb")
            try:
                im = factory(fp, str(path))
                im._exclusive_fp = True  # closing the image closes the file, as for Image.open's
                return im
            except Exception:
                fp.close()
    raise BadImage("cannot decode: no image format accepts it")



def load_rgb(path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode any supported file to (H, W, 3) uint8 sRGB, or raise BadImage saying why.

    Files over `max_pixels` pixels are refused from their header (open_image). EXIF orientation is
    applied; RGBA/LA/transparent palettes are composited on white; palette, CMYK, YCbCr, 1-bit and
    16-bit images are converted to 8-bit RGB."""
    from PIL import ImageOps

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage("empty file")
        with open_image(path, max_pixels) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_rgb8(im)
    except BadImage:
        raise
    except Exception as e:  # PIL raises many types: UnidentifiedImageError, OSError, SyntaxError, ...
        raise BadImage(f"cannot decode: {type(e).__name__}: {e}") from None



def _to_rgb8(im) -> np.ndarray:
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        top = 65535.0 if arr.max() > 255 else (1.0 if im.mode == "F" and arr.max() <= 1 else 255.0)
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadImage(f"unexpected decoded shape {arr.shape}")
    return arr



def is_grey(rgb: np.ndarray, tolerance: int = 6) -> bool:
    """True when an (H, W, 3) uint8 image carries no colour: 99% of its pixels have all three
    channels within `tolerance` of each other (JPEG leaves a little chroma noise in grey photos)."""
    step = max(1, int(math.sqrt(rgb.shape[0] * rgb.shape[1] / 65536)))
    sample = rgb[::step, ::step].astype(np.int16)
    spread = sample.max(axis=2) - sample.min(axis=2)
    return float(np.percentile(spread, 99)) <= tolerance



def resize_shorter_side(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is `size` (bicubic, antialiased); a no-op when it already is."""
    h, w = rgb.shape[:2]
    if min(h, w) == size:
        return rgb
    from PIL import Image

    scale = size / min(h, w)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(new, Image.BICUBIC))



def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return rgb[top:top + size, left:left + size]



def find_images(root) -> list[Path]:
    root = Path(root)
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))



def has_images(folder) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*"))



def to_chw_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()



def square_uint8(rgb: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) uint8: shorter side resized to `size`, centre crop."""
    return to_chw_tensor(center_crop(resize_shorter_side(rgb, size), size))
