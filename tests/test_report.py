"""The report reads each run's structured outputs (test_samples.pt), not pixels cut out of a picture;
it ranks only comparable runs; its HTML page renders in a browser."""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import report
from util.files import save_atomic
from util.run_folder import RunFolder


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


def test_compare_image_puts_the_baseline_first_shows_samples_and_names_a_repeated_row_once(tmp_path):
    """gray's row comes first whatever the order; a run tested with --num_samples shows samples 2
    and 3 below its first; a run tested again on the same checkpoint (the same pictures) is named
    on that row instead of repeating it."""
    paths = ["x.png", "y.png"]
    runs = {}
    for name, model, colour in (("a_unet", "unet", 10), ("mdn", "cvae_mdn", 60), ("mdn_k8", "cvae_mdn", 60),
                                ("z_gray", "gray", 120)):
        runs[name] = fake_run(tmp_path, name, 16, paths, colour)
        (runs[name] / "metrics.json").write_text(json.dumps({"model": model}))
    saved = torch.load(RunFolder(runs["mdn_k8"]).test_samples)
    saved["samples"] = torch.stack([torch.full_like(saved["pred"], 160), torch.full_like(saved["pred"], 220)])
    save_atomic(saved, RunFolder(runs["mdn_k8"]).test_samples)
    out = report.compare_image(list(runs.values()), tmp_path / "compare.png", cell=20)
    img = Image.open(out).convert("RGB")
    # grey input, z_gray, a_unet, mdn (= mdn_k8), mdn_k8 sample 2, mdn_k8 sample 3, ground truth
    assert img.size == (150 + 2 * 22, 7 * 22)
    assert [img.getpixel((150 + 10, r * 22 + 10))[0] for r in range(1, 7)] == [120, 10, 60, 160, 220, 200]
    label = np.asarray(img.crop((0, 3 * 22, 150, 4 * 22)).convert("L")) < 128
    rows_with_ink = np.flatnonzero(label.any(axis=1))
    assert rows_with_ink.max() - rows_with_ink.min() > 12  # two lines of text: "mdn" and "= mdn_k8"


def test_runs_without_a_common_test_image_get_no_compare_image(tmp_path, capsys):
    a = fake_run(tmp_path, "a", 16, ["x.png"], 10)
    b = fake_run(tmp_path, "b", 16, ["other.png"], 10)
    assert report.compare_image([a, b], tmp_path / "compare.png") is None
    assert "share no test image" in capsys.readouterr().out


def run_with_test_outputs(root, name, colour, size=16, epochs=3, model="unet", data="/d/cifar10", delta_e=9.0,
                          fid=50.0):
    """A run folder as test mode leaves it: metrics.json, per_image.csv and test_samples.pt (4 images)."""
    paths = [f"test/cat/{i}.png" for i in range(4)]
    run_dir = fake_run(root, name, size, paths, 0)
    pred = torch.zeros(4, 3, size, size, dtype=torch.uint8)
    pred[:, 0], pred[:, 1], pred[:, 2] = colour
    truth = torch.zeros_like(pred)
    truth[:, 0], truth[:, 1], truth[:, 2] = 30, 200, 60
    save_atomic({"paths": paths, "pred": pred, "truth": truth}, RunFolder(run_dir).test_samples)
    metrics = {"model": model, "run": name, "weights": "none" if model == "gray" else f"{run_dir}/best.pt",
               "epoch": 0 if model == "gray" else epochs, "data": data, "test_images": "every image of test",
               "test_set": "abc", "image_size": size, "n_images": 4, "delta_e": delta_e, "ssim": 0.9, "psnr": 25.0,
               "lpips": None, "fid": fid, "kid": fid / 1000, "fid_images": 4, "colorfulness": 20.0,
               "colorfulness_gt": 30.0, "auc": 0.9, "auc_rebalanced": 0.6}
    RunFolder(run_dir).metrics.write_text(json.dumps(metrics))
    RunFolder(run_dir).per_image.write_text("image,delta_e,ssim,colorfulness,colorfulness_gt\n" + "".join(
        f"{p},{delta_e + (-0.5 if i % 2 == 0 else 0.5):.5f},0.9,20.0,30.0\n" for i, p in enumerate(paths)))
    return run_dir


