"""Public data sets by name: `--data cifar10` (an existing path of that name always wins).

torchvision's own dataset classes download each set and verify it (checksums, where torchvision
keeps them) into one cache folder, once: `--data_root`, else $COLORIZATION_DATA, else
~/.cache/colorization/datasets ($XDG_CACHE_HOME respected). The set is then laid out as the image
folder the rest of the framework reads, so every run uses it through the same path as a folder of
your own:

    <root>/<name>/download/                     what torchvision downloaded and unpacked
    <root>/<name>/images/{train,test}/<class>/  the official splits, one folder per class (class
                                                 labels kept, so the semantic-accuracy classifier
                                                 works); validation is carved from train by --seed
                                                 as for any folder

Sets torchvision keeps as image files (Flowers-102, Food-101, LFW, Places365, ImageNet) are
linked, not copied; sets it keeps as arrays (CIFAR, STL-10) are written once as PNG. The layout is
built in a temporary folder and renamed into place when complete, so an interrupted build never
passes for a finished one. Offline, or when a download fails, the error is one paragraph that names
the set, the files expected, where to put them by hand and the URL that failed.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

UNLABELLED = "unlabeled"  # the folder of images without a label (STL-10's unlabeled split); no class

ENV = "COLORIZATION_DATA"


@dataclass(frozen=True)
class PublicSet:
    name: str
    dataset: str          # torchvision.datasets class, or "" for a documented folder layout (coco)
    splits: dict          # our split -> [keyword arguments of the class, ...] (several are joined)
    images: str           # how many, at what size
    download: str         # what torchvision fetches, and its size
    terms: str            # licence or terms of use
    good_for: str
    urls: tuple = ()      # what torchvision downloads (for the offline message)
    files: tuple = ()     # the files torchvision expects in download/ (for the offline message)
    by_hand: bool = False  # archives the user must already have (no public download)
    why_by_hand: str = ""  # why (by default: the terms of use)
    layout: dict = field(default_factory=dict)  # dataset "": our split -> folder under download/
    first: dict = field(default_factory=dict)   # our split -> keep only the first N images of each class
    download_of: str = ""  # share another set's download/ folder (the same files, another selection)


SETS = {s.name: s for s in [
    PublicSet("cifar10", "CIFAR10", {"train": [{"train": True}], "test": [{"train": False}]},
              "60,000 at 32x32 (50,000 train, 10,000 test), 10 classes", "163 MB",
              "https://www.cs.toronto.edu/~kriz/cifar.html (free for research)",
              "quick experiments and the CPU benchmark; tiny images, little detail",
              ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",), ("cifar-10-python.tar.gz",)),
    PublicSet("cifar10-bench", "CIFAR10", {"train": [{"train": True}], "test": [{"train": False}]},
              "23,000 of cifar10 at 32x32: the first 2,000 training and 300 test images of each class",
              "163 MB: cifar10's download",
              "https://www.cs.toronto.edu/~kriz/cifar.html (free for research)",
              "the CPU benchmark protocol (docs/benchmark.md): with --max_images 10000 --seed 0 the same "
              "images it was measured on",
              ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",), ("cifar-10-python.tar.gz",),
              first={"train": 2000, "test": 300}, download_of="cifar10"),
    PublicSet("cifar100", "CIFAR100", {"train": [{"train": True}], "test": [{"train": False}]},
              "60,000 at 32x32, 100 classes", "161 MB",
              "https://www.cs.toronto.edu/~kriz/cifar.html (free for research)",
              "as cifar10, with finer classes for semantic accuracy",
              ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",), ("cifar-100-python.tar.gz",)),
    PublicSet("stl10", "STL10", {"train": [{"split": "train"}], "test": [{"split": "test"}]},
              "13,000 labelled at 96x96 (5,000 train, 8,000 test), 10 classes", "2.6 GB (with the unlabeled split)",
              "https://cs.stanford.edu/~acoates/stl10/ (research use)",
              "more detail than CIFAR at a still small size (a Zhang et al. re-implementation trained on it)",
              ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",), ("stl10_binary.tar.gz",)),
    PublicSet("stl10-unlabeled", "STL10", {"train": [{"split": "train+unlabeled"}], "test": [{"split": "test"}]},
              "105,000 train at 96x96 (the 100,000 unlabeled images added), 8,000 test", "2.6 GB",
              "https://cs.stanford.edu/~acoates/stl10/ (research use)",
              "colorization needs no labels: twenty times the training images of stl10",
              ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",), ("stl10_binary.tar.gz",)),
    PublicSet("lfw", "LFWPeople", {"train": [{"split": "train"}], "test": [{"split": "test"}]},
              "13,233 faces at 250x250, 5,749 people (the official people train/test split)",
              "243 MB (by hand: torchvision no longer downloads it)",
              "https://vis-www.cs.umass.edu/lfw/ (research use)",
              "faces, as Deshpande et al.'s CVAE+MDN; one domain, so diversity is easy to judge",
              (), ("lfw-py/lfw-funneled.tgz", "lfw-py/lfw_funneled/ (that archive unpacked)",
                   "lfw-py/peopleDevTrain.txt", "lfw-py/peopleDevTest.txt", "lfw-py/lfw-names.txt"),
              by_hand=True, why_by_hand="torchvision no longer downloads it; the files are published at "
                                        "https://vis-www.cs.umass.edu/lfw/ and its mirrors, and torchvision "
                                        "checks their MD5 sums"),
    PublicSet("flowers102", "Flowers102", {"train": [{"split": "train"}, {"split": "val"}],
                                           "test": [{"split": "test"}]},
              "8,189 photos of 102 flower species (2,040 train+val, 6,149 test), about 500x600", "330 MB",
              "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (research use)",
              "vivid colours that grey gives no hint of: a test of colourfulness and diversity",
              ("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",),
              ("flowers-102/102flowers.tgz", "flowers-102/imagelabels.mat", "flowers-102/setid.mat")),
    PublicSet("places365", "Places365", {"train": [{"split": "train-standard", "small": True}],
                                         "test": [{"split": "val", "small": True}]},
              "1.8 million scenes at 256x256 (365 categories; the 36,500 val images as test)", "24 GB",
              "http://places2.csail.mit.edu/download.html (research and non-commercial use)",
              "scenes (sky, grass, buildings), as Iizuka et al. trained on; streams from disk",
              ("http://data.csail.mit.edu/places/places365/train_256_places365standard.tar",
               "http://data.csail.mit.edu/places/places365/val_256.tar"),
              ("train_256_places365standard.tar", "val_256.tar", "filelist_places365-standard.tar")),
    PublicSet("food101", "Food101", {"train": [{"split": "train"}], "test": [{"split": "test"}]},
              "101,000 photos of 101 dishes (75,750 train, 25,250 test), up to 512 px", "5 GB",
              "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/ (research use)",
              "food: colour is the main cue, so it tests whether a model learns it",
              ("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",), ("food-101.tar.gz",)),
    PublicSet("imagenet", "ImageNet", {"train": [{"split": "train"}], "test": [{"split": "val"}]},
              "1.28 million train, 50,000 val (test here), 1,000 classes", "155 GB (yours already)",
              "https://image-net.org/download.php (non-commercial research, after registration)",
              "the training set of Zhang et al. 2016 and most colorization papers",
              (), ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"),
              by_hand=True),
    PublicSet("coco", "", {}, "118,287 train2017, 5,000 val2017 (test here); no classes", "19 GB (yours already)",
              "https://cocodataset.org/#termsofuse (CC BY 4.0 annotations; images under Flickr terms)",
              "everyday scenes with many objects and people",
              (), ("train2017/", "val2017/"), by_hand=True, layout={"train": "train2017", "test": "val2017"}),
]}


class DataUnavailable(Exception):
    """A named set that could not be downloaded, verified or found; the message says what to do."""


def cache_root(data_root: str | None = None) -> Path:
    if data_root:
        return Path(data_root).expanduser()
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "colorization" / "datasets"


def is_name(spec: str | None) -> bool:
    """A --data value that names a public set (an existing path of that name wins)."""
    return spec is not None and spec.lower() in SETS and not Path(spec).exists()


def looks_like_a_name(spec: str) -> bool:
    """No path separator and no such path: meant as a name (an unknown one gets the list)."""
    return not Path(spec).exists() and "/" not in spec and os.sep not in spec and not spec.startswith(".")


def unknown(spec: str) -> str:
    return f"--data {spec}: no such folder, and not a known data set name ({', '.join(SETS)})"


def images_folder(name: str, data_root: str | None = None) -> Path:
    return cache_root(data_root) / name.lower() / "images"


def prepare(name: str, data_root: str | None = None, echo=print) -> Path:
    """The image folder of a named set, downloaded, verified and laid out on first use."""
    spec = SETS[name.lower()]
    target = images_folder(spec.name, data_root)
    if complete(target):
        return target
    download = cache_root(data_root) / (spec.download_of or spec.name) / "download"
    download.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(target.parent, echo)
    source = f"from the files you put in {download}" if spec.by_hand else f"{spec.download} to fetch"
    echo(f"{spec.name}: preparing {spec.images} in {target.parent} (once; {source})")
    try:
        if spec.layout:  # a documented folder layout: its folders must be there before anything is laid out
            _open(spec, download, {})
        parts = {split: [_open(spec, download, kw) for kw in kwargs] for split, kwargs in spec.splits.items()}
    except DataUnavailable:
        raise
    except Exception as e:  # URLError, HTTPError, torchvision's "Dataset not found or corrupted", ...
        raise DataUnavailable(offline_message(spec, download, e)) from None
    tmp = target.parent / f".images.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    if spec.layout:
        for split, folder in spec.layout.items():
            counts[split] = _link_folder(download / folder, tmp / split / "all")
    else:
        for split, datasets in parts.items():
            counts[split] = sum(_lay_out(ds, tmp / split, f"{i}_" if len(datasets) > 1 else "",
                                         spec.first.get(split, 0)) for i, ds in enumerate(datasets))
    empty = [split for split, n in counts.items() if not n]
    if empty:  # never marked complete: the next run looks again, once the files are there
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataUnavailable(offline_message(spec, download, FileNotFoundError(
            f"no image files in the {', '.join(empty)} split(s)")))
    (tmp / ".complete").write_text(json.dumps({"set": spec.name, "images": counts}) + "\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    echo(f"{spec.name}: {', '.join(f'{n:,} {s}' for s, n in counts.items())} images in {target}")
    return target


def complete(target: Path) -> bool:
    """Whether a set's image folder was laid out in full: its .complete names an image count for
    every split, none of them 0 (an older build could mark an empty layout complete)."""
    try:
        done = json.loads((target / ".complete").read_text())
    except (OSError, ValueError):
        return False
    counts = done.get("images") if isinstance(done, dict) else None
    return isinstance(counts, dict) and bool(counts) and all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts.values())


def _remove_abandoned_builds(folder: Path, echo=print) -> None:
    """The temporary folders of builds whose process is gone (killed half way): .images.tmp-PID."""
    for tmp in folder.glob(".images.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # another build is under way
            except ProcessLookupError:
                pass
            except (PermissionError, OverflowError):
                continue
        shutil.rmtree(tmp, ignore_errors=True)
        echo(f"note: removed {tmp}, left by a build that was killed")


def _open(spec: PublicSet, download: Path, kwargs: dict):
    if spec.layout:  # a documented folder layout: the folders must be there
        missing = [f for f in spec.layout.values() if not (download / f).is_dir()]
        if missing:
            raise DataUnavailable(offline_message(spec, download, FileNotFoundError(f"no {', '.join(missing)}")))
        return None
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.dataset)
    if spec.by_hand:
        return cls(str(download), **kwargs)
    return cls(str(download), download=True, **kwargs)


def offline_message(spec: PublicSet, download: Path, error: Exception) -> str:
    why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    files = ", ".join(spec.files)
    if spec.by_hand:
        reason = spec.why_by_hand or spec.terms
        how = (f"{spec.name} cannot be downloaded for you ({reason}). Put {files} in {download} "
               f"(torchvision's {spec.dataset} reads them there)" if spec.dataset else
               f"{spec.name} cannot be downloaded for you ({reason}). Unpack it so that {download} holds {files}")
        found = why.split(". ")[0]  # torchvision's own advice (download=True) does not apply here
        return f"--data {spec.name}: {found}. {how}, then run the same command again."
    return (f"--data {spec.name}: the download or its check failed ({why}). torchvision fetches "
            f"{', '.join(spec.urls)} into {download}; with no network, fetch {files} elsewhere and put "
            f"{'it' if len(spec.files) == 1 else 'them'} in {download} (torchvision verifies and unpacks "
            f"{'it' if len(spec.files) == 1 else 'them'} there), or pass --data_root to a folder that "
            f"already holds {download.parent.name}/download/. Nothing was written to "
            f"{download.parent.parent / spec.name / 'images'}.")


def _class_names(ds) -> list[str]:
    names = getattr(ds, "classes", None)
    if names is None and hasattr(ds, "class_to_idx"):
        names = [n for n, _ in sorted(ds.class_to_idx.items(), key=lambda kv: kv[1])]
    return [str(n).strip("/").replace("/", "_").replace(os.sep, "_").strip() or "_" for n in (names or [])]


def _files_and_labels(ds):
    """[(image file, label)] of a dataset that keeps files, or None for one that keeps arrays."""
    if hasattr(ds, "samples") and ds.samples and isinstance(ds.samples[0][0], str):
        return list(ds.samples)  # ImageFolder-like: ImageNet
    if hasattr(ds, "imgs") and ds.imgs and isinstance(ds.imgs[0][0], str):
        return list(ds.imgs)  # Places365
    if hasattr(ds, "_image_files") and hasattr(ds, "_labels"):
        return [(str(f), int(y)) for f, y in zip(ds._image_files, ds._labels)]  # Flowers102, Food101
    if isinstance(getattr(ds, "data", None), list) and ds.data and isinstance(ds.data[0], str):
        return list(zip(ds.data, ds.targets))  # LFWPeople
    return None


def _lay_out(ds, out: Path, prefix: str, first: int = 0) -> int:
    """Write one split of a torchvision dataset as out/<class>/<n>.<ext> (links to its files,
    or PNGs of its arrays). Unlabelled images (STL-10's, label -1) go to out/unlabeled/.
    With `first`, only the first that many images of each class in the set's own order, named
    by their place in the class (0000.png, 0001.png, ...: the order of a sorted folder)."""
    from tqdm import tqdm

    names = _class_names(ds)

    def folder(label: int) -> Path:
        if label is None or label < 0:
            return out / UNLABELLED
        return out / (names[label] if label < len(names) else f"class_{label:04d}")

    files = _files_and_labels(ds)
    n = len(files) if files is not None else len(ds)
    labels = [y for _, y in files] if files is not None else getattr(ds, "targets", None)
    seen: dict = {}  # label -> images of it written so far
    written = 0
    for i in tqdm(range(n), desc=f"laying out {out.name}", unit="image", mininterval=2.0, leave=False,
                  disable=n < 2000):
        if first and labels is not None:  # labels known up front: skip without decoding the image
            label = int(labels[i])
            if seen.get(label, 0) >= first:
                continue
        if files is not None:
            path, label = files[i]
            suffix = Path(path).suffix.lower()
        else:
            image, label = ds[i]
            suffix = ".png"
        label = int(label)
        k = seen[label] = seen.get(label, 0) + 1
        if first and k > first:  # a set without a label list: known only once decoded
            continue
        dest = folder(label) / (f"{prefix}{k - 1:04d}{suffix}" if first else f"{prefix}{i:07d}{suffix}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if files is not None:
            os.symlink(Path(path).resolve(), dest)
        else:
            image.convert("RGB").save(dest)
        written += 1
    return written


def _link_folder(source: Path, out: Path) -> int:
    from util.images import find_images

    out.mkdir(parents=True, exist_ok=True)
    files = find_images(source)
    for f in files:
        os.symlink(f.resolve(), out / f.name)
    return len(files)


def table() -> str:
    """The README's table of names."""
    lines = ["| `--data` | images | download (as published) | terms | good for |", "|---|---|---|---|---|"]
    lines += [f"| `{s.name}` | {s.images} | {s.download} | {s.terms} | {s.good_for} |" for s in SETS.values()]
    return "\n".join(lines)


if __name__ == "__main__":  # python public_data.py NAME [--data_root DIR]: prepare a set ahead of a run
    args = sys.argv[1:]
    if not args or args[0] not in SETS:
        sys.exit(f"usage: python public_data.py NAME [--data_root DIR]; names: {', '.join(SETS)}")
    root = args[args.index("--data_root") + 1] if "--data_root" in args else None
    try:
        print(prepare(args[0], root))
    except DataUnavailable as e:
        sys.exit(f"error: {e}")
