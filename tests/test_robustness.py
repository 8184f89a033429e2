"""Untrusted checkpoints, divergence policies, unwritable results, disk full, files corrupted mid-run."""
import errno
import os

import conftest
import pytest
import torch

import main
from trainers import checkpoint as ckpt_io
from trainers.regression import RegressionTrainer

TINY = [*conftest.TINY, "--model", "unet", "--unet_channels", "8", "--unet_depth", "2"]


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "family": "unet", "model": {}, "args": {}, "x": Payload(marker)}, evil)
    with pytest.raises(ckpt_io.CheckpointError, match="refusing to load .*evil.pt"):
        ckpt_io.load(evil)
    assert main.main(["--model", "unet", "--mode", "test", "--weights", str(evil), "--results", str(tmp_path),
                      "--wandb", "disabled"]) == 2
    assert "refusing to load" in capsys.readouterr().err
    assert not marker.exists()


def test_truncated_checkpoint_is_a_clear_error(tiny_data, tmp_path):
    assert main.main([*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--epochs", "1"]) == 0
    good = (tmp_path / "unet" / "last.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ckpt_io.CheckpointError, match="cut.pt is not a readable checkpoint"):
        ckpt_io.load(cut)


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


def test_results_that_cannot_be_written_are_refused_at_start(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit):
        main.parse_args([*TINY, "--results", str(blocker / "Results")])
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main.parse_args([*TINY, "--resume", "--results", str(tmp_path)])
    assert "last.pt to resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main.parse_args([*TINY, "--mode", "test", "--weights", str(tmp_path / "missing.pt")])


def test_disk_full_while_checkpointing_keeps_the_last_good_one(tiny_data, tmp_path, monkeypatch, capsys):
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*flags, "--epochs", "1"]) == 0
    good = (tmp_path / "unet" / "last.pt").read_bytes()

    replace = os.replace

    def full_for(suffix):
        def fake(src, dst):
            if str(dst).endswith(suffix):
                raise OSError(errno.ENOSPC, "No space left on device")
            replace(src, dst)
        return fake

    monkeypatch.setattr(ckpt_io.os, "replace", full_for(".pt"))
    assert main.main([*flags, "--epochs", "2", "--resume"]) == 2
    assert "could not write checkpoint" in capsys.readouterr().err
    assert (tmp_path / "unet" / "last.pt").read_bytes() == good
    assert not list((tmp_path / "unet").glob(".*.tmp"))
    monkeypatch.setattr(ckpt_io.os, "replace", full_for("split.json"))  # any file of a run: a clear error
    assert main.main([*flags, "--epochs", "1", "--run_name", "fresh"]) == 2
    err = capsys.readouterr().err
    assert "could not write file" in err and "split.json" in err


def test_file_corrupted_between_epochs_is_skipped_when_streaming(tiny_data, tmp_path, capsys):
    import colorize_data as cd

    split = cd.make_split(tiny_data, seed=0)
    stream = cd.StreamingTrainBatches(tiny_data, split["train"], 4, 16, None, "random", 0, "cpu", workers=0)
    assert sum(len(b) for _, b in stream.epoch(1)) == 8
    (tiny_data / split["train"][0]).write_bytes(b"\x89PNG broken")
    (tiny_data / split["train"][1]).unlink()
    assert sum(len(b) for _, b in stream.epoch(2)) < 8 and stream.skipped[1] >= 1


def test_weights_that_do_not_fit_the_network_are_a_clear_error(tiny_data, tmp_path, capsys):
    """A checkpoint whose saved arguments build another network (here: its gamut flag lost, as in
    a checkpoint written before --gamut existed) stops with a message, not a torch trace."""
    import main
    from trainers import checkpoint as ckpt_io

    flags = ["--model", "colorful", "--data", str(tiny_data), "--results", str(tmp_path), "--image_size", "16",
             "--batch_size", "4", "--wandb", "disabled", "--workers", "1", "--colorful_width", "8", "--lpips", "off",
             "--fid", "off"]
    assert main.main([*flags, "--epochs", "1", "--gamut", "inside"]) == 0
    path = tmp_path / "colorful" / "last.pt"
    ckpt = ckpt_io.load(path)
    del ckpt["args"]["gamut"]
    del ckpt["network"]  # as written before checkpoints saved the network's config on its own
    ckpt_io.save_atomic(ckpt, path)
    assert main.main([*flags, "--mode", "test", "--weights", "last"]) != 0
    assert "do not fit the network" in capsys.readouterr().err


def test_a_write_cut_short_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "split.json"
    path.write_text('{"train": []}')

    def killed_half_way(f):
        f.write(b'{"train": ["a.png", ')
        raise KeyboardInterrupt  # as a kill in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        ckpt_io.write_atomic(path, killed_half_way)
    assert path.read_text() == '{"train": []}' and [p.name for p in tmp_path.iterdir()] == ["split.json"]


def test_run_folder_files_are_written_atomically_and_the_split_is_not_rewritten(tiny_data, tmp_path, monkeypatch):
    """split.json, args.json, metrics.json, per_image.csv, grids and colorized images all go
    through write_atomic (a plain write killed half way left a truncated split.json that broke
    --resume, test and even --overwrite); a resume leaves split.json untouched."""
    written = []
    real = ckpt_io.write_atomic
    monkeypatch.setattr(ckpt_io, "write_atomic", lambda path, *a: (written.append(path.name), real(path, *a)))
    inputs = tmp_path / "in"
    inputs.mkdir()
    (tiny_data / "test" / "img_000.png").rename(inputs / "photo.png")
    flags = TINY + ["--data", str(tiny_data), "--results", str(tmp_path), "--input", str(inputs)]
    assert main.main(flags + ["--epochs", "1"]) == 0
    split = tmp_path / "unet" / "split.json"
    before = split.stat().st_mtime_ns
    assert main.main(flags + ["--epochs", "2", "--resume"]) == 0
    assert split.stat().st_mtime_ns == before
    assert main.main(flags + ["--mode", "test"]) == 0
    for name in ("split.json", "args.json", "val_metrics.json", "last.pt", "best.pt", "epoch_0001.png",
                 "metrics.json", "per_image.csv", "test_grid.png", "photo.png"):
        assert name in written, name
    assert written.count("split.json") == 1
    on_disk = {p.name for p in (tmp_path / "unet").rglob("*") if p.is_file()} - {"history.jsonl"}  # appended
    assert on_disk <= set(written), on_disk - set(written)


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 1 MiB tmpfs, where this machine lets the tests mount one (root, as in CI)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_really_full_disk_is_a_clear_error_and_keeps_the_last_checkpoint(tiny_data, small_filesystem, capsys):
    """torch.save on a full filesystem raises RuntimeError, not OSError: it must still be the
    clear 'could not write checkpoint' error (exit 2), not a traceback, with last.pt intact."""
    import shutil

    flags = [*TINY, "--data", str(tiny_data), "--save_every", "0"]
    assert main.main([*flags, "--epochs", "1", "--results", str(small_filesystem.parent)]) == 0
    shutil.copytree(small_filesystem.parent / "unet", small_filesystem / "unet")
    good = (small_filesystem / "unet" / "last.pt").read_bytes()
    filler = small_filesystem / "filler"
    free = shutil.disk_usage(small_filesystem).free
    filler.write_bytes(b"\0" * max(0, free - len(good) // 2))  # room for half a checkpoint more
    capsys.readouterr()
    assert main.main([*flags, "--epochs", "2", "--resume", "--results", str(small_filesystem)]) == 2
    err = capsys.readouterr().err
    assert "could not write checkpoint" in err and "Traceback" not in err
    assert (small_filesystem / "unet" / "last.pt").read_bytes() == good
    assert not list((small_filesystem / "unet").glob(".*.tmp"))


def test_non_finite_colorizations_stop_validation_and_test_cleanly(tiny_data, tmp_path, monkeypatch, capsys):
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*flags, "--epochs", "1"]) == 0
    from trainers.inference import Colorizer  # what unet colorizes with, in validation and test alike

    monkeypatch.setattr(Colorizer, "predict_ab", lambda self, L: torch.full_like(L, float("nan")).repeat(1, 2, 1, 1))
    assert main.main([*flags, "--epochs", "2", "--resume"]) == 2  # validation
    assert main.main([*flags, "--mode", "test"]) == 2
    err = capsys.readouterr().err
    assert err.count("colorizations are not finite") == 2 and "Traceback" not in err


def test_resume_after_a_kill_between_log_and_checkpoint_logs_each_epoch_once(tiny_data, tmp_path):
    import json
    import shutil

    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--save_every", "1", "--full_checkpoints"]
    assert main.main([*flags, "--epochs", "2"]) == 0
    run = tmp_path / "unet"
    shutil.copy(run / "epoch_0001.pt", run / "last.pt")  # killed after epoch 2 was logged, before its checkpoint
    with open(run / "history.jsonl", "a") as f:
        f.write('{"step": 5, "train/lo')  # and in the middle of a line
    assert main.main([*flags, "--epochs", "2", "--resume"]) == 0
    rows = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "epoch" in r] == [1, 2]
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)


