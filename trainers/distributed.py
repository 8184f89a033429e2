"""Several processes (torchrun): set-up, and the few collective operations the trainers need.

`torchrun --nproc_per_node N main.py ...` starts N processes with RANK, LOCAL_RANK and WORLD_SIZE
set; each trains on its own slice of every batch with DistributedDataParallel. Without those
variables everything here is a no-op for one process."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_from_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) of this process; (0, 0, 1) when not started by torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def backend(device: torch.device) -> str:
    """The process group's backend for training on `device`. On CUDA, NCCL serves CUDA tensors
    and gloo CPU ones, in one group: torch dispatches each collective by its tensors' device, so a
    collective on a host tensor (a float averaged for the log, the stop flag) works as one on the
    GPU does (NCCL alone has no CPU support)."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def setup(device: torch.device) -> torch.device:
    """Join the process group (see backend); returns this process's device."""
    rank, local_rank, world = world_from_env()
    if world == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend(device))
    return device


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_mean(values: dict) -> dict:
    """Average a dict of floats over processes (on the host: gloo's part of the group)."""
    if not active() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, (t / dist.get_world_size()).tolist()))


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (a copy; the input is left alone)."""
    if not active():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


def gather_cat(per_image: dict) -> dict:
    """Concatenate dicts of per-image CPU tensors from every process, in rank order."""
    if not active():
        return per_image
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, per_image)
    return {k: torch.cat([p[k] for p in parts if k in p]) for k in parts[0]}


def barrier() -> None:
    if active():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
