"""Variational families: conditioning, the MDN loss, stages, K different colorizations, collapse."""
import json
import math

import conftest
import pytest
import torch

import main
from models.vae import mdn_loss
from registry import REGISTRY
from trainers import checkpoint as ckpt_io

TINY = [*conftest.TINY, "--num_images", "2", "--unet_channels", "8", "--unet_depth", "2", "--latent_dim", "4"]


def build(name, *extra):
    _, args, _ = main.parse_args(["--model", name, *TINY, *extra])
    fam = REGISTRY[name]
    return fam.make(args, "cpu")


def test_mdn_loss_on_a_known_mixture():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    means = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]]])
    z = torch.tensor([[2.5, 0.5]])  # nearest: the second component, at squared distance 0.5
    assert math.isclose(mdn_loss(logits, means, z).item(), -math.log(0.25) + 0.5, rel_tol=1e-5)


def test_encoders_are_conditional_and_decoders_differ():
    L, ab = torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 2, 16, 16) - 0.5
    for name, skips, sees_L in [("basicvae", False, True), ("unetvae", True, True), ("cvae_mdn", True, False)]:
        t = build(name)
        t.model.eval()
        assert t.model.decoder.skips is skips and t.model.posterior_sees_L is sees_L
        mu, _ = t.model.posterior(L, ab)
        assert not torch.allclose(mu, t.model.posterior(L, -ab)[0])  # q(z | ab, ...) depends on ab
        z = torch.randn(2, 4)
        assert not torch.allclose(t.model.decode(L, z), t.model.decode(L, -z))  # the decoder uses z


def test_cvae_mdn_trains_both_stages_in_one_checkpoint_and_gives_k_different_colorizations(tiny_data, tmp_path):
    flags = TINY + ["--data", str(tiny_data), "--results", str(tmp_path), "--kl_anneal_epochs", "1"]
    assert main.main(["--model", "cvae_mdn", "--epochs", "4", *flags]) == 0
    ckpt = ckpt_io.load(tmp_path / "cvae_mdn" / "last.pt")
    assert ckpt["extra"]["mdn_trained"] and "mdn" in ckpt["extra"] and set(ckpt["optimizers"]) == {"model", "mdn"}
    w = ckpt["extra"]["bin_weights"]
    assert w.shape == (529,) and (w >= 0).all() and (w > 0).sum() > 5
    history = [json.loads(x) for x in (tmp_path / "cvae_mdn" / "history.jsonl").read_text().splitlines()]
    epochs = [h for h in history if "epoch" in h]
    assert all("train/hist" in h and "train/grad" in h for h in epochs[:2])
    assert all("train/mdn" in h for h in epochs[2:])
    assert main.main(["--model", "cvae_mdn", "--mode", "test", "--num_samples", "4", *flags]) == 0
    m = json.loads((tmp_path / "cvae_mdn" / "metrics.json").read_text())
    assert m["best_of_k_delta_e"] <= m["delta_e"] and "diversity_delta_e" in m
    from reporting.runs import read_samples  # the report's sheet gets samples 2 and 3 of the 4 beside the first

    shown = read_samples(tmp_path / "cvae_mdn")
    assert shown and all(len(more) == 2 and more[0].shape == first.shape for first, _, more in shown.values())


