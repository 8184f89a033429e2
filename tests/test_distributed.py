"""torchrun with two CPU processes (gloo) must train exactly what one process trains."""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from trainers import checkpoint as ckpt_io

COMMON = ["--model", "unet", "--image_size", "16", "--batch_size", "4", "--epochs", "2", "--unet_channels", "8",
          "--unet_depth", "2", "--norm", "group", "--lr_schedule", "constant", "--lpips", "off", "--fid", "off",
          "--wandb", "disabled", "--workers", "1", "--device", "cpu"]


def run(cmd, cwd):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_two_processes_agree_with_one(tiny_data, tmp_path):
    flags = COMMON + ["--data", str(tiny_data)]
    run([sys.executable, str(ROOT / "main.py"), *flags, "--results", str(tmp_path / "one")], tmp_path)
    r = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             str(ROOT / "main.py"), *flags, "--results", str(tmp_path / "two")], tmp_path)
    assert r.stdout.count("done: checkpoints") == 1  # only the first process speaks
    one = ckpt_io.load(tmp_path / "one" / "unet" / "last.pt")
    two = ckpt_io.load(tmp_path / "two" / "unet" / "last.pt")
    assert one["step"] == two["step"] == 4
    for k, v in one["model"].items():
        assert torch.allclose(v.float(), two["model"][k].float(), atol=1e-4), k
    history = lambda p: [json.loads(x) for x in (p / "unet" / "history.jsonl").read_text().splitlines()]  # noqa: E731
    h1, h2 = history(tmp_path / "one"), history(tmp_path / "two")
    assert len(h1) == len(h2)  # one writer
    for a, b in zip(h1, h2):
        for k in ("train/loss", "val/delta_e", "val/ssim"):
            if k in a:
                assert abs(a[k] - b[k]) < 1e-3 * max(1, abs(a[k])), (k, a[k], b[k])


def test_the_cuda_process_group_serves_host_tensors_too():
    """Without a GPU here, NCCL cannot start; what can be checked is the construction. On CUDA the
    group must have a backend for CPU tensors as well as CUDA ones: all_mean (logged floats, the
    stop flag), all_gather_object and barrier work on host tensors, which NCCL alone refuses.
    The two-process run above exercises the CPU half (gloo) of the same code."""
    from torch.distributed.distributed_c10d import BackendConfig

    from trainers import distributed

    on_cuda = BackendConfig(distributed.backend(torch.device("cuda"))).get_device_backend_map()
    assert on_cuda == {"cpu": "gloo", "cuda": "nccl"}
    assert BackendConfig(distributed.backend(torch.device("cpu"))).get_device_backend_map()["cpu"] == "gloo"