def test_summary_of_a_folder_without_tested_runs_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    """As after a script.sh batch whose every run failed: a message, not a stack trace. (report.py's
    command line run in this process, as `python report.py` runs it.)"""
    import runpy

    def command_line(*argv):
        monkeypatch.setattr("sys.argv", ["report.py", *argv])
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(report.__file__, run_name="__main__")
        return stop.value.code

    (tmp_path / "logs").mkdir()
    code = command_line("summary", str(tmp_path))  # a message for sys.exit: printed on stderr, exit 1
    assert isinstance(code, str) and code.startswith("error: no */metrics.json under")
    for asked in ("--help", "-h"):  # asked for help: the usage on stdout, exit 0
        assert command_line(asked) == 0
        assert capsys.readouterr().out.startswith("usage: python report.py summary RESULTS_DIR")


def test_only_comparable_runs_are_ranked_together(tmp_path):
    """Runs tested on other images (another size, another data set) or trained for another number of
    epochs are set apart, unranked, with what differs; the grey baseline (nothing trained) joins
    the comparison; --mixed ranks everything and says so."""
    run_with_test_outputs(tmp_path, "unet", (200, 40, 40), delta_e=9.0)
    run_with_test_outputs(tmp_path, "colorful", (40, 200, 40), model="colorful", delta_e=9.5, fid=20.0)
    run_with_test_outputs(tmp_path, "gray", (128, 128, 128), model="gray", delta_e=10.5, fid=90.0)
    run_with_test_outputs(tmp_path, "unet_64px", (10, 10, 10), size=64, delta_e=5.0)  # better figures, other images
    run_with_test_outputs(tmp_path, "unet_long", (10, 10, 10), epochs=30, delta_e=4.0, fid=5.0)
    run_with_test_outputs(tmp_path, "unet_demo", (10, 10, 10), data="/d/Dataset", delta_e=3.0)
    # a 3-epoch run whose best.pt came from epoch 2 had the same budget: ranked with the others
    early = run_with_test_outputs(tmp_path, "resnet", (90, 90, 90), model="resnet", delta_e=9.8)
    m = json.loads(RunFolder(early).metrics.read_text())
    RunFolder(early).metrics.write_text(json.dumps({**m, "epoch": 2, "epochs": 3}))
    md = report.write_summary(tmp_path).read_text()
    assert "| resnet | resnet | cifar10 | 16 | 3 |" in md.split("## Set apart")[0]
    ranked, apart = md.split("## Set apart")
    assert "| unet | unet | cifar10 | 16 | 3 |" in ranked and "| gray | gray | cifar10 | 16 | - |" in ranked
    assert "**9.00" in ranked and "**20.00**" in ranked  # best delta E (unet) and FID (colorful) of the three
    for name, why in (("unet_64px", "image size"), ("unet_long", "epochs (30, not 3)"), ("unet_demo", "data")):
        row = next(line for line in apart.splitlines() if line.startswith(f"| {name} |"))
        assert why in row and "**" not in row
        assert f"| {name} |" not in ranked
    with open(tmp_path / "summary.csv") as f:
        lines = f.read().splitlines()
        column = lines[0].split(",").index("comparable")
        comparable = {line.split(",")[0]: line.split(",")[column] for line in lines[1:]}
    assert comparable == {"colorful": "True", "gray": "True", "unet": "True", "resnet": "True", "unet_64px": "False",
                          "unet_demo": "False", "unet_long": "False"}
    mixed = report.write_summary(tmp_path, mixed=True).read_text()
    assert "Set apart" not in mixed and "Mixed:" in mixed and "**3.00" in mixed


