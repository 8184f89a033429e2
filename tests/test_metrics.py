import os

import numpy as np
import pytest
import torch
from skimage import color
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import metrics
import report
from util import colour


def test_ciede2000_matches_skimage():
    rng = np.random.default_rng(2)
    shape = (48, 48)
    lab1 = np.stack([rng.uniform(0, 100, shape), rng.uniform(-110, 110, shape), rng.uniform(-110, 110, shape)], -1)
    lab2 = np.stack([rng.uniform(0, 100, shape), rng.uniform(-110, 110, shape), rng.uniform(-110, 110, shape)], -1)
    lab2[:8] = lab1[:8]                      # identical pixels
    lab1[8:16, :, 1:] = 0                    # achromatic against chromatic
    lab2[16:24] = lab1[16:24] + rng.normal(0, 1, (8, 48, 3))  # small differences
    lab2[24:32, :, 1] = -lab1[24:32, :, 1]   # hue differences across the wrap-around
    ref = color.deltaE_ciede2000(lab1, lab2)
    t = lambda x: torch.tensor(x).permute(2, 0, 1)[None]  # noqa: E731
    out = metrics.delta_e_2000_lab(t(lab1), t(lab2))[0].numpy()
    assert np.abs(out - ref).max() < 1e-3
    assert np.abs(out[:8]).max() < 1e-6


def test_delta_e_per_image_on_rgb():
    rgb = torch.rand(3, 3, 12, 12)
    assert metrics.delta_e_2000(rgb, rgb).abs().max() < 1e-4
    other = torch.rand(3, 3, 12, 12)
    lab = lambda x: color.rgb2lab(x.permute(1, 2, 0).double().numpy())  # noqa: E731
    ref = [color.deltaE_ciede2000(lab(a), lab(b)).mean() for a, b in zip(rgb, other)]
    assert np.allclose(metrics.delta_e_2000(rgb, other).numpy(), ref, atol=1e-3)


def test_ssim_and_psnr_match_skimage():
    rng = np.random.default_rng(3)
    a = rng.random((3, 32, 37, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    b[2] = a[2]
    t = lambda x: torch.tensor(x).permute(0, 3, 1, 2).float()  # noqa: E731
    ref_ssim = [structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=1, channel_axis=-1) for x, y in zip(a, b)]
    assert np.abs(metrics.ssim(t(a), t(b)).numpy() - ref_ssim).max() < 1e-3
    ref_psnr = [peak_signal_noise_ratio(x, y, data_range=1) for x, y in zip(a[:2], b[:2])]
    assert np.abs(metrics.psnr(t(a[:2]), t(b[:2])).numpy() - ref_psnr).max() < 1e-3
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_colorfulness():
    grey = torch.rand(1, 1, 16, 16).repeat(1, 3, 1, 1)
    assert metrics.colorfulness(grey).item() == pytest.approx(0, abs=1e-4)
    rgb = torch.rand(2, 3, 16, 16)
    x = rgb[0].double().numpy() * 255
    rg, yb = x[0] - x[1], 0.5 * (x[0] + x[1]) - x[2]
    ref = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    assert metrics.colorfulness(rgb)[0].item() == pytest.approx(ref, rel=1e-4)
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1  # constant pure red: sigma 0, mu = |(255, 127.5)|
    assert metrics.colorfulness(red).item() == pytest.approx(0.3 * np.hypot(255, 127.5), rel=1e-4)


def test_accumulator_averages_over_images_not_batches():
    acc = metrics.MetricAccumulator()
    target = torch.rand(4, 3, 16, 16)
    pred = target.clone()
    pred[3] = 1 - pred[3]
    acc.update(pred[:3], target[:3])  # three perfect images
    acc.update(pred[3:], target[3:])  # one bad one
    per = acc.per_image()["delta_e"]
    s = acc.summary()
    assert s["n_images"] == 4 and s["lpips"] is None
    assert s["delta_e"] == pytest.approx(per.mean().item())
    assert s["delta_e"] == pytest.approx(per[3].item() / 4, rel=1e-3)  # not (0 + bad) / 2


def test_lpips_plumbing_with_random_backbone():
    """Random weights only exercise the wiring (range scaling, shapes); never a reported figure."""
    lp = metrics.LPIPS(random_backbone=True)
    x = torch.rand(2, 3, 32, 32)
    assert lp(x, x).abs().max() < 1e-6
    d = lp(x, 1 - x)
    assert d.shape == (2,) and (d > 0).all()
    acc = metrics.MetricAccumulator(lp)
    acc.update(x, 1 - x)
    assert acc.summary()["lpips"] > 0


def test_lpips_disabled_reports_none():
    lp = metrics.LPIPS(enabled=False)
    assert not lp.available and lp(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)) is None


