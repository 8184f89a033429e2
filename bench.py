"""Throughput benchmark of every family: a benchmark, not a test. Prints a table and appends it,
with the device and the command, to BENCHMARKS.md (or --write FILE; --write '' to only print).

    python bench.py --device cuda --image_size 256 --batch_size 256 --data photos/
    python bench.py --device cpu --image_size 32 --batch_size 16 --iters 3      # small CPU run

Columns, per family:
    end-to-end img/s   the training loop as main.py runs it: in-memory uint8 batches, on-device crop,
                       flip and Lab conversion, train_step
    data img/s         the data path alone (batches + Lab conversion, no network)
    compute img/s      train_step alone on a synthetic batch already on the device
    e2e / compute      the share of compute-only speed that end-to-end training keeps
    GFLOP/img          FLOPs of one training step per image (torch.utils.flop_counter)
    TFLOP/s, % peak    achieved by compute-only, against the GPU's dense bf16 peak where known
    sample img/s       diffusion families only: DDIM sampling with --steps steps
    1MP img/s          test-mode colorization of 1000x1000 images (ab upsampled, L kept)
    peak GiB           peak GPU memory of the training step

A family that fails is a row of n/a with its error printed, and the others go on; --rows FILE also
appends each row as a JSON line as soon as it is measured (a run killed at a time limit keeps
them), and --deadline SECONDS skips the families left when that much wall time has passed.
`--suite gpu` runs the GPU suite instead (bench_suite.py: every owed GPU figure in one command).

Families' own flags pass through (`--encoder inception_v3`, ...). With a frozen --encoder on the CPU,
compute img/s repeats one batch, whose encoder features are cached after the first step, so it
leaves the encoder out; end-to-end img/s (an epoch of other images) includes it.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import shlex
import sys
import time
import traceback
from pathlib import Path

import torch

import colorize_data as cd
import main as cli
from registry import REGISTRY
from util import colour
from util.batches import TrainBatches

# dense bf16 tensor-core peaks, FLOP/s (vendor data sheets)
PEAKS = {"H100 80GB HBM3": 989e12, "H100 SXM": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12,
         "H200": 989e12, "A100": 312e12, "L40S": 362e12, "RTX 4090": 165e12}


def peak_flops(device: torch.device):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAKS.items() if k in name), None)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, iters: int, device, warmup: int = 2, max_seconds: float = 0) -> float:
    """Seconds per call of fn, after warm-up calls (compilation, cuDNN autotuning); with
    max_seconds, fewer calls (at least one) once that long has passed."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0, done = time.perf_counter(), 0
    while done < iters:
        fn()
        done += 1
        if max_seconds and time.perf_counter() - t0 > max_seconds:
            break
    sync(device)
    return (time.perf_counter() - t0) / done


def flops_per_image(trainer, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.train_step(trainer.prepare(batch))
    return counter.get_total_flops() / len(batch)


def bench_family(name, opts, images: torch.Tensor) -> dict:
    argv = ["--model", name, "--image_size", str(opts.image_size), "--batch_size", str(opts.batch_size),
            "--device", opts.device, "--amp", opts.amp, "--wandb", "disabled", "--lpips", "off",
            "--epochs", "1", "--steps", str(opts.steps)] + (["--compile"] if opts.compile else [])
    _, args, _ = cli.parse_args(argv + opts.extra)  # main.py ignores other families' flags
    family = REGISTRY[name]
    device = cli.pick_device(args.device)
    torch.manual_seed(0)
    trainer = family.make(args, device, name=args.model)
    batches = TrainBatches(images, args.batch_size, args.image_size, args.crop, 0, device)
    row = {"family": name}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def data_only():
        for _, b in batches.epoch(0):
            trainer.prepare(b)

    n_img = len(batches) * args.batch_size
    row["data"] = n_img / timed(data_only, 1, device, warmup=1)
    if family.trainer.needs_training:
        trainer.setup_training(10_000)
        trainer.on_fit_start(batches)
        trainer.model.train()
        shape = (args.batch_size, 3, args.image_size, args.image_size)
        synthetic = (torch.rand(shape, device=device) * 255).to(torch.uint8)
        prepared = trainer.prepare(synthetic)
        row["compute"] = args.batch_size / timed(lambda: trainer.train_step(prepared), opts.iters, device)

        def end_to_end():
            for _, b in batches.epoch(1):
                trainer.train_step(trainer.prepare(b))

        row["e2e"] = n_img / timed(end_to_end, 1, device, warmup=1)
        row["ratio"] = row["e2e"] / row["compute"]
        row["gflop"] = flops_per_image(trainer, synthetic) / 1e9
        row["tflops"] = row["compute"] * row["gflop"] / 1e3
        peak = peak_flops(device)
        row["peak"] = 100 * row["tflops"] * 1e12 / peak if peak else None
        if device.type == "cuda":
            row["mem"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    trainer.model.eval()
    sampler = getattr(trainer, "benchmark_sampling", None)  # diffusion families
    if sampler is not None:
        row["sample"] = sampler(opts.batch_size, opts.iters)
    megapixel = torch.rand(1, 3, 1000, 1000, device=device)

    colorizer = trainer.colorizer.eval()  # the family's Colorizer, as test mode and colorizing use it

    @torch.no_grad()
    def colorize():
        with colorizer.autocast():
            colour.colorize_full_resolution(colorizer.predict_ab, megapixel, args.image_size)

    row["mp"] = 1 / timed(colorize, opts.iters, device, warmup=1, max_seconds=2)  # diffusion: a chain per image
    return row


def table(rows) -> str:
    cols = [("family", "family", "{}"), ("e2e", "end-to-end img/s", "{:.0f}"), ("data", "data img/s", "{:.0f}"),
            ("compute", "compute img/s", "{:.0f}"), ("ratio", "e2e / compute", "{:.0%}"),
            ("gflop", "GFLOP/img", "{:.3g}"), ("tflops", "TFLOP/s", "{:.3g}"), ("peak", "% peak", "{:.1f}"),
            ("sample", "sample img/s", "{:.1f}"), ("mp", "1MP img/s", "{:.1f}"), ("mem", "peak GiB", "{:.2f}")]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f.format(r[k]) if r.get(k) is not None else "n/a" for k, _, f in cols) + " |")
    return "\n".join(lines) + "\n"


