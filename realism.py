"""FID and KID: how real a set of colorizations looks, against the true images, on the 2048-d pool
features of TF-Inception 2015-12-05 (models/inception.py), computed by torchmetrics. Images are
rounded to 8 bits as they would be saved; one value per set of images, not per image (the per-image
metrics are metrics.py). The true images' features are cached per set of images and weights.
"""
from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import torch


class _Given(torch.nn.Module):
    """torchmetrics' FID and KID take a feature network; ours are computed once outside and passed through."""
    num_features = 2048

    def forward(self, features):
        return features



class Realism:
    """FID and KID of colorizations against the true images. The true images' features are
    computed once per set of images and weights (kept under `cache_dir` when given: a test set is
    the same for every run compared on it). `available` is False, and `compute` returns nulls,
    when no Inception weights can be had (one message per process), or when disabled."""

    def __init__(self, device="cpu", enabled: bool = True, max_images: int = 0, cache_dir=None,
                 batch_size: int = 50, progress: bool = False):
        self.device, self.max_images, self.batch_size, self.progress = device, max_images, batch_size, progress
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.net, self.weights = _inception(str(device)) if enabled else (None, None)
        self.real = None
        self.fake_parts: list[torch.Tensor] = []
        self.seen = 0

    @property
    def available(self) -> bool:
        return self.net is not None

    def _limit(self, n: int) -> int:
        return n if not self.max_images else min(n, self.max_images)

    @torch.no_grad()
    def features(self, images: torch.Tensor, what: str | None = None) -> torch.Tensor:
        """(N, 2048) float32 Inception pool features of uint8 RGB (N, 3, H, W); a progress bar
        named `what` when progress was asked for."""
        from tqdm import tqdm

        out = []
        for i in tqdm(range(0, len(images), self.batch_size), desc=f"FID features of {what}", unit="batch",
                      leave=False, disable=not (self.progress and what), mininterval=1.0, dynamic_ncols=True):
            out.append(self.net(images[i:i + self.batch_size].to(self.device))[0].float().cpu())
        return torch.cat(out) if out else torch.zeros(0, _Given.num_features)

    def reference(self, images: torch.Tensor) -> None:
        """The true images (uint8 (N, 3, H, W), in test order), cached by their content and the weights."""
        if not self.available:
            return
        import hashlib

        images = images[:self._limit(len(images))].contiguous()
        key = hashlib.sha1(images.cpu().numpy().tobytes() + repr(tuple(images.shape)).encode()
                           + self.weights.encode()).hexdigest()[:20]
        path = self.cache_dir / f"inception-{key}.pt" if self.cache_dir else None
        if path is not None:
            from util.files import load_cache

            cached = load_cache(path, lambda c: self._cache_ok(c, key, len(images)))
            if cached is not None:
                self.real = cached["features"]
                return
            if path.exists():
                print(f"note: the cached FID reference features {path} are damaged or not these images' "
                      f"(checked: shape, type, finiteness, count, weights, checksum): computed again", file=sys.stderr)
        self.real = self.features(images, "the true images")
        if path is not None:
            from util.files import save_cache

            entry = {"features": self.real, "weights": self.weights, "n": len(images), "key": key,
                     "sha256": _checksum(self.real)}
            if not save_cache(entry, path):
                print(f"note: the FID reference features are not cached (cannot write {path})", file=sys.stderr)

    def _cache_ok(self, cached, key: str, n: int) -> bool:
        """Whether a cache file holds exactly what reference() would compute for these images:
        (n, 2048) finite float32 features of these weights and images, unchanged since written."""
        if not isinstance(cached, dict):
            return False
        f = cached.get("features")
        return (torch.is_tensor(f) and f.dtype == torch.float32 and tuple(f.shape) == (n, _Given.num_features)
                and cached.get("n") == n and cached.get("weights") == self.weights and cached.get("key") == key
                and bool(torch.isfinite(f).all()) and cached.get("sha256") == _checksum(f))

    def reset(self) -> None:
        """Forget the colorizations seen (the reference stays), to measure another set."""
        self.fake_parts, self.seen = [], 0

    def update(self, pred: torch.Tensor) -> None:
        """A batch of colorizations, RGB in [0, 1], in the order of the reference images."""
        if not self.available:
            return
        room = self._limit(self.seen + len(pred)) - self.seen
        self.seen += len(pred)
        if room > 0:
            as_uint8 = (pred[:room].clamp(0, 1) * 255).round().to(torch.uint8)
            self.fake_parts.append(self.features(as_uint8))

    def compute(self) -> dict:
        """{"fid", "kid", "kid_std", "fid_images", "fid_weights"}; nulls when unavailable or fewer than 2 images."""
        none = {"fid": None, "kid": None, "kid_std": None, "fid_images": 0, "fid_weights": self.weights}
        if not self.available or self.real is None or not self.fake_parts:
            return none
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        fake = torch.cat(self.fake_parts)
        if len(fake) != len(self.real):
            raise ValueError(f"FID: {len(fake)} colorizations against {len(self.real)} true images")
        n = len(fake)
        if n < 2:
            return none
        fid = FrechetInceptionDistance(feature=_Given())
        fid.update(self.real, real=True)
        fid.update(fake, real=False)
        def kid(subset_size: int):
            with warnings.catch_warnings():  # "KID will save all extracted features": they are already in memory
                warnings.simplefilter("ignore", UserWarning)
                metric = KernelInceptionDistance(feature=_Given(), subset_size=subset_size)
            metric.update(self.real, real=True)
            metric.update(fake, real=False)
            with torch.random.fork_rng(devices=[]):  # KID draws random subsets: the same ones every time
                torch.manual_seed(0)
                mean, std = metric.compute()
            return float(mean), float(std)

        # KID on subsets of 1,000 (all the images when there are fewer). Its spread over subsets
        # that are the whole set is zero and says nothing: up to 1,000 images, kid_std is the
        # spread over 100 random halves (which overstates the whole set's error, about 1.4 times)
        kid_mean, kid_std = kid(min(1000, n))
        if n <= 1000:
            kid_std = kid(n // 2)[1] if n >= 4 else None
        return {"fid": float(fid.compute()), "kid": kid_mean, "kid_std": kid_std,
                "fid_images": n, "fid_weights": self.weights}



def _checksum(features: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(features.contiguous().numpy().tobytes()).hexdigest()



@functools.lru_cache(maxsize=None)
def _inception(device: str):
    """(network, weights name) once per process and device, or (None, None) with one message."""
    from models import inception

    try:
        return inception.load(device)
    except inception.Unavailable as e:
        print(f"FID/KID unavailable, reported as null: {e}", file=sys.stderr)
        return None, None
