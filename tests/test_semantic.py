"""Semantic interpretability: the classifier learns a trivially separable toy set, and a family's
test mode reports its accuracy on the colorizations."""
import json

import numpy as np
from PIL import Image

import main


def toy_classes(root):
    """Two classes told apart by colour only: red textures and blue textures of equal luminance spread."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for cls, channel in (("red", 0), ("blue", 2)):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                img = np.full((16, 16, 3), 60, np.uint8)
                img[..., channel] = rng.integers(150, 255, (16, 16))
                Image.fromarray(img).save(folder / f"{i:02d}.png")
    unlabelled = root / "train" / "unlabeled"  # as public_data lays out STL-10's unlabeled split: no class
    unlabelled.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(unlabelled / f"{i:02d}.png")


def test_classifier_learns_a_separable_toy_and_families_report_semantic_accuracy(tmp_path, capsys):
    toy_classes(tmp_path / "toy")
    flags = ["--data", str(tmp_path / "toy"), "--results", str(tmp_path / "R"), "--image_size", "16",
             "--wandb", "disabled", "--lpips", "off", "--fid", "off", "--workers", "1"]
    assert main.main(["--mode", "classifier", "--epochs", "8", "--batch_size", "8", "--learning_rate", "3e-3",
                      *flags]) == 0
    report = json.loads((tmp_path / "R" / "classifier" / "classifier.json").read_text())
    assert report["classes"] == ["blue", "red"] and report["n_test"] == 16  # "unlabeled" is not a class
    assert report["accuracy_color"] >= 0.9  # chance is 0.5
    assert main.main(["--model", "gray", "--mode", "test", *flags]) == 0
    m = json.loads((tmp_path / "R" / "gray" / "metrics.json").read_text())
    assert abs(m["semantic_accuracy"] - report["accuracy_grey"]) < 1e-9  # grey colorization = grey input
    # a test at another image size cannot use this classifier: it says so instead of staying silent
    capsys.readouterr()
    other = [f if f != "16" else "24" for f in flags]
    assert main.main(["--model", "gray", "--mode", "test", "--run_name", "gray24", *other]) == 0
    assert "semantic accuracy left out" in capsys.readouterr().out
    assert "semantic_accuracy" not in json.loads((tmp_path / "R" / "gray24" / "metrics.json").read_text())


def test_classifier_without_class_folders_is_skipped(tiny_data, tmp_path, capsys):
    assert main.main(["--mode", "classifier", "--data", str(tiny_data), "--results", str(tmp_path),
                      "--image_size", "16", "--wandb", "disabled"]) == 0
    assert "no class folders" in capsys.readouterr().out
    assert not (tmp_path / "classifier").exists()


def test_the_classifier_trains_and_judges_on_one_thread_whatever_the_callers_count(monkeypatch):
    """Its training and its accuracy run on one thread on the CPU: with two threads the sums of
    a convolution's backward pass are split otherwise and the classifier, and so every run's
    semantic accuracy, moved in the last digits (CIFAR-10's protocol classifier: 0.6200 colour
    accuracy trained on two threads, 0.6213 on one). The caller's thread count is given back."""
    import torch

    from runs import semantic

    seen = []

    class Watched(semantic.SmallClassifier):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return super().forward(x)

    monkeypatch.setattr(semantic, "SmallClassifier", Watched)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 4, (32,), generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        model = semantic.train_classifier(images, labels, 4, epochs=1, batch_size=16, lr=3e-3, device="cpu",
                                          log=lambda *a: None)
        assert torch.get_num_threads() == 2
        semantic.accuracy(model, images, labels, "cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}