def measure(names, opts, images) -> list[dict]:
    """A row per family; a failure is a row with its error, a family past --deadline one marked skipped."""
    rows, start = [], time.perf_counter()
    for name in names:
        if opts.deadline and time.perf_counter() - start > opts.deadline:
            row = {"family": name, "error": f"skipped: --deadline {opts.deadline:g} s reached"}
        else:
            try:
                row = bench_family(name, opts, images)
            except Exception as e:  # one family's failure is its row, the others still run
                traceback.print_exc()
                row = {"family": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
        rows.append(row)
        if opts.rows:
            with open(opts.rows, "a") as f:
                f.write(json.dumps({**row, "compile": opts.compile, "image_size": opts.image_size,
                                    "batch_size": opts.batch_size}) + "\n")
    return rows


def failures(rows) -> str:
    failed = [r for r in rows if r.get("error")]
    return "".join(f"\n- {r['family']}: {r['error']}" for r in failed) + ("\n" if failed else "")


def main(argv=None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    if "--suite" in argv:  # the GPU suite (and its --dry-run, and --suite pack)
        import bench_suite

        sys.exit(bench_suite.main(argv))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default="all", help="comma-separated names, or all")
    p.add_argument("--device", default="auto")
    p.add_argument("--image_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--images", type=int, default=0, help="in-memory training images (default: 8 batches)")
    p.add_argument("--data", default=None, help="decode this folder's training split instead of random images")
    p.add_argument("--load_size", type=int, default=None)
    p.add_argument("--iters", type=int, default=20, help="timed compute-only steps")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps for the sampling column")
    p.add_argument("--amp", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--write", default="BENCHMARKS.md", help="append the table here ('' to only print)")
    p.add_argument("--rows", default=None, help="also append each row to this file as a JSON line, as measured")
    p.add_argument("--deadline", type=float, default=0, help="skip the families left after this many seconds (0: none)")
    p.add_argument("--compile_backend", default=None, help=argparse.SUPPRESS)  # the suite's dry run: 'eager'
    opts, opts.extra = p.parse_known_args(argv)
    if opts.compile_backend:  # dynamo's tracing without code generation (seconds, not minutes, on a CPU)
        torch.compile = functools.partial(torch.compile, backend=opts.compile_backend)
    names = list(REGISTRY) if opts.families == "all" else opts.families.split(",")
    n = opts.images or 8 * opts.batch_size
    if opts.data:
        split = cd.make_split(opts.data, 0)
        images, _, _ = cd.load_train_images(opts.data, split["train"][:n], opts.image_size, opts.load_size)
    else:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 3, opts.image_size, opts.image_size), dtype=torch.uint8, generator=g)
    rows = measure(names, opts, images)
    device = cli.pick_device(opts.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    text = (f"\n### bench.py, {datetime.date.today().isoformat()}, {where}\n\n"
            f"`python bench.py {shlex.join(argv)}`; torch {torch.__version__}; "
            f"{len(images)} in-memory images {'from ' + opts.data if opts.data else '(random)'} at "
            f"{opts.image_size} px, batch {opts.batch_size}\n\n" + table(rows) + failures(rows))
    print(text)
    if opts.write:
        with open(Path(opts.write), "a") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    main()
