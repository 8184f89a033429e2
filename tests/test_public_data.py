"""Named public data sets, on small fake copies in each downloader's own on-disk format (CIFAR's
pickled batches, STL-10's binaries, Flowers-102's JPEG folder and .mat files, LFW's folders and
people lists, Food-101's JSON split, Places365's file lists, COCO's folders), with
torchvision's checksums set to those of the fakes: no network is touched."""
import dataclasses
import hashlib
import json
import pickle
import urllib.error
from pathlib import Path

import conftest
import numpy as np
import pytest
import torchvision.datasets as tvd
from PIL import Image

import colorize_data as cd
import main
import public_data
from util.images import find_images

RNG = np.random.default_rng(0)
TINY = [*conftest.TINY, "--epochs", "1", "--unet_channels", "8", "--unet_depth", "2", "--input", ""]


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def fake_cifar10(root, monkeypatch, n_train=(6, 6, 6, 6, 6), n_test=8):
    folder = root / "cifar10" / "download" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)]
    for name, n in zip(names + ["test_batch"], list(n_train) + [n_test]):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": RNG.integers(0, 255, (n, 3072), dtype=np.uint8),
                         "labels": [i % 3 for i in range(n)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird"]}, f)
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[n, md5(folder / n)] for n in names])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                              "md5": md5(folder / "batches.meta")})


def fake_stl10(root, monkeypatch, n_train=5, n_test=4, n_unlabeled=7):
    folder = root / "stl10-unlabeled" / "download" / "stl10_binary"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        RNG.integers(0, 255, (n, 3, 96, 96), dtype=np.uint8).tofile(folder / f"{name}_X.bin")
        if name != "unlabeled":
            (np.arange(n) % 2 + 1).astype(np.uint8).tofile(folder / f"{name}_y.bin")  # labels are 1-based
    (folder / "class_names.txt").write_text("airplane\nbird\n")
    monkeypatch.setattr(tvd.STL10, "train_list", [[f, md5(folder / f)] for f in ("train_X.bin", "train_y.bin",
                                                                                  "unlabeled_X.bin")])
    monkeypatch.setattr(tvd.STL10, "test_list", [[f, md5(folder / f)] for f in ("test_X.bin", "test_y.bin")])


def fake_flowers(root, monkeypatch):
    from scipy.io import savemat

    folder = root / "flowers102" / "download" / "flowers-102"
    (folder / "jpg").mkdir(parents=True)
    for i in range(1, 11):
        Image.fromarray(RNG.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / "jpg" / f"image_{i:05d}.jpg")
    savemat(folder / "imagelabels.mat", {"labels": np.array([1, 2] * 5)})
    savemat(folder / "setid.mat", {"trnid": np.array([1, 2, 3]), "valid": np.array([4, 5]),
                                   "tstid": np.array([6, 7, 8, 9, 10])})
    monkeypatch.setattr(tvd.Flowers102, "_file_dict", {
        "image": ("102flowers.tgz", "unused"), "label": ("imagelabels.mat", md5(folder / "imagelabels.mat")),
        "setid": ("setid.mat", md5(folder / "setid.mat"))})


def fake_cifar100(root, monkeypatch, n_train=9, n_test=4):
    folder = root / "cifar100" / "download" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": RNG.integers(0, 255, (n, 3072), dtype=np.uint8),
                         "fine_labels": [i % 3 for i in range(n)]}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": ["apple", "aquarium_fish", "baby"]}, f)
    monkeypatch.setattr(tvd.CIFAR100, "train_list", [["train", md5(folder / "train")]])
    monkeypatch.setattr(tvd.CIFAR100, "test_list", [["test", md5(folder / "test")]])
    monkeypatch.setattr(tvd.CIFAR100, "meta", {"filename": "meta", "key": "fine_label_names",
                                               "md5": md5(folder / "meta")})


