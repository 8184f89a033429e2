"""Tracking a run: its scalars and images go to history.jsonl in the run folder and, when there
is one, to a wandb run. wandb is started here and nowhere else (never at import), never prompts and
never stalls: without an API key, or with a server that does not answer within 3 s, it logs
offline into the run folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from util import colour, files
from util.run_folder import RunFolder


class RunLog:
    """Scalars and images of a run: appended to `history.jsonl` in the run folder and, when a
    wandb run is given, sent to it. Holds no global state; main.py owns the wandb run. Pass
    run_dir=None on processes other than the first."""

    def __init__(self, run_dir=None, wandb_run=None):
        self.run_dir = Path(run_dir) if run_dir else None
        self.wandb = wandb_run

    def scalars(self, values: dict, step: int) -> None:
        values = {k: (float(v) if v is not None else None) for k, v in values.items()}
        if self.run_dir:
            path = RunFolder(self.run_dir).history
            try:  # never through a link planted in the run folder (it would write elsewhere)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            except OSError as e:
                raise files.WriteError(f"could not append to {path}: {e.strerror}"
                                         + (" (it is a symbolic link)" if path.is_symlink() else "")) from None
            with os.fdopen(fd, "a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in values.items() if v is not None}, step=step)

    def image(self, key: str, path, step: int, caption: str = "") -> None:
        if self.wandb is not None:
            import wandb

            self.wandb.log({key: wandb.Image(str(path), caption=caption)}, step=step)

    def summary(self, values: dict) -> None:
        if self.wandb is not None:
            self.wandb.summary.update({k: v for k, v in values.items() if v is not None})


def _wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _wandb_reachable(timeout: float = 3.0) -> bool:
    """Whether wandb's server answers a connection within `timeout` seconds (wandb itself waits
    about 90 s before giving up, and then logs nothing)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def wandb_mode(asked: str, env_mode: str | None) -> str:
    """online or offline (or disabled from WANDB_MODE): --wandb online/offline as asked, else
    WANDB_MODE, else online when a key is configured; online falls back to offline, said, when no
    key is configured (wandb would prompt) or the server cannot be reached (it would stall)."""
    if asked in ("online", "offline"):
        mode = asked
    elif env_mode:
        mode = env_mode  # WANDB_MODE wins over auto, but goes through the checks below too
    else:
        mode = "online" if _wandb_key_configured() else "offline"
    if mode not in ("online", "offline", "disabled"):  # e.g. WANDB_MODE=dryrun: the older name of offline
        mode = "offline"
    if mode == "online" and not _wandb_key_configured():  # wandb would ask for a key: never prompt
        print("warning: wandb online asked for, but no API key is configured (WANDB_API_KEY or `wandb login`); "
              "logging offline instead")
        mode = "offline"
    elif mode == "online" and not _wandb_reachable():  # never stall: offline at once
        print("warning: wandb's server cannot be reached; logging offline instead")
        mode = "offline"
    return mode


def start_wandb(args, run_dir: Path, job_type: str):
    """One wandb run per invocation, or None. Never prompts, never stops the run on failure."""
    env_mode = os.environ.get("WANDB_MODE")
    if args.wandb == "disabled" or (args.wandb == "auto" and env_mode == "disabled"):
        return None
    try:
        import wandb
    except ImportError:
        print("note: wandb is not installed; logging to the run folder only")
        return None
    mode = wandb_mode(args.wandb, env_mode)
    id_file = RunFolder(run_dir).wandb_id
    run_id = id_file.read_text().strip() if (job_type == "train" and args.resume and id_file.exists()) else None
    config = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    try:
        run = wandb.init(project=args.wandb_project, group=args.model, job_type=job_type,
                         name=f"{run_dir.name}-{job_type}", config=config, dir=str(run_dir), mode=mode,
                         id=run_id, resume="allow" if run_id else None,
                         settings=wandb.Settings(silent=True, init_timeout=90))
    except Exception as e:  # a bad key, a server error, ...: the run goes on without wandb
        print(f"warning: wandb could not start ({type(e).__name__}: {e}); logging to the run folder only")
        return None
    if job_type == "train":
        files.write_text_atomic(id_file, run.id)
    if getattr(run, "offline", False) or mode == "offline" or env_mode == "offline":
        print(f"wandb: logging offline; upload later with: wandb sync {Path(run.dir).parent}")
    return run


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


def log_checkpoints(run, run_dir: Path, epoch: int) -> None:
    """--log_checkpoints: best.pt and last.pt as one wandb artifact of type model."""
    import wandb

    artifact = wandb.Artifact(f"{run_dir.name}-checkpoints", type="model", metadata={"epoch": epoch})
    for path in (RunFolder(run_dir).best, RunFolder(run_dir).last):
        if path.exists():
            artifact.add_file(str(path))
    run.log_artifact(artifact)


def log_test_table(run, args, paths, images, predictions, per_image) -> None:
    """A wandb.Table of the first --table_images test images: grey input, colorization, truth and
    their metrics, so families can be compared image by image on the dashboard."""
    import wandb

    n = min(args.table_images, len(paths))
    keys = [k for k in ("delta_e", "ssim", "psnr", "colorfulness", "auc") if k in per_image]
    table = wandb.Table(columns=["image", "grey", "colorized", "truth"] + keys)
    rgb = colour.uint8_to_float(images[:n])
    grey = (colour.grey_rgb(rgb) * 255).round().to(torch.uint8)
    as_np = lambda t: t.permute(1, 2, 0).numpy()  # noqa: E731
    for i in range(n):
        table.add_data(paths[i], wandb.Image(as_np(grey[i])), wandb.Image(as_np(predictions[i])),
                       wandb.Image(as_np(images[i])), *[float(per_image[k][i]) for k in keys])
    run.log({"test/per_image": table})