def test_colorized_images_of_the_same_name_do_not_overwrite_each_other(tiny_data, tmp_path):
    from PIL import Image

    inputs = tmp_path / "in"
    inputs.mkdir()
    photo = Image.open(tiny_data / "test" / "img_000.png")
    for ext in ("bmp", "tiff", "webp"):
        photo.save(inputs / f"a.{ext}")
    photo.save(inputs / "b.jpg")
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--input", str(inputs)]
    assert main.main([*flags, "--epochs", "1"]) == 0
    assert main.main([*flags, "--mode", "test"]) == 0
    assert sorted(p.name for p in (tmp_path / "unet" / "colorized").iterdir() if p.name[0] != ".") == [
        "a.bmp.png", "a.tiff.png", "a.webp.png", "b.png"]  # (and .colorize.json, its manifest)


def test_overwrite_starts_afresh_and_no_validation_means_best_is_last(tiny_data, tmp_path, capsys):
    import json

    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*flags, "--epochs", "2", "--save_every", "1"]) == 0
    assert main.main([*flags, "--mode", "test"]) == 0
    run = tmp_path / "unet"
    (run / "notes.txt").write_text("mine")
    (tiny_data / "val").mkdir()
    (tiny_data / "val" / "broken.png").write_bytes(b"not a png")  # the only validation image: unreadable
    capsys.readouterr()
    assert main.main([*flags, "--epochs", "3", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "--overwrite: removed the previous run's" in out and "best.pt is the last epoch's checkpoint" in out
    assert not (run / "metrics.json").exists() and not (run / "epoch_0001.pt").exists()
    assert (run / "notes.txt").read_text() == "mine"
    rows = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "epoch" in r] == [1, 2, 3]  # the old run's lines are gone
    assert ckpt_io.load(run / "best.pt")["epoch"] == 3  # without validation: the last epoch


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


def test_one_writer_per_run_folder(tiny_data, tmp_path, capsys):
    import subprocess
    import sys

    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--epochs", "1"]
    run = tmp_path / "unet"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (run / ".train.lock").write_text(f"pid={sleeper.pid}\nhost={socket.gethostname()}\nmode=train\n")
        assert main.main(flags) == 2  # a live writer: refused, its files untouched
        assert f"in use by process {sleeper.pid} (train)" in capsys.readouterr().err
        assert not (run / "last.pt").exists()
        assert main.main(flags + ["--overwrite"]) == 2
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main.main(flags) == 0  # the same lock, its process gone: stale, taken over
    assert "removed a stale lock" in capsys.readouterr().out
    assert not (run / ".train.lock").exists()  # released at the end
    (run / ".train.lock").write_text(f"pid={os.getpid()}\nhost={socket.gethostname()}\nmode=train\n")
    # test while training
    assert main.main([*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--mode", "test"]) == 0
    capsys.readouterr()
    assert main.main([*TINY, "--results", str(tmp_path / "new"), "--mode", "test"]) == 2  # no checkpoint: a refusal
    assert "Train first" in capsys.readouterr().err
    assert not (tmp_path / "new" / "unet").exists()  # ...and no empty folder left behind by the lock


def test_two_concurrent_runs_the_second_is_refused(tiny_data, tmp_path, capsys):
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--batch_size", "1"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *flags, "--epochs", "200"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lock = tmp_path / "unet" / ".train.lock"
        t0 = time.time()
        while not (lock.exists() and (tmp_path / "unet" / "last.pt").exists()) and time.time() - t0 < 60:
            time.sleep(0.05)
        assert main.main(flags + ["--epochs", "1", "--overwrite"]) == 2
        assert f"in use by process {first.pid}" in capsys.readouterr().err
    finally:
        first.send_signal(signal.SIGTERM)
        out = first.communicate(timeout=60)[0]
    assert first.returncode == 130, out  # the first run was not disturbed: it stopped cleanly when asked
    assert ckpt_io.load(tmp_path / "unet" / "last.pt")["epoch"] >= 1 and not lock.exists()


def test_resume_refuses_flags_that_would_make_it_another_run(tiny_data, tmp_path, capsys):
    import json

    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*flags, "--epochs", "1"]) == 0
    for change in (["--learning_rate", "0.01"], ["--seed", "5"], ["--loss", "mse"]):
        with pytest.raises(SystemExit) as e:
            main.main([*flags, "--epochs", "2", "--resume", *change])
        assert e.value.code == 2 and f"{change[0]} (run:" in capsys.readouterr().err
    assert main.main([*flags, "--epochs", "2", "--resume", "--val_every", "2", "--learning_rate", "0.001"]) == 0
    assert json.loads((tmp_path / "unet" / "args.json").read_text())["learning_rate"] == 0.001


def test_a_test_killed_while_colorizing_leaves_no_metrics_json(tiny_data, tmp_path, monkeypatch):
    """script.sh skips a family whose metrics.json exists: it must mean the whole test finished."""
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*flags, "--epochs", "1"]) == 0

    def killed(*a, **k):
        raise KeyboardInterrupt

    from trainers import lifecycle

    monkeypatch.setattr(lifecycle, "colorize_folder", killed)
    with pytest.raises(KeyboardInterrupt):
        main.main([*flags, "--mode", "test"])
    assert not (tmp_path / "unet" / "metrics.json").exists()