def fake_lfw(root, monkeypatch, people=(("Ann_A", 2), ("Bob_B", 1), ("Cy_C", 3))):
    """LFW as its files are published (the archive, unpacked beside it, and the people lists)."""
    folder = root / "lfw" / "download" / "lfw-py"
    for name, n in people:
        (folder / "lfw_funneled" / name).mkdir(parents=True)
        for k in range(1, n + 1):
            Image.fromarray(RNG.integers(0, 255, (25, 25, 3), dtype=np.uint8)).save(
                folder / "lfw_funneled" / name / f"{name}_{k:04d}.jpg")
    (folder / "lfw-funneled.tgz").write_bytes(b"the archive")
    (folder / "peopleDevTrain.txt").write_text("2\n" + "".join(f"{a}\t{n}\n" for a, n in people[:2]))
    (folder / "peopleDevTest.txt").write_text("1\n" + "".join(f"{a}\t{n}\n" for a, n in people[2:]))
    (folder / "lfw-names.txt").write_text("".join(f"{a}\t{n}\n" for a, n in people))
    monkeypatch.setattr(tvd.LFWPeople, "file_dict", {"funneled": ("lfw_funneled", "lfw-funneled.tgz",
                                                                  md5(folder / "lfw-funneled.tgz"))})
    monkeypatch.setattr(tvd.LFWPeople, "checksums", {f: md5(folder / f) for f in (
        "peopleDevTrain.txt", "peopleDevTest.txt", "lfw-names.txt")})


def fake_food101(root):
    folder = root / "food101" / "download" / "food-101"
    split = {"train": {"pizza": ["pizza/1", "pizza/2"], "sushi": ["sushi/3"]}, "test": {"pizza": ["pizza/4"],
                                                                                   "sushi": ["sushi/5", "sushi/6"]}}
    (folder / "meta").mkdir(parents=True)
    for name, classes in split.items():
        (folder / "meta" / f"{name}.json").write_text(json.dumps(classes))
        for files in classes.values():
            for f in files:
                (folder / "images" / f).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(RNG.integers(0, 255, (30, 20, 3), dtype=np.uint8)).save(folder / "images" / f"{f}.jpg")


