"""script.sh --quick end to end on tiny data: a few families, the report, and a restart that skips.

Every family's own train and test run is in test_families.py; here the batch around them is tested
on the grey baseline and unetddpm with unetddim sampling its checkpoint."""
import csv
import os
import subprocess

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_script_quick_runs_the_families_and_writes_the_report(tiny_data, tmp_path):
    from registry import REGISTRY

    families = ["unetddpm", "unetddim"]  # a trained family, its checkpoint sampled by another (the grey
    # baseline's place in the ranking: tests/test_report.py)
    env = {**os.environ, "PYTHON": os.sys.executable, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    tiny = {}  # every family's own tiny sizes (models/*.py SMOKE, Trainer.smoke): no edit here for a new one
    for family in REGISTRY.values():
        tiny.update({**family.network.SMOKE, **family.trainer.smoke})
    cmd = ["bash", str(ROOT / "script.sh"), "--quick", "--data", str(tiny_data), "--results", str(tmp_path),
           "--families", ",".join(families),
           "--image_size", "16", "--batch_size", "4", "--lpips", "off", "--fid", "off", "--workers", "1",
           *[x for k, v in tiny.items() for x in (f"--{k}", str(v))]]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("summary.md", "summary.csv", "compare.png", "summary.png", "curves.png", "index.html"):
        assert (tmp_path / name).exists(), name
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["model"] for row in rows) == sorted(families)
    assert all(row["comparable"] == "True" for row in rows)  # one data set, size, split and length: one ranking
    assert all(float(row["delta_e_ci_low"]) <= float(row["delta_e"]) <= float(row["delta_e_ci_high"]) for row in rows)
    for family in families:
        assert (tmp_path / "logs" / f"{family}.test.log").exists()
    import json  # unetddim samples unetddpm's checkpoint with DDIM: the network is trained once
    ddim = json.loads((tmp_path / "unetddim" / "metrics.json").read_text())
    assert ddim["weights"].endswith("unetddpm/best.pt") and ddim["sampler"] == "ddim"
    assert not (tmp_path / "unetddim" / "last.pt").exists()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skipped") == len(families)


@pytest.mark.slow
def test_a_second_script_on_the_same_results_is_refused(tmp_path):
    import sys

    env = {**os.environ, "PYTHON": sys.executable, "WANDB_MODE": "disabled"}
    lock = tmp_path / ".script.lock"
    lock.mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "unet.train.log").write_text("the first script's log")
    (lock / "pid").write_text(str(os.getpid()))  # a live script.sh
    cmd = ["bash", str(ROOT / "script.sh"), "--results", str(tmp_path), "--quick"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "another script.sh" in r.stderr
    assert (tmp_path / "logs" / "unet.train.log").read_text() == "the first script's log"
    (lock / "pid").write_text("999999999")  # its process gone: a stale lock is taken over
    env["PYTHON"] = "false"  # and this script stops at its first python call: only the lock is under test
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert "removed a stale lock" in r.stdout and r.returncode == 1 and not lock.exists()  # released when it ends


def test_script_refuses_an_unknown_family(tmp_path):
    import sys

    env = {**os.environ, "PYTHON": sys.executable, "WANDB_MODE": "disabled"}
    cmd = ["bash", str(ROOT / "script.sh"), "--results", str(tmp_path), "--families", "unet,unetx"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown unetx" in r.stderr and "Traceback" not in r.stderr


def test_script_with_guided_runs_only_the_families_that_take_hints(tmp_path):
    """script.sh --guided leaves out the grey baseline (its network takes no hints; main.py would
    refuse it). The python calls other than the family listing are recorded, not run."""
    import sys

    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/bash\nif [ "$1" = -c ]; then exec {sys.executable} "$@"; fi\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "WANDB_MODE": "disabled"}
    cmd = ["bash", str(ROOT / "script.sh"), "--results", str(tmp_path / "R"), "--families", "gray,unet", "--guided",
           "--hint_counts", "0,5"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = [line.split()[:5] for line in calls.read_text().splitlines() if line.startswith("main.py --model")]
    assert runs == [["main.py", "--model", "unet", "--mode", "train"], ["main.py", "--model", "unet", "--mode", "test"]]
    train, test = [line for line in calls.read_text().splitlines() if line.startswith("main.py --model")]
    assert "--hint_counts" not in train and "--hint_counts 0,5" in test   # the hint curve: a test-mode option
    assert all("--guided" in line for line in calls.read_text().splitlines() if "--model" in line)


def test_script_with_an_encoder_runs_the_families_that_take_one_into_folders_of_their_own(tmp_path):
    """script.sh --encoder NAME: every family whose network takes a pretrained encoder (not the grey
    baseline), each into FAMILY_NAME, so a batch with the encoder sits beside one without."""
    import sys

    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/bash\nif [ "$1" = -c ]; then exec {sys.executable} "$@"; fi\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "WANDB_MODE": "disabled"}
    cmd = ["bash", str(ROOT / "script.sh"), "--results", str(tmp_path / "R"), "--families", "gray,unet,unetgan",
           "--encoder", "inception_v3"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = [line.split()[:7] for line in calls.read_text().splitlines() if line.startswith("main.py --model")]
    assert runs == [["main.py", "--model", family, "--mode", mode, "--run_name", f"{family}_inception_v3"]
                    for family in ("unet", "unetgan") for mode in ("train", "test")]
    assert all("--encoder inception_v3" in line for line in calls.read_text().splitlines() if "--model" in line)