@pytest.mark.parametrize("change, message", [
    ({"format_version": "1"}, "format_version is str"),
    ({"args": None}, "args"),
    ({"model": [1, 2]}, "model is list"),
    ({"model": {"w": "not a tensor"}}, "named tensors"),
])
def test_crafted_checkpoints_are_clear_errors(tiny_data, tmp_path, capsys, change, message):
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*flags, "--epochs", "1"]) == 0
    ckpt = ckpt_io.load(tmp_path / "unet" / "last.pt")
    crafted = tmp_path / "crafted.pt"
    torch.save({**ckpt, **change}, crafted)
    capsys.readouterr()
    assert main.main([*flags, "--mode", "test", "--weights", str(crafted)]) == 2
    err = capsys.readouterr().err
    assert "not a valid checkpoint" in err and message in err


def test_huge_saved_widths_are_refused_before_anything_is_built(tiny_data, tmp_path, capsys, monkeypatch):
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*flags, "--epochs", "1"]) == 0
    ckpt = ckpt_io.load(tmp_path / "unet" / "last.pt")
    crafted = tmp_path / "wide.pt"
    torch.save({**ckpt, "args": {**ckpt["args"], "unet_channels": 4096},  # would be gigabytes
                "network": {**ckpt["network"], "unet_channels": 4096}}, crafted)
    import models.unet

    built = []
    real = models.unet.build
    monkeypatch.setattr(models.unet, "build", lambda args: built.append(torch.empty(0).device.type) or real(args))
    capsys.readouterr()
    assert main.main([*flags, "--mode", "test", "--weights", str(crafted)]) == 2
    assert "do not fit the network" in capsys.readouterr().err
    assert built == ["meta"]  # only the shape check ran, on the meta device


