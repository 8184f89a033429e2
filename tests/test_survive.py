"""Runs that survive, round 3 (issue 30): each test reproduces one hole a fault-injection trial
found (colorize over its own inputs, --overwrite reaching other folders, the bomb guard under
threads, a poisoned FID cache, resumes that silently change the run, caches cut short, an empty
data set marked complete, hostile run folders in the report, tracebacks, unchecked values) and
checks that it is closed."""
import json
import os
import shutil
import struct
import zlib

import conftest
import numpy as np
import pytest
import torch
from conftest import colour_crops, write_images
from PIL import Image

import colorize_data as cd
import main
from trainers import checkpoint as ckpt_io
from util import batches, colour, files, hint_files, images

TINY = [*conftest.TINY, "--model", "unet", "--unet_channels", "8", "--unet_depth", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny unet run (best.pt, last.pt, epoch_0001.pt) for the colorize and test-mode checks."""
    tmp = tmp_path_factory.mktemp("survive")
    data = tmp / "data"
    write_images(data / "train", colour_crops(10, seed=1))
    write_images(data / "test", colour_crops(4, seed=2))
    assert main.main([*TINY, "--epochs", "1", "--save_every", "1", "--data", str(data), "--results",
                      str(tmp / "R")]) == 0
    return tmp / "R", data


def photos(folder, n=2, prefix="p"):
    write_images(folder, colour_crops(n, size=(20, 24), seed=7), prefix=prefix)
    return folder


def colorize(results, *argv):
    return main.main(["--mode", "colorize", "--results", str(results), *TINY, *map(str, argv)])


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------
# 1. colorize never writes over its inputs
# ---------------------------------------------------------------------------------------------
def test_colorize_never_writes_over_its_inputs(trained, tmp_path, capsys):
    results, _ = trained
    inputs = photos(tmp_path / "in")
    before = snapshot(inputs)
    for spec in (inputs, inputs / "p_000.png", f"{inputs}/*.png"):  # refused before anything is written
        assert colorize(results, "--input", spec, "--output", inputs) == 2
    assert snapshot(inputs) == before
    err = capsys.readouterr().err
    assert "would be written over an input" in err and "is the input folder" in err
    # an output folder inside the input folder: its earlier colorizations are not inputs
    assert colorize(results, "--input", inputs, "--output", inputs / "colorized") == 0
    assert colorize(results, "--input", inputs, "--output", inputs / "colorized") == 0
    assert "left out 2 file(s) of --input under --output" in capsys.readouterr().out
    assert sorted(p.name for p in (inputs / "colorized").glob("*.png")) == ["p_000.png", "p_001.png"]


def test_output_folders_are_not_mixed_nor_left_stale(trained, tmp_path, capsys):
    results, data = trained
    inputs = photos(tmp_path / "in")
    out = tmp_path / "out"
    assert colorize(results, "--input", inputs, "--output", out) == 0
    assert colorize(results, "--input", inputs, "--output", out) == 0  # the same weights again: updated
    assert colorize(results, "--input", inputs, "--output", out, "--weights", "last") == 2  # another model's
    assert "holds colorizations by another model" in capsys.readouterr().err
    assert colorize(results, "--input", inputs, "--output", out, "--weights", "last", "--overwrite") == 0
    assert json.loads((out / ".colorize.json").read_text())["maker"]["weights"].endswith("last.pt")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "p_000.png").write_bytes(b"a file of the user's")  # not written by a colorize run
    (mine / ".p_001.png.x1y2z3.tmp").write_bytes(b"left by a kill")
    assert colorize(results, "--input", inputs, "--output", mine) == 2
    assert (mine / "p_000.png").read_bytes() == b"a file of the user's"
    # names that collided: a.jpg beside a.bmp -> a.jpg.png, and a.jpg.png -> a.jpg.png
    clash = tmp_path / "clash"
    clash.mkdir()
    for name in ("a.jpg", "a.bmp", "a.jpg.png"):
        Image.open(inputs / "p_000.png").save(clash / name)
    assert colorize(results, "--input", clash, "--output", tmp_path / "c") == 0
    assert len(list((tmp_path / "c").glob("*.png"))) == 3
    # test mode's colorized/: a second test with another --input leaves none of the first's outputs
    base = [*TINY, "--mode", "test", "--results", str(results), "--data", str(data)]
    assert main.main([*base, "--input", str(inputs / "p_000.png")]) == 0
    assert main.main([*base, "--input", str(clash)]) == 0
    assert sorted(p.name for p in (results / "unet" / "colorized").glob("*.png")) == [
        "a.bmp.png", "a.jpg.png", "a.jpg.png.png"]
    # a kill -9 between a temporary file and its rename: the next run into the folder clears it
    (out / ".p_000.png.abcd1234.tmp").write_bytes(b"cut short")
    assert colorize(results, "--input", inputs, "--output", out, "--weights", "last") == 0
    assert not list(out.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------
# 2. --run_name and --overwrite stay inside the run's own files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [".", "..", "../x", "/tmp/x", "", "a/b", ".hidden", "logs"])
def test_run_names_that_are_not_one_plain_folder_are_refused(name, capsys):
    with pytest.raises(SystemExit):
        main.parse_args([*TINY, "--run_name", name, "--overwrite"])
    assert "--run_name" in capsys.readouterr().err


def test_overwrite_removes_only_what_the_run_wrote(tiny_data, tmp_path):
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--epochs", "1"]
    assert main.main(flags) == 0
    run = tmp_path / "unet"
    wandb_runs = [run / "wandb" / "offline-run-20261204_222346-xe7d6hgl", run / "wandb" / "debug.log"]
    wandb_runs[0].mkdir(parents=True)  # what wandb itself writes there
    (wandb_runs[0] / "run-xe7d6hgl.wandb").write_text("wandb's")
    wandb_runs[1].write_text("wandb's")
    keep = {run / "wandb" / "my_notes.txt": "mine", run / "test_ideas" / "plan.txt": "mine too",
            run / "samples" / "drawing.png": "also mine", run / "colorized" / "x.png": "and this",
            run / "notes.txt": "and that"}
    for path, text in keep.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    other = tmp_path / "other_run"
    other.mkdir()
    (other / "last.pt").write_text("another run's")
    assert main.main(flags + ["--overwrite"]) == 0
    assert all(path.read_text() == text for path, text in keep.items())
    assert (other / "last.pt").read_text() == "another run's"
    assert not any(p.exists() for p in wandb_runs)


# ---------------------------------------------------------------------------------------------
# 3. the decompression-bomb guard holds under threads
# ---------------------------------------------------------------------------------------------
def test_bomb_guard_does_not_depend_on_pillows_shared_settings(tmp_path, monkeypatch):
    """Another thread changing Pillow's process-wide limit (or warning filter) between our setting
    and the decode was how 2-3 of six 100 MP images got through: the guard must not rely on it."""
    from PIL import Image as PILImage

    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    real_open = PILImage.open

    def other_thread_meanwhile(*a, **k):
        PILImage.MAX_IMAGE_PIXELS = None  # as another loader restoring "its" old value
        return real_open(*a, **k)

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", PILImage.MAX_IMAGE_PIXELS)
    monkeypatch.setattr(PILImage, "open", other_thread_meanwhile)
    with pytest.raises(images.BadImage, match="decompression-bomb limit of 1000"):
        images.load_rgb(path, max_pixels=1000)


def test_bomb_guard_with_threads_and_when_streaming(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    for i in range(6):
        Image.fromarray(np.full((40, 40, 3), 30 * i, np.uint8)).save(tmp_path / f"{i}.jpg")
    kept, _, report = cd.decode_images(tmp_path, [f"{i}.jpg" for i in range(6)], lambda x: x, workers=4,
                                       max_pixels=1000)
    assert not kept and len(report.bad) == 6
    files = batches._FileImages(tmp_path, ["0.jpg"], 16, 1000)  # JPEGs stream through torchvision's decoder
    assert files[0][1] == 1  # refused, not decoded
    # a limit raised above Pillow's own: the file is read all the same, and Pillow's setting is untouched
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)
    assert images.load_rgb(tmp_path / "0.jpg", max_pixels=10_000).shape == (40, 40, 3)
    assert PILImage.MAX_IMAGE_PIXELS == 100


# ---------------------------------------------------------------------------------------------
# 4. the FID reference cache is checked before use
# ---------------------------------------------------------------------------------------------
def test_a_damaged_fid_reference_cache_is_recomputed(tmp_path):
    from realism import Realism

    gen = torch.Generator().manual_seed(0)
    projection = torch.randn(3 * 8 * 8, 2048, generator=gen)
    realism = Realism(enabled=False, cache_dir=tmp_path)
    realism.net, realism.weights = (lambda x: (x.float().flatten(1) @ projection,)), "fake-inception"
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=gen)
    realism.reference(images)
    truth = realism.real.clone()
    (path,) = tmp_path.glob("inception-*.pt")
    good = torch.load(path, weights_only=True)
    damaged = [{**good, "features": good["features"] * 0}, {**good, "features": good["features"] * 1.5},
               {**good, "features": good["features"] * float("nan")}, {**good, "features": good["features"][:3]},
               {**good, "features": good["features"].double()}, {**good, "n": 4}, {**good, "weights": "other"},
               {"features": good["features"]}, [1, 2, 3]]
    for bad in damaged + [b"", b"random bytes \x00\x01"]:
        if isinstance(bad, bytes):
            path.write_bytes(bad)
        else:
            torch.save(bad, path)
        realism.real = None
        realism.reference(images)
        assert torch.equal(realism.real, truth)
        assert torch.equal(torch.load(path, weights_only=True)["features"], truth)  # and rewritten


# ---------------------------------------------------------------------------------------------
# 5, 6. resumes that would silently be another run; epochs with no step; broken weights; samples
# ---------------------------------------------------------------------------------------------
def test_resume_refuses_a_lean_checkpoint_and_another_data_set(tiny_data, tmp_path, capsys):
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--save_every", "1"]
    assert main.main([*flags, "--epochs", "1"]) == 0
    run = tmp_path / "unet"
    shutil.copy(run / "last.pt", tmp_path / "full.pt")
    shutil.copy(run / "epoch_0001.pt", run / "last.pt")  # a lean checkpoint: no optimizer, schedule, rng
    with pytest.raises(SystemExit):
        main.main([*flags, "--epochs", "2", "--resume"])
    assert "holds no optimizer, schedule or random state" in capsys.readouterr().err
    shutil.copy(tmp_path / "full.pt", run / "last.pt")
    split = (run / "split.json").read_text()
    other = tmp_path / "other"
    write_images(other / "train", colour_crops(6, seed=11), prefix="x")
    with pytest.raises(SystemExit):
        main.main([*flags, "--epochs", "2", "--resume", "--data", str(other)])
    assert "does not hold its images" in capsys.readouterr().err
    assert (run / "split.json").read_text() == split
    moved = shutil.copytree(tiny_data, tmp_path / "moved")  # the same images elsewhere: goes on with them
    assert main.main([*flags, "--epochs", "2", "--resume", "--data", str(moved)]) == 0
    assert "they are all in" in capsys.readouterr().out


def test_an_epoch_without_one_usable_image_fails_and_writes_no_checkpoint(tmp_path, capsys):
    data = tmp_path / "grey"
    write_images(data / "train", [np.repeat(c.mean(-1, keepdims=True).astype(np.uint8), 3, -1)
                                  for c in colour_crops(6, seed=3)])
    write_images(data / "test", colour_crops(2, seed=4))
    assert main.main([*TINY, "--data", str(data), "--results", str(tmp_path), "--data_cache", "stream",
                      "--workers", "0", "--epochs", "1"]) == 2
    assert "made no training step" in capsys.readouterr().err
    assert not (tmp_path / "unet" / "last.pt").exists()


def test_colorize_refuses_non_finite_weights(trained, tmp_path, capsys):
    results, _ = trained
    ckpt = ckpt_io.load(results / "unet" / "best.pt")
    ckpt["model"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, tmp_path / "nan.pt")
    out = tmp_path / "out"
    assert colorize(results, "--input", photos(tmp_path / "in"), "--output", out, "--weights", tmp_path / "nan.pt") == 2
    assert "weights are not finite" in capsys.readouterr().err
    assert not list(out.glob("*.png"))


def test_k_samples_are_written_one_by_one_and_identical_ones_are_said(tmp_path, monkeypatch, capsys):
    from registry import REGISTRY
    from runs import photos as photo_files
    from trainers.vae import VAEColorizer

    family = REGISTRY["unetvae"]
    values = {"latent_dim": 4, "unet_channels": 8, "unet_depth": 2, "image_size": 16, "num_samples": 3}
    network_cfg, cfg = family.configs(values)
    colorizer = VAEColorizer(family.network.build(network_cfg).eval(), cfg, network_cfg, "cpu")
    inputs = photos(tmp_path / "in", n=1)
    out = tmp_path / "out"
    seen = []
    real = colour.colorize_full_resolution

    def watch(*a, **k):
        seen.append(len(list(out.glob("*_sample*.png"))))  # samples on disk before this one is made
        return real(*a, **k)

    monkeypatch.setattr(colour, "colorize_full_resolution", watch)
    monkeypatch.setattr(VAEColorizer, "sample_ab",
                        lambda self, L, k, hints=None: self.predict_ab(L, hints)[None].repeat(k, 1, 1, 1, 1))
    done, _ = photo_files.colorize_files(colorizer, sorted(inputs.glob("*.png")), inputs, out, 16, 10 ** 8, 3,
                                         sheet=True)
    assert done == 1 and seen == [0, 1, 2]
    assert "samples of 1 of 1 image(s) are identical" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# 7, 8. caches and data sets cut short
# ---------------------------------------------------------------------------------------------
def test_caches_cut_short_by_a_kill_are_computed_again(tmp_path, monkeypatch):
    from models import colorful
    from trainers import statistics

    monkeypatch.setenv("COLORIZATION_CACHE", str(tmp_path))
    colorful.ab_gamut.cache_clear()
    (tmp_path / "ab_gamut_corners_v2.pt").write_bytes(b"")  # a SIGKILL during the first colorful run
    try:
        centres, _ = colorful.ab_gamut("corners")
    finally:
        colorful.ab_gamut.cache_clear()
    assert len(centres) == 309 and torch.load(tmp_path / "ab_gamut_corners_v2.pt", weights_only=True)

    class Batches:
        data_id = (tmp_path, ["a.png"], (16,))

        def epoch(self, epoch):
            yield 0, torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)

    path = files.cache_dir() / "ab_counts" / f"{files.data_key(*Batches.data_id[:2], *Batches.data_id[2])}.pt"
    path.parent.mkdir(parents=True)
    for damaged in (b"", b"\x00junk"):
        path.write_bytes(damaged)
        assert statistics.train_ab_counts(Batches(), "cpu").sum() == 2 * 8 * 8
    torch.save(torch.full((529,), float("nan"), dtype=torch.float64), path)
    assert statistics.train_ab_counts(Batches(), "cpu").sum() == 2 * 8 * 8


def test_a_by_hand_set_without_its_folders_is_never_marked_complete(tmp_path):
    import public_data

    with pytest.raises(public_data.DataUnavailable, match="train2017"):
        public_data.prepare("coco", str(tmp_path), echo=lambda *a: None)
    built = tmp_path / "coco" / "images"
    assert not (built / ".complete").exists()
    built.mkdir()
    (built / ".complete").write_text('{"set": "coco", "images": {"train": 0, "test": 0}}')  # an older build's
    (tmp_path / "coco" / ".images.tmp-999999999").mkdir()  # a build that was killed
    for folder, n in (("train2017", 3), ("val2017", 2)):
        write_images(tmp_path / "coco" / "download" / folder, colour_crops(n, seed=n))
    assert public_data.prepare("coco", str(tmp_path), echo=lambda *a: None) == built
    assert len(images.find_images(built)) == 5
    assert not list((tmp_path / "coco").glob(".images.tmp-*"))


# ---------------------------------------------------------------------------------------------
# 9. history.jsonl
# ---------------------------------------------------------------------------------------------
def test_the_log_is_never_written_through_a_link_nor_twice(tiny_data, tmp_path, capsys):
    from util.tracking import RunLog

    run = tmp_path / "R" / "unet"
    run.mkdir(parents=True)
    outside = tmp_path / "important.txt"
    outside.write_text("keep")
    (run / "history.jsonl").symlink_to(outside)
    with pytest.raises(files.WriteError, match="symbolic link"):
        RunLog(run).scalars({"x": 1.0}, 1)
    assert outside.read_text() == "keep"
    (run / "history.jsonl").unlink()
    # a run killed after logging epoch 1, before its first checkpoint: the new run logs epoch 1 once
    (run / "history.jsonl").write_text('{"step": 2, "epoch": 1, "train/loss": 9.0}\n')
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path / "R"), "--epochs", "1"]
    assert main.main(flags) == 0
    rows = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "epoch" in r] == [1] and rows[0].get("train/loss") != 9.0


# ---------------------------------------------------------------------------------------------
# 10. the report over hostile run folders
# ---------------------------------------------------------------------------------------------
def hostile_runs(results, good: dict):
    """About twenty kinds of damaged run folders beside good ones."""
    def run(name, metrics=None, **files):
        folder = results / name
        folder.mkdir(parents=True)
        if metrics is not None:
            (folder / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
        for file, content in files.items():
            (folder / file.replace("__", ".")).write_bytes(content if isinstance(content, bytes) else content.encode())

    run("ok_a", good)
    run("ok_b", {**good, "delta_e": 9.0, "ssim": 0.9})
    run("not_json", "{delta_e: 1")
    run("empty_file", "")
    run("a_list", [1, 2])
    run("string_metric", {**good, "delta_e": "abc"})
    run("nan_metric", {**good, "delta_e": float("nan")})
    run("infinite_ssim", {**good, "ssim": float("inf")})
    run("bool_metric", {**good, "psnr": True})
    run("bad_counts", {**good, "n_images": "x", "image_size": [1], "epochs": "ten"})
    run("bad_hints", {**good, "hints": [{"count": "a"}]})
    run("hints_not_a_list", {**good, "hints": 5})
    run("ci_in_file", {**good, "delta_e_ci": "oops"})
    run("bad_csv", good, per_image__csv="image,delta_e\na.png,notanumber\n")
    run("binary_csv", good, per_image__csv=b"\xff\xfe\x00garbage")
    run("nan_csv", good, per_image__csv="image,delta_e\na.png,nan\n")
    run("cut_samples", good, test_samples__pt=b"PK\x03\x04truncated")
    run("wrong_samples", good, test_samples__pt=b"")
    run("bad_history", good, history__jsonl='5\n"text"\n{"epoch": "one", "step": "x", "train/loss": "y"}\n')
    run("bad_args", {k: v for k, v in good.items() if k != "epochs"}, args__json="{not json")
    run("weird_types", {**good, "model": 7, "data": {"x": 1}, "sampler": 5, "num_samples": "k", "weights": 3})
    run("deep", "[" * 100000 + "]" * 100000)
    run("<img src=x onerror=alert(1)>|**x**", good)
    (results / "stray_file.txt").write_text("not a run")


def test_the_report_summarises_around_hostile_run_folders(tmp_path):
    import report

    good = {"model": "unet", "weights": "R/best.pt", "epoch": 2, "epochs": 2, "data": "/d/cifar10",
            "test_images": "the test split", "test_set": "abc", "image_size": 16, "n_images": 4,
            "delta_e": 10.0, "ssim": 0.95, "psnr": 25.0, "colorfulness": 12.0, "colorfulness_gt": 30.0,
            "auc": 0.9, "fid": None, "kid": None, "fid_images": 0}
    hostile_runs(tmp_path, good)
    (tmp_path / "classifier").mkdir()
    (tmp_path / "classifier" / "classifier.json").write_text("[]")
    summary = report.write_summary(tmp_path).read_text()
    table = summary.split("\n## ")[0]
    assert "**9.00**" in table and "**0.9500**" in table  # the real best delta E and SSIM, not NaN or Infinity
    assert "| nan |" not in table and "| inf |" not in table and "| -inf |" not in table
    for skipped in ("not_json", "empty_file", "a_list", "deep"):
        assert f"- {skipped}: " in summary and "(skipped)" in summary
    for flagged, why in (("string_metric", "delta_e"), ("nan_metric", "delta_e"), ("infinite_ssim", "ssim"),
                         ("bad_csv", "per_image.csv"), ("cut_samples", "test_samples.pt"), ("bad_hints", "hints")):
        line = next(x for x in summary.splitlines() if x.startswith(f"- {flagged}:"))
        assert why in line, line
    assert "<img" not in summary and "&lt;img src=x" in summary and "\\|\\*\\*x\\*\\*" in summary
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) > 3 and all(row.count(" | ") == rows[0].count(" | ") for row in rows)  # no cell broken up
    assert (tmp_path / "index.html").is_file() and "<img src=x" not in (tmp_path / "index.html").read_text()


def test_script_fails_when_its_report_fails(tmp_path):
    import subprocess
    import sys

    (tmp_path / "gray").mkdir()
    (tmp_path / "gray" / "metrics.json").write_text("{}")  # done before: skipped
    (tmp_path / "classifier").mkdir()
    (tmp_path / "classifier" / "classifier.pt").write_text("")
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\n[ \"$1\" = report.py ] && exit 1\nexec {sys.executable} \"$@\"\n")
    fake.chmod(0o755)
    r = subprocess.run(["bash", str(conftest.ROOT / "script.sh"), "--families", "gray", "--results", str(tmp_path)],
                       env={**os.environ, "PYTHON": str(fake)}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "the report failed" in r.stdout and "report" in r.stderr


# ---------------------------------------------------------------------------------------------
# 11, 12. clear errors instead of tracebacks; values that were not checked
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value", [("--ema_decay", "nan"), ("--ema_decay", "2"), ("--max_image_pixels", "0"),
                                         ("--max_image_pixels", "-1"), ("--cache_gb", "nan"), ("--cache_gb", "-1"),
                                         ("--table_images", "-1"), ("--kl_weight", "inf")])
def test_values_out_of_range_are_refused(flag, value, capsys):
    model = ["--model", "unetvae"] if flag == "--kl_weight" else []
    with pytest.raises(SystemExit) as e:
        main.parse_args([*model, flag, value])
    assert e.value.code == 2 and flag.lstrip("-") in capsys.readouterr().err


def test_an_output_that_cannot_be_written_is_refused_at_start(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for output in (blocker, blocker / "sub", "/proc/colorized"):
        with pytest.raises(SystemExit):
            main.parse_args(["--mode", "colorize", "--input", str(blocker), "--output", str(output)])
        assert "--output" in capsys.readouterr().err


def png_header(width, height):
    """A PNG that declares width x height pixels and holds none (a few dozen bytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("content", ['[[NaN, 1, "#ff0000"]]', '[[Infinity, 1, "#ff0000"]]',
                                     '[[1e400, 1, "#ff0000"]]', "[" * 100000 + "]" * 100000, "PNG"])
def test_hint_files_that_are_not_hints_are_clear_errors(tmp_path, content):

    path = tmp_path / ("h.png" if content == "PNG" else "h.json")
    path.write_bytes(png_header(100000, 100000)) if content == "PNG" else path.write_text(content)
    with pytest.raises(hint_files.HintError, match="--hints"):
        hint_files.read_points(path, 40, 30)


def test_crafted_files_of_a_run_are_clear_errors(trained, tmp_path, capsys):
    results, data = trained
    run = tmp_path / "R" / "unet"
    shutil.copytree(results / "unet", run)
    base = [*TINY, "--data", str(data), "--results", str(tmp_path / "R")]
    for field, value in (("unet_depth", -1), ("unet_channels", "8")):
        ckpt = ckpt_io.load(results / "unet" / "best.pt")
        ckpt["network"][field] = ckpt["args"][field] = value
        torch.save(ckpt, run / "best.pt")
        assert main.main([*base, "--mode", "test", "--input", ""]) == 2
        assert f"--{field} must be" in capsys.readouterr().err
    shutil.copy(results / "unet" / "best.pt", run / "best.pt")
    for change in ({"epoch": -1}, {"rng": {"torch": torch.zeros(3)}}, {"batch_in_epoch": "x"}):
        torch.save({**ckpt_io.load(results / "unet" / "last.pt"), **change}, run / "last.pt")
        assert main.main([*base, "--epochs", "2", "--resume"]) == 2
        assert "not a valid checkpoint" in capsys.readouterr().err
    (run / "split.json").write_text('{"root": 5')
    assert main.main([*base, "--mode", "test", "--input", ""]) == 2
    assert "split.json cannot be read" in capsys.readouterr().err


def test_lock_files_that_name_no_process_are_taken_over(tiny_data, tmp_path, capsys):
    run = tmp_path / "unet"
    run.mkdir()
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--epochs", "1"]
    for content in (os.urandom(64), b""):
        (run / ".train.lock").write_bytes(content)
        os.utime(run / ".train.lock", (1, 1))  # written long ago, not just being written
        assert main.main(flags + ["--overwrite"]) == 0
        assert "names no process" in capsys.readouterr().out
