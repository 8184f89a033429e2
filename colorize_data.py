"""Images in, (L, ab) tensors out: colour conventions, robust decoding, splits, data sets, demo data.

Colour conventions (decided here, once):
    * images are sRGB with the D65 white point; RGB tensors are (B, 3, H, W) floats in [0, 1];
    * CIE Lab as scikit-image defines it: L in [0, 100], a and b roughly in [-110, 110];
    * the model input is L scaled to [-1, 1] (``L / 50 - 1``) and the target is ab scaled by 1/110,
      so that every gamut colour lies in [-1, 1];
    * every model predicts ab only. An image is always rebuilt from the L it was given and the
      predicted ab (``compose_rgb``); at full resolution ab is upsampled, L is never touched
      (``colorize_full_resolution``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# Colour space
# ----------------------------------------------------------------------------------------------
L_CENTER = 50.0  # model input: (L - 50) / 50 in [-1, 1]
L_SCALE = 50.0
AB_SCALE = 110.0  # model target: ab / 110, every sRGB colour within [-1, 1]

# sRGB (D65) <-> XYZ, the matrices scikit-image uses.
_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)


def _mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 colour matrix along dim 1 of a (B, 3, H, W) tensor."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(x), x)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> (B, 3, H, W) Lab (L in [0, 100]); matches skimage.color.rgb2lab."""
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp_min(0) ** 2.4, rgb / 12.92)
    xyz = _mix(_RGB_TO_XYZ, lin) / _WHITE_D65.to(rgb).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) Lab -> sRGB clipped to [0, 1]; matches skimage.color.lab2rgb."""
    L, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    fy = (L + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = (fy - b / 200.0).clamp_min(0)  # skimage clips negative z the same way
    f = torch.stack([fx, fy, fz], dim=1)
    xyz = torch.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / 7.787)
    lin = _mix(_XYZ_TO_RGB, xyz * _WHITE_D65.to(lab).view(1, 3, 1, 1))
    rgb = torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return rgb.clamp(0, 1)


def rgb_to_model(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB in [0, 1] -> (L scaled to [-1, 1], ab scaled by 1/110): the model's input and target."""
    lab = rgb_to_lab(rgb)
    return (lab[:, :1] - L_CENTER) / L_SCALE, lab[:, 1:] / AB_SCALE


def compose_rgb(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Scaled L (B,1,H,W) and scaled ab (B,2,H,W) -> RGB in [0, 1]. The only way back to an image.
    L may be a hinted network's whole conditioning input (models/hints.py): its first channel is L."""
    lab = torch.cat([L[:, :1].float() * L_SCALE + L_CENTER, ab.float() * AB_SCALE], dim=1)
    return lab_to_rgb(lab)


def replace_atomically(path, write) -> None:
    """Call write(binary file) on a temporary file in the same folder, flush it to disk, then
    rename it over `path`: a crash at any moment leaves either the old file or the new one, never
    half of one (nor a temporary file, unless the process is killed). Errors (OSError, or what
    `write` raises) propagate. Every file of a run folder and every cache is written this way."""
    import tempfile

    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)  # reading the umask means setting it: put it back at once
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it private; a result file gets the usual mode
        os.replace(tmp, path)
    finally:
        if tmp is not None and Path(tmp).exists():
            Path(tmp).unlink()


def save_cache(obj, path) -> bool:
    """torch.save a computed table atomically; False (and nothing left behind) when the cache
    cannot be written (a read-only home): it is computed again next time."""
    try:
        replace_atomically(path, lambda f: torch.save(obj, f))
        return True
    except (OSError, RuntimeError):
        return False


