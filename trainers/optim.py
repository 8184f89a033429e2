"""Placing a network for training and building its optimizers: the device and memory format,
SyncBatchNorm, DistributedDataParallel and torch.compile (place); AdamW with a slower rate for a
fine-tuned pretrained encoder (adamw); the cosine schedule (cosine); a step, loss-scaled under fp16
(backward_step).
"""
from __future__ import annotations

import torch


def place(module: torch.nn.Module, device: torch.device, world: int, sync_bn: bool, compile: bool):
    """(module, net): the module on the device (channels_last on CUDA, SyncBatchNorm with sync_bn
    under DDP), and what to call in training: DDP- and/or torch.compile-wrapped."""
    module = module.to(device)
    if world > 1 and sync_bn:
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    net = module
    if world > 1 and any(p.requires_grad for p in module.parameters()):
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        net = torch.compile(net)
    return module, net


def adamw(params, lr: float, betas, weight_decay: float, modules: list, encoder_lr_scale: float, device):
    """AdamW, fused into one kernel on CUDA. A fine-tuned pretrained encoder's parameters among
    `params` (--encoder_finetune, found in `modules`) get encoder_lr_scale times `lr`."""
    from models.backbones import Encoded

    params = list(params)
    slow = {id(p) for m in modules for e in m.modules() if isinstance(e, Encoded) and e.finetune
            for p in e.backbone.parameters()}
    groups = [{"params": [p for p in params if id(p) not in slow]}]
    if slow:
        groups.append({"params": [p for p in params if id(p) in slow], "lr": lr * encoder_lr_scale})
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, weight_decay=weight_decay,
                             fused=device.type == "cuda")


def cosine(optimizers: dict, total_steps: int, schedule: str) -> dict:
    """Cosine decay to 0 over the run for each optimizer (--lr_schedule cosine), else none."""
    if schedule != "cosine":
        return {}
    return {k: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=max(1, total_steps)) for k, o in optimizers.items()}


def backward_step(opt, loss: torch.Tensor, scaler=None) -> None:
    """backward and step; through the GradScaler under fp16."""
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
