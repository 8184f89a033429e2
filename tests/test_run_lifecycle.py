"""One run folder, one writer: locks, --overwrite, what a resume may change, and a resume after a
kill between the log and the checkpoint."""
import os

import conftest
import pytest

import main
from trainers import checkpoint as ckpt_io

TINY = [*conftest.TINY, "--model", "unet", "--unet_channels", "8", "--unet_depth", "2"]


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