def load_cache(path, check):
    """A cached table, or None when it is missing, unreadable (a 0-byte file a kill left, another
    kind of file, ...) or fails `check(obj) -> bool` (wrong shapes, NaN, ...): then it is
    computed again and rewritten."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return obj if check(obj) else None
    except Exception:  # EOFError, UnpicklingError, RuntimeError, a check that trips: all mean "recompute"
        return None


def cache_dir() -> Path:
    """Where computed tables (the ab gamut, colour-bin counts per data set) are kept."""
    return Path(os.environ.get("COLORIZATION_CACHE", Path.home() / ".cache" / "colorization"))


def fetch_quietly(url: str, path, hash_prefix: str | None = None, timeout: float = 20.0) -> str | None:
    """Download `url` to `path` with nothing printed (torch writes a temporary file, checks the
    hash prefix, then moves it in place: a failure leaves nothing). None when it worked, else why
    not, in one line, for a message that says what to do (pretrained weights: LPIPS, FID)."""
    import socket

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=hash_prefix, progress=False)
        return None
    except Exception as e:  # URLError, HTTPError, a hash mismatch, a read-only cache, ...
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        socket.setdefaulttimeout(previous)


AB_BIN = 10        # the ab grid of Zhang et al. and Deshpande et al.: bins of 10 x 10 ab units
AB_BINS_PER_AXIS = 23  # bin centres -110, -100, ..., 110 on each axis


def ab_bin_index(ab: torch.Tensor) -> torch.Tensor:
    """Scaled ab (B, 2, H, W) -> (B, H, W) index of its 10 x 10 bin on the 23 x 23 grid (a major)."""
    q = torch.round(ab.float() * AB_SCALE / AB_BIN).long().clamp(-11, 11) + 11
    return q[:, 0] * AB_BINS_PER_AXIS + q[:, 1]


@torch.no_grad()
def ab_histogram(batches, device) -> torch.Tensor:
    """Pixel counts per ab bin (529,) over uint8 RGB batches (an iterable of (B, 3, H, W))."""
    counts = torch.zeros(AB_BINS_PER_AXIS ** 2, dtype=torch.float64, device=device)
    for images in batches:
        _, ab = rgb_to_model(uint8_to_float(images.to(device)))
        counts += torch.bincount(ab_bin_index(ab).flatten(), minlength=counts.numel()).double()
    return counts


def data_key(root, paths, *settings) -> str:
    """A name for a data set as read with `settings`: its folder, and each file's path, size and
    modification time. Statistics cached under it are recomputed when any file changes."""
    import hashlib

    h = hashlib.sha1(json.dumps([str(Path(root).resolve()), [str(s) for s in settings]]).encode())
    for rel in sorted(paths):
        try:
            st = (Path(root) / rel).stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{rel}\0missing\n".encode())
    return h.hexdigest()[:20]


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0)


@torch.no_grad()
def colorize_full_resolution(predict_ab, rgb: torch.Tensor, image_size: int, rows: int | None = None) -> torch.Tensor:
    """Colorize (B, 3, H, W) RGB of any size, uint8 or float in [0, 1] (the result is of the same
    kind): ab is predicted from L resized to the model's image_size, upsampled bilinearly to H x W
    and combined with the untouched full-resolution L. Works in strips of `rows` rows (default:
    about a megapixel), so beyond the input and the result it holds L (4 bytes a pixel) and one
    strip's Lab arithmetic (~300 MB): an 81-megapixel photo in about 1.1 GB, where whole-image
    float arithmetic took ~140 bytes a pixel (11.3 GB)."""
    as_float = (lambda x: x.float().div_(255.0)) if rgb.dtype == torch.uint8 else (lambda x: x.float())
    b, _, h, w = rgb.shape
    rows = rows or max(1, 2 ** 20 // (w * b))
    L_full = torch.empty(b, 1, h, w, device=rgb.device)
    for r in range(0, h, rows):
        L_full[:, :, r:r + rows] = rgb_to_model(as_float(rgb[:, :, r:r + rows]))[0]
    L_small = F.interpolate(L_full, size=(image_size, image_size), mode="bilinear", align_corners=False,
                            antialias=True)
    ab_small = predict_ab(L_small).float()
    # bilinear upsampling is separable: to full width at the small height now, to full height per strip
    ab_wide = F.interpolate(ab_small, size=(ab_small.shape[-2], w), mode="bilinear", align_corners=False)
    out = torch.empty_like(rgb)
    for r in range(0, h, rows):
        ys = torch.arange(r, min(r + rows, h), device=rgb.device, dtype=torch.float32)
        src = ((ys + 0.5) * (ab_small.shape[-2] / h) - 0.5).clamp_min(0)  # align_corners=False
        i0 = src.floor().long().clamp(max=ab_small.shape[-2] - 1)
        i1 = (i0 + 1).clamp(max=ab_small.shape[-2] - 1)
        t = (src - i0).view(1, 1, -1, 1)
        ab = ab_wide[:, :, i0] * (1 - t) + ab_wide[:, :, i1] * t
        strip = compose_rgb(L_full[:, :, r:r + rows], ab)
        out[:, :, r:r + rows] = (strip * 255).round_() if rgb.dtype == torch.uint8 else strip
    return out


# ----------------------------------------------------------------------------------------------
# Decoding files robustly
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# Finding images and splitting them
# ----------------------------------------------------------------------------------------------
def find_images(root) -> list[Path]:
    root = Path(root)
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def make_split(root, seed: int, val_fraction: float = 0.05, test_fraction: float = 0.1, max_images: int = 0) -> dict:
    """Split a folder into train/val/test lists of paths relative to `root`.

    With `train/` and `test/` subfolders those are the splits (`val/` too when present, otherwise
    val is carved from train by `seed`). With only `train/` and `val/`, `val/` is the held-out test
    split and val is carved from train. Otherwise a deterministic shuffle by `seed` decides."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    rel = lambda paths: [p.relative_to(root).as_posix() for p in paths]  # noqa: E731
    rng = random.Random(seed)
    held_out = held_out_folder(root)
    if (root / "train").is_dir() and held_out is not None:
        train, test = rel(find_images(root / "train")), rel(find_images(held_out))
        if held_out.name == "test" and (root / "val").is_dir():
            val = rel(find_images(root / "val"))
        else:  # no separate val/: carve it from train, so the held-out folder stays unseen
            rng.shuffle(train)
            n_val = max(1, round(len(train) * val_fraction)) if len(train) > 1 and val_fraction > 0 else 0
            val, train = sorted(train[:n_val]), sorted(train[n_val:])
    else:
        files = rel(find_images(root))
        rng.shuffle(files)
        n = len(files)
        n_test = max(1, round(n * test_fraction)) if n > 2 and test_fraction > 0 else 0
        n_val = max(1, round(n * val_fraction)) if n > 2 and val_fraction > 0 else 0
        test, val, train = sorted(files[:n_test]), sorted(files[n_test:n_test + n_val]), sorted(files[n_test + n_val:])
    if not (train or test):
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    split = {"root": str(root.resolve()), "seed": seed, "train": train, "val": val, "test": test}
    if max_images and max_images < len(train):  # --max_images: a subset of train, the same for the same seed
        split["train"] = sorted(random.Random(f"max_images {seed}").sample(train, max_images))
        split["max_images"] = max_images
    return split


