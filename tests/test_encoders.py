"""Pretrained encoders (--encoder, models/backbones.py) and the diffusion parameterizations: the
offline error, torchvision weights loaded from a locally saved file (never a figure from random
encoder weights: these check plumbing), checkpoints with an encoder, the join starting as the
network without it, and the samplers' known answers for v and x0 prediction."""
import conftest
import pytest
import torch

import main
from models import backbones
from models.diffusion import NoiseSchedule, ddim_sample, ddpm_sample
from registry import REGISTRY
from trainers import checkpoint as ckpt_io

TINY = [*conftest.TINY, "--unet_channels", "8", "--unet_depth", "2"]


def test_a_torchvision_encoder_offline_is_one_line_naming_the_file_and_folder(tmp_path, monkeypatch, capsys):
    from util import files

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(files, "fetch_quietly", lambda *a, **k: "URLError: no network")
    with pytest.raises(backbones.Unavailable) as e:
        backbones.check("resnet34")
    message = str(e.value)
    assert "resnet34-b627a593.pth" in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert main.main([*TINY, "--encoder", "convnext_tiny", "--results", str(tmp_path / "R"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "convnext_tiny-983f1562.pth" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_torchvision_weights_are_loaded_from_the_hub_cache(tmp_path, monkeypatch):
    """A state dict saved where torchvision keeps its downloads is what the encoder holds."""
    from torchvision.models import get_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    saved = get_model("resnet34").state_dict()
    path = backbones.weights_file("resnet34")
    path.parent.mkdir(parents=True)
    torch.save(saved, path)
    encoder = backbones.build("resnet34")
    assert all(torch.equal(v, saved[k]) for k, v in encoder.net.state_dict().items())
    f = encoder.eval()(torch.rand(2, 1, 32, 32) * 2 - 1)
    assert f.spatial.shape == (2, 256, 8, 8) and f.pooled.shape == (2, 512)


@pytest.mark.parametrize("name, channels, pooled", [("inception_v3", 768, 2048), ("convnext_tiny", 384, 768)])
def test_every_encoder_gives_a_map_at_a_sixteenth_and_a_vector(name, channels, pooled):
    encoder = backbones.build(name, pretrained=False).eval()
    with torch.no_grad():
        f = encoder(torch.rand(2, 1, 24, 24) * 2 - 1, 128)
    assert f.spatial.shape[:2] == (2, channels) and f.spatial.shape[2] in (6, 8) and f.pooled.shape == (2, pooled)


@pytest.mark.parametrize("fusion", ["both", "skips"])
def test_the_join_starts_as_the_network_without_it(fusion):
    """The join's last convolutions are zero at first: an --encoder network begins exactly where the
    plain one does, and learns how much to take from the encoder."""
    family = REGISTRY["unet"]
    plain_cfg, _ = family.configs({"unet_channels": 8, "unet_depth": 2})
    encoded_cfg, _ = family.configs({"unet_channels": 8, "unet_depth": 2, "encoder": "inception_v3",
                                     "encoder_size": 96, "encoder_fusion": fusion})
    plain, encoded = family.network.build(plain_cfg).eval(), family.network.build(encoded_cfg).eval()
    encoded.load_state_dict({**encoded.state_dict(), **plain.state_dict()})
    L = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(plain(L), encoded(L))
    assert not any(k.startswith("encoded.backbone") for k in encoded.state_dict())  # borrowed, not saved


def test_cached_features_are_the_computed_ones():
    cfg, _ = REGISTRY["unet"].configs({"unet_channels": 8, "unet_depth": 2, "encoder": "inception_v3",
                                       "encoder_size": 96})
    join = backbones.Encoded(cfg, 32)
    L = torch.rand(3, 1, 16, 16) * 2 - 1
    fresh = join._fresh(L)
    for rows in ([0, 1, 2], [2, 0]):  # computed, then from the cache
        cached = join.features(L[rows])
        assert torch.equal(cached.spatial, fresh.spatial[rows]) and torch.equal(cached.pooled, fresh.pooled[rows])
    assert len(join._cache) == 3


def test_the_cache_turns_itself_off_when_every_epoch_brings_new_images():
    """Random crops of larger photos never repeat: from the second epoch's review on, a cache that
    found (almost) nothing is emptied and stays off; images that repeat keep it."""
    cfg, _ = REGISTRY["unet"].configs({"unet_channels": 8, "unet_depth": 2, "encoder": "inception_v3",
                                       "encoder_size": 96})
    repeating, fresh_each_time = backbones.Encoded(cfg, 32), backbones.Encoded(cfg, 32)
    same = torch.rand(4, 1, 16, 16) * 2 - 1
    for epoch in range(3):
        repeating.features(same)
        fresh_each_time.features(torch.rand(4, 1, 16, 16) * 2 - 1)
        shares = repeating.review_cache(), fresh_each_time.review_cache()
        assert shares == [(0.0, 0.0), (1.0, 0.0), (1.0, None)][epoch]  # None: off, nothing looked up
    assert len(repeating._cache) == 4 and repeating._caching
    assert fresh_each_time._cache == {} and not fresh_each_time._caching
    before = torch.rand(2, 1, 16, 16) * 2 - 1  # still the right features, computed afresh
    assert torch.equal(fresh_each_time.features(before).pooled, fresh_each_time._fresh(before).pooled)
    assert fresh_each_time._cache == {}


def test_a_run_with_an_encoder_trains_tests_colorizes_resumes_and_fine_tunes(tiny_data, tmp_path):
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--encoder", "inception_v3",
             "--encoder_size", "80"]
    assert main.main([*flags, "--epochs", "1"]) == 0
    ckpt = ckpt_io.load(tmp_path / "unet" / "last.pt")
    assert ckpt["network"]["encoder"] == "inception_v3" and not any("backbone" in k for k in ckpt["model"])
    assert main.main([*flags, "--epochs", "2", "--resume"]) == 0
    # test mode and colorize rebuild it from the checkpoint alone (no --encoder given)
    base = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*base, "--mode", "test", "--input", ""]) == 0
    photo = tiny_data / "test" / "img_000.png"
    assert main.main([*base, "--mode", "colorize", "--input", str(photo), "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "img_000.png").is_file()
    # fine-tuning another run from it (--init_from) takes its encoder with its network
    assert main.main([*base, "--epochs", "1", "--run_name", "again", "--init_from", "unet"]) == 0
    assert ckpt_io.load(tmp_path / "again" / "last.pt")["network"]["encoder"] == "inception_v3"
    # fine-tuned: the encoder is the network's own, saved, and learns at a tenth of the rate
    assert main.main([*flags, "--epochs", "1", "--run_name", "tuned", "--encoder_finetune"]) == 0
    tuned = ckpt_io.load(tmp_path / "tuned" / "last.pt")
    assert any(k.startswith("encoded.backbone.") for k in tuned["model"])
    network, encoder = tuned["optimizers"]["model"]["param_groups"]
    assert encoder["initial_lr"] == pytest.approx(network["initial_lr"] * 0.1)


def oracle(schedule, x0, prediction):
    def net(x_t, L, t):
        abar = schedule.at(schedule.abar, t)
        eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        return {"eps": eps, "x0": x0, "v": abar.sqrt() * eps - (1 - abar).sqrt() * x0}[prediction]
    return net


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_samplers_return_x0_with_an_oracle_of_every_parameterization(prediction):
    schedule = NoiseSchedule(100, "cosine")
    x0 = torch.rand(2, 2, 8, 8) * 1.8 - 0.9
    L = torch.zeros(2, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    net = oracle(schedule, x0, prediction)
    assert (ddpm_sample(net, schedule, L, g, prediction) - x0).abs().max() < 1e-3
    for steps in (1, 10, 100):
        assert (ddim_sample(net, schedule, L, steps, 0.0, None, prediction) - x0).abs().max() < 1e-3
    # and the training target is what predict_x0 inverts
    t = torch.randint(0, 100, (2,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = schedule.q_sample(x0, t, noise)
    assert torch.allclose(schedule.predict_x0(x_t, t, schedule.target(x0, t, noise, prediction), prediction), x0,
                          atol=1e-5)


def test_diffusion_checkpoints_from_before_the_setting_are_eps_checkpoints(tiny_data, tmp_path):
    """Checkpoints written before --prediction existed predicted eps (and before --snr_gamma, unweighted):
    test mode must read them so."""
    from runs.settings import resolve

    flags = [*TINY, "--model", "unetddpm", "--diff_channels", "8", "--diff_depth", "2", "--timesteps", "4",
             "--val_images", "1", "--val_steps", "1", "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*flags, "--epochs", "1", "--prediction", "eps"]) == 0
    ckpt = ckpt_io.load(tmp_path / "unetddpm" / "best.pt")
    for part in ("args", "network"):
        ckpt[part].pop("prediction")
    ckpt["args"].pop("snr_gamma")  # nor --snr_gamma: they were trained unweighted
    _, args, given = main.parse_args([*flags, "--mode", "test"])
    settings = resolve(REGISTRY["unetddpm"], args, given, ckpt)
    assert settings.network.prediction == "eps" and settings.training.snr_gamma == 0.0


def test_min_snr_weighting_is_the_x0_error_weighted_min_snr_gamma():
    """--snr_gamma: whatever the denoiser predicts, its loss is the x0 error weighted min(SNR, gamma)
    (Hang et al. 2023); checked for v against x0 recovered from the v output."""
    family = REGISTRY["unetddpm"]
    trainer = family.make({"diff_channels": 8, "diff_depth": 2, "timesteps": 20, "snr_gamma": 5.0,
                           "image_size": 8}, "cpu", training=False)
    net, schedule = trainer.model.eval(), trainer.schedule
    ab, L = torch.rand(4, 2, 8, 8) * 0.2 - 0.1, torch.rand(4, 1, 8, 8) * 2 - 1
    loss = trainer.noise_loss(net, ab, L, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, schedule.T, (4,), generator=g)
    noise = torch.randn(ab.shape, generator=g)
    x_t = schedule.q_sample(ab, t, noise)
    with torch.no_grad():
        v = net(x_t, L, t)
    abar = schedule.at(schedule.abar, t)
    x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * v  # unclipped
    snr = (abar / (1 - abar)).flatten()
    expected = (((x0 - ab) ** 2).mean((1, 2, 3)) * snr.clamp(max=5.0)).mean()
    assert torch.allclose(loss, expected, rtol=1e-4)
