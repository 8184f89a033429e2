"""Semantic interpretability: does a colorization make objects recognisable again?

`python main.py --mode classifier --data DIR` trains models/classifier.py on the colour training
images of a data set with class folders (DIR/train/<class>/..., as CIFAR-10) and writes
RESULTS/classifier/classifier.pt and classifier.json (its test accuracy on the colour images and
on their grey versions). Each family's test mode then reports `semantic_accuracy`, the accuracy on
its colorizations: the closer to the colour accuracy, the better the colours carry meaning."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from models.classifier import SmallClassifier
from public_data import UNLABELLED
from trainers import checkpoint
from util import files
from util.colour import uint8_to_float


def class_of(rel_path: str) -> str:
    """train/airplane/0001.jpg -> airplane; airplane/0001.jpg -> airplane; 0001.jpg and
    train/unlabeled/0001.png -> ''."""
    parts = rel_path.split("/")
    if parts[0] in ("train", "val", "test"):
        parts = parts[1:]
    return parts[0] if len(parts) > 1 and parts[0] != UNLABELLED else ""


def labels_for(paths, classes) -> torch.Tensor:
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index.get(class_of(p), -1) for p in paths])


@contextlib.contextmanager
def one_thread(device):
    """On the CPU, one thread inside (the caller's count given back after): a convolution's sums
    are split by thread count, so with more threads the classifier, and every accuracy it gives,
    moved in the last digits from machine to machine (0.6200 against 0.6213 on CIFAR-10)."""
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor, device, batch_size=256, transform=None) -> float:
    """images uint8 (N, 3, S, S) or float in [0, 1]; transform applies to float batches on the device."""
    model.eval()
    hits = 0
    with one_thread(device):
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(device)
            x = uint8_to_float(x) if x.dtype == torch.uint8 else x.float()
            if transform is not None:
                x = transform(x)
            hits += int((model(x).argmax(1).cpu() == labels[i:i + batch_size]).sum())
    return hits / max(1, len(images))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, classes: int, epochs: int, batch_size: int,
                     lr: float, device, seed: int = 0, log=print) -> SmallClassifier:
    """The classifier, trained on one thread on the CPU (one_thread): the same to the digit
    whatever the machine's thread count."""
    with one_thread(device):
        return _train_classifier(images, labels, classes, epochs, batch_size, lr, device, seed, log)


def _train_classifier(images, labels, classes, epochs, batch_size, lr, device, seed, log):
    torch.manual_seed(seed)
    model = SmallClassifier(classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, epochs * (len(images) // batch_size or 1))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(images), generator=g)
        total = torch.zeros((), device=device)
        for i in range(0, max(1, len(images) - batch_size + 1), batch_size):
            idx = perm[i:i + batch_size]
            x = uint8_to_float(images[idx].to(device))
            flip = torch.rand(len(x), generator=g).to(device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = F.cross_entropy(model(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step < steps - 1:
                sched.step()
            step += 1
            total += loss.detach() * len(idx)  # read back once per epoch
        log(f"classifier epoch {epoch}/{epochs}: loss {float(total) / len(images):.4f}")
    return model.eval()


def save(model, classes, image_size, out_dir: Path, report: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    files.save_atomic({"format_version": checkpoint.FORMAT_VERSION, "family": "classifier",
                            "model": model.state_dict(), "args": {"classes": ",".join(classes),
                                                                  "image_size": image_size}}, out_dir / "classifier.pt")
    files.write_text_atomic(out_dir / "classifier.json", json.dumps(report, indent=1))


def load(results_dir, image_size: int, device):
    """(model, classes) saved by --mode classifier at this image size, or None."""
    path = Path(results_dir) / "classifier" / "classifier.pt"
    if not path.is_file():
        return None
    ckpt = checkpoint.load(path, family="classifier")
    if ckpt["args"]["image_size"] != image_size:
        print(f"note: semantic accuracy left out: the classifier in {path.parent} was trained at "
              f"{ckpt['args']['image_size']} px, this test runs at {image_size} px (train one with "
              f"--mode classifier --image_size {image_size})")
        return None
    classes = ckpt["args"]["classes"].split(",")
    model = SmallClassifier(len(classes))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), classes