def test_runs_trained_on_other_data_or_fewer_images_are_set_apart_and_the_groups_say_on_what(tmp_path):
    """metrics.json records the training data, its size, --max_images and the seed; the report
    ranks only runs trained alike, says which data, size and seeds the ranked group used, and
    reads older metrics.json files' training data from the run's split.json."""
    def trained(run_dir, data="/d/cifar10", n=10000, seed=0):
        m = json.loads(RunFolder(run_dir).metrics.read_text())
        RunFolder(run_dir).metrics.write_text(json.dumps({**m, "train_data": data, "train_images": n,
                                                          "max_images": n, "seed": seed}))

    trained(run_with_test_outputs(tmp_path, "unet", (200, 40, 40), delta_e=9.0))
    trained(run_with_test_outputs(tmp_path, "resnet", (40, 200, 40), model="resnet", delta_e=9.5), seed=1)
    run_with_test_outputs(tmp_path, "gray", (128, 128, 128), model="gray", delta_e=10.5)
    trained(run_with_test_outputs(tmp_path, "unet_1k", (10, 10, 10), delta_e=5.0), n=1000)
    trained(run_with_test_outputs(tmp_path, "unet_other", (10, 10, 10), delta_e=4.0), data="/d/Dataset")
    old = run_with_test_outputs(tmp_path, "unet_old", (10, 10, 10), delta_e=8.0)  # no record: its split.json
    RunFolder(old).split.write_text(json.dumps({"root": "/d/cifar10", "seed": 0, "max_images": 10000,
                                                "train": [f"x{i}.png" for i in range(10000)], "val": [], "test": []}))
    md = report.write_summary(tmp_path).read_text()
    ranked, apart = md.split("## Set apart")
    assert "trained 3 epoch(s) on 10000 images of /d/cifar10 (seeds 0, 1)" in ranked
    assert "| unet | unet | cifar10 | 16 | 3 | cifar10 x 10000, seed 0 |" in ranked
    assert "| gray |" in ranked and "| unet_old |" in ranked and "**8.00" in ranked
    for name, why in (("unet_1k", "training images (1000, not 10000)"), ("unet_other", "training data (Dataset, not "
                                                                                      "cifar10)")):
        row = next(line for line in apart.splitlines() if line.startswith(f"| {name} |"))
        assert why in row and "**" not in row


def test_test_mode_records_what_the_weights_were_trained_on(tiny_data, tmp_path):
    import conftest

    import main

    flags = [*conftest.TINY, "--model", "unet", "--data", str(tiny_data), "--results", str(tmp_path),
             "--max_images", "6", "--seed", "3"]
    assert main.main([*flags, "--epochs", "1"]) == 0
    assert main.main([*flags, "--mode", "test", "--input", ""]) == 0
    m = json.loads((tmp_path / "unet" / "metrics.json").read_text())
    assert m["train_data"] == str(Path(tiny_data).resolve()) and m["train_images"] == 6
    assert m["max_images"] == 6 and m["seed"] == 3


def test_a_run_without_fid_ranks_with_fid_runs_on_the_other_metrics(tmp_path):
    """--fid off leaves a run's FID empty, not incomparable: it is ranked with the runs that
    measured FID on everything else; FID measured on another number of images sets a run apart."""
    def edit(run_dir, **changes):
        m = json.loads(RunFolder(run_dir).metrics.read_text())
        RunFolder(run_dir).metrics.write_text(json.dumps({**m, **changes}))

    run_with_test_outputs(tmp_path, "unet", (200, 40, 40), delta_e=9.0, fid=30.0)
    run_with_test_outputs(tmp_path, "resnet", (40, 200, 40), model="resnet", delta_e=9.5, fid=20.0)
    edit(run_with_test_outputs(tmp_path, "unet_nofid", (10, 10, 10), delta_e=8.0), fid=None, kid=None,
         fid_images=0)
    edit(run_with_test_outputs(tmp_path, "unet_fid2", (10, 10, 10), delta_e=7.0, fid=10.0), fid_images=2)
    edit(run_with_test_outputs(tmp_path, "unet_torchvision", (10, 10, 10), delta_e=7.0, fid=10.0),
         fid_weights="torchvision")
    ranked, apart = report.write_summary(tmp_path).read_text().split("## Set apart")
    assert "| unet_nofid |" in ranked and "**8.00" in ranked and "**20.00**" in ranked
    row = next(line for line in apart.splitlines() if line.startswith("| unet_fid2 |"))
    assert "FID images (2, not 4)" in row
    row = next(line for line in apart.splitlines() if line.startswith("| unet_torchvision |"))
    assert "FID weights (torchvision, not None)" in row