def two_colour_toy(root):
    """The same grey images, half of them coloured (a, b) = (45, 30), half (-45, -30): a toy that
    cannot be colorized without choosing, so a trained model's samples must differ."""
    import numpy as np
    from PIL import Image

    from util import colour

    for split, n in (("train", 16), ("test", 4)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
            L = 40 + 20 * torch.sin((xx + yy + i) / 3)
            sign = 1 if i % 2 else -1
            lab = torch.stack([L, torch.full_like(L, 45.0 * sign), torch.full_like(L, 30.0 * sign)])[None]
            rgb = colour.lab_to_rgb(lab)[0].permute(1, 2, 0).numpy()
            Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(root / split / f"{i:02d}.png")


def test_trained_toy_model_gives_really_different_colorizations(tmp_path):
    two_colour_toy(tmp_path / "toy")
    flags = [*TINY, "--batch_size", "8", "--data", str(tmp_path / "toy"), "--results", str(tmp_path),
             "--kl_anneal_epochs", "5", "--learning_rate", "3e-3", "--save_every", "0"]
    assert main.main(["--model", "cvae_mdn", "--epochs", "100", "--val_every", "50", *flags]) == 0
    assert main.main(["--model", "cvae_mdn", "--mode", "test", "--num_samples", "2", "--weights", "last", *flags]) == 0
    m = json.loads((tmp_path / "cvae_mdn" / "test_last" / "metrics.json").read_text())  # not best.pt's test
    assert m["diversity_delta_e"] > 5  # the two mixture means decode to two different colourings
    assert m["best_of_k_delta_e"] < 12


def test_kl_per_dimension_and_the_collapse_warning():
    t = build("unetvae")
    said = []
    t.echo = said.append
    kl, active = t.kl_terms(torch.zeros(5, 4), torch.zeros(5, 4))
    assert kl.item() == 0 and active.item() == 0
    mu = torch.zeros(5, 4)
    mu[:, 1] = 1.0  # one informative dimension: KL 0.5 nats there
    kl, active = t.kl_terms(mu, torch.zeros(5, 4))
    assert abs(kl.item() - 0.5) < 1e-6 and active.item() == 1
    t.on_epoch_end({"train/kl": 0.5, "train/kl_active_dims": 1.0})
    assert not said
    t.on_epoch_end({"train/kl": 0.0, "train/kl_active_dims": 0.0})
    assert said and "posterior collapse" in said[0]


def test_first_sample_is_the_prior_mode():
    c = build("basicvae").colorizer.eval()
    L = torch.rand(2, 1, 16, 16)
    samples = c.sample_ab(L, 3)
    assert samples.shape == (3, 2, 2, 16, 16) and torch.allclose(samples[0], c.predict_ab(L))
    assert not torch.allclose(samples[1], samples[2])


def test_mdn_stage_resumes_a_vae_stage_checkpoint(tiny_data, tmp_path):
    flags = TINY + ["--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main(["--model", "cvae_mdn", "--epochs", "1", "--stage", "vae", *flags]) == 0
    vae = ckpt_io.load(tmp_path / "cvae_mdn" / "last.pt")
    assert not vae["extra"]["mdn_trained"]
    assert main.main(["--model", "cvae_mdn", "--epochs", "2", "--stage", "mdn", "--resume", *flags]) == 0
    both = ckpt_io.load(tmp_path / "cvae_mdn" / "last.pt")
    assert both["extra"]["mdn_trained"] and both["args"]["stage"] == "mdn"
    for k, v in vae["model"].items():  # the CVAE was frozen during the MDN stage
        if v.is_floating_point() and "running" not in k:
            assert torch.equal(v, both["model"][k]), k


def test_mdn_on_the_trunk_of_a_trained_colorful_model(tiny_data, tmp_path):
    flags = TINY + ["--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main(["--model", "colorful", "--epochs", "1", "--colorful_width", "8", *flags]) == 0
    weights = tmp_path / "colorful" / "last.pt"
    assert main.main(["--model", "cvae_mdn", "--epochs", "2", "--mdn_features", "colorful",
                      "--colorful_weights", str(weights), *flags]) == 0
    ckpt = ckpt_io.load(tmp_path / "cvae_mdn" / "last.pt")
    assert ckpt["extra"]["mdn_trained"] and "feature_net" in ckpt["extra"]
    assert ckpt["args"]["mdn_colorful_width"] == 8 and ckpt["args"]["mdn_colorful_gamut"] == "corners"
    weights.unlink()  # the cvae_mdn checkpoint carries the trunk: test mode needs no colorful file
    assert main.main(["--model", "cvae_mdn", "--mode", "test", "--num_samples", "2", *flags]) == 0
    # the trunk of a guided colorful model takes hint channels too: refused, saying so
    assert main.main(["--model", "colorful", "--epochs", "1", "--colorful_width", "8", "--guided",
                      "--run_name", "guided", *flags]) == 0
    with pytest.raises(SystemExit, match="trained with colour hints"):
        main.main(["--model", "cvae_mdn", "--epochs", "2", "--mdn_features", "colorful", "--run_name", "on_guided",
                   "--colorful_weights", str(tmp_path / "guided" / "last.pt"), *flags])


def test_best_pt_of_a_two_stage_run_is_a_second_stage_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    """Validation scores that only get worse (as z = 0 often scores slightly better than the
    mixture's top mean): best.pt must still be the first MDN-stage epoch, never a plain CVAE."""

    monkeypatch.setattr(ckpt_io, "selection_score", lambda trainer, val: float(trainer.epoch))
    flags = TINY + ["--data", str(tiny_data), "--results", str(tmp_path), "--save_every", "1"]
    assert main.main(["--model", "cvae_mdn", "--epochs", "4", *flags]) == 0  # epochs 1-2 CVAE, 3-4 MDN
    run = tmp_path / "cvae_mdn"
    best = ckpt_io.load(run / "best.pt")
    assert best["epoch"] == 3 and best["extra"]["mdn_trained"] and best["best_phase"] == "mdn"
    assert not ckpt_io.load(run / "epoch_0002.pt")["extra"]["mdn_trained"]
    # the same across two runs: --stage vae, then --stage mdn resumed from it
    assert main.main(["--model", "cvae_mdn", "--epochs", "2", "--stage", "vae", *flags, "--run_name", "split"]) == 0
    assert ckpt_io.load(tmp_path / "split" / "best.pt")["epoch"] == 1  # a CVAE run: its best CVAE
    assert main.main(["--model", "cvae_mdn", "--epochs", "4", "--stage", "mdn", "--resume", *flags,
                      "--run_name", "split"]) == 0
    best = ckpt_io.load(tmp_path / "split" / "best.pt")
    assert best["epoch"] == 3 and best["extra"]["mdn_trained"]
    # testing a checkpoint whose MDN was never trained says so
    capsys.readouterr()
    assert main.main(["--model", "cvae_mdn", "--mode", "test", "--weights", str(run / "epoch_0002.pt"), *flags]) == 0
    assert "never trained" in capsys.readouterr().out
