"""Files written safely: unwritable results refused at start, a full disk keeps the last good
checkpoint, writes are atomic, outputs never overwrite each other, a killed test leaves no metrics."""
import errno
import os

import conftest
import pytest

import main
from trainers import checkpoint as ckpt_io
from util import files

TINY = [*conftest.TINY, "--model", "unet", "--unet_channels", "8", "--unet_depth", "2"]


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
    from util import batches

    split = cd.make_split(tiny_data, seed=0)
    stream = batches.StreamingTrainBatches(tiny_data, split["train"], 4, 16, None, "random", 0, "cpu", workers=0)
    assert sum(len(b) for _, b in stream.epoch(1)) == 8
    (tiny_data / split["train"][0]).write_bytes(b"\x89PNG broken")
    (tiny_data / split["train"][1]).unlink()
    assert sum(len(b) for _, b in stream.epoch(2)) < 8 and stream.skipped[1] >= 1


def test_a_write_cut_short_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "split.json"
    path.write_text('{"train": []}')

    def killed_half_way(f):
        f.write(b'{"train": ["a.png", ')
        raise KeyboardInterrupt  # as a kill in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(path, killed_half_way)
    assert path.read_text() == '{"train": []}' and [p.name for p in tmp_path.iterdir()] == ["split.json"]


def test_run_folder_files_are_written_atomically_and_the_split_is_not_rewritten(tiny_data, tmp_path, monkeypatch):
    """split.json, args.json, metrics.json, per_image.csv, grids and colorized images all go
    through write_atomic (a plain write killed half way left a truncated split.json that broke
    --resume, test and even --overwrite); a resume leaves split.json untouched."""
    written = []
    real = files.write_atomic
    monkeypatch.setattr(files, "write_atomic", lambda path, *a: (written.append(path.name), real(path, *a)))
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


def test_a_test_killed_while_colorizing_leaves_no_metrics_json(tiny_data, tmp_path, monkeypatch):
    """script.sh skips a family whose metrics.json exists: it must mean the whole test finished."""
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*flags, "--epochs", "1"]) == 0

    def killed(*a, **k):
        raise KeyboardInterrupt

    from runs import test as run_test

    monkeypatch.setattr(run_test, "colorize_folder", killed)
    with pytest.raises(KeyboardInterrupt):
        main.main([*flags, "--mode", "test"])
    assert not (tmp_path / "unet" / "metrics.json").exists()
