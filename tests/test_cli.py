"""The command line end to end, in a temporary folder, as a user runs it."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

import main


def cli(cwd, *args):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_default_run_builds_demo_data_trains_and_tests(tmp_path):
    """`python main.py` with no data: the demo set is built from scikit-image photos and used."""
    small = ["--image_size", "32", "--epochs", "1", "--batch_size", "64", "--unet_channels", "8",
             "--unet_depth", "2", "--wandb", "disabled", "--fid", "off"]  # (FID: tests/test_fid.py)
    r = cli(tmp_path, *small)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "built the demo data set" in r.stdout
    assert "note: Results/ and Dataset/ are under the current folder" in r.stdout  # not the project's: said
    run_dir = tmp_path / "Results" / "unet"
    for name in ("last.pt", "best.pt", "history.jsonl", "val_metrics.json", "split.json", "args.json"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "samples").glob("*.png"))
    r = cli(tmp_path, "--mode", "test", "--wandb", "disabled")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["n_images"] == len(json.loads((run_dir / "split.json").read_text())["test"])
    assert sorted(p.name for p in (run_dir / "colorized").glob("*.png")) == ["chelsea.png", "coffee.png"]


def test_help_lists_family_flags(capsys):
    for model, flag in (("unet", "--unet_depth"), ("resnet", "--resnet_width")):
        with pytest.raises(SystemExit):
            main.main(["--model", model, "--help"])
        assert flag in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope"], "invalid choice"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--batch_size", "-3"], "--batch_size must be at least 1"),
    (["--workers", "-1"], "--workers must be at least 0"),
    (["--max_images", "-2"], "--max_images must be at least 0"),
    (["--cache_gb", "nan"], "--cache_gb must be a finite number"),
    (["--image_size", "40"], "multiple of 16"),
    (["--data", "/no/such/folder"], "no such folder"),
    (["--device", "gpu"], "not a device"),
    (["--device", "mps"], "MPS (Apple GPUs) is not available"),
    (["--learning_rate", "nan"], "--learning_rate must be a finite number"),
    (["--learning_rate", "0"], "--learning_rate must be above 0"),
    (["--unet_depth", "-1"], "--unet_depth must be at least 1"),
    (["--unet_channels", "0"], "--unet_channels must be at least 1"),
    (["--model", "colorful", "--colorful_width", "0"], "--colorful_width must be at least 1"),
    (["--results", "/proc/x"], "cannot create a folder in /proc"),
    (["--results", str(ROOT / "runs")], "this project's own runs/ folder (code, not results)"),
    (["--mode", "colorize", "--input", str(ROOT / "docs" / "serve_page.jpg"), "--output", str(ROOT / "models" / "out")],
     "--output " + str(ROOT / "models" / "out") + ": that is inside this project's own models/"),
])
def test_bad_arguments_fail_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_test_mode_without_checkpoint_says_what_to_do(tmp_path, tiny_data, capsys):
    """A refusal like every other: one line on stderr, exit 2."""
    assert main.main(["--model", "unet", "--mode", "test", "--data", str(tiny_data), "--results", str(tmp_path),
                      "--wandb", "disabled"]) == 2
    assert "Train first" in capsys.readouterr().err


@pytest.mark.slow
def test_gray_reference_figures_on_cifar10(shared_data, tmp_path):
    """The pipeline check of the issue: grey baseline on the 3,000 CIFAR-10 test images."""
    assert main.main(["--model", "gray", "--mode", "test", "--data", str(shared_data / "cifar10"),
                      "--image_size", "32", "--results", str(tmp_path), "--wandb", "disabled",
                      "--lpips", "off", "--fid", "off", "--batch_size", "500", "--input", ""]) == 0
    m = json.loads((tmp_path / "gray" / "metrics.json").read_text())
    assert m["n_images"] == 3000
    assert abs(m["delta_e"] - 10.49) <= 0.05 and abs(m["ssim"] - 0.951) <= 0.002 and abs(m["psnr"] - 25.40) <= 0.05
    assert abs(m["colorfulness_gt"] - 30.9) < 0.1 and m["colorfulness"] < 0.01


def test_wandb_offline_run_is_written_into_the_run_folder(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert main.main(["--model", "gray", "--data", str(tiny_data), "--results", str(tmp_path), "--image_size", "16",
                      "--wandb", "offline", "--lpips", "off", "--fid", "off"]) == 0
    assert "wandb sync" in capsys.readouterr().out
    runs = list((tmp_path / "gray" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def test_streaming_data_path_trains_through_main(tiny_data, tmp_path, capsys):
    assert main.main(["--model", "unet", "--data", str(tiny_data), "--results", str(tmp_path), "--image_size", "16",
                      "--batch_size", "4", "--epochs", "1", "--unet_channels", "8", "--unet_depth", "2",
                      "--data_cache", "stream", "--workers", "1", "--wandb", "disabled", "--lpips", "off",
                      "--fid", "off"]) == 0
    assert "streaming 9 training images" in capsys.readouterr().out
    assert (tmp_path / "unet" / "last.pt").exists()


def test_wandb_offline_with_checkpoint_artifact_and_per_image_table(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    flags = ["--model", "unet", "--data", str(tiny_data), "--results", str(tmp_path), "--image_size", "16",
             "--batch_size", "4", "--unet_channels", "8", "--unet_depth", "2", "--wandb", "offline", "--lpips", "off",
             "--fid", "off"]
    assert main.main([*flags, "--epochs", "1", "--log_checkpoints"]) == 0
    assert main.main([*flags, "--mode", "test", "--table_images", "3"]) == 0
    out = capsys.readouterr()
    assert "wandb could not start" not in out.out and "Traceback" not in out.err
    runs = sorted((tmp_path / "unet" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # a train run and a test run
    test_files = list((tmp_path / "unet" / "wandb").rglob("*.table.json"))  # the test run's per-image table
    assert test_files and "colorized" in test_files[0].read_text()


def test_best_by_picks_best_pt_by_the_chosen_validation_metric(tiny_data, tmp_path):
    from trainers import checkpoint as ckpt_io

    flags = ["--model", "unet", "--data", str(tiny_data), "--results", str(tmp_path), "--image_size", "16",
             "--batch_size", "4", "--epochs", "3", "--unet_channels", "8", "--unet_depth", "2", "--wandb", "disabled",
             "--workers", "1", "--lpips", "off", "--fid", "off", "--learning_rate", "3e-2"]
    assert main.main([*flags, "--best_by", "auc_rebalanced"]) == 0
    run = tmp_path / "unet"
    val = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines() if "val/auc_rebalanced" in x]
    best_step = max(val, key=lambda h: h["val/auc_rebalanced"])["step"]
    best = ckpt_io.load(run / "best.pt")
    assert best["step"] == best_step and best["best_by"] == "auc_rebalanced"
    assert best["best_metric"] == pytest.approx(-max(h["val/auc_rebalanced"] for h in val))


def test_a_folder_without_images_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not an image")
    for folder in ("empty", "notes"):
        with pytest.raises(SystemExit) as e:
            main.parse_args(["--data", str(tmp_path / folder)])
        assert e.value.code == 2 and "no images" in capsys.readouterr().err


@pytest.mark.parametrize("key, reachable, says", [
    (False, True, "no API key is configured"),        # would sit at wandb's login prompt
    (True, False, "server cannot be reached"),        # would stall ~90 s, then log nothing
])
def test_wandb_online_never_prompts_nor_stalls(tiny_data, tmp_path, monkeypatch, capsys, key, reachable, says):
    import time

    monkeypatch.setenv("WANDB_MODE", "online")
    from util import tracking

    monkeypatch.setattr(tracking, "_wandb_key_configured", lambda: key)
    monkeypatch.setattr(tracking, "_wandb_reachable", lambda timeout=3.0: reachable)
    t0 = time.time()
    assert main.main(["--model", "gray", "--data", str(tiny_data), "--results", str(tmp_path), "--image_size", "16",
                      "--lpips", "off", "--fid", "off"]) == 0
    out = capsys.readouterr().out
    assert says in out and "wandb sync" in out and time.time() - t0 < 60
    assert list((tmp_path / "gray" / "wandb").glob("offline-run-*/run-*.wandb"))  # logged offline, not lost


def test_the_same_finished_run_again_is_nothing_to_do_and_another_is_refused(tiny_data, tmp_path, capsys):
    """The README's first command run twice: the second finds the same run finished, trains
    nothing and exits 0 (so `&& python main.py --mode test` goes on); a command that asks for
    another run in the same folder is refused."""
    flags = ["--data", str(tiny_data), "--results", str(tmp_path), "--image_size", "16", "--batch_size", "4",
             "--epochs", "1", "--unet_channels", "8", "--unet_depth", "2", "--wandb", "disabled", "--lpips", "off",
             "--fid", "off", "--workers", "1"]
    assert main.main(flags) == 0
    stamp = (tmp_path / "unet" / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main.main(flags) == 0
    assert "already holds this run, finished" in capsys.readouterr().out
    assert (tmp_path / "unet" / "last.pt").stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit, match="already holds a run"):
        main.main(flags + ["--learning_rate", "0.01"])


def test_a_refusal_is_its_one_line_and_a_pointer_to_help_not_the_usage_block():
    import subprocess
    import sys
    from pathlib import Path

    r = subprocess.run([sys.executable, "main.py", "--epochs", "-1"], cwd=Path(main.__file__).parent,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "usage:" not in r.stderr
    assert r.stderr.splitlines() == ["main.py: error: --epochs must be at least 1, got -1",
                                     "(python main.py --help lists every option)"]


def test_each_setting_states_its_role_beside_it():
    """What a resume may change and what a mode takes from its own command line are declared on the
    settings (setting(role=...)), not kept in lists: the sets are what they were as lists."""
    from models import config
    from registry import REGISTRY
    from runs.settings import RunConfig

    ddim, colorful = REGISTRY["unetddim"], REGISTRY["colorful"]
    resume = config.with_role("resume", RunConfig, ddim.trainer.Config, ddim.network.Config)
    assert {"model", "mode", "resume", "epochs", "batch_size", "device", "steps", "eta", "val_steps"} <= resume
    assert not {"learning_rate", "seed", "lr_schedule", "crop", "max_images", "unet_channels"} & resume
    assert "temperature" in config.with_role("resume", colorful.trainer.Config)
    assert config.with_role("train", RunConfig) == {"model", "mode", "resume"}
    assert config.with_role("test", RunConfig) == {"model", "mode", "weights"}
    assert config.with_role("colorize", RunConfig) == {"model", "mode", "weights", "input", "output", "sheet", "hints"}


def test_deterministic_pins_one_thread_and_deterministic_kernels():
    """Float sums split over more threads add in another order, so the same run with another thread
    count gives other figures in the third digit (BENCHMARKS.md, "Reproducibility of the demo run"):
    --deterministic pins one thread and deterministic kernels, and a resume may switch it."""
    import torch

    from models import config
    from runs.settings import RunConfig

    assert main.parse_args(["--deterministic"])[1].deterministic and "deterministic" in config.with_role(
        "resume", RunConfig)
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        main.make_deterministic()
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, False
