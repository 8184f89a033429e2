"""The adversarial families: conditional patch discriminator, checkpoints with D, divergence."""
import dataclasses
import json

import conftest
import pytest
import torch

import main
from registry import REGISTRY
from trainers import checkpoint as ckpt_io
from trainers.gan import GANTrainer

TINY = [*conftest.TINY, "--num_images", "2", "--unet_channels", "8", "--unet_depth", "2", "--d_channels", "8"]


def test_gan_families_share_one_trainer_and_differ_in_the_generator():
    assert REGISTRY["gan"].trainer is REGISTRY["unetgan"].trainer is GANTrainer
    _, args, _ = main.parse_args(["--model", "gan", *TINY])
    g_plain = REGISTRY["gan"].network.build(args)
    g_unet = REGISTRY["unetgan"].network.build(args)
    assert not g_plain.skips and g_unet.skips


def test_discriminator_is_conditional_and_patchwise():
    _, args, _ = main.parse_args(["--model", "unetgan", *TINY, "--image_size", "32"])
    trainer = REGISTRY["unetgan"].make(args, "cpu")
    first = trainer.disc.net[0]
    assert first.in_channels == 3  # L and ab
    L, ab = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 2, 32, 32) - 0.5
    trainer.disc.eval()
    out = trainer.disc(L, ab)
    assert out.shape[0] == 2 and out.shape[1] == 1 and out.shape[2] > 1 and out.shape[3] > 1  # a grid
    assert not torch.allclose(out, trainer.disc(-L, ab))  # the grey input matters to D


@pytest.mark.parametrize("loss", ["bce", "lsgan", "hinge"])
def test_train_step_logs_g_and_d_separately(loss):
    _, args, _ = main.parse_args(["--model", "gan", *TINY, "--gan_loss", loss])
    trainer = REGISTRY["gan"].make(args, "cpu")
    trainer.setup_training(steps_per_epoch=2)
    d_before = [p.clone() for p in trainer.disc.parameters()]
    batch = trainer.prepare((torch.rand(4, 3, 16, 16) * 255).to(torch.uint8))
    out = trainer.train_step(batch)
    assert {"g_loss", "g_adv", "g_l1", "d_loss", "d_acc_real", "d_acc_fake"} <= set(out)
    assert "loss" not in out
    assert any(not torch.equal(a, b) for a, b in zip(d_before, trainer.disc.parameters()))
    trainer.cfg = dataclasses.replace(trainer.cfg, pretrain_epochs=1)  # warm-up: L1 only, D untouched
    d_before = [p.clone() for p in trainer.disc.parameters()]
    out = trainer.train_step(batch)
    assert "d_loss" not in out and all(torch.equal(a, b) for a, b in zip(d_before, trainer.disc.parameters()))


def test_checkpoint_holds_discriminator_and_both_optimizers_and_resumes(tiny_data, tmp_path):
    flags = TINY + ["--data", str(tiny_data), "--results", str(tmp_path), "--spectral_norm"]
    assert main.main(["--model", "unetgan", "--epochs", "1", *flags]) == 0
    ckpt = ckpt_io.load(tmp_path / "unetgan" / "last.pt", family="unetgan")
    assert set(ckpt["optimizers"]) == {"generator", "discriminator"}
    assert ckpt["optimizers"]["discriminator"]["state"]  # D really stepped
    assert any("weight_orig" in k for k in ckpt["extra"]["discriminator"])  # spectral norm kept
    assert main.main(["--model", "unetgan", "--epochs", "2", "--resume", *flags]) == 0
    resumed = ckpt_io.load(tmp_path / "unetgan" / "last.pt")
    assert resumed["epoch"] == 2 and resumed["step"] == 4
    d0, d1 = ckpt["extra"]["discriminator"], resumed["extra"]["discriminator"]
    assert any(not torch.equal(d0[k], d1[k]) for k in d0)
    history = [json.loads(x) for x in (tmp_path / "unetgan" / "history.jsonl").read_text().splitlines()]
    train_rows = [h for h in history if "train/g_loss" in h]
    assert len(train_rows) == 2 and all("train/d_loss" in h and "train/loss" not in h for h in train_rows)


def test_planted_nan_stops_the_run_cleanly(tiny_data, tmp_path, monkeypatch, capsys):
    flags = TINY + ["--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main(["--model", "gan", "--epochs", "1", *flags]) == 0
    good = (tmp_path / "gan" / "last.pt").read_bytes()
    real_step = GANTrainer.train_step

    def poisoned(self, batch):
        out = real_step(self, batch)
        if self.step >= 3:  # the second step of epoch 2
            out["g_loss"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(GANTrainer, "train_step", poisoned)
    assert main.main(["--model", "gan", "--epochs", "3", "--resume", *flags]) == 2
    assert "non-finite g_loss at step 4" in capsys.readouterr().err
    assert (tmp_path / "gan" / "last.pt").read_bytes() == good  # the last good checkpoint is intact


def test_warm_up_epochs_never_become_best_pt_of_an_adversarial_run(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_io, "selection_score", lambda trainer, val: float(trainer.epoch))  # always worse
    flags = TINY + ["--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main(["--model", "unetgan", "--epochs", "3", "--pretrain_epochs", "1", *flags]) == 0
    assert ckpt_io.load(tmp_path / "unetgan" / "best.pt")["epoch"] == 2  # the first adversarial epoch


def test_test_mode_builds_no_discriminator_and_takes_another_image_size(tiny_data, tmp_path):
    """D's depth follows the training image size; testing at another size must not load it."""
    flags = TINY + ["--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main(["--model", "unetgan", "--epochs", "1", *flags]) == 0  # 16 px: D of 1 layer
    assert main.main(["--model", "unetgan", "--mode", "test", *flags, "--image_size", "32"]) == 0  # D of 2
    m = json.loads((tmp_path / "unetgan" / "metrics.json").read_text())
    assert m["image_size"] == 32 and m["n_images"] == 4
    _, args, _ = main.parse_args(["--model", "unetgan", *TINY])
    assert REGISTRY["unetgan"].make(args, "cpu", training=False).disc is None
