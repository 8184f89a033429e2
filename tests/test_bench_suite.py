"""The GPU suite (bench_suite.py): its dry run goes through every step on the CPU, so the suite
cannot rot between GPUs; a failing or hanging step is logged and the others go on."""
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import skimage.data
import torch
from conftest import ROOT

import bench_suite
from registry import REGISTRY


@pytest.mark.slow
def test_dry_run_goes_through_every_step(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    # the test's share of the runs (`--dry-run` alone runs all of them, and computes FID from the
    # carried weights once, on unet_inception_v3: the test below checks those weights' features):
    # a checkpoint tested again another way (unetddim on unetddpm's), two optimizers and the encoder
    runs = ["unetddpm", "unetgan_inception_v3"]
    proc = subprocess.run([sys.executable, "bench.py", "--suite", "gpu", "--dry-run", "--out", str(out),
                           "--work", str(work), "--runs", ",".join(runs)], cwd=ROOT, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # what comes back from the device tool: at most 8 files, none in a folder
    names = sorted(p.name for p in out.iterdir())
    assert names == ["compare.png", "curves.png", "logs.tar.gz", "suite.json", "suite.md", "summary.md",
                     "summary.png"]
    record = json.loads((out / "suite.json").read_text())
    steps = {s["step"]: s["status"] for s in record["steps"]}
    assert steps == {name: "ok" for name in ["classifier", *runs, "bench", "bench_compile", "report"]}
    # every run trained, tested (unetddim on unetddpm's checkpoint) and in the report
    also = {name for run in runs for name, *_ in bench_suite.also_tested(run, dry_run=True)}
    assert also == {"unetddim", "unetddim_3"}
    assert set(record["runs"]) == set(runs) | also
    assert all(r["delta_e"] is not None for r in record["runs"].values())
    summary = (out / "summary.md").read_text()
    assert all(f"| {run} |" in summary for run in record["runs"])
    # the bench table: a row per family, none failed, and unet compiled (dynamo, eager backend)
    rows = record["bench"]
    assert [r["family"] for r in rows if not r["compile"]] == list(REGISTRY)
    assert not [r for r in rows if r.get("error")]
    assert [r["family"] for r in rows if r["compile"]] == ["unet"]
    # the carried images: the split's training, validation and test files under their own folders
    with tarfile.open(work / "carry" / bench_suite.DATA_TAR) as tar:
        folders = {m.name.split("/")[1] for m in tar.getmembers() if m.isfile()}
    assert folders == {"train", "val", "test"}
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert "logs/unetddpm.log" in tar.getnames() and "runs/unetddim_3/metrics.json" in tar.getnames()
    text = (out / "suite.md").read_text()
    assert "dry run" in text and "| unetgan_inception_v3 | ok |" in text and "### bench.py" in text


def test_a_failing_or_hanging_step_is_logged_and_the_next_runs(tmp_path):
    opts = type("O", (), {"out": tmp_path / "o", "work": tmp_path / "w", "budget": 60, "dry_run": True})
    suite = bench_suite.Suite(opts)
    suite.logs.mkdir(parents=True)
    suite.min_seconds = 0.5
    failed = suite.child("bad", ["-c", "import sys; print('error: it broke'); sys.exit(3)"], 30)
    hung = suite.child("slow", ["-c", "import time; time.sleep(60)"], 1)
    fine = suite.child("good", ["-c", "print('fine')"], 30)
    skipped = suite.child("late", ["-c", "print('never')"], 0.4)
    assert (failed["status"], hung["status"], fine["status"], skipped["status"]) == \
        ("failed", "killed", "ok", "skipped")
    assert "exit 3: error: it broke" in failed["note"] and hung["seconds"] < 10
    assert (suite.logs / "bad.log").read_text().endswith("error: it broke\n")


def test_the_gpu_suite_refuses_without_a_gpu_or_without_the_carried_files(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    assert bench_suite.main(["--suite", "gpu", "--out", str(tmp_path / "o")]) == 2
    assert "no GPU here" in capsys.readouterr().err


def test_the_carried_fp16_inception_loads_under_its_own_name(tmp_path, monkeypatch):
    from models import inception

    if inception.packaged_path() is None and not inception.standard_path().is_file():
        pytest.skip("no Inception weights here")
    path = tmp_path / bench_suite.INCEPTION_FILE
    bench_suite._write_inception(path)
    assert path.stat().st_size < 50 * 2 ** 20  # fp16, without the classifier
    images = torch.from_numpy(np.stack([skimage.data.astronaut()[:128, :128], skimage.data.coffee()[:128, :128]]))
    images = images.permute(0, 3, 1, 2).contiguous()
    monkeypatch.setenv(inception.CARRIED_ENV, str(path))
    net, name = inception.load("cpu", download=False)
    assert bench_suite.INCEPTION_FILE in name and "float16" in name and inception.CARRIED_ENV in name
    with torch.no_grad():
        carried = net(images)[0]
    monkeypatch.delenv(inception.CARRIED_ENV)
    full, full_name = inception.load("cpu", download=False)
    assert full_name != name
    with torch.no_grad():
        reference = full(images)[0]
    assert torch.allclose(carried, reference, atol=0.02 * reference.abs().max())
    monkeypatch.setenv(inception.CARRIED_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(inception.Unavailable, match="no such file"):
        inception.load("cpu")
