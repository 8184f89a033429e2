"""A data set's images: its split into train/val/test (kept in split.json), decoding a split once
into uint8 tensors (unreadable and grey files counted and reported, never fatal), the evaluation
images, and the embedded demo data set built from scikit-image's photos.

Colour conventions live in util/colour.py, image decoding in util/images.py, training batches in
util/batches.py.
"""
from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from util.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGE_EXTENSIONS,
    BadImage,
    find_images,
    has_images,
    is_grey,
    load_rgb,
    square_uint8,
)

# ----------------------------------------------------------------------------------------------
# Finding images and splitting them
# ----------------------------------------------------------------------------------------------


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


def load_train_images(root, rel_paths, image_size, load_size=None, workers=4, max_pixels=None):
    """Decode the training split once: (N, 3, S, S) uint8 with S = max(load_size, image_size),
    grey images left out (counted in the report)."""
    size = max(load_size or image_size, image_size)
    arrays, paths, report = decode_images(root, rel_paths, lambda rgb: square_uint8(rgb, size), workers,
                                          drop_grey=True, max_pixels=max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    stacked = torch.stack(arrays) if arrays else torch.empty(0, 3, size, size, dtype=torch.uint8)
    return stacked, paths, report


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