def fake_places365(root, monkeypatch):
    """Places365 (small images) as its devkit lays it out: categories, file lists, image folders."""
    folder = root / "places365" / "download"
    (folder / "categories_places365.txt").parent.mkdir(parents=True)
    (folder / "categories_places365.txt").write_text("/a/abbey 0\n/b/beach/sunny 1\n")
    train = [("/a/abbey/00000001.jpg", 0), ("/b/beach/sunny/00000001.jpg", 1), ("/b/beach/sunny/00000002.jpg", 1)]
    (folder / "places365_train_standard.txt").write_text("".join(f"{f} {c}\n" for f, c in train))
    (folder / "places365_val.txt").write_text("Places365_val_00000001.jpg 1\nPlaces365_val_00000002.jpg 0\n")
    files = [folder / "data_256_standard" / f.lstrip("/") for f, _ in train]
    files += [folder / "val_256" / f"Places365_val_0000000{i}.jpg" for i in (1, 2)]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(RNG.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(f)
    monkeypatch.setattr(tvd.Places365, "_CATEGORIES_META", ("categories_places365.txt",
                                                            md5(folder / "categories_places365.txt")))
    monkeypatch.setattr(tvd.Places365, "_FILE_LIST_META", {s: (f, md5(folder / f)) for s, f in (
        ("train-standard", "places365_train_standard.txt"), ("val", "places365_val.txt"))})


def laid_out(folder, classes: list[str], n_train: int, n_test: int) -> bool:
    """A prepared set's train/ has these class folders, and train/ and test/ these many images."""
    return (sorted(p.name for p in (folder / "train").iterdir()) == classes
            and len(find_images(folder / "train")) == n_train and len(find_images(folder / "test")) == n_test)


def no_network(monkeypatch):
    def refuse(*a, **k):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


def test_cifar10_keeps_official_splits_and_labels_builds_once_and_trains(tmp_path, monkeypatch, capsys):
    no_network(monkeypatch)
    fake_cifar10(tmp_path, monkeypatch)
    folder = public_data.prepare("cifar10", str(tmp_path))
    assert laid_out(folder, ["airplane", "automobile", "bird"], 30, 8)
    assert json.loads((folder / ".complete").read_text())["images"] == {"train": 30, "test": 8}
    stamp = (folder / ".complete").stat().st_mtime_ns
    assert public_data.prepare("cifar10", str(tmp_path)) == folder  # built once: not again
    assert (folder / ".complete").stat().st_mtime_ns == stamp
    # a run by name: the official test split is the held-out test, validation is carved from train
    results = tmp_path / "R"
    assert main.main(["--data", "cifar10", "--data_root", str(tmp_path), "--results", str(results), *TINY]) == 0
    split = json.loads((results / "unet" / "split.json").read_text())
    assert len(split["test"]) == 8 and len(split["train"]) + len(split["val"]) == 30
    assert all(p.startswith("train/") for p in split["train"] + split["val"])
    assert main.main(["--data", "cifar10", "--data_root", str(tmp_path), "--results", str(results), "--mode", "test",
                      *TINY]) == 0
    assert json.loads((results / "unet" / "metrics.json").read_text())["n_images"] == 8


def test_max_images_is_a_seeded_subset_of_train_and_streaming_reads_a_named_set(tmp_path, monkeypatch):
    no_network(monkeypatch)
    fake_cifar10(tmp_path, monkeypatch)
    results = tmp_path / "R"
    base = ["--data", "cifar10", "--data_root", str(tmp_path), "--results", str(results), *TINY]
    assert main.main([*base, "--max_images", "10", "--run_name", "a", "--data_cache", "stream"]) == 0
    assert main.main([*base, "--max_images", "10", "--run_name", "b"]) == 0
    assert main.main([*base, "--max_images", "10", "--run_name", "c", "--seed", "1"]) == 0
    a, b, c = (json.loads((results / n / "split.json").read_text()) for n in "abc")
    assert len(a["train"]) == 10 and a["train"] == b["train"] and a["train"] != c["train"]
    assert len(a["test"]) == 8 and a["max_images"] == 10


def test_cifar10_bench_keeps_the_first_images_of_each_class_from_cifar10s_download(tmp_path, monkeypatch):
    """The benchmark's selection: the first N of each class in the official order, named by place in
    the class as the JPEG copy under ../shared/data is, from the download cifar10 already holds."""
    no_network(monkeypatch)
    fake_cifar10(tmp_path, monkeypatch)  # labels 0,1,2,0,1,2,... in each batch
    small = dataclasses.replace(public_data.SETS["cifar10-bench"], first={"train": 4, "test": 2})
    monkeypatch.setitem(public_data.SETS, "cifar10-bench", small)
    folder = public_data.prepare("cifar10-bench", str(tmp_path))
    assert not (tmp_path / "cifar10-bench" / "download").exists()  # cifar10's download, shared
    for split, n in (("train", 4), ("test", 2)):
        for name in ["airplane", "automobile", "bird"]:
            files = sorted(p.name for p in (folder / split / name).iterdir())
            assert files == [f"{k:04d}.png" for k in range(n)]
    # the images are the first of their class: the fake's first batch holds airplane at 0, 3, 6, 9
    batch = tvd.CIFAR10(str(tmp_path / "cifar10" / "download"), train=True)
    for k, i in enumerate((0, 3, 6, 9)):
        assert np.array_equal(np.asarray(Image.open(folder / "train" / "airplane" / f"{k:04d}.png")),
                              np.asarray(batch[i][0]))


@pytest.mark.skipif(not (conftest.SHARED / "cifar10").is_dir(), reason="needs ../shared/data/cifar10")
def test_cifar10_bench_with_max_images_picks_the_images_the_benchmark_was_measured_on(tmp_path, monkeypatch):
    """make_split sees only the sorted relative paths: the same names (.png for .jpg) give the same picks."""
    shared_root = conftest.SHARED / "cifar10"
    shared = cd.make_split(shared_root, seed=0, max_images=10000)
    listed = {}  # folder -> its files, as find_images gives them, renamed to what cifar10-bench writes
    for folder in ("train", "test"):
        (tmp_path / folder).mkdir()
        listed[tmp_path / folder] = [tmp_path / p.relative_to(shared_root).with_suffix(".png")
                                     for p in find_images(shared_root / folder)]
    monkeypatch.setattr(cd, "find_images", lambda folder: listed[Path(folder)])
    ours = cd.make_split(tmp_path, seed=0, max_images=10000)
    for split in ("train", "val", "test"):
        assert [str(Path(p).with_suffix(".jpg")) for p in ours[split]] == shared[split]
    assert (len(ours["train"]), len(ours["val"]), len(ours["test"])) == (10000, 1000, 3000)


def test_stl10_with_its_unlabeled_split_and_flowers_train_plus_val(tmp_path, monkeypatch):
    no_network(monkeypatch)
    fake_stl10(tmp_path, monkeypatch)
    folder = public_data.prepare("stl10-unlabeled", str(tmp_path))
    assert sorted(p.name for p in (folder / "train").iterdir()) == ["airplane", "bird", "unlabeled"]
    assert len(find_images(folder / "train" / "unlabeled")) == 7 and len(find_images(folder / "test")) == 4
    first = np.fromfile(tmp_path / "stl10-unlabeled" / "download" / "stl10_binary" / "train_X.bin", dtype=np.uint8)
    png = np.asarray(Image.open(folder / "train" / "airplane" / "0000000.png"))  # image 0: label 1, the first class
    assert png.shape == (96, 96, 3) and (png.transpose(2, 1, 0).ravel() == first[:3 * 96 * 96]).all()
    fake_flowers(tmp_path, monkeypatch)
    flowers = public_data.prepare("flowers102", str(tmp_path))
    assert len(find_images(flowers / "train")) == 5 and len(find_images(flowers / "test")) == 5
    linked = find_images(flowers / "train")[0]
    assert linked.is_symlink() and linked.resolve().parent.name == "jpg"  # linked, not copied


def test_cifar100_lfw_food101_and_places365_from_their_published_files(tmp_path, monkeypatch):
    no_network(monkeypatch)
    fake_cifar100(tmp_path, monkeypatch)
    assert laid_out(public_data.prepare("cifar100", str(tmp_path)), ["apple", "aquarium_fish", "baby"], 9, 4)
    # LFW: torchvision no longer downloads it, so without its files the message says what to put where
    with pytest.raises(public_data.DataUnavailable) as e:
        public_data.prepare("lfw", str(tmp_path))
    for words in ("no longer downloads", "lfw-py/lfw-funneled.tgz", "lfw-py/peopleDevTrain.txt",
                  str(tmp_path / "lfw" / "download")):
        assert words in str(e.value), words
    fake_lfw(tmp_path, monkeypatch)
    faces = public_data.prepare("lfw", str(tmp_path))                # the people train/test split, one folder each
    assert sorted(p.name for p in (faces / "train").iterdir()) == ["Ann_A", "Bob_B"]
    assert len(find_images(faces / "train")) == 3 and len(find_images(faces / "test" / "Cy_C")) == 3
    fake_food101(tmp_path)
    food = public_data.prepare("food101", str(tmp_path))
    assert len(find_images(food / "train" / "pizza")) == 2 and len(find_images(food / "test" / "sushi")) == 2
    assert find_images(food / "test")[0].is_symlink()
    fake_places365(tmp_path, monkeypatch)
    places = public_data.prepare("places365", str(tmp_path))      # val is the test split
    assert laid_out(places, ["a_abbey", "b_beach_sunny"], 3, 2)


def test_coco_from_the_users_folders_and_imagenet_needs_its_archives(tmp_path, monkeypatch):
    download = tmp_path / "coco" / "download"
    for split, n in (("train2017", 4), ("val2017", 3)):
        (download / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(RNG.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(download / split / f"{i:012d}.jpg")
    folder = public_data.prepare("coco", str(tmp_path))
    assert len(find_images(folder / "train")) == 4 and len(find_images(folder / "test")) == 3
    with pytest.raises(public_data.DataUnavailable, match="ILSVRC2012_img_train.tar"):
        public_data.prepare("imagenet", str(tmp_path))


def test_offline_is_one_clear_paragraph_and_leaves_no_half_written_set(tmp_path, monkeypatch, capsys):
    """On this machine (no network): --data cifar10 names the set, the file, where to put it and
    the URL, exits 2 without a traceback, and leaves no images/ folder that could pass for done."""
    no_network(monkeypatch)
    code = main.main(["--data", "cifar10", "--data_root", str(tmp_path), "--results", str(tmp_path / "R"), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    for words in ("--data cifar10", "cifar-10-python.tar.gz", str(tmp_path / "cifar10" / "download"),
                  "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"):
        assert words in err, words
    assert not (tmp_path / "cifar10" / "images").exists()
    # an unknown name lists the known ones; an existing folder of that name wins over the name
    with pytest.raises(SystemExit):
        main.main(["--data", "cifar11", *TINY])
    assert "cifar10, cifar10-bench, cifar100, stl10" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    cd.build_demo_dataset(tmp_path / "cifar10", tmp_path / "none", seed=0)
    assert not public_data.is_name("cifar10")
