"""The report reads each run's structured outputs (test_samples.pt), not pixels cut out of a picture."""
import torch
from PIL import Image

import report
from trainers.checkpoint import save_atomic
from trainers.run_folder import RunFolder


def fake_run(root, name, size, paths, colour):
    run = RunFolder(root / name)
    run.path.mkdir(parents=True)
    n = len(paths)
    pred = torch.full((n, 3, size, size), colour, dtype=torch.uint8)
    save_atomic({"paths": paths, "pred": pred, "truth": torch.full_like(pred, 200)}, run.test_samples)
    return run.path


def test_compare_image_lines_up_the_same_images_of_runs_of_different_sizes(tmp_path):
    a = fake_run(tmp_path, "a", 16, ["x.png", "y.png", "z.png"], 10)
    b = fake_run(tmp_path, "b", 32, ["z.png", "x.png"], 250)  # another size, another order, one image fewer
    out = report.compare_image([a, b], tmp_path / "compare.png", cell=20)
    img = Image.open(out).convert("RGB")
    assert img.size == (150 + 2 * 22, 4 * 22)  # two common images; grey, a, b, truth
    # row a is dark and row b bright in both columns: each run's own colorization of the same image
    for col in range(2):
        x = 150 + col * 22 + 10
        assert img.getpixel((x, 22 + 10))[0] < 30 and img.getpixel((x, 2 * 22 + 10))[0] > 220


def test_runs_without_a_common_test_image_get_no_compare_image(tmp_path, capsys):
    a = fake_run(tmp_path, "a", 16, ["x.png"], 10)
    b = fake_run(tmp_path, "b", 16, ["other.png"], 10)
    assert report.compare_image([a, b], tmp_path / "compare.png") is None
    assert "share no test image" in capsys.readouterr().out
