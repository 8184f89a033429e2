"""Zhang et al. (2016): the gamut, the soft encoding, the annealed mean, the rebalancing weights."""
import numpy as np
import torch
from skimage import color

from colorize_data import AB_BINS_PER_AXIS, rebalancing_weights
from models.colorful import ab_gamut, annealed_mean, grid_to_gamut, smoothed_prior, soft_encode


def test_gamut_bins_are_reachable_complete_and_not_transposed():
    centres, examples = ab_gamut()
    # every bin holds an sRGB colour: its example lands in it under skimage's own conversion
    lab = color.rgb2lab(examples.double().numpy()[None])[0]
    assert np.abs(lab[:, 1:] - centres.numpy()).max() <= 5 + 1e-6
    # an independent coarse sampling of sRGB by skimage finds no bin we lack
    v = np.linspace(0, 1, 24)
    cube = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(1, -1, 3)
    ab = color.rgb2lab(cube)[0, :, 1:]
    coarse = {tuple(c) for c in (np.round(ab / 10) * 10).astype(int).tolist()}
    ours = {tuple(c) for c in centres.long().tolist()}
    assert coarse <= ours and len(ours) - len(coarse) < 0.15 * len(ours)
    # a and b not swapped: the sRGB gamut is not symmetric under a <-> b, and blue reaches b = -110
    assert {(b, a) for a, b in ours} != ours
    assert min(b for _, b in ours) == -110 and max(a for a, _ in ours) == 100
    # The sRGB gamut has 261 such bins, not the 313 Zhang et al. report (see README, "colorful")
    assert len(ours) == 261


def test_soft_encoding_sums_to_one_and_peaks_at_the_true_bin():
    centres, _ = ab_gamut()
    lookup = grid_to_gamut(centres)
    pick = torch.tensor([0, 40, 130, len(centres) - 1])
    ab = (centres[pick] + torch.tensor([[1.0, -2.0], [3.0, 3.0], [-4.0, 0.5], [0.0, 0.0]])).T.reshape(1, 2, 2, 2)
    index, weight = soft_encode(ab, lookup)
    assert index.shape == weight.shape == (1, 5, 2, 2)
    assert torch.allclose(weight.sum(1), torch.ones(1, 2, 2))
    assert torch.equal(index[:, 0].flatten(), pick)  # the nearest, heaviest bin is the true one
    assert (weight[:, 0] >= weight[:, 1:].max(1).values).all()


def test_annealed_mean():
    centres, _ = ab_gamut()
    logits = torch.randn(2, len(centres), 3, 3)
    expected = torch.einsum("bqhw,qc->bchw", torch.softmax(logits, 1), centres)
    assert torch.allclose(annealed_mean(logits, centres, 1.0), expected, atol=1e-4)
    one_hot = torch.full((1, len(centres), 1, 1), -1e4)
    one_hot[0, 17] = 0
    assert torch.allclose(annealed_mean(one_hot, centres, 0.38)[0, :, 0, 0], centres[17])
    # lower temperatures move towards the mode
    peaked = torch.zeros(1, len(centres), 1, 1)
    peaked[0, 17], peaked[0, 200] = 3.0, 2.0
    near_mode = (annealed_mean(peaked, centres, 0.1)[0, :, 0, 0] - centres[17]).norm()
    assert near_mode < (annealed_mean(peaked, centres, 1.0)[0, :, 0, 0] - centres[17]).norm()


def test_prior_and_rebalancing_weights():
    centres, _ = ab_gamut()
    counts = torch.zeros(AB_BINS_PER_AXIS ** 2)
    grid = grid_to_gamut(centres)
    counts[(grid >= 0).nonzero()[5, 0]] = 1000  # one frequent colour
    counts[(grid >= 0).nonzero()[100, 0]] = 10
    prior = smoothed_prior(counts, centres)
    assert prior.shape == (len(centres),) and abs(prior.sum().item() - 1) < 1e-5
    assert prior[5] > prior[100] > 0 and (prior > 0).sum() > 2  # smoothed in ab space: neighbours get mass
    w = rebalancing_weights(prior, all_bins=True)
    assert abs((prior * w).sum().item() - 1) < 1e-5  # expected weight under p is 1
    assert w[100] > w[5]  # rare colours weigh more
