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
    test_samples.pt                   --num_images test images spread over the test set: paths,
                                      colorizations (samples 2-3 too with --num_samples) and ground
                                      truth as uint8 tensors (the report's compare.png)
    wandb/, wandb_id.txt              wandb's offline files and the run id that resumes log into
    .train.lock, .test.lock           the one writer of each mode (trainers/checkpoint.RunLock)
"""
from __future__ import annotations

import json
import re
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
    def fingerprints(self) -> Path:
        """Content hashes of the run's training and validation files: test mode checks a test set
        against them (util.files.fingerprints)."""
        return self.path / "fingerprints.json"

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

    # what a run writes at its top level, by name; the folders below are its own only in part
    OWN_FILES = ("last.pt", "best.pt", "split.json", "fingerprints.json", "args.json", "history.jsonl",
                 "val_metrics.json", "wandb_id.txt", "metrics.json", "per_image.csv", "test_grid.png",
                 "test_samples.pt")
    TEST_FILES = ("metrics.json", "per_image.csv", "test_grid.png", "test_samples.pt")
    EPOCH = re.compile(r"epoch_\d{4,}\.pt")
    SAMPLE = re.compile(r"epoch_\d{4,}\.png")
    WANDB = re.compile(r"(offline-)?run-\d{8}_\d{6}-[a-z0-9]+|latest-run|debug(-internal|-cli\.[\w.-]+)?\.log")

    def own_files(self) -> list[Path]:
        """What the run itself wrote into its folder, by name: its checkpoints, split, settings,
        logs and test results; sample grids in samples/; the files colorize and test runs listed in
        the manifests of colorized/ and colorize/*/ (util/output_folder.py); the test results in a
        test_WEIGHTS/ folder; wandb's own runs and logs in wandb/. Nothing else there is the run's:
        a file of yours in any of these folders stays."""
        from util.output_folder import OutputFolder

        if not self.path.is_dir():
            return []
        top = [p for p in self.path.iterdir() if p.is_file() and (p.name in self.OWN_FILES
                                                                  or self.EPOCH.fullmatch(p.name))]
        below = [p for p in (self.path / "samples").glob("epoch_*.png") if self.SAMPLE.fullmatch(p.name)]
        below += OutputFolder(self.colorized).own_files()
        below += [p for d in sorted((self.path / "colorize").glob("*")) if d.is_dir()
                  for p in OutputFolder(d).own_files()]
        for d in sorted(self.path.glob("test_*")):
            if d.is_dir() and not d.is_symlink():
                below += [d / name for name in self.TEST_FILES if (d / name).is_file()]
                below += OutputFolder(d / "colorized").own_files()
        if self.wandb_dir.is_dir() and not self.wandb_dir.is_symlink():
            below += [p for p in self.wandb_dir.iterdir() if self.WANDB.fullmatch(p.name)]
        return top + below

    def clear(self) -> int:
        """Remove the run's own files (--overwrite), and the folders of its own that leaves empty;
        returns how many files and wandb runs went."""
        old = self.own_files()
        for p in old:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        top = self.path.resolve()
        folders = {q for p in old for q in (p.parent.resolve(), *p.parent.resolve().parents)
                   if top in q.parents}  # the folders that held them
        for folder in sorted(folders, key=lambda q: len(q.parts), reverse=True):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass
        return len(old)

    def training_leftovers(self) -> list[Path]:
        """What a run killed before its first checkpoint leaves (its log, sample grids, wandb id):
        a new run in the same folder must not carry them on as its own."""
        return [p for p in (self.history, self.val_metrics, self.wandb_id) if p.is_file() or p.is_symlink()] + [
            p for p in (self.path / "samples").glob("epoch_*.png") if self.SAMPLE.fullmatch(p.name)]

    def read_history(self) -> list[dict]:
        """The rows of history.jsonl (JSON objects); a last line cut short by a kill, or any line
        that is not an object, is left out."""
        rows = []
        try:
            text = self.history.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return rows
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows
