import warnings

import numpy as np
import pytest
import torch
from skimage import color

from util import colour


def to_t(x, dtype):
    return torch.tensor(x, dtype=dtype).permute(0, 3, 1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rgb_to_lab_matches_skimage(dtype):
    rgb = np.random.default_rng(0).random((3, 17, 19, 3))
    rgb[0, :2] = 0.0  # black and the linear segment of the sRGB curve
    rgb[0, 2:4] = 0.02
    ref = np.stack([color.rgb2lab(x) for x in rgb])
    out = colour.rgb_to_lab(to_t(rgb, dtype)).permute(0, 2, 3, 1).double().numpy()
    assert np.abs(out - ref).max() < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lab_to_rgb_matches_skimage(dtype):
    rng = np.random.default_rng(1)
    lab = np.stack([rng.uniform(0, 100, (20, 20)), rng.uniform(-110, 110, (20, 20)),
                    rng.uniform(-110, 110, (20, 20))], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about out-of-gamut values, which it clips
        ref = color.lab2rgb(lab)
    out = colour.lab_to_rgb(to_t(lab[None], dtype))[0].permute(1, 2, 0).double().numpy()
    assert np.abs(out - ref).max() < 1e-3


def test_round_trip_and_scaling():
    rgb = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    L, ab = colour.rgb_to_model(rgb)
    assert L.min() >= -1 and L.max() <= 1 and ab.abs().max() <= 1
    assert torch.allclose(colour.compose_rgb(L, ab).double(), rgb, atol=1e-4)


def test_full_resolution_keeps_the_given_luminance():
    rgb = torch.rand(1, 3, 50, 70)
    seen = []

    def predict(L):
        seen.append(tuple(L.shape))
        return torch.zeros(L.shape[0], 2, *L.shape[2:])

    out = colour.colorize_full_resolution(predict, rgb, image_size=32)
    assert seen == [(1, 1, 32, 32)]  # ab is predicted at model resolution
    assert out.shape == rgb.shape    # and the image comes back at its own
    L_in = colour.rgb_to_lab(rgb)[:, 0]
    assert torch.allclose(colour.rgb_to_lab(out)[:, 0], L_in, atol=1e-3)  # grey is in gamut: L exact

    out = colour.colorize_full_resolution(lambda L: torch.full((L.shape[0], 2, *L.shape[2:]), 0.1), rgb, 32)
    lab = colour.rgb_to_lab(out)
    assert lab[:, 1].mean() > 5  # the colour was applied...
    inside = (out > 0.02).all(1) & (out < 0.98).all(1)  # ...and where nothing was clipped, L is untouched
    assert torch.allclose(lab[:, 0][inside], L_in[inside], atol=1e-2)


def test_full_resolution_colorization_works_in_strips_of_little_memory():
    """A 9-megapixel photo: beyond its uint8 input, L (4 bytes a pixel), the output (3) and one
    strip's arithmetic (a few hundred MB, whatever the image size); whole-image float Lab
    arithmetic took ~140 bytes a pixel (11.3 GB for 81 megapixels)."""
    import subprocess
    import sys

    from conftest import ROOT

    code = """
import resource, sys, torch
sys.path.insert(0, %r)
from util import colour
torch.set_num_threads(1)
rgb = torch.empty((1, 3, 3000, 3000), dtype=torch.uint8).random_(0, 256)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
colour.colorize_full_resolution(lambda L: torch.tanh(L.repeat(1, 2, 1, 1)), rgb, 64)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
""" % str(ROOT)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout) < 7 * 9e6 + 350e6, float(r.stdout) / 1e6  # MB beyond the input (whole-image: 1.3 GB)


def test_strips_give_the_whole_image_result():
    import torch.nn.functional as F

    rgb = torch.rand(2, 3, 517, 300)
    w = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0))

    def predict(L):
        return torch.tanh(F.conv2d(L, w, padding=1))

    L_full = colour.rgb_to_model(rgb)[0]
    small = F.interpolate(L_full, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    ab = F.interpolate(predict(small), size=(517, 300), mode="bilinear", align_corners=False)
    whole = colour.compose_rgb(L_full, ab)
    assert torch.allclose(colour.colorize_full_resolution(predict, rgb, 32, rows=64), whole, atol=1e-5)
    as_uint8 = colour.colorize_full_resolution(predict, (rgb * 255).round().to(torch.uint8), 32)
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == rgb.shape
