"""Test mode evaluates the right images and builds only what inference needs."""
import csv
import json

import conftest
import pytest
from conftest import colour_crops, write_images

import colorize_data as cd
import main

TINY = [*conftest.TINY, "--num_images", "0", "--unet_channels", "8", "--unet_depth", "2"]


def images_tested(run_dir):
    with open(run_dir / "per_image.csv") as f:
        return [row["image"] for row in csv.DictReader(f)]


@pytest.fixture
def flat_run(tmp_path):
    """A unet trained one epoch on a flat folder of 30 images (split by seed 0)."""
    root = tmp_path / "flat"
    write_images(root, colour_crops(30, seed=3))
    flags = TINY + ["--data", str(root), "--results", str(tmp_path / "R")]
    assert main.main(["--model", "unet", "--epochs", "1", *flags]) == 0
    return root, tmp_path / "R" / "unet", flags


def test_another_seed_at_test_time_still_tests_the_runs_own_split(flat_run):
    root, run_dir, flags = flat_run
    saved = json.loads((run_dir / "split.json").read_text())
    assert main.main(["--model", "unet", "--mode", "test", *flags, "--seed", "5"]) == 0
    assert images_tested(run_dir) == saved["test"]
    assert not set(images_tested(run_dir)) & set(saved["train"])  # a new split by seed 5 drew training images
    # without split.json, the split is drawn again by the seed the run was trained with
    (run_dir / "split.json").unlink()
    assert main.main(["--model", "unet", "--mode", "test", *flags, "--seed", "5"]) == 0
    assert images_tested(run_dir) == saved["test"]


def test_a_folder_that_is_not_the_training_folder_is_tested_whole(flat_run, tmp_path, capsys):
    _, run_dir, flags = flat_run
    only_test = tmp_path / "other"
    write_images(only_test / "test", colour_crops(7, seed=4))
    capsys.readouterr()
    assert main.main(["--model", "unet", "--mode", "test", *flags, "--data", str(only_test)]) == 0
    assert len(images_tested(run_dir)) == 7 and all(p.startswith("test/") for p in images_tested(run_dir))
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["n_images"] == 7 and m["test_images"] == f"every image of {only_test / 'test'}"
    assert f"testing on every image of {only_test / 'test'}: 7 image(s)" in capsys.readouterr().out
    flat = tmp_path / "flat_other"
    write_images(flat, colour_crops(12, seed=6))
    assert main.main(["--model", "unet", "--mode", "test", *flags, "--data", str(flat)]) == 0
    assert len(images_tested(run_dir)) == 12  # all of it, not a random tenth
    assert "(no test/ folder)" in json.loads((run_dir / "metrics.json").read_text())["test_images"]


def test_test_set_of_a_folder(tmp_path):
    write_images(tmp_path / "a" / "train", colour_crops(2))
    write_images(tmp_path / "a" / "val", colour_crops(3))
    assert len(cd.test_set(tmp_path / "a")[0]) == 3  # val/ beside train/ is the held-out split
    write_images(tmp_path / "a" / "test", colour_crops(4))
    assert cd.test_set(tmp_path / "a")[0] == [f"test/img_{i:03d}.png" for i in range(4)]


def test_architecture_flags_are_validated_after_the_checkpoint_is_read(tiny_data, tmp_path, capsys):
    """--image_size 20 suits a depth-2 unet (a multiple of 4) but not the default depth 4: test
    mode must judge it against the checkpoint's network, not the command line's defaults."""
    flags = ["--image_size", "20", "--batch_size", "4", "--wandb", "disabled", "--num_images", "0", "--workers", "1",
             "--unet_channels", "8", "--lpips", "off",
             "--fid", "off", "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main(["--model", "unet", "--epochs", "1", "--unet_depth", "2", *flags]) == 0
    assert main.main(["--model", "unet", "--mode", "test", *flags]) == 0
    assert json.loads((tmp_path / "unet" / "metrics.json").read_text())["image_size"] == 20
    assert main.main(["--model", "unet", "--epochs", "2", "--resume", *flags]) == 0
    with pytest.raises(SystemExit) as e:  # and a size the checkpoint's network cannot take is still refused
        main.main(["--model", "unet", "--mode", "test", *flags[2:], "--image_size", "18"])
    assert e.value.code == 2 and "multiple of 4" in capsys.readouterr().err


def test_the_test_grid_shows_images_from_across_the_test_set(tmp_path):
    """A test set sorted by class folder: the grid (and so compare.png and the page) shows every
    class, not the first --num_images files of the first one."""
    import torch
    from conftest import TINY, colour_crops, write_images

    from trainers.evaluation import spread

    assert spread(3000, 8) == [0, 375, 750, 1125, 1500, 1875, 2250, 2625] and spread(3, 8) == [0, 1, 2]
    root = tmp_path / "data"
    write_images(root / "train", colour_crops(8, seed=1))
    for k, cls in enumerate(("airplane", "bird", "cat", "dog")):
        write_images(root / "test" / cls, colour_crops(6, seed=10 + k))
    flags = [*TINY, "--model", "gray", "--data", str(root), "--results", str(tmp_path / "R"), "--num_images", "4",
             "--input", ""]
    assert main.main(flags) == 0 and main.main([*flags, "--mode", "test"]) == 0
    shown = torch.load(tmp_path / "R" / "gray" / "test_samples.pt")["paths"]
    assert sorted(p.split("/")[1] for p in shown) == ["airplane", "bird", "cat", "dog"]
