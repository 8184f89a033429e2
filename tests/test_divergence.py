"""Non-finite losses, weights and colorizations: --nan_policy skips and counts, stops cleanly, and
never checkpoints non-finite weights."""

import conftest
import torch

import main
from trainers import checkpoint as ckpt_io
from trainers.regression import RegressionTrainer

TINY = [*conftest.TINY, "--model", "unet", "--unet_channels", "8", "--unet_depth", "2"]


def test_nan_policy_skip_counts_and_goes_on(tiny_data, tmp_path, monkeypatch, capsys):
    real = RegressionTrainer.train_step

    def sometimes_nan(self, batch):
        if self.step == 1:  # the second step of the run
            batch = {**batch, "ab": batch["ab"] * float("nan")}
        return real(self, batch)

    monkeypatch.setattr(RegressionTrainer, "train_step", sometimes_nan)
    assert main.main([*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--epochs", "2",
                      "--nan_policy", "skip"]) == 0
    ckpt = ckpt_io.load(tmp_path / "unet" / "last.pt")
    assert ckpt["skipped_steps"] == 1 and ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert main.main([*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--epochs", "2",
                      "--run_name", "stop"]) == 2  # the default policy stops
    assert "non-finite loss at step 2" in capsys.readouterr().err


def test_non_finite_colorizations_stop_validation_and_test_cleanly(tiny_data, tmp_path, monkeypatch, capsys):
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*flags, "--epochs", "1"]) == 0
    from trainers.inference import Colorizer  # what unet colorizes with, in validation and test alike

    monkeypatch.setattr(Colorizer, "predict_ab",
                        lambda self, L, hints=None: torch.full_like(L, float("nan")).repeat(1, 2, 1, 1))
    assert main.main([*flags, "--epochs", "2", "--resume"]) == 2  # validation
    assert main.main([*flags, "--mode", "test"]) == 2
    err = capsys.readouterr().err
    assert err.count("colorizations are not finite") == 2 and "Traceback" not in err


def test_a_run_that_skips_most_steps_fails_and_never_writes_non_finite_weights(tiny_data, tmp_path, capsys):
    """--learning_rate 1e9 --loss mse --nan_policy skip: most steps are skipped; BatchNorm must
    not have absorbed those batches (it wrote inf into last.pt), and the run must not say done."""
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--epochs", "4", "--nan_policy", "skip",
             "--learning_rate", "1e9", "--loss", "mse"]
    assert main.main(flags) == 2
    out = capsys.readouterr()
    assert "done:" not in out.out  # stopped, by the skipped share or by its non-finite colorizations
    assert "steps were skipped for a non-finite loss" in out.err or "colorizations are not finite" in out.err
    for name in ("last.pt", "best.pt"):
        if (tmp_path / "unet" / name).exists():
            ckpt = ckpt_io.load(tmp_path / "unet" / name)
            assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point()), name


def test_non_finite_weights_are_never_checkpointed(tiny_data, tmp_path, monkeypatch, capsys):
    real = RegressionTrainer.train_step

    def poison(self, batch):
        out = real(self, batch)
        if self.step == 3:  # in the last step: no later loss shows it, only the weights
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("inf"))
        return out

    monkeypatch.setattr(RegressionTrainer, "train_step", poison)
    monkeypatch.setattr(RegressionTrainer, "validate", lambda self, images: {})  # (it would stop the run first)
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--epochs", "2"]
    assert main.main(flags) == 2
    assert "no checkpoint written" in capsys.readouterr().err
    ckpt = ckpt_io.load(tmp_path / "unet" / "last.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_a_skipped_step_leaves_batchnorm_statistics_alone(tiny_data, tmp_path, monkeypatch):
    real = RegressionTrainer.train_step

    def nan_input(self, batch):
        if self.step == 1:  # a batch whose grey input is broken: the forward pass updates BN with NaN
            batch = {**batch, "L": batch["L"] * float("nan")}
        return real(self, batch)

    monkeypatch.setattr(RegressionTrainer, "train_step", nan_input)
    assert main.main([*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--epochs", "2",
                      "--nan_policy", "skip"]) == 0
    ckpt = ckpt_io.load(tmp_path / "unet" / "last.pt")
    assert ckpt["skipped_steps"] == 1
    stats = {k: v for k, v in ckpt["model"].items() if "running" in k}
    assert stats and all(torch.isfinite(v).all() for v in stats.values())