def test_summary_marks_best(tmp_path):
    rows = [{"run": "gray", "model": "gray", "n_images": 3, "delta_e": 10.5, "ssim": 0.95, "psnr": 25.4,
             "lpips": None, "colorfulness": 0.0, "colorfulness_gt": 30.0},
            {"run": "unet", "model": "unet", "n_images": 3, "delta_e": 9.0, "ssim": 0.94, "psnr": 25.0,
             "lpips": None, "colorfulness": 20.0, "colorfulness_gt": 30.0}]
    table = report.summary_table(rows)
    gray_row, unet_row = table.splitlines()[2:4]
    assert "**9.00**" in unet_row and "**0.9500**" in gray_row and "**25.40**" in gray_row
    assert "**20.00**" in unet_row and "n/a" in unet_row


def lab_image(L, a, b, h=10, w=12):
    lab = torch.tensor([L, a, b], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, h, w).clone()
    return lab, colour.lab_to_rgb(lab)


def test_auc_known_answers():
    _, grey = lab_image(50, 0, 0)
    _, off = lab_image(50, 29.7, 39.6)  # ab error 49.5: within every threshold from 50 to 150
    assert metrics.auc_from_histogram(metrics.ab_error_histograms(grey, grey)[0]).item() == pytest.approx(1.0)
    auc = metrics.auc_from_histogram(metrics.ab_error_histograms(off, grey)[0]).item()
    assert auc == pytest.approx(101 / 151, abs=1e-6)


def test_auc_of_a_perfect_colorization_is_one():
    """The true ab, rebuilt into RGB through Lab in float32, is off by ~4e-5 ab units: still exact
    for threshold 0 (it gave 0.9964 when the zero threshold needed float equality)."""
    import skimage.data


    rgb = torch.from_numpy(skimage.data.astronaut()[::8, ::8].copy()).permute(2, 0, 1)[None].float() / 255
    L, ab = colour.rgb_to_model(rgb)
    per_image, per_bin = metrics.ab_error_histograms(colour.compose_rgb(L, ab), rgb)
    assert metrics.auc_from_histogram(per_image).item() == 1.0
    assert metrics.rebalanced_auc(per_bin) == 1.0


def test_rebalanced_auc_weighs_colour_bins_equally():
    lab_t, target = lab_image(50, 0, 0, h=10, w=12)
    lab_t[:, 1:, :1] = torch.tensor([40.0, 20.0]).view(1, 2, 1, 1)  # one row of a rare colour

    target = colour.lab_to_rgb(lab_t)
    pred = target.clone()
    grey = torch.tensor([50.0, 0, 0], dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 1, 12)
    pred[:, :, :1] = colour.lab_to_rgb(grey)
    pred, target = torch.cat([pred] * 2, -1), torch.cat([target] * 2, -1)  # wide enough for SSIM
    pred, target = torch.cat([pred] * 2, -2), torch.cat([target] * 2, -2)
    acc = metrics.MetricAccumulator()
    acc.update(pred, target)  # the common grey is perfect, the rare colour (error ~44.7) is not
    s = acc.summary()
    rare = (151 - 45) / 151  # error 44.72 -> within from t = 45 on
    assert s["auc"] == pytest.approx(0.9 * 1 + 0.1 * rare, abs=1e-3)
    assert s["auc_rebalanced"] == pytest.approx((1 + rare) / 2, abs=1e-3)


def test_bootstrap_interval_covers_the_mean():
    values = torch.tensor(np.random.default_rng(0).normal(10, 2, 400))
    lo, hi = report.bootstrap_ci(values)
    assert lo < values.mean().item() < hi
    assert 0.2 < hi - lo < 0.6  # about 2 * 1.96 * 2 / sqrt(400) = 0.39


def test_lpips_without_weights_says_so_once_and_announces_no_download(tmp_path, monkeypatch, capsys):
    """No AlexNet weights and no network: one line that says where to put the file, no
    torchvision "Downloading: ..." line before it, and LPIPS is null (never random weights)."""
    import urllib.error

    import torch

    import metrics

    def refuse(*a, **k):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    metrics._pretrained_lpips.cache_clear()
    try:
        first, second = metrics.LPIPS(), metrics.LPIPS()
        assert not first.available and not second.available
        err = capsys.readouterr().err
        assert err.count("LPIPS unavailable") == 1 and "Downloading" not in err
        assert str(tmp_path / "checkpoints" / metrics.ALEXNET_FILE) in err
        assert not list(tmp_path.rglob("*.pth"))  # nothing half-written
        # the next process within the hour (a main job's test after its training) says nothing more
        metrics._pretrained_lpips.cache_clear()
        assert not metrics.LPIPS().available and "LPIPS" not in capsys.readouterr().err
        marker = tmp_path / "checkpoints" / (metrics.ALEXNET_FILE + ".missing")
        os.utime(marker, (marker.stat().st_atime - 7200, marker.stat().st_mtime - 7200))
        metrics._pretrained_lpips.cache_clear()  # hours later: said again
        assert not metrics.LPIPS().available and "LPIPS unavailable" in capsys.readouterr().err
    finally:
        metrics._pretrained_lpips.cache_clear()
