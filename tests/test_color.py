import warnings

import numpy as np
import pytest
import torch
from skimage import color

import colorize_data as cd


def to_t(x, dtype):
    return torch.tensor(x, dtype=dtype).permute(0, 3, 1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rgb_to_lab_matches_skimage(dtype):
    rgb = np.random.default_rng(0).random((3, 17, 19, 3))
    rgb[0, :2] = 0.0  # black and the linear segment of the sRGB curve
    rgb[0, 2:4] = 0.02
    ref = np.stack([color.rgb2lab(x) for x in rgb])
    out = cd.rgb_to_lab(to_t(rgb, dtype)).permute(0, 2, 3, 1).double().numpy()
    assert np.abs(out - ref).max() < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lab_to_rgb_matches_skimage(dtype):
    rng = np.random.default_rng(1)
    lab = np.stack([rng.uniform(0, 100, (20, 20)), rng.uniform(-110, 110, (20, 20)),
                    rng.uniform(-110, 110, (20, 20))], -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about out-of-gamut values, which it clips
        ref = color.lab2rgb(lab)
    out = cd.lab_to_rgb(to_t(lab[None], dtype))[0].permute(1, 2, 0).double().numpy()
    assert np.abs(out - ref).max() < 1e-3


def test_round_trip_and_scaling():
    rgb = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    L, ab = cd.rgb_to_model(rgb)
    assert L.min() >= -1 and L.max() <= 1 and ab.abs().max() <= 1
    assert torch.allclose(cd.compose_rgb(L, ab).double(), rgb, atol=1e-4)


def test_full_resolution_keeps_the_given_luminance():
    rgb = torch.rand(1, 3, 50, 70)
    seen = []

    def predict(L):
        seen.append(tuple(L.shape))
        return torch.zeros(L.shape[0], 2, *L.shape[2:])

    out = cd.colorize_full_resolution(predict, rgb, image_size=32)
    assert seen == [(1, 1, 32, 32)]  # ab is predicted at model resolution
    assert out.shape == rgb.shape    # and the image comes back at its own
    L_in = cd.rgb_to_lab(rgb)[:, 0]
    assert torch.allclose(cd.rgb_to_lab(out)[:, 0], L_in, atol=1e-3)  # grey is in gamut: L exact

    out = cd.colorize_full_resolution(lambda L: torch.full((L.shape[0], 2, *L.shape[2:]), 0.1), rgb, 32)
    lab = cd.rgb_to_lab(out)
    assert lab[:, 1].mean() > 5  # the colour was applied...
    inside = (out > 0.02).all(1) & (out < 0.98).all(1)  # ...and where nothing was clipped, L is untouched
    assert torch.allclose(lab[:, 0][inside], L_in[inside], atol=1e-2)
