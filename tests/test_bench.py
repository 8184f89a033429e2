"""bench.py runs (tiny sizes, CPU) and writes its table; it measures, it asserts no speed."""
import pytest
import torch

import bench


def test_bench_writes_a_row_per_family(tmp_path):
    out = tmp_path / "B.md"
    text = bench.main(["--families", "gray,unet,unetgan,colorful", "--device", "cpu", "--image_size", "16",
                       "--batch_size", "4", "--images", "8", "--iters", "1", "--write", str(out),
                       "--unet_channels", "8", "--unet_depth", "2", "--colorful_width", "8"])
    assert out.read_text() == text and "CPU" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| family")]
    assert [r.split("|")[1].strip() for r in rows] == ["gray", "unet", "unetgan", "colorful"]
    unet = [c.strip() for c in rows[1].split("|")]
    e2e, compute, ratio, gflop, tflops = float(unet[2]), float(unet[4]), unet[5], float(unet[6]), float(unet[7])
    # the columns agree with each other, up to their rounding (whole img/s, whole %, 3 digits)
    slack = 100 * (0.5 / compute + 0.5 * e2e / compute ** 2) + 0.5
    assert abs(float(ratio.rstrip("%")) - 100 * e2e / compute) <= slack
    assert tflops == pytest.approx(compute * gflop / 1e3, rel=0.5 / compute + 0.01)
    # a training step is forward + backward (about twice the forward's FLOPs, less the input's
    # gradient), per image: an independent count of one image's forward pass
    from torch.utils.flop_counter import FlopCounterMode

    import main
    from registry import REGISTRY

    _, args, _ = main.parse_args(["--model", "unet", "--unet_channels", "8", "--unet_depth", "2"])
    with FlopCounterMode(display=False) as counter:
        REGISTRY["unet"].network.build(args)(torch.zeros(1, 1, 16, 16))
    forward = counter.get_total_flops() / 1e9
    assert 2.5 * forward < gflop <= 3.0 * forward * 1.01  # the column has 3 significant digits
