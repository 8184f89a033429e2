"""Every registered family trains two steps and tests on tiny data, through main.py in-process."""
import json

import conftest
import pytest
import torch

import main
from registry import REGISTRY
from trainers import checkpoint as ckpt_io
from util import files

TINY = [*conftest.TINY, "--num_images", "2", "--lpips", "auto"]


def run(*argv):
    return main.main([str(a) for a in argv])


def family_flags(name):
    """TINY and the family's own tiny sizes, which it declares (models/*.py SMOKE, Trainer.smoke)."""
    return TINY + REGISTRY[name].smoke_flags()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_family_trains_two_steps_and_tests(name, tiny_data, tmp_path):
    res = tmp_path / "Results"
    inputs = tmp_path / "in"
    inputs.mkdir()
    (tiny_data / "test" / "img_000.png").rename(inputs / "photo.png")
    flags = family_flags(name) + ["--data", tiny_data, "--results", res, "--input", inputs]
    assert run("--model", name, "--mode", "train", "--epochs", "1", *flags) == 0
    run_dir = res / name
    ckpt = ckpt_io.load(run_dir / "last.pt", family=name)
    if REGISTRY[name].trainer.needs_training:
        # 9 training images, batch 4 (last partial batch dropped): two steps
        assert ckpt["step"] == 2 and ckpt["epoch"] == 1
    assert (run_dir / "best.pt").exists() and (run_dir / "split.json").exists()
    assert list((run_dir / "samples").glob("*.png"))
    assert run("--model", name, "--mode", "test", *flags) == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    for key in ("model", "weights", "n_images", "delta_e", "ssim", "psnr", "lpips", "colorfulness", "colorfulness_gt"):
        assert key in m
    assert m["model"] == name and m["n_images"] == 3
    # the figure is the mean over the run's own test images, as listed image by image
    import csv

    with open(run_dir / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == json.loads((run_dir / "split.json").read_text())["test"]
    assert m["delta_e"] == pytest.approx(sum(float(r["delta_e"]) for r in rows) / len(rows), abs=1e-4)
    assert (run_dir / "test_grid.png").exists()
    from PIL import Image

    assert Image.open(run_dir / "colorized" / "photo.png").size == (48, 40)  # its own resolution


def test_checkpoint_round_trip_resume_and_weights(tiny_data, tmp_path, capsys):
    res = tmp_path / "R"
    flags = family_flags("unet") + ["--data", tiny_data, "--results", res, "--save_every", "1", "--fid", "off"]
    assert run("--model", "unet", "--epochs", "1", *flags) == 0
    first = ckpt_io.load(res / "unet" / "last.pt")
    assert first["format_version"] == ckpt_io.FORMAT_VERSION and first["args"]["unet_channels"] == 8
    assert set(first["optimizers"]) == {"model"} and set(first["schedulers"]) == {"model"}
    # a second run over it is refused, --resume continues it
    with pytest.raises(SystemExit, match="--resume"):
        run("--model", "unet", "--epochs", "2", *flags)
    assert run("--model", "unet", "--epochs", "3", "--resume", *flags) == 0
    assert "resuming" in capsys.readouterr().out
    last = ckpt_io.load(res / "unet" / "last.pt")
    assert last["epoch"] == 3 and last["step"] == 6
    assert any(not torch.equal(first["model"][k], last["model"][k]) for k in first["model"])
    history = [json.loads(x) for x in (res / "unet" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history if "epoch" in h] == [1, 2, 3]
    # test mode rebuilds the network from the saved arguments, whatever is typed now
    for weights in ("best", "last", "2", str(res / "unet" / "epoch_0001.pt")):
        assert run("--model", "unet", "--mode", "test", "--weights", weights, "--unet_channels", "16",
                   "--results", res, "--wandb", "disabled", "--fid", "off", "--lpips", "off") == 0
        assert json.loads((res / "unet" / "metrics.json").read_text())["n_images"] == 4
    capsys.readouterr()
    assert run("--model", "unet", "--mode", "test", "--weights", "9", "--results", res, "--wandb", "disabled") == 2
    assert "epoch_0001.pt" in capsys.readouterr().err  # a refusal naming the checkpoints there are


def test_resumed_guided_run_matches_uninterrupted_run(tiny_data, tmp_path):
    """With --guided the simulated hints are drawn again exactly as in the uninterrupted run (the
    unguided case of every family: test_every_family_resumes_into_the_uninterrupted_run)."""
    flags = family_flags("unet") + ["--data", tiny_data, "--lr_schedule", "constant", "--lpips", "off", "--fid", "off",
                                    "--guided"]
    assert run("--model", "unet", "--epochs", "2", "--results", tmp_path / "a", *flags) == 0
    assert run("--model", "unet", "--epochs", "1", "--results", tmp_path / "b", *flags) == 0
    assert run("--model", "unet", "--epochs", "2", "--resume", "--results", tmp_path / "b", *flags) == 0
    a = ckpt_io.load(tmp_path / "a" / "unet" / "last.pt")
    b = ckpt_io.load(tmp_path / "b" / "unet" / "last.pt")
    assert a["step"] == b["step"] == 4
    # data order and augmentation are drawn from (seed, epoch): a resumed run is the same run
    for k, v in a["model"].items():
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-5), k
    assert b["optimizers"]["model"]["state"][0]["step"] == a["optimizers"]["model"]["state"][0]["step"]


def test_bad_checkpoints_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ckpt_io.CheckpointError, match="bad.pt"):
        ckpt_io.load(bad)
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="not a checkpoint of this framework"):
        ckpt_io.load(tmp_path / "other.pt")
    torch.save({"format_version": 1, "model": {}, "args": {}, "family": "resnet"}, tmp_path / "resnet.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="family 'resnet', not 'unet'"):
        ckpt_io.load(tmp_path / "resnet.pt", family="unet")


def test_atomic_save_leaves_no_partial_file(tmp_path):
    target = tmp_path / "last.pt"
    files.save_atomic({"format_version": 1, "model": {"w": torch.ones(2)}, "args": {}}, target)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(files.WriteError, match="disk full"):  # torch's RuntimeError on a full disk: a clear error
        files.save_atomic({"format_version": 1, "model": {}, "x": Boom()}, target)
    assert torch.equal(ckpt_io.load(target)["model"]["w"], torch.ones(2))  # the old one is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("name", [n for n in REGISTRY if REGISTRY[n].trainer.needs_training])
def test_every_family_resumes_into_the_uninterrupted_run(name, tiny_data, tmp_path):
    """--resume restores networks, optimizers, schedulers, EMA, discriminator, MDN, priors and the
    random state: one epoch + one resumed epoch ends where two epochs in one go end."""
    flags = family_flags(name) + ["--data", tiny_data, "--lpips", "off", "--fid", "off", "--save_every", "0",
                                  "--lr_schedule", "constant"]
    assert run("--model", name, "--epochs", "2", "--results", tmp_path / "a", *flags) == 0
    assert run("--model", name, "--epochs", "1", "--results", tmp_path / "b", *flags) == 0
    assert run("--model", name, "--epochs", "2", "--resume", "--results", tmp_path / "b", *flags) == 0
    a = ckpt_io.load(tmp_path / "a" / name / "last.pt")
    b = ckpt_io.load(tmp_path / "b" / name / "last.pt")
    assert a["step"] == b["step"] == 4
    for part in ("model", "extra"):
        for k, v in a[part].items():
            if torch.is_tensor(v):
                assert torch.allclose(v.float(), b[part][k].float(), atol=1e-5), (part, k)
            elif isinstance(v, dict):
                for kk, vv in v.items():
                    assert torch.allclose(vv.float(), b[part][k][kk].float(), atol=1e-5), (part, k, kk)


def test_resuming_with_more_epochs_stretches_the_cosine_schedule(tiny_data, tmp_path):
    flags = family_flags("unet") + ["--data", tiny_data, "--lpips", "off", "--fid", "off", "--results", tmp_path,
                                    "--learning_rate", "0.01"]
    assert run("--model", "unet", "--epochs", "1", *flags) == 0  # 2 steps: the cosine reaches 0
    assert run("--model", "unet", "--epochs", "3", "--resume", *flags) == 0  # 4 more, on a 6-step cosine
    history = [json.loads(x) for x in (tmp_path / "unet" / "history.jsonl").read_text().splitlines()]
    lrs = [h["train/lr_model"] for h in history if "train/lr_model" in h]
    # end of epoch 1 (2-step cosine: 0), of epoch 2 (step 4 of 6: 0.01 (1 + cos(2 pi / 3)) / 2), of epoch 3
    assert lrs == pytest.approx([0.0, 0.0025, 0.0], abs=1e-7)
    assert ckpt_io.load(tmp_path / "unet" / "last.pt")["schedulers"]["model"]["T_max"] == 6


@pytest.mark.parametrize("name", [n for n in REGISTRY if REGISTRY[n].trainer.needs_training])
def test_the_colorizer_from_a_checkpoint_is_the_one_validation_uses(name, tiny_data, tmp_path):
    """Test mode builds the family's Colorizer from the checkpoint alone: one network (the EMA
    weights when the run kept an average, no second copy), no optimizer, no discriminator; it
    colorizes exactly as the trainer's own colorizer does after resuming that checkpoint."""
    from runs.settings import resolve
    from trainers.inference import Colorizer

    flags = family_flags(name) + ["--data", tiny_data, "--results", tmp_path, "--lpips", "off",
                                  "--fid", "off", "--ema_decay", "0.9"]
    assert run("--model", name, "--epochs", "1", *flags) == 0
    ckpt = ckpt_io.load(tmp_path / name / "last.pt")
    _, args, given = main.parse_args(["--model", name, *[str(f) for f in flags]])
    settings = resolve(REGISTRY[name], args, given, ckpt)
    colorizer = Colorizer.from_checkpoint(REGISTRY[name], ckpt, settings.network, settings.training, "cpu")
    modules = [v for v in vars(colorizer).values() if isinstance(v, torch.nn.Module)]
    assert "discriminator" not in str(modules).lower() and not hasattr(colorizer, "optimizers")
    assert all(torch.equal(v, ckpt["ema"][k]) for k, v in colorizer.net.state_dict().items())
    trainer = REGISTRY[name].make(settings.args, "cpu", name=name)
    trainer.load_state_dict(ckpt)
    assert type(trainer.colorizer) is type(colorizer)
    L = torch.rand(2, 1, 16, 16) * 2 - 1
    torch.manual_seed(0)
    mine = colorizer.eval().predict_ab(L)
    torch.manual_seed(0)
    theirs = trainer.colorizer.eval().predict_ab(L)
    assert torch.allclose(mine, theirs, atol=1e-6)


def test_best_and_epoch_checkpoints_are_lean_and_last_is_full(tiny_data, tmp_path):
    """last.pt keeps what --resume needs; best.pt and epoch_N.pt only what inference and
    fine-tuning need (for unet at its default widths, a third of last.pt: the weights, without
    AdamW's two moments), and they still test; --full_checkpoints keeps everything in all of them."""
    flags = ["--image_size", "16", "--batch_size", "4", "--wandb", "disabled", "--workers", "1", "--lpips", "off",
             "--fid", "off", "--data", tiny_data, "--save_every", "1", "--epochs", "1"]
    assert run("--model", "unet", "--results", tmp_path / "lean", *flags) == 0
    run_dir = tmp_path / "lean" / "unet"
    last, best = ckpt_io.load(run_dir / "last.pt"), ckpt_io.load(run_dir / "best.pt")
    assert "optimizers" in last and "rng" in last
    assert "optimizers" not in best and "rng" not in best and best["lean"]
    assert all(torch.equal(best["model"][k], v) for k, v in last["model"].items())
    # 34.6 MB of 103.7 MB: the BatchNorm buffers, which have no optimizer moments, keep it a hair above 1/3
    assert (run_dir / "best.pt").stat().st_size < 0.34 * (run_dir / "last.pt").stat().st_size
    assert "optimizers" not in ckpt_io.load(run_dir / "epoch_0001.pt")
    assert run("--model", "unet", "--mode", "test", "--results", tmp_path / "lean", *flags) == 0
    assert run("--model", "unet", "--results", tmp_path / "full", "--full_checkpoints", *flags) == 0
    assert "optimizers" in ckpt_io.load(tmp_path / "full" / "unet" / "best.pt")
    # --keep 2: only the two newest epoch checkpoints stay
    assert run("--model", "unet", "--results", tmp_path / "keep", "--keep", "2", *flags[:-1], "3") == 0
    assert sorted(p.name for p in (tmp_path / "keep" / "unet").glob("epoch_*.pt")) == ["epoch_0002.pt", "epoch_0003.pt"]


def test_fine_tuning_starts_from_another_runs_network_and_refuses_one_that_does_not_fit(tiny_data, tmp_path,
                                                                                       monkeypatch, capsys):
    """--init_from: a new run (its own data, schedule, optimizer) whose network starts as the source
    run's: the first step's loss is the source network's loss on that batch; unet to unetgan's
    generator works, a colorful network into unet is a clear error."""
    from trainers.base import Trainer

    flags = ["--image_size", "16", "--batch_size", "4", "--wandb", "disabled", "--workers", "1", "--lpips", "off",
             "--fid", "off", "--data", tiny_data, "--results", tmp_path, "--epochs", "1"]
    assert run("--model", "unet", "--unet_channels", "8", "--unet_depth", "2", *flags) == 0
    source = ckpt_io.load(tmp_path / "unet" / "best.pt")
    seen = {}
    real_fit = Trainer.fit

    def fit(self, batches, val):
        seen["start"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return real_fit(self, batches, val)

    monkeypatch.setattr(Trainer, "fit", fit)
    # the widths come from the source (--unet_channels 32 given here is noted and ignored)
    assert run("--model", "unetgan", "--init_from", "unet", "--unet_channels", "32", "--d_channels", "8",
               "--learning_rate", "1e-4", *flags) == 0
    assert all(torch.equal(seen["start"][k], v) for k, v in source["model"].items())
    tuned = ckpt_io.load(tmp_path / "unetgan" / "last.pt")
    assert tuned["network"]["unet_channels"] == 8 and tuned["step"] == 2  # a new run: its own two steps
    assert "ignored; --init_from's network was built with 8" in capsys.readouterr().out
    assert run("--model", "colorful", "--colorful_width", "8", *flags) == 0
    assert run("--model", "unet", "--run_name", "wrong", "--init_from", tmp_path / "colorful", *flags) == 2
    assert "--init_from (colorful) cannot start unet" in capsys.readouterr().err
