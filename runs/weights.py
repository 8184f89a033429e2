"""The weights a test or colorization uses (--weights) and the colorizer built from them.
"""
from __future__ import annotations

from pathlib import Path

from runs.settings import Settings
from trainers import checkpoint as ckpt_io
from trainers.inference import Colorizer


def load_weights(args, family, run_dir: Path) -> tuple[dict | None, str]:
    """The checkpoint --weights names (None for a family with nothing to learn) and its path."""
    if not family.trainer.needs_training:
        return None, "none"
    path = ckpt_io.resolve_weights(run_dir, args.weights)
    if not path.is_file():
        have = sorted(p.name for p in run_dir.glob("*.pt")) if run_dir.is_dir() else []
        raise ckpt_io.CheckpointError(f"no checkpoint {path}. Train first (python main.py --model {args.model} "
                                      f"--mode train) or pick --weights from: "
                                      f"{', '.join(have) or 'none in ' + str(run_dir)}")
    return ckpt_io.load(path, family=(args.model, *family.trainer.compatible)), str(path)


def load_colorizer(family, settings: Settings, saved: dict | None, device) -> Colorizer:
    """The family's Colorizer from a checkpoint (no trainer, optimizer, critic or EMA twin); a
    family with nothing to learn (gray) from its settings alone."""
    if saved is not None:
        return Colorizer.from_checkpoint(family, saved, settings.network, settings.training, device)
    net = family.network.build(settings.network).to(device).eval()
    parts = family.trainer.Colorizer.parts(net, settings.training, settings.network, device, {})
    return family.trainer.Colorizer(net, settings.training, settings.network, device, **parts).eval()