def held_out_folder(root) -> Path | None:
    """The folder of held-out images of a data set: test/, or val/ beside train/ (as make_split)."""
    root = Path(root)
    if (root / "test").is_dir():
        return root / "test"
    return root / "val" if (root / "train").is_dir() and (root / "val").is_dir() else None


def test_set(root) -> tuple[list[str], str]:
    """Every image of a folder used only for testing (not the folder a run trained on): its
    held-out folder when it has one, else all of it. Returns (paths relative to root, what)."""
    root = Path(root)
    folder = held_out_folder(root) or root
    return ([p.relative_to(root).as_posix() for p in find_images(folder)],
            f"every image of {folder}" + ("" if folder != root else " (no test/ folder)"))


class BadSplit(Exception):
    """A split.json that cannot be used (damaged, or edited by hand); the message names it."""


def fingerprints(root, rel_paths) -> list[str]:
    """A short content hash of each file (blake2b of its bytes, 16 hex digits; "" for one that
    cannot be read): the same picture under another folder or name has the same one."""
    out = []
    for rel in rel_paths:
        try:
            out.append(hashlib.blake2b((Path(root) / rel).read_bytes(), digest_size=8).hexdigest())
        except OSError:
            out.append("")
    return out


def trained_on(split: dict) -> dict:
    """What a run's split says it was trained on, as metrics.json records it: the data folder,
    the number of training images, --max_images and the seed."""
    return {"train_data": split["root"], "train_images": len(split["train"]),
            "max_images": split.get("max_images"), "seed": split["seed"]}


def load_split(path) -> dict:
    """A run's split.json, checked: {"root": folder, "seed": int, "train"/"val"/"test": [relative
    paths]}; BadSplit otherwise (no path in it may leave its folder)."""
    path = Path(path)
    try:
        split = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise BadSplit(f"{path} cannot be read as a split ({type(e).__name__}); delete it to draw the split "
                       f"again from --seed") from None
    problem = None
    if not isinstance(split, dict):
        problem = "not a JSON object"
    elif not isinstance(split.get("root"), str) or not isinstance(split.get("seed"), int):
        problem = "no root folder or seed"
    else:
        for name in ("train", "val", "test"):
            files = split.get(name)
            if not isinstance(files, list) or not all(isinstance(f, str) and f and not Path(f).is_absolute()
                                                      and ".." not in Path(f).parts for f in files):
                problem = f"its {name} list is not a list of paths inside the data folder"
                break
    if problem:
        raise BadSplit(f"{path} is damaged ({problem}); delete it to draw the split again from --seed")
    return split