def test_random_bytes_are_not_called_a_pickle_with_objects(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes(range(7, 256)) * 8)
    with pytest.raises(ckpt_io.CheckpointError, match="not a readable checkpoint"):
        ckpt_io.load(path)


def test_out_of_memory_is_a_clear_error(tiny_data, tmp_path, monkeypatch, capsys):
    def too_big(self, batch):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 9663676416 bytes")

    monkeypatch.setattr(RegressionTrainer, "train_step", too_big)
    assert main.main([*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--epochs", "1"]) == 2
    assert "out of memory at --image_size 16 with --batch_size 4" in capsys.readouterr().err


def test_an_image_size_that_cannot_fit_is_refused_before_any_data_is_loaded(tiny_data, tmp_path, monkeypatch,
                                                                              capsys):
    from trainers import memory
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2 * 2**30)  # a 2 GiB machine
    from trainers import lifecycle

    monkeypatch.setattr(lifecycle, "train_batches", lambda *a: pytest.fail("data loaded before the memory check"))
    assert main.main([*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--image_size", "2048",
                      "--unet_channels", "32", "--unet_depth", "4"]) == 2
    err = capsys.readouterr().err
    assert "one training step at --image_size 2048 with --batch_size 4 needs about" in err
    assert "GiB free" in err and "--batch_size 1 would fit" not in err
    assert not (tmp_path / "unet" / "split.json").exists()


def test_the_memory_estimate_scales_with_batch_and_pixels_and_names_a_batch_that_fits():
    from models import unet
    from trainers import memory
    _, args, _ = main.parse_args(["--model", "unet", "--unet_channels", "8", "--unet_depth", "2"])
    one, four = memory.training_bytes(unet, args, 1, 64), memory.training_bytes(unet, args, 4, 64)
    big = memory.training_bytes(unet, args, 1, 128)
    weights = 4 * sum(p.numel() * 4 for p in unet.build(args).parameters())
    assert (four - weights) == pytest.approx(4 * (one - weights), rel=0.01)   # linear in the batch
    assert (big - weights) == pytest.approx(4 * (one - weights), rel=0.01)    # linear in the pixels
    budget = one + 2.5 * (one - weights)
    assert memory.largest_batch(unet, args, 64, budget, 64) == 3


def test_attention_is_counted_as_the_fused_kernels_use_it():
    """Self-attention at 64x64 tokens would hold a 4096 x 4096 matrix per head on the meta device;
    the fused kernels that run on CPUs and GPUs never do, so the estimate must not count it."""
    from models import diffusion
    from trainers import memory
    _, args, _ = main.parse_args(["--model", "unetddpm", "--diff_channels", "8", "--diff_depth", "1"])
    small, large = memory.training_bytes(diffusion, args, 1, 32), memory.training_bytes(diffusion, args, 1, 128)
    assert large < 20 * small   # 16x the pixels: linear, not the 256x of a materialized attention matrix


@pytest.mark.parametrize("model", ["unet", "unetddpm"])
def test_the_memory_estimate_is_near_a_measured_training_step(model):
    """The estimate against the real peak of one CPU training step (the kernel's VmHWM, reset just
    before the step, in a fresh process): within the band trainers/memory.py documents and under
    REFUSE_ABOVE, so a run is never refused that would fit."""
    import subprocess
    import sys

    from trainers import memory
    code = f"""
import torch, main
from trainers import REGISTRY, memory
def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))
torch.set_num_threads(1)
_, args, _ = main.parse_args(["--model", "{model}", "--{'diff' if 'ddpm' in model else 'unet'}_channels", "16"])
family = REGISTRY["{model}"]
net = family.network.build(args).train()
inputs = tuple(torch.randn_like(x) if x.is_floating_point() else x
               for x in memory.example_inputs(family.network, args, 8, 96))
opt = torch.optim.Adam(net.parameters())
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts from here
base = status("VmRSS:")
out = net(*inputs)
(out[0] if isinstance(out, tuple) else out).pow(2).mean().backward()
opt.step()
print(memory.training_bytes(family.network, args, 8, 96) / (status("VmHWM:") - base))
"""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to measure a peak")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ratio = float(subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                                 check=True).stdout)
    assert 0.5 < ratio < memory.REFUSE_ABOVE, ratio
