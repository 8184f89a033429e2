"""Colorize mode: your own photos (a file, a folder or a glob) with a trained run, into a folder of
their own that records what made it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from runs import photos
from runs.photos import colorize_files, input_files
from runs.settings import UsageError, pick_device, resolve
from runs.weights import load_colorizer, load_weights
from trainers import checkpoint as ckpt_io
from util import hint_files, images
from util.output_folder import OutputConflict
from util.run_folder import RunFolder


def colorize_folder(colorizer, args, out_dir: Path, weights: str) -> tuple[int, int]:
    """Test mode's --input (a file, a folder or a glob; the default TestImages/ may be absent):
    every image colorized at its own resolution into out_dir (the run's own folder: the previous
    test's colorizations there are replaced)."""
    paths, root = input_files(args.input) if args.input else ([], Path("."))
    done, bad = colorize_files(colorizer, paths, root, out_dir, args.image_size, args.max_image_pixels,
                               maker=maker_of(args, weights), own=True)
    if bad:
        print(f"warning: skipped {len(bad)} unreadable file(s) of {args.input}: {'; '.join(bad[:3])}")
    return done, len(bad)


def maker_of(args, weights: str, samples: int = 1, hint_file: str | None = None) -> dict:
    """What makes a folder's colorizations (util/output_folder.OutputFolder's manifest): the family, the checkpoint
    file and the training step it holds, the sampling."""
    step = None
    if weights not in (None, "none"):
        try:
            st = os.stat(weights)
            step = f"{st.st_size}-{st.st_mtime_ns}"
        except OSError:
            pass
    return {"model": args.model, "weights": str(Path(weights).resolve()) if weights not in (None, "none") else None,
            "checkpoint": step, "image_size": args.image_size, "samples": samples,
            "hints": str(Path(hint_file).resolve()) if hint_file else None}


def inputs_apart_from(paths: list[Path], root: Path, out_dir: Path, spec: str) -> list[Path]:
    """--input without what lies in --output: an output folder inside the input folder holds earlier
    colorizations, left out (with a note); an output folder that is the input folder, or holds it,
    would mix the colorizations with the photos, and is refused."""
    if Path(spec).is_file():
        return paths  # one photo: its colorization may go beside it (an output over it is refused later)
    out, top = out_dir.resolve(), root.resolve()
    if out == top or out in top.parents:
        raise OutputConflict(f"--output {out_dir} is the input folder {root} or holds it: the colorizations would "
                             f"mix with the photos (and replace those of the same name); choose another --output")
    kept = [p for p in paths if out not in p.resolve().parents]
    if len(kept) < len(paths):
        print(f"note: left out {len(paths) - len(kept)} file(s) of --input under --output {out_dir} (earlier "
              f"colorizations)")
    return kept


def colorize(args, given, family, run_dir: Path) -> int:
    """--mode colorize: the images of --input (a file, a folder or a glob) colorized by a trained
    run's --weights into --output; no data folder, no metrics, only the family's Colorizer."""
    device = pick_device(args.device)
    saved, weights = load_weights(args, family, run_dir)
    settings = resolve(family, args, given, saved)
    args = settings.args
    paths, root = input_files(args.input)
    if not paths:
        raise UsageError(f"--input {args.input}: no image file ({', '.join(images.IMAGE_EXTENSIONS)}) there")
    colorizer = load_colorizer(family, settings, saved, device)
    if args.hints is not None:
        if not colorizer.hinted:
            raise UsageError(f"--hints: {weights} was trained without colour hints; train a run with --guided "
                             f"to colorize with hints")
        if len(paths) != 1:
            raise UsageError(f"--hints {args.hints}: hints belong to one image, but --input {args.input} has "
                             f"{len(paths)}; give one image file")
        if not Path(args.hints).is_file():
            raise UsageError(f"--hints {args.hints}: no such file")
    out_dir = Path(args.output) if args.output else RunFolder(run_dir).colorize_output(
        Path(weights).stem if saved else "none",
        photos.input_name(args.input) + (f"+{Path(args.hints).stem}" if args.hints else ""))
    paths = inputs_apart_from(paths, root, out_dir, args.input)
    if not paths:
        raise UsageError(f"--input {args.input}: every image there lies under --output {out_dir}")
    k = settings.training.num_samples if colorizer.stochastic else 1
    print(f"colorizing {len(paths)} image(s) of {args.input} with {weights} into {out_dir}"
          + (f", {k} samples each" if k > 1 else ""))
    try:
        with ckpt_io.RunLock(out_dir, "colorize"):  # one writer per output folder
            done, bad = colorize_files(colorizer, paths, root, out_dir, args.image_size, args.max_image_pixels, k,
                                       sheet=args.sheet, progress=True, hint_file=args.hints and Path(args.hints),
                                       maker=maker_of(args, weights, k, args.hints), own=args.output is None,
                                       overwrite=args.overwrite)
    except hint_files.HintError as e:
        raise UsageError(str(e)) from None
    if bad:
        print(f"warning: skipped {len(bad)} unreadable file(s): {'; '.join(bad[:3])}"
              + (" ..." if len(bad) > 3 else ""))
    if not done:
        print(f"error: none of the {len(paths)} file(s) of --input {args.input} could be read", file=sys.stderr)
        return 2
    print(f"colorized {done} image(s) into {out_dir}" + (f"; side-by-side sheets in {out_dir / 'sheets'}"
                                                       if args.sheet else ""))
    return 0