# ----------------------------------------------------------------------------------------------
# Decoding a split once, keeping uint8 tensors
# ----------------------------------------------------------------------------------------------
@dataclass
class SkipReport:
    """Files left out of a split, by reason: reported once, never fatal."""
    bad: list = field(default_factory=list)   # (path, why)
    grey: list = field(default_factory=list)  # paths

    def warn(self, what: str, log=print) -> None:
        if self.bad:
            first = "; ".join(f"{p} ({why})" for p, why in self.bad[:3])
            log(f"warning: skipped {len(self.bad)} unreadable file(s) in {what}: {first}"
                + (" ..." if len(self.bad) > 3 else ""))
        if self.grey:
            log(f"note: left {len(self.grey)} greyscale image(s) out of {what}: they carry no colour "
                f"to learn (first: {', '.join(map(str, self.grey[:3]))})")


def decode_images(root, rel_paths, prepare, workers: int = 4, drop_grey: bool = False,
                  max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS):
    """Decode files once with a thread pool; `prepare` maps (H, W, 3) uint8 to what is kept.
    Returns (kept arrays, kept relative paths, SkipReport)."""
    root = Path(root)

    def one(rel):
        try:
            rgb = load_rgb(root / rel, max_pixels)
        except (BadImage, OSError) as e:
            return rel, None, str(e)
        if drop_grey and is_grey(rgb):
            return rel, None, "grey"
        return rel, prepare(rgb), None

    report, kept, kept_paths = SkipReport(), [], []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for rel, arr, why in pool.map(one, rel_paths):
            if arr is not None:
                kept.append(arr)
                kept_paths.append(rel)
            elif why == "grey":
                report.grey.append(rel)
            else:
                report.bad.append((rel, why))
    return kept, kept_paths, report


