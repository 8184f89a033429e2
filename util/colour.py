"""Colour conventions, decided here once.

    * images are sRGB with the D65 white point; RGB tensors are (B, 3, H, W) floats in [0, 1];
    * CIE Lab as scikit-image defines it: L in [0, 100], a and b roughly in [-110, 110];
    * the model input is L scaled to [-1, 1] (``L / 50 - 1``) and the target is ab scaled by 1/110,
      so that every gamut colour lies in [-1, 1];
    * every model predicts ab only. An image is always rebuilt from the L it was given and the
      predicted ab (``compose_rgb``); at full resolution ab is upsampled, L is never touched
      (``colorize_full_resolution``);
    * the ab grid of Zhang et al. and Deshpande et al.: 10 x 10 bins, 23 per axis.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

L_CENTER = 50.0  # model input: (L - 50) / 50 in [-1, 1]



L_SCALE = 50.0



AB_SCALE = 110.0  # model target: ab / 110, every sRGB colour within [-1, 1]



# sRGB (D65) <-> XYZ, the matrices scikit-image uses.
_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]], dtype=torch.float64)



_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)



_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)



def _mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 colour matrix along dim 1 of a (B, 3, H, W) tensor."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(x), x)



def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> (B, 3, H, W) Lab (L in [0, 100]); matches skimage.color.rgb2lab."""
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp_min(0) ** 2.4, rgb / 12.92)
    xyz = _mix(_RGB_TO_XYZ, lin) / _WHITE_D65.to(rgb).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)



def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) Lab -> sRGB clipped to [0, 1]; matches skimage.color.lab2rgb."""
    L, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    fy = (L + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = (fy - b / 200.0).clamp_min(0)  # skimage clips negative z the same way
    f = torch.stack([fx, fy, fz], dim=1)
    xyz = torch.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / 7.787)
    lin = _mix(_XYZ_TO_RGB, xyz * _WHITE_D65.to(lab).view(1, 3, 1, 1))
    rgb = torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return rgb.clamp(0, 1)



def rgb_to_model(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB in [0, 1] -> (L scaled to [-1, 1], ab scaled by 1/110): the model's input and target."""
    lab = rgb_to_lab(rgb)
    return (lab[:, :1] - L_CENTER) / L_SCALE, lab[:, 1:] / AB_SCALE



def compose_rgb(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Scaled L (B,1,H,W) and scaled ab (B,2,H,W) -> RGB in [0, 1]. The only way back to an image.
    L may be a hinted network's whole conditioning input (models/hints.py): its first channel is L."""
    lab = torch.cat([L[:, :1].float() * L_SCALE + L_CENTER, ab.float() * AB_SCALE], dim=1)
    return lab_to_rgb(lab)



AB_BIN = 10        # the ab grid of Zhang et al. and Deshpande et al.: bins of 10 x 10 ab units



AB_BINS_PER_AXIS = 23  # bin centres -110, -100, ..., 110 on each axis



def ab_bin_index(ab: torch.Tensor) -> torch.Tensor:
    """Scaled ab (B, 2, H, W) -> (B, H, W) index of its 10 x 10 bin on the 23 x 23 grid (a major)."""
    q = torch.round(ab.float() * AB_SCALE / AB_BIN).long().clamp(-11, 11) + 11
    return q[:, 0] * AB_BINS_PER_AXIS + q[:, 1]



@torch.no_grad()
def ab_histogram(batches, device) -> torch.Tensor:
    """Pixel counts per ab bin (529,) over uint8 RGB batches (an iterable of (B, 3, H, W))."""
    counts = torch.zeros(AB_BINS_PER_AXIS ** 2, dtype=torch.float64, device=device)
    for images in batches:
        _, ab = rgb_to_model(uint8_to_float(images.to(device)))
        counts += torch.bincount(ab_bin_index(ab).flatten(), minlength=counts.numel()).double()
    return counts



def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0)



def L_at_model_size(L: torch.Tensor, image_size: int) -> torch.Tensor:
    """Scaled L (B, 1, H, W) of a photo of any size as the network sees it: image_size x image_size,
    bilinear with antialiasing (what colorize_full_resolution predicts from)."""
    return F.interpolate(L, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)


@torch.no_grad()
def colorize_full_resolution(predict_ab, rgb: torch.Tensor, image_size: int, rows: int | None = None) -> torch.Tensor:
    """Colorize (B, 3, H, W) RGB of any size, uint8 or float in [0, 1] (the result is of the same
    kind): ab is predicted from L resized to the model's image_size, upsampled bilinearly to H x W
    and combined with the untouched full-resolution L. Works in strips of `rows` rows (default:
    about a megapixel), so beyond the input and the result it holds L (4 bytes a pixel) and one
    strip's Lab arithmetic (~300 MB): an 81-megapixel photo in about 1.1 GB, where whole-image
    float arithmetic took ~140 bytes a pixel (11.3 GB)."""
    as_float = (lambda x: x.float().div_(255.0)) if rgb.dtype == torch.uint8 else (lambda x: x.float())
    b, _, h, w = rgb.shape
    rows = rows or max(1, 2 ** 20 // (w * b))
    L_full = torch.empty(b, 1, h, w, device=rgb.device)
    for r in range(0, h, rows):
        L_full[:, :, r:r + rows] = rgb_to_model(as_float(rgb[:, :, r:r + rows]))[0]
    ab_small = predict_ab(L_at_model_size(L_full, image_size)).float()
    # bilinear upsampling is separable: to full width at the small height now, to full height per strip
    ab_wide = F.interpolate(ab_small, size=(ab_small.shape[-2], w), mode="bilinear", align_corners=False)
    out = torch.empty_like(rgb)
    for r in range(0, h, rows):
        ys = torch.arange(r, min(r + rows, h), device=rgb.device, dtype=torch.float32)
        src = ((ys + 0.5) * (ab_small.shape[-2] / h) - 0.5).clamp_min(0)  # align_corners=False
        i0 = src.floor().long().clamp(max=ab_small.shape[-2] - 1)
        i1 = (i0 + 1).clamp(max=ab_small.shape[-2] - 1)
        t = (src - i0).view(1, 1, -1, 1)
        ab = ab_wide[:, :, i0] * (1 - t) + ab_wide[:, :, i1] * t
        strip = compose_rgb(L_full[:, :, r:r + rows], ab)
        out[:, :, r:r + rows] = (strip * 255).round_() if rgb.dtype == torch.uint8 else strip
    return out


def grey_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """What a colorizer is given, shown as an image: the L of RGB (B, 3, H, W) in [0, 1], no colour."""
    return grey_from_L(rgb_to_model(rgb)[0])


def grey_from_L(L: torch.Tensor, ab: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled L (B, 1, H, W) as RGB in [0, 1]: without colour, or with the given ab (hints) only."""
    return compose_rgb(L, ab if ab is not None else L.new_zeros(L.shape[0], 2, *L.shape[2:]))
