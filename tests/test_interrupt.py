"""Runs that survive: SIGTERM writes a checkpoint and exits; SIGKILL at any moment leaves a
complete checkpoint; --resume then finishes the very run an uninterrupted process would have."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT

import main
from trainers import checkpoint as ckpt_io

FLAGS = ["--model", "unet", "--image_size", "16", "--batch_size", "1", "--unet_channels", "8", "--unet_depth", "2",
         "--norm", "group", "--lpips", "off", "--fid", "off", "--wandb", "disabled", "--workers", "1",
         "--device", "cpu", "--save_every", "0"]


def start(args, cwd):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def weights(path):
    return ckpt_io.load(path)["model"]


def assert_same_weights(a, b):
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_finishes_the_same_run(tiny_data, tmp_path):
    flags = FLAGS + ["--data", tiny_data, "--epochs", "6"]
    assert main.main([*map(str, flags), "--results", str(tmp_path / "straight")]) == 0
    proc = start(flags + ["--results", tmp_path / "cut"], tmp_path)
    for line in proc.stdout:  # wait until training is under way
        if line.startswith("epoch 1/6"):
            break
    proc.send_signal(signal.SIGTERM)
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, out
    assert "Resume with: python main.py --model unet --mode train --resume" in out
    cut = ckpt_io.load(tmp_path / "cut" / "unet" / "last.pt")
    assert cut["epoch"] < 6
    assert main.main([*map(str, flags), "--results", str(tmp_path / "cut"), "--resume"]) == 0
    done = ckpt_io.load(tmp_path / "cut" / "unet" / "last.pt")
    assert done["epoch"] == 6 and done["step"] == 6 * 9
    assert_same_weights(weights(tmp_path / "straight" / "unet" / "last.pt"), done["model"])


def wait_for_new_checkpoint(path, since: float, proc, timeout: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if path.exists() and path.stat().st_mtime > since:
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_run(tiny_data, tmp_path):
    epochs = 30
    flags = FLAGS + ["--data", tiny_data, "--epochs", epochs, "--results", tmp_path]
    rng = random.Random(7)
    last = tmp_path / "unet" / "last.pt"
    cut_short = 0
    for attempt in range(3):
        proc = start(flags + (["--resume"] if last.exists() else ["--overwrite"]), tmp_path)
        if attempt == 0:
            time.sleep(rng.uniform(0.5, 2.5))  # most likely while starting up
        else:  # once a fresh checkpoint shows training under way, at a random moment after it
            wait_for_new_checkpoint(last, time.time(), proc)
            time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        if last.exists():
            cut_short += ckpt_io.load(last)["epoch"] < epochs  # always complete and loadable
    assert cut_short >= 2, "the kills did not land during training: the test did not test anything"
    proc = start(flags + (["--resume"] if last.exists() else ["--overwrite"]), tmp_path)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out
    final = ckpt_io.load(last)
    assert final["epoch"] == epochs and final["step"] == epochs * 9
    assert not list((tmp_path / "unet").glob(".*.tmp"))  # leftovers of killed writes are cleared


@pytest.mark.parametrize("batch, resume_batch", [("16", "16"), ("4", "16")])
def test_a_stop_in_the_last_batch_of_an_epoch_resumes(tmp_path, monkeypatch, batch, resume_batch):
    """A stop during an epoch's last batch leaves batch_in_epoch == len(batches): the resumed epoch
    has no batch left (nor has one resumed with a larger --batch_size). It must finish the run."""
    from conftest import colour_crops, write_images

    from trainers.regression import RegressionTrainer

    root = tmp_path / "data"
    write_images(root / "train", colour_crops(17, seed=1))  # 16 after validation: one batch of 16
    write_images(root / "test", colour_crops(2, seed=2))
    flags = [str(a) for a in FLAGS] + ["--data", str(root), "--results", str(tmp_path / "R"), "--epochs", "2"]
    flags[flags.index("--batch_size") + 1] = batch
    step = RegressionTrainer.train_step

    def stop_during_the_step(self, batch):
        self.clock.stop_requested = True  # as SIGTERM's handler does
        return step(self, batch)

    monkeypatch.setattr(RegressionTrainer, "train_step", stop_during_the_step)
    assert main.main(flags) == 130
    cut = ckpt_io.load(tmp_path / "R" / "unet" / "last.pt")
    assert cut["epoch"] == 0 and cut["batch_in_epoch"] == 1 and cut["step"] == 1
    monkeypatch.setattr(RegressionTrainer, "train_step", step)
    flags[flags.index("--batch_size") + 1] = resume_batch  # 1 batch an epoch: the first is already done
    assert main.main(flags + ["--resume"]) == 0
    done = ckpt_io.load(tmp_path / "R" / "unet" / "last.pt")
    assert done["epoch"] == 2 and done["batch_in_epoch"] == 0
    # the epoch it stopped in is finished with the batches it began with (4 of 4 images: 3 more steps),
    # then the new size applies (one step of 16): none of the stopped epoch's images is skipped
    assert done["step"] == (1 + 3 + 1 if batch == "4" else 2)


def test_time_based_checkpoints_mid_epoch_and_a_kill_then_resume_is_exact(tiny_data, tmp_path, monkeypatch):
    """--checkpoint_minutes: last.pt is also written mid-epoch once that long has passed (here:
    at every step); a run killed without any warning (no signal handler runs) resumes from the
    latest of them to the uninterrupted run's weights."""
    from trainers.regression import RegressionTrainer

    flags = [str(a) for a in FLAGS] + ["--data", str(tiny_data), "--epochs", "2"]
    assert main.main(flags + ["--results", str(tmp_path / "straight")]) == 0
    step = RegressionTrainer.train_step

    def killed_at_step_5(self, batch):
        if self.step == 5:  # 9 steps an epoch: in the middle of the first
            raise SystemExit("killed")  # nothing after this point runs: no checkpoint, no handler
        return step(self, batch)

    monkeypatch.setattr(RegressionTrainer, "train_step", killed_at_step_5)
    cut = flags + ["--results", str(tmp_path / "cut"), "--checkpoint_minutes", "1e-9"]
    with pytest.raises(SystemExit, match="killed"):
        main.main(cut)
    mid = ckpt_io.load(tmp_path / "cut" / "unet" / "last.pt")
    assert mid["epoch"] == 0 and mid["step"] == 5 and mid["batch_in_epoch"] == 5
    monkeypatch.setattr(RegressionTrainer, "train_step", step)
    assert main.main(cut + ["--resume"]) == 0
    done = ckpt_io.load(tmp_path / "cut" / "unet" / "last.pt")
    assert done["epoch"] == 2 and done["step"] == 18
    assert_same_weights(weights(tmp_path / "straight" / "unet" / "last.pt"), done["model"])
