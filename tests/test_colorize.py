"""--mode colorize: a trained run colorizes a file, a folder or a glob; no data folder, no metrics."""
import conftest
import numpy as np
import pytest
from conftest import colour_crops, write_images
from PIL import Image

import main

TINY = [*conftest.TINY, "--unet_channels", "8", "--unet_depth", "2", "--latent_dim", "4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A unet and a unetvae trained one epoch (once for this file); their data folder is then
    removed: colorizing needs none."""
    import shutil

    tmp = tmp_path_factory.mktemp("trained")
    data = tmp / "data"
    write_images(data / "train", colour_crops(10, seed=1))
    write_images(data / "test", colour_crops(4, seed=2))
    for model in ("unet", "unetvae"):
        assert main.main(["--model", model, "--epochs", "1", "--data", str(data), "--results", str(tmp / "R"),
                          *TINY]) == 0
    shutil.rmtree(data)
    photos = tmp / "photos"
    write_images(photos / "holiday", colour_crops(2, size=(50, 70), seed=5), prefix="beach")
    grey = np.asarray(colour_crops(1, size=(30, 40), seed=6)[0]).mean(-1).astype(np.uint8)
    Image.fromarray(grey).save(photos / "old.png")
    return tmp / "R", photos


def colorize(results, *argv):
    return main.main(["--mode", "colorize", "--results", str(results), *TINY, *map(str, argv)])


def test_a_file_a_folder_and_a_glob(trained, tmp_path):
    results, photos = trained
    assert colorize(results, "--model", "unet", "--input", photos / "old.png", "--output", tmp_path / "one") == 0
    out = Image.open(tmp_path / "one" / "old.png")
    assert out.size == (40, 30) and out.mode == "RGB"  # full resolution, colour out of a grey input
    assert colorize(results, "--model", "unet", "--input", photos, "--output", tmp_path / "all") == 0
    assert sorted(p.relative_to(tmp_path / "all").as_posix() for p in (tmp_path / "all").rglob("*.png")) == [
        "holiday/beach_000.png", "holiday/beach_001.png", "old.png"]  # the same relative names
    assert colorize(results, "--model", "unet", "--input", f"{photos}/**/beach_*.png", "--output", tmp_path / "g") == 0
    assert sorted(p.name for p in (tmp_path / "g").rglob("*.png")) == ["beach_000.png", "beach_001.png"]
    # the original L is kept (up to sRGB's gamut, which clips some new colours at the darkest pixels)
    from skimage.color import rgb2lab

    src = rgb2lab(np.asarray(Image.open(photos / "holiday" / "beach_000.png")))[..., 0]
    got = rgb2lab(np.asarray(Image.open(tmp_path / "all" / "holiday" / "beach_000.png")))[..., 0]
    assert np.median(np.abs(src - got)) < 1 and np.abs(src - got).mean() < 3


def test_default_output_is_one_folder_per_weights_and_input(trained):
    results, photos = trained
    assert not (results / "unet" / "metrics.json").exists()  # colorizing tests nothing, writes no metrics
    assert colorize(results, "--model", "unet", "--input", photos) == 0
    assert colorize(results, "--model", "unet", "--input", photos, "--weights", "last") == 0
    assert (results / "unet" / "colorize" / "best-photos" / "old.png").exists()
    assert (results / "unet" / "colorize" / "last-photos" / "old.png").exists()
    assert not (results / "unet" / "metrics.json").exists()
    assert colorize(results, "--model", "unet", "--input", f"{photos}/holiday/*.png") == 0  # a glob: not "best-*"
    assert sorted(p.name for p in (results / "unet" / "colorize").iterdir()) == ["best-holiday-glob", "best-photos",
                                                                                 "last-photos"]


@pytest.mark.parametrize("what", ["missing", "empty", "glob"])
def test_nothing_to_colorize_is_an_error(trained, tmp_path, what, capsys):
    results, _ = trained
    (tmp_path / "empty").mkdir()
    spec = {"missing": tmp_path / "no" / "such.png", "empty": tmp_path / "empty", "glob": f"{tmp_path}/*.jpg"}[what]
    with pytest.raises(SystemExit) as e:
        colorize(results, "--model", "unet", "--input", spec)
    said = {"missing": "no such file or folder", "empty": "a folder with no image file in it or below it",
            "glob": "matches no image file"}[what]  # an empty folder is not called missing
    assert e.value.code == 2 and f"--input {spec}: {said}" in capsys.readouterr().err


def test_unreadable_files_are_skipped_and_counted_and_none_readable_fails(trained, tmp_path, capsys):
    import shutil

    results, photos = trained
    photos = shutil.copytree(photos, tmp_path / "photos")  # the module's photos stay as they are
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    assert colorize(results, "--model", "unet", "--input", photos, "--output", tmp_path / "o") == 0
    assert "skipped 1 unreadable file" in capsys.readouterr().out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"")
    assert colorize(results, "--model", "unet", "--input", bad, "--output", tmp_path / "o2") == 2


def test_k_samples_of_a_stochastic_family_and_a_sheet(trained, tmp_path):
    results, photos = trained
    out = tmp_path / "vae"
    assert colorize(results, "--model", "unetvae", "--input", photos / "holiday", "--num_samples", "3",
                    "--sheet", "--output", out) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"beach_00{i}_sample{k}.png" for i in range(2) for k in (1, 2, 3)]
    a, b = (np.asarray(Image.open(out / f"beach_000_sample{k}.png"), dtype=float) for k in (1, 2))
    assert np.abs(a - b).max() > 0  # the samples differ
    sheet = Image.open(out / "sheets" / "beach_000.png")
    assert sheet.size[0] == 5 * round(70 * 384 / 50)  # grey | 3 samples | original (it had colour)


def test_test_mode_of_other_weights_writes_a_folder_of_its_own(trained, tmp_path, capsys):
    """The summary reads RUN/metrics.json (best.pt); testing last.pt or an epoch writes RUN/test_last/
    and so on, never over it. Test mode's --input follows colorize mode's rules."""
    import json

    results, photos = trained
    data = tmp_path / "data2"
    write_images(data / "test", colour_crops(3, seed=9))
    base = ["--model", "unet", "--mode", "test", "--results", str(results), "--data", str(data), *TINY]
    assert main.main([*base, "--input", str(photos / "old.png")]) == 0
    assert main.main([*base, "--weights", "last", "--input", f"{photos}/holiday/*.png"]) == 0
    best = json.loads((results / "unet" / "metrics.json").read_text())
    last = json.loads((results / "unet" / "test_last" / "metrics.json").read_text())
    assert best["weights"].endswith("best.pt") and last["weights"].endswith("last.pt")
    assert (results / "unet" / "colorized" / "old.png").exists()
    assert sorted(p.name for p in (results / "unet" / "test_last" / "colorized").glob("*.png")) == [
        "beach_000.png", "beach_001.png"]
    with pytest.raises(SystemExit) as e:
        main.main([*base, "--input", str(tmp_path / "nothing")])
    assert e.value.code == 2
