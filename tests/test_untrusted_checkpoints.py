"""Checkpoints from elsewhere: pickled code never runs, damaged or crafted files and weights that do
not fit are clear errors, huge saved widths are refused before anything is built."""
import os

import conftest
import pytest
import torch

import main
from trainers import checkpoint as ckpt_io
from util import files

TINY = [*conftest.TINY, "--model", "unet", "--unet_channels", "8", "--unet_depth", "2"]


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "family": "unet", "model": {}, "args": {}, "x": Payload(marker)}, evil)
    with pytest.raises(ckpt_io.CheckpointError, match="refusing to load .*evil.pt"):
        ckpt_io.load(evil)
    assert main.main(["--model", "unet", "--mode", "test", "--weights", str(evil), "--results", str(tmp_path),
                      "--wandb", "disabled"]) == 2
    assert "refusing to load" in capsys.readouterr().err
    assert not marker.exists()


def test_truncated_checkpoint_is_a_clear_error(tiny_data, tmp_path):
    assert main.main([*TINY, "--data", str(tiny_data), "--results", str(tmp_path), "--epochs", "1"]) == 0
    good = (tmp_path / "unet" / "last.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ckpt_io.CheckpointError, match="cut.pt is not a readable checkpoint"):
        ckpt_io.load(cut)


def test_weights_that_do_not_fit_the_network_are_a_clear_error(tiny_data, tmp_path, capsys):
    """A checkpoint whose saved arguments build another network (here: its gamut flag lost, as in
    a checkpoint written before --gamut existed) stops with a message, not a torch trace."""
    import main
    from trainers import checkpoint as ckpt_io

    flags = ["--model", "colorful", "--data", str(tiny_data), "--results", str(tmp_path), "--image_size", "16",
             "--batch_size", "4", "--wandb", "disabled", "--workers", "1", "--colorful_width", "8", "--lpips", "off",
             "--fid", "off"]
    assert main.main([*flags, "--epochs", "1", "--gamut", "inside"]) == 0
    path = tmp_path / "colorful" / "last.pt"
    ckpt = ckpt_io.load(path)
    del ckpt["args"]["gamut"]
    del ckpt["network"]  # as written before checkpoints saved the network's config on its own
    files.save_atomic(ckpt, path)
    assert main.main([*flags, "--mode", "test", "--weights", "last"]) != 0
    assert "do not fit the network" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"format_version": "1"}, "format_version is str"),
    ({"args": None}, "args"),
    ({"model": [1, 2]}, "model is list"),
    ({"model": {"w": "not a tensor"}}, "named tensors"),
])
def test_crafted_checkpoints_are_clear_errors(tiny_data, tmp_path, capsys, change, message):
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*flags, "--epochs", "1"]) == 0
    ckpt = ckpt_io.load(tmp_path / "unet" / "last.pt")
    crafted = tmp_path / "crafted.pt"
    torch.save({**ckpt, **change}, crafted)
    capsys.readouterr()
    assert main.main([*flags, "--mode", "test", "--weights", str(crafted)]) == 2
    err = capsys.readouterr().err
    assert "not a valid checkpoint" in err and message in err


def test_huge_saved_widths_are_refused_before_anything_is_built(tiny_data, tmp_path, capsys, monkeypatch):
    flags = [*TINY, "--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main([*flags, "--epochs", "1"]) == 0
    ckpt = ckpt_io.load(tmp_path / "unet" / "last.pt")
    crafted = tmp_path / "wide.pt"
    torch.save({**ckpt, "args": {**ckpt["args"], "unet_channels": 4096},  # would be gigabytes
                "network": {**ckpt["network"], "unet_channels": 4096}}, crafted)
    import models.unet

    built = []
    real = models.unet.build
    monkeypatch.setattr(models.unet, "build", lambda args: built.append(torch.empty(0).device.type) or real(args))
    capsys.readouterr()
    assert main.main([*flags, "--mode", "test", "--weights", str(crafted)]) == 2
    assert "do not fit the network" in capsys.readouterr().err
    assert built == ["meta"]  # only the shape check ran, on the meta device


def test_random_bytes_are_not_called_a_pickle_with_objects(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes(range(7, 256)) * 8)
    with pytest.raises(ckpt_io.CheckpointError, match="not a readable checkpoint"):
        ckpt_io.load(path)