def to_chw_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def square_uint8(rgb: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) uint8: shorter side resized to `size`, centre crop."""
    return to_chw_tensor(center_crop(resize_shorter_side(rgb, size), size))


def load_train_images(root, rel_paths, image_size, load_size=None, workers=4, max_pixels=None):
    """Decode the training split once: (N, 3, S, S) uint8 with S = max(load_size, image_size),
    grey images left out (counted in the report)."""
    size = max(load_size or image_size, image_size)
    arrays, paths, report = decode_images(root, rel_paths, lambda rgb: square_uint8(rgb, size), workers,
                                          drop_grey=True, max_pixels=max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    stacked = torch.stack(arrays) if arrays else torch.empty(0, 3, size, size, dtype=torch.uint8)
    return stacked, paths, report


def augment_batch(images: torch.Tensor, image_size: int, crop: str, generator: torch.Generator) -> torch.Tensor:
    """Random crops and horizontal flips of a uint8 (B, 3, S, S) batch, in one go on its device.

    crop='random': a random image_size window; 'resized': a random window of 50-100% of the side
    (25-100% of the area), resized to image_size (bilinear, via roi_align). Random numbers come from
    `generator` (on the CPU) so that runs, resumed runs and several processes draw the same ones."""
    b, _, h, w = images.shape
    s = image_size
    dev = images.device
    flip = torch.rand(b, generator=generator) < 0.5
    if crop == "resized":
        from torchvision.ops import roi_align

        side = (torch.sqrt(torch.empty(b).uniform_(0.25, 1.0, generator=generator)) * min(h, w)).clamp(min=1)
        top = torch.rand(b, generator=generator) * (h - side)
        left = torch.rand(b, generator=generator) * (w - side)
        boxes = torch.stack([torch.arange(b, dtype=torch.float), left, top, left + side, top + side], 1)
        out = roi_align(images.float(), boxes.to(dev), output_size=(s, s), sampling_ratio=2, aligned=True)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    else:
        top = torch.randint(0, h - s + 1, (b,), generator=generator)
        left = torch.randint(0, w - s + 1, (b,), generator=generator)
        ar = torch.arange(s)
        rows = (top[:, None] + ar).to(dev)[:, :, None]             # (B, s, 1)
        cols = (left[:, None] + ar).to(dev)[:, None, :]            # (B, 1, s)
        idx = torch.arange(b, device=dev)[:, None, None]
        out = images[idx, :, rows, cols].permute(0, 3, 1, 2)       # (B, s, s, 3) -> (B, 3, s, s)
    flip = flip.to(dev)[:, None, None, None]
    return torch.where(flip, out.flip(-1), out).contiguous()


class TrainBatches:
    """The training batches of one epoch, as uint8 (B/world, 3, s, s) tensors on the device.

    In memory: the decoded (N, 3, S, S) uint8 tensor lives on the device (or in pinned host memory);
    each epoch a permutation drawn from (seed, epoch) picks global batches of `batch_size`,
    augmented in one batched call, and process `rank` of `world` takes its slice. Every process and
    every resumed run draws exactly the same numbers. The last partial batch is dropped when there
    is more than one batch."""

    def __init__(self, images: torch.Tensor, batch_size: int, image_size: int, crop: str, seed: int,
                 device, rank: int = 0, world: int = 1):
        self.device = torch.device(device)
        if self.device.type == "cuda":  # decoded once; kept on the GPU when it fits easily, else pinned
            free, _ = torch.cuda.mem_get_info(self.device)
            images = images.to(self.device) if images.numel() < 0.3 * free else images.pin_memory()
        self.images, self.batch_size, self.image_size, self.crop = images, batch_size, image_size, crop
        self.seed, self.rank, self.world = seed, rank, world

    def __len__(self):
        n = len(self.images)
        return max(1, n // self.batch_size) if n > self.batch_size else 1

    def set_batch_size(self, batch_size: int) -> None:
        """From the next epoch() on (a resumed run finishes an epoch with the batch size it began it with)."""
        self.batch_size = batch_size

    def epoch(self, epoch: int, start: int = 0):
        """(index, batch) for batches `start`, `start` + 1, ... of `epoch` (a resumed epoch skips
        the ones it did)."""
        n, bs = len(self.images), self.batch_size
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        for i in range(start, len(self)):
            idx = perm[i * bs:(i + 1) * bs]
            batch = augment_batch(self.images[idx.to(self.images.device)].to(self.device, non_blocking=True),
                                  self.image_size, self.crop, batch_rng(self.seed, epoch, i))
            per = -(-len(batch) // self.world)
            yield i, batch[self.rank * per:(self.rank + 1) * per]


def batch_rng(seed: int, epoch: int, index: int, rank: int = 0) -> torch.Generator:
    """The generator of one batch's augmentation: a function of where the batch is, nothing else."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 100_003 + index) * 101 + rank)


class _FileImages(torch.utils.data.Dataset):
    """One training file -> ((3, S, S) uint8, status): 0 usable, 1 unreadable, 2 grey. JPEGs are
    decoded by torchvision (libjpeg-turbo), everything else through load_rgb's careful path."""

    def __init__(self, root, paths, size: int, max_pixels):
        self.root, self.paths, self.size, self.max_pixels = Path(root), list(paths), size, max_pixels

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from torchvision.io import ImageReadMode, decode_image, read_file

        path = self.root / self.paths[i]
        try:
            if path.suffix.lower() in (".jpg", ".jpeg"):
                open_image(path, self.max_pixels).close()  # the size guard, from the header
                try:
                    chw = decode_image(read_file(str(path)), ImageReadMode.RGB, apply_exif_orientation=True)
                    rgb = chw.permute(1, 2, 0).numpy()
                except RuntimeError:  # CMYK and other JPEGs that libjpeg-turbo's RGB path refuses
                    rgb = load_rgb(path, self.max_pixels)
            else:
                rgb = load_rgb(path, self.max_pixels)
        except (BadImage, OSError):
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), 1
        if is_grey(rgb):
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), 2
        return square_uint8(rgb, self.size), 0


