"""Memory: out of memory is a clear error, a size that cannot fit is refused before any data is
loaded, and the estimate (runs/memory.py) against a measured training step."""
import os

import conftest
import pytest

import main
from trainers.regression import RegressionTrainer

TINY = [*conftest.TINY, "--model", "unet", "--unet_channels", "8", "--unet_depth", "2"]


def test_out_of_memory_is_a_clear_error(tiny_data, tmp_path, monkeypatch, capsys):
    def too_big(self, batch):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 9663676416 bytes")

    monkeypatch.setattr(RegressionTrainer, "train_step", too_big)
    assert main.main([*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--epochs", "1"]) == 2
    assert "out of memory at --image_size 16 with --batch_size 4" in capsys.readouterr().err


def test_an_image_size_that_cannot_fit_is_refused_before_any_data_is_loaded(tiny_data, tmp_path, monkeypatch,
                                                                              capsys):
    from runs import memory
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2 * 2**30)  # a 2 GiB machine
    from runs import train as run_train

    monkeypatch.setattr(run_train, "train_batches", lambda *a: pytest.fail("data loaded before the memory check"))
    assert main.main([*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--image_size", "2048",
                      "--unet_channels", "32", "--unet_depth", "4"]) == 2
    err = capsys.readouterr().err
    assert "one training step at --image_size 2048 with --batch_size 4 needs about" in err
    assert "GiB free" in err and "--batch_size 1 would fit" not in err
    assert not (tmp_path / "unet" / "split.json").exists()


def test_the_memory_estimate_scales_with_batch_and_pixels_and_names_a_batch_that_fits():
    from models import unet
    from runs import memory
    _, args, _ = main.parse_args(["--model", "unet", "--unet_channels", "8", "--unet_depth", "2"])
    one, four = memory.training_bytes(unet, args, 1, 64), memory.training_bytes(unet, args, 4, 64)
    big = memory.training_bytes(unet, args, 1, 128)
    weights = 4 * sum(p.numel() * 4 for p in unet.build(args).parameters())
    assert (four - weights) == pytest.approx(4 * (one - weights), rel=0.01)   # linear in the batch
    assert (big - weights) == pytest.approx(4 * (one - weights), rel=0.01)    # linear in the pixels
    budget = one + 2.5 * (one - weights)
    assert memory.largest_batch(unet, args, 64, budget, 64) == 3


def test_attention_is_counted_as_the_fused_kernels_use_it():
    """Self-attention at 64x64 tokens would hold a 4096 x 4096 matrix per head on the meta device;
    the fused kernels that run on CPUs and GPUs never do, so the estimate must not count it."""
    from models import diffusion
    from runs import memory
    _, args, _ = main.parse_args(["--model", "unetddpm", "--diff_channels", "8", "--diff_depth", "1"])
    small, large = memory.training_bytes(diffusion, args, 1, 32), memory.training_bytes(diffusion, args, 1, 128)
    assert large < 20 * small   # 16x the pixels: linear, not the 256x of a materialized attention matrix


@pytest.mark.parametrize("model", ["unet", "unetddpm"])
def test_the_memory_estimate_is_near_a_measured_training_step(model):
    """The estimate against the real peak of one CPU training step (the kernel's VmHWM, reset just
    before the step, in a fresh process): within the band runs/memory.py documents and under
    REFUSE_ABOVE, so a run is never refused that would fit."""
    import subprocess
    import sys

    from runs import memory
    code = f"""
import torch, main
from runs import memory
from registry import REGISTRY
def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))
torch.set_num_threads(1)
_, args, _ = main.parse_args(["--model", "{model}", "--{'diff' if 'ddpm' in model else 'unet'}_channels", "16"])
family = REGISTRY["{model}"]
net = family.network.build(args).train()
inputs = tuple(torch.randn_like(x) if x.is_floating_point() else x
               for x in memory.example_inputs(family.network, args, 8, 96)[0])
opt = torch.optim.Adam(net.parameters())
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts from here
base = status("VmRSS:")
out = net(*inputs)
(out[0] if isinstance(out, tuple) else out).pow(2).mean().backward()
opt.step()
print(memory.training_bytes(family.network, args, 8, 96) / (status("VmHWM:") - base))
"""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to measure a peak")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ratio = float(subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                                 check=True).stdout)
    assert 0.5 < ratio < memory.REFUSE_ABOVE, ratio