def test_a_set_apart_guided_run_keeps_its_hint_curve_marked_not_comparable(tmp_path):
    """A curve over hint counts compares a run with itself, so a guided run that is set apart (here
    trained longer) still gets its row in the hint table and a line in hints.png, labelled as not
    comparable; a ranked guided run is listed plainly."""
    def curve(run_dir, base):
        m = json.loads(RunFolder(run_dir).metrics.read_text())
        m["hints"] = [{"count": n, "delta_e": base - n / 10, "psnr": 25.0 + n / 10, "fid": None} for n in (0, 1, 10)]
        RunFolder(run_dir).metrics.write_text(json.dumps(m))

    run_with_test_outputs(tmp_path, "unet", (200, 40, 40))
    run_with_test_outputs(tmp_path, "resnet", (200, 40, 40), model="resnet")
    curve(run_with_test_outputs(tmp_path, "guided", (200, 40, 40)), 9.0)
    curve(run_with_test_outputs(tmp_path, "guided_long", (200, 40, 40), epochs=30), 8.0)
    md = report.write_summary(tmp_path).read_text()
    hints_part = md.split("## Colour hints")[1]
    assert "| guided | 9.00 / 25.00 | 8.90 / 25.10 | 8.00 / 26.00 |" in hints_part
    assert "| guided_long (set apart, not comparable) | 8.00 / 25.00 | 7.90 / 25.10 | 7.00 / 26.00 |" in hints_part
    # the hints pasted into grey with no model: a row of the table, a line of the chart, and each run's gain
    m = json.loads(RunFolder(tmp_path / "guided").metrics.read_text())
    m["hints_paste"] = [{"count": n, "delta_e": 10.0 - n / 20, "psnr": 24.0 + n / 20} for n in (0, 1, 10)]
    RunFolder(tmp_path / "guided").metrics.write_text(json.dumps(m))
    hints_part = report.write_summary(tmp_path).read_text().split("## Colour hints")[1]
    assert "| the hints pasted into grey, no model | 10.00 / 24.00 | 9.95 / 24.05 | 9.50 / 24.50 |" in hints_part
    gains = hints_part.split("What the model adds above pasting the hints")[1]
    assert "| guided | +1.00 | +1.05 | +1.50 |" in gains and "guided_long" not in gains  # its own paste row: none
    assert (tmp_path / "hints.png").is_file()
    # with only the set-apart run guided, the curve is still drawn; with none, an old chart is removed
    shutil.rmtree(tmp_path / "guided")
    assert "guided_long (set apart" in report.write_summary(tmp_path).read_text()
    assert (tmp_path / "hints.png").is_file()
    shutil.rmtree(tmp_path / "guided_long")
    assert "Colour hints" not in report.write_summary(tmp_path).read_text()
    assert not (tmp_path / "hints.png").exists()


def test_the_page_shows_a_stochastic_runs_samples_beside_its_first_colorization(tmp_path):
    run_with_test_outputs(tmp_path, "unet", (230, 20, 20))
    k8 = run_with_test_outputs(tmp_path, "cvae_mdn_k8", (20, 20, 230), model="cvae_mdn")
    saved = torch.load(RunFolder(k8).test_samples)
    saved["samples"] = torch.stack([torch.full_like(saved["pred"], 90), torch.full_like(saved["pred"], 150)])
    save_atomic(saved, RunFolder(k8).test_samples)
    report.write_summary(tmp_path)
    page = (tmp_path / "index.html").read_text()
    assert "<th>cvae_mdn_k8 sample 2</th><th>cvae_mdn_k8 sample 3</th>" in page
    third = np.asarray(Image.open(next((tmp_path / "index_files").glob("0_run*_sample3.png"))))
    assert (third == 150).all()


