"""The layout of a run folder, RESULTS/RUN_NAME/: the one place its file names are spelled.

    last.pt, best.pt, epoch_NNNN.pt   checkpoints (trainers/checkpoint.py writes them atomically)
    split.json, args.json             the run's data split and settings
    history.jsonl                     one line of scalars per epoch and validation
    val_metrics.json                  the last validation's metrics
    samples/epoch_NNNN.png            validation sample grids
    metrics.json, per_image.csv       test metrics (metrics.json last: it says the test finished)
    test_grid.png, colorized/         test sample grid, full-resolution colorizations of --input
    colorize/WEIGHTS-INPUT/           --mode colorize's output by default (and its sheets/)
    test_WEIGHTS/                     test mode's outputs for weights other than best.pt
    test_samples.pt                   the first --num_images test images: paths, colorizations and
                                      ground truth as uint8 tensors (the report's compare.png)
    wandb/, wandb_id.txt              wandb's offline files and the run id that resumes log into
    .train.lock, .test.lock           the one writer of each mode (trainers/checkpoint.RunLock)
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)

    def __truediv__(self, name):  # a file that is not part of the layout (a user's, a test's)
        return self.path / name

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # checkpoints
    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.path / f"epoch_{epoch:04d}.pt"

    def epoch_checkpoints(self) -> list[Path]:
        """epoch_NNNN.pt files, oldest first."""
        return sorted(self.path.glob("epoch_*.pt"))

    def checkpoints(self) -> list[Path]:
        return sorted(self.path.glob("*.pt")) if self.path.is_dir() else []

    # training
    @property
    def split(self) -> Path:
        return self.path / "split.json"

    @property
    def args(self) -> Path:
        return self.path / "args.json"

    @property
    def history(self) -> Path:
        return self.path / "history.jsonl"

    @property
    def val_metrics(self) -> Path:
        return self.path / "val_metrics.json"

    def sample_grid(self, epoch: int) -> Path:
        return self.path / "samples" / f"epoch_{epoch:04d}.png"

    # testing
    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def per_image(self) -> Path:
        return self.path / "per_image.csv"

    @property
    def test_grid(self) -> Path:
        return self.path / "test_grid.png"

    @property
    def test_samples(self) -> Path:
        return self.path / "test_samples.pt"

    def colorize_output(self, weights: str, input_name: str) -> Path:
        """Where --mode colorize writes by default: one folder per weights and input."""
        return self.path / "colorize" / f"{weights}-{input_name}"

    @property
    def colorized(self) -> Path:
        return self.path / "colorized"

    # tracking
    @property
    def wandb_dir(self) -> Path:
        return self.path / "wandb"

    @property
    def wandb_id(self) -> Path:
        return self.path / "wandb_id.txt"

    def lock(self, mode: str) -> Path:
        return self.path / f".{mode}.lock"

    OWN = ("last.pt", "best.pt", "epoch_*.pt", "split.json", "args.json", "history.jsonl", "val_metrics.json",
           "wandb_id.txt", "metrics.json", "per_image.csv", "test_grid.png", "test_samples.pt", "samples",
           "colorized", "colorize", "test_*", "wandb")

    def own_files(self) -> list[Path]:
        """What a run writes into its folder (other files there are not the run's)."""
        if not self.path.is_dir():
            return []
        found = [p for pattern in self.OWN for p in self.path.glob(pattern)
                 if not (pattern == "test_*" and not p.is_dir())]  # test_WEIGHTS/ folders only
        return list(dict.fromkeys(found))

    def clear(self) -> int:
        """Remove the run's own files (--overwrite); returns how many went."""
        old = self.own_files()
        for p in old:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return len(old)

    def read_history(self) -> list[dict]:
        """The rows of history.jsonl; a last line cut short by a kill is left out."""
        rows = []
        if self.history.exists():
            for line in self.history.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
        return rows
