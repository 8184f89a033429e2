"""How much memory one training step will take, estimated before any is spent.

The network is built on the meta device (shapes only, no memory), one forward pass runs at the
requested batch and image size, and every tensor an operator creates is counted: about what
autograd keeps for the backward pass. Weights count four times (weights, gradients, two Adam
moments). The estimate is rough: 0.69x to 1.43x the measured peak of a CPU training step across
the families (BENCHMARKS.md, "Memory estimate"), so a run is refused only when the estimate
exceeds the free memory by REFUSE_ABOVE, a margin over that band, where it cannot fit. It exists
to refuse an --image_size that cannot fit before the data is loaded, not to pack memory tightly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# refused when estimate > free memory x this (the estimate overshoots by up to 1.43x)
REFUSE_ABOVE = 1.5


class TooLarge(Exception):
    """A training step that cannot fit in the device's free memory."""


class _CountCreated(TorchDispatchMode):
    """Sums the bytes of every tensor an operator creates (views and in-place results share
    memory with their inputs and are not counted), but not under no_grad: a frozen encoder's
    activations (--encoder) are freed as it goes, autograd keeps none of them."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        aliased = any(r.alias_info is not None for r in func._schema.returns)
        if not aliased and torch.is_grad_enabled():
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.bytes += t.numel() * t.element_size()
        return out


class _FusedAttention(TorchFunctionMode):
    """On the meta device attention runs as plain matrix products that hold the whole
    (tokens x tokens) matrix; on CPUs and GPUs it runs fused (flash or memory-efficient kernels)
    and never does. So attention is counted as the fused kernels use it: its output only."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            q, v = args[0], args[2] if len(args) > 2 else kwargs["value"]
            return q.new_empty(*q.shape[:-1], v.shape[-1])
        return func(*args, **(kwargs or {}))


def example_inputs(network, cfg, batch: int, size: int) -> tuple[tuple, dict]:
    """What the network's forward takes, for a batch of L images (meta tensors): (arguments: the
    network module's own `example_inputs(cfg, L)` if it has one, else just L; keywords: the hint
    map of a guided network)."""
    from models.hints import CHANNELS, hinted

    L = torch.zeros(batch, 1, size, size)
    make = getattr(network, "example_inputs", None)
    return (make(cfg, L) if make is not None else (L,)), ({"hints": torch.zeros(batch, CHANNELS, size, size)}
                                                           if hinted(cfg) else {})


def training_bytes(network, cfg, batch: int, size: int) -> int | None:
    """Estimated peak bytes of one training step, or None when the network cannot run on the
    meta device (then nothing is refused up front)."""
    try:
        with torch.device("meta"):
            net = network.build(cfg)
            inputs, named = example_inputs(network, cfg, batch, size)
        weights = sum(p.numel() * p.element_size() for p in net.parameters())
        counter = _CountCreated()
        net.train()
        with _FusedAttention(), counter:
            net(*inputs, **named)
    except Exception:  # an operator without a meta kernel, a data-dependent branch: no estimate
        return None
    return int(4 * weights + counter.bytes)


def available_bytes(device: torch.device) -> int | None:
    """Memory free for this process: CUDA's free memory, or the kernel's MemAvailable on a
    Linux CPU; None where it cannot be known (MPS, other systems)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def largest_batch(network, cfg, size: int, budget: float, upper: int) -> int:
    """The largest batch size up to `upper` whose estimate is within `budget` (0 if none is).
    Memory grows linearly with the batch, so two estimates give the line."""
    one, two = training_bytes(network, cfg, 1, size), training_bytes(network, cfg, 2, size)
    if one is None or two is None or one > budget:
        return 0
    per_image = max(two - one, 1)
    return int(min(upper, 1 + (budget - one) // per_image))


def check_fits(network, cfg, device: torch.device, batch: int, size: int, what: str, world: int = 1) -> None:
    """Refuse (TooLarge, with a message that says what to lower) when one training step of
    `batch` images of `size` px cannot fit in the memory `device` has free. `batch` is the global
    batch, split over `world` processes (one device each)."""
    free = available_bytes(device)
    if free is None:
        return
    need = training_bytes(network, cfg, batch // world, size)
    if need is None or need <= REFUSE_ABOVE * free:
        return
    fits = largest_batch(network, cfg, size, REFUSE_ABOVE * free, batch // world) * world
    advice = (f"--batch_size {fits} would fit" if fits else
              f"not even one image of {size} px fits: lower --image_size")
    raise TooLarge(f"{what}: one training step at --image_size {size} with --batch_size {batch} needs about "
                   f"{need / 2**30:.1f} GiB (estimated), and {device} has {free / 2**30:.1f} GiB free; {advice}")