def test_index_page_renders_the_table_and_every_runs_images_in_chromium(tmp_path):
    """Results/index.html, opened by headless Chromium: the screenshot shows the table (dark text
    on the white page) and each run's colorizations (their pure colours); without its image files
    the same page shows none of those colours: the check can fail."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium here (.ci/run installs the Debian package)")
    run_with_test_outputs(tmp_path, "unet", (230, 20, 20))
    run_with_test_outputs(tmp_path, "colorful", (20, 20, 230), model="colorful")
    report.write_summary(tmp_path)
    page = (tmp_path / "index.html").read_text()
    assert "<th>unet</th>" in page and "<th>colorful</th>" in page and "&Delta;E 8.50" in page

    def screenshot(name):
        shot = tmp_path / name
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1400,1400", f"--screenshot={shot}", (tmp_path / "index.html").as_uri()],
                       capture_output=True, timeout=120, check=True)
        img = torch.from_numpy(np.array(Image.open(shot).convert("RGB"))).int()
        r, g, b = img.unbind(-1)
        return {"red": int(((r > 200) & (g < 60) & (b < 60)).sum()),
                "blue": int(((b > 200) & (r < 60) & (g < 60)).sum()),
                "truth": int(((g > 170) & (r < 60) & (b < 90)).sum()), "text": int((img.sum(-1) < 150).sum())}

    seen = screenshot("shot.png")
    cell = 128 * 128  # each colorization is shown 128 px wide: four images per run
    assert seen["red"] > 3 * cell and seen["blue"] > 3 * cell and seen["truth"] > 3 * cell, seen
    assert seen["text"] > 2000, seen  # table headers, cells and captions
    shutil.rmtree(tmp_path / "index_files")
    gone = screenshot("broken.png")
    assert gone["red"] < cell and gone["blue"] < cell and gone["text"] > 2000, gone


def test_a_copied_test_folder_that_holds_training_images_is_flagged_and_set_apart(tiny_data, tmp_path, capsys):
    """The run keeps content hashes of its training and validation files; a test folder elsewhere
    whose files are among them (a copy of the data folder) is flagged in the output and in
    metrics.json, and the report sets the run apart. Its own test split is not flagged."""
    import conftest

    import main

    flags = [*conftest.TINY, "--model", "unet", "--results", str(tmp_path / "R")]
    assert main.main([*flags, "--data", str(tiny_data), "--epochs", "1"]) == 0
    assert main.main([*flags, "--data", str(tiny_data), "--mode", "test", "--input", ""]) == 0
    assert "seen_in_training" not in json.loads((tmp_path / "R" / "unet" / "metrics.json").read_text())
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data / "train", copy)  # another path, the same pictures: not a held-out set
    capsys.readouterr()
    assert main.main([*flags, "--data", str(copy), "--mode", "test", "--input", "", "--run_name", "leak",
                      "--weights", str(tmp_path / "R" / "unet" / "best.pt")]) == 0
    out = capsys.readouterr().out
    assert "WARNING: 10 of 10 test images are files this run trained on (9) or validated on (1)" in out
    seen = json.loads((tmp_path / "R" / "leak" / "metrics.json").read_text())["seen_in_training"]
    assert seen == {"train": 9, "val": 1, "of": 10}
    row = next(line for line in report.write_summary(tmp_path / "R").read_text().split("## Set apart")[1].splitlines()
               if line.startswith("| leak |"))
    assert "test images seen in training (10 of 10)" in row


def test_the_hint_chart_labels_the_counts_tested_and_the_page_title_is_not_results_twice(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: drawn.append(self))
    curve = [{"count": n, "delta_e": 9 - n / 10, "psnr": 25 + n / 10} for n in (0, 1, 10, 50)]
    rows = [{"run": "guided", "hints": curve}]
    report.plot_hints(rows, tmp_path / "hints.png")
    labels = [t.get_text() for t in drawn[0].axes[0].get_xticklabels()]
    assert labels == ["0", "1", "10", "50"]
    results = tmp_path / "Results"
    run_with_test_outputs(results, "unet", (200, 40, 40))
    report.write_summary(results)
    page = (results / "index.html").read_text()
    assert "<title>Colorization results</title>" in page and "Results: Results" not in page