class _RankBatches:
    """Batch sampler: this process's share of each global batch of an epoch's permutation."""

    def __init__(self, n, batch_size, seed, rank, world):
        self.n, self.bs, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.start = 0, 0

    def __len__(self):
        return max(1, self.n // self.bs) if self.n > self.bs else 1

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))
        for i in range(self.start, len(self)):
            batch = perm[i * self.bs:(i + 1) * self.bs]
            per = -(-len(batch) // self.world)
            yield batch[self.rank * per:(self.rank + 1) * per].tolist()


class StreamingTrainBatches:
    """TrainBatches for data sets too large to keep in memory: DataLoader worker processes decode
    each epoch's files (pinned memory, persistent workers); crops, flips and the Lab conversion then
    run batched on the device as for the in-memory path. Unreadable and grey files are dropped from
    their batch, counted, and reported once after the first epoch."""

    def __init__(self, root, paths, batch_size, image_size, load_size, crop, seed, device, rank=0, world=1,
                 workers=4, max_pixels=DEFAULT_MAX_IMAGE_PIXELS):
        self.device, self.image_size, self.crop = torch.device(device), image_size, crop
        self.seed, self.rank = seed, rank
        self.paths = list(paths)
        self.sampler = _RankBatches(len(self.paths), batch_size, seed, rank, world)
        files = _FileImages(root, self.paths, max(load_size or image_size, image_size), max_pixels)
        self.loader = torch.utils.data.DataLoader(
            files, batch_sampler=self.sampler, num_workers=workers, persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if workers > 0 else None)
        self.skipped = {1: 0, 2: 0}
        self.reported = False

    def __len__(self):
        return len(self.sampler)

    def set_batch_size(self, batch_size: int) -> None:
        self.sampler.bs = batch_size

    def epoch(self, epoch: int, start: int = 0):
        self.sampler.epoch, self.sampler.start = epoch, start
        for i, (images, status) in enumerate(self.loader, start):
            for code in (1, 2):
                self.skipped[code] += int((status == code).sum())
            images = images[status == 0]
            if len(images):
                yield i, augment_batch(images.to(self.device, non_blocking=True), self.image_size, self.crop,
                                       batch_rng(self.seed, epoch, i, self.rank))
        if not self.reported and (self.skipped[1] or self.skipped[2]):
            print(f"note: streaming skipped {self.skipped[1]} unreadable and {self.skipped[2]} grey training file(s)")
        self.reported = True


def load_eval_images(root, rel_paths, image_size, workers=4, max_pixels=None):
    """Resize the shorter side to image_size, centre-crop: a (N, 3, S, S) uint8 tensor."""
    arrays, paths, report = decode_images(root, rel_paths, lambda rgb: square_uint8(rgb, image_size), workers,
                                          drop_grey=False, max_pixels=max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    stacked = torch.stack(arrays) if arrays else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)
    return stacked, paths, report


# ----------------------------------------------------------------------------------------------
# The embedded demo data set
# ----------------------------------------------------------------------------------------------
DEMO_TRAIN_PHOTOS = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                     "motorcycle_left", "colorwheel")
DEMO_TEST_PHOTOS = ("chelsea", "coffee")  # held out of training: Dataset/test and TestImages/


def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle_left":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()[..., :3]


def has_images(folder) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*"))


def build_demo_dataset(dataset_dir, test_images_dir, seed: int = 0, crop_size: int = 96,
                       crops_per_photo: int = 48, log=print) -> None:
    """Write deterministic random crops of scikit-image's bundled colour photos into
    `dataset_dir/{train,test}` (test crops only from held-out photos) and the held-out photos,
    whole, into `test_images_dir`. Nothing is downloaded."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    dataset_dir, test_images_dir = Path(dataset_dir), Path(test_images_dir)
    for split, names in (("train", DEMO_TRAIN_PHOTOS), ("test", DEMO_TEST_PHOTOS)):
        out = dataset_dir / split
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            photo = _skimage_photo(name)
            h, w = photo.shape[:2]
            for k in range(crops_per_photo if split == "train" else crops_per_photo // 2):
                side = int(rng.integers(crop_size, max(crop_size + 1, min(h, w) // 2)))
                top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
                crop = Image.fromarray(photo[top:top + side, left:left + side])
                crop.resize((crop_size, crop_size), Image.BICUBIC).save(out / f"{name}_{k:03d}.png")
    if not has_images(test_images_dir):
        test_images_dir.mkdir(parents=True, exist_ok=True)
        for name in DEMO_TEST_PHOTOS:
            Image.fromarray(_skimage_photo(name)).save(test_images_dir / f"{name}.png")
    log(f"built the demo data set from scikit-image's photos: {dataset_dir} "
        f"(train: {', '.join(DEMO_TRAIN_PHOTOS)}; test: {', '.join(DEMO_TEST_PHOTOS)}) and {test_images_dir}")
