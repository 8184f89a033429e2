"""Shared fixtures: tiny colour image folders made from scikit-image's bundled photos."""
import os
import sys
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # -n N: N processes share the cores, one thread each (their
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # subprocesses too); torch's own 2 threads each oversubscribe

import numpy as np  # noqa: E402
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["WANDB_MODE"] = "disabled"  # tests never talk to wandb
SHARED = ROOT.parent / "shared" / "data"
# the tests' tiny runs: 16 px, batch 4, no wandb, LPIPS or FID (those have their own tests)
TINY = ["--image_size", "16", "--batch_size", "4", "--wandb", "disabled", "--workers", "1",
        "--lpips", "off", "--fid", "off"]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an end-to-end run of 10 s or more; -m 'not slow' is the quick tier")


def colour_crops(n, size=(40, 48), seed=0):
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        h, w = size
        top, left = rng.integers(0, p.shape[0] - 4 * h), rng.integers(0, p.shape[1] - 4 * w)
        out.append(np.ascontiguousarray(p[top:top + 4 * h:4, left:left + 4 * w:4]))
    return out


def write_images(folder, images, prefix="img"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{prefix}_{i:03d}.png")


@pytest.fixture
def tiny_data(tmp_path):
    """train/ (10 images) and test/ (4 images) of 40x48 colour photos."""
    root = tmp_path / "data"
    write_images(root / "train", colour_crops(10, seed=1))
    write_images(root / "test", colour_crops(4, seed=2))
    return root


@pytest.fixture
def shared_data():
    if not (SHARED / "cifar10").is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED
