"""Zhang et al. (2016): the gamut, the soft encoding, the annealed mean, the rebalancing weights."""
import math
import os

import numpy as np
import pytest
import torch
from skimage import color

from models.colorful import ab_gamut, annealed_mean, grid_to_gamut, smoothed_prior, soft_encode
from trainers.statistics import rebalancing_weights
from util.colour import AB_BINS_PER_AXIS


def _srgb_ab(steps):
    v = np.linspace(0, 1, steps)
    cube = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(1, -1, 3)
    return color.rgb2lab(cube)[0, :, 1:]


def test_gamut_near_313_reachable_and_not_transposed():
    centres, examples = ab_gamut("corners")
    ours = {tuple(c) for c in centres.long().tolist()}
    # Zhang et al. report 313 bins; ours are the corners of the grid cells sRGB colours fall in
    assert abs(len(ours) - 313) <= 5 and len(ours) == 309
    # every bin is reachable: its example, an sRGB colour, lies (under skimage's own conversion)
    # in a grid cell that the bin is a corner of
    lab = color.rgb2lab(examples.double().numpy()[None])[0]
    offset = lab[:, 1:] - centres.numpy()
    assert (np.abs(offset) < 10).all()
    # an independent sampling of sRGB by skimage: all four corners of each cell it reaches are ours
    cells = np.floor(_srgb_ab(24) / 10).astype(int)
    coarse = {(10 * (a + da), 10 * (b + db)) for a, b in cells.tolist() for da in (0, 1) for db in (0, 1)}
    assert coarse <= ours and len(ours) - len(coarse) < 0.1 * len(ours)
    # a and b not swapped: the gamut is not symmetric under a <-> b; green is a = -86, b = 83 and
    # blue b = -108, so bin (-90, 90) is a corner of green's cell and (-110, 80) is no bin at all
    assert {(b, a) for a, b in ours} != ours
    assert (-90, 90) in ours and (90, -90) in ours and (-110, 80) not in ours
    assert min(b for _, b in ours) == -110 and min(a for a, _ in ours) == -90
    # the bins sRGB colours fall in are all kept
    inside = {tuple(c) for c in ab_gamut("inside")[0].long().tolist()}
    assert inside < ours


def test_the_bins_srgb_falls_in_are_261_and_no_grid_of_10_holds_313():
    """The issue's first definition (bins some sRGB colour falls in) cannot give 313: wherever the
    grid's origin, at most 267 bins of 10 x 10 hold an sRGB colour."""
    centres, examples = ab_gamut("inside")
    assert len(centres) == 261
    lab = color.rgb2lab(examples.double().numpy()[None])[0]
    assert np.abs(lab[:, 1:] - centres.numpy()).max() <= 5 + 1e-6  # each example falls in its bin
    ab = _srgb_ab(64)
    def bins(oa, ob):
        q = np.floor((ab - (oa, ob)) / 10).astype(int) + 50
        return len(np.unique(q[:, 0] * 100 + q[:, 1]))
    counts = [bins(oa, ob) for oa in range(0, 10, 2) for ob in range(0, 10, 2)]
    assert max(counts) <= 267


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
    # known answers on two bins with probabilities 0.25 and 0.75: T = 1 is the mean; T = 0.5
    # squares them, (1/16, 9/16), renormalised to (0.1, 0.9)
    two = torch.full((1, len(centres), 1, 1), -1e4)
    two[0, 17], two[0, 200] = math.log(0.25), math.log(0.75)
    assert torch.allclose(annealed_mean(two, centres, 1.0)[0, :, 0, 0], 0.25 * centres[17] + 0.75 * centres[200],
                          atol=1e-4)
    assert torch.allclose(annealed_mean(two, centres, 0.5)[0, :, 0, 0], 0.1 * centres[17] + 0.9 * centres[200],
                          atol=1e-4)
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


def test_bin_counts_are_cached_per_data_set(tiny_data, tmp_path, monkeypatch):
    """Counted once per data set, shared by runs and families; counted again when a file changes."""
    import main
    from trainers import checkpoint as ckpt_io
    from util import colour

    monkeypatch.setenv("COLORIZATION_CACHE", str(tmp_path / "cache"))
    calls = []
    real = colour.ab_histogram
    monkeypatch.setattr(colour, "ab_histogram", lambda *a, **k: calls.append(1) or real(*a, **k))
    flags = ["--data", str(tiny_data), "--results", str(tmp_path / "R"), "--image_size", "16", "--batch_size", "4",
             "--epochs", "1", "--wandb", "disabled", "--workers", "1", "--colorful_width", "8", "--val_images", "2"]
    assert main.main(["--model", "colorful", "--run_name", "a", *flags]) == 0
    assert main.main(["--model", "colorful", "--run_name", "b", "--gamut", "inside", *flags]) == 0
    assert len(calls) == 1 and len(list((tmp_path / "cache" / "ab_counts").glob("*.pt"))) == 1
    a = ckpt_io.load(tmp_path / "R" / "a" / "last.pt")
    b = ckpt_io.load(tmp_path / "R" / "b" / "last.pt")
    assert len(a["extra"]["prior"]) == 309 and len(b["extra"]["prior"]) == 261
    assert b["model"]["head.6.weight"].shape[0] == 261  # the network predicts over its own gamut
    first = sorted((tiny_data / "train").iterdir())[0]
    os.utime(first, ns=(1, 1))  # same pixels, another modification time
    assert main.main(["--model", "colorful", "--run_name", "c", *flags]) == 0
    assert len(calls) == 2


def test_fewer_halvings_keep_more_resolution_for_small_images(tiny_data, tmp_path):
    """--colorful_halvings: 3 is the paper's layout (a 32 px input ends at 8 x 8 logits); 1 keeps
    32 x 32 logits, with weights of the same shapes; such a model trains and tests, and image
    sizes need only be a multiple of 2."""
    import main
    from models import colorful

    L = torch.zeros(2, 1, 32, 32)
    shapes = {}
    for h in (1, 2, 3):
        cfg = colorful.Config(colorful_width=8, colorful_halvings=h)
        net = colorful.build(cfg)
        shapes[h] = tuple(net(L).shape[-2:])
        assert colorful.size_multiple(cfg) == 2 ** h
    assert shapes == {1: (32, 32), 2: (16, 16), 3: (8, 8)}
    paper, small = colorful.build(colorful.Config(colorful_width=8)), colorful.build(colorful.Config(
        colorful_width=8, colorful_halvings=1))
    assert {k: v.shape for k, v in paper.state_dict().items()} == {k: v.shape for k, v in small.state_dict().items()}
    flags = ["--model", "colorful", "--colorful_width", "8", "--colorful_halvings", "1", "--image_size", "18",
             "--batch_size", "4", "--epochs", "1", "--data", str(tiny_data), "--results", str(tmp_path),
             "--wandb", "disabled", "--lpips", "off", "--fid", "off", "--workers", "1"]
    assert main.main(flags) == 0
    assert main.main(flags + ["--mode", "test"]) == 0


def test_a_guided_network_takes_each_hints_bins_straight_to_its_logits():
    """--guided colorful: per logit cell, the soft encoding of its hints' mean colour, times the
    learned gain, is added to the logits; cells without hints are untouched."""
    from models import hints
    from models.colorful import HINT_GAIN, ColorfulNet

    torch.manual_seed(0)
    centres = ab_gamut("corners")[0]
    net = ColorfulNet(len(centres), 4, 3, 1 + hints.CHANNELS, centres).eval()
    L = torch.rand(1, 1, 16, 16) * 2 - 1
    hint_map = torch.zeros(1, 3, 16, 16)
    for y, x, a, b in ((1, 1, 40, 20), (2, 3, 20, 0), (9, 13, -30, 50)):   # cell (0, 0) twice, cell (2, 3) once
        hint_map[0, :, y, x] = torch.tensor([a / 110, b / 110, 1.0])
    bins = net.hint_bins(hint_map, (4, 4))
    assert bins.shape == (1, len(centres), 4, 4)
    sums = bins.sum(1)[0]
    assert torch.allclose(sums[0, 0], torch.tensor(1.0)) and torch.allclose(sums[2, 3], torch.tensor(1.0))
    assert sums.sum() == pytest.approx(2.0)                                 # the other 14 cells: none
    nearest = centres[bins[0, :, 0, 0].argmax()]
    assert nearest.tolist() == [30.0, 10.0]                                 # the mean of (40, 20) and (20, 0)
    assert centres[bins[0, :, 2, 3].argmax()].tolist() == [-30.0, 50.0]
    with torch.no_grad():
        plain = net(L)
        hinted = net(L, hints=hint_map)
    assert net.hint_gain.item() == HINT_GAIN and net.hint_gain.requires_grad
    change = (hinted - plain).abs().sum(1)[0]
    assert change[0, 0] > 1 and change[2, 3] > 1 and change[1, 1] < change[0, 0] / 100
    assert hinted[0, :, 2, 3].argmax() == bins[0, :, 2, 3].argmax()         # the hint's bin now leads
    with pytest.raises(ValueError, match="centres"):
        ColorfulNet(len(centres), 4, 3, 1 + hints.CHANNELS)


def test_the_palette_proposes_the_colorization_then_the_most_probable_bins():
    """ColorfulColorizer.proposals (serve mode's palette): the annealed mean first, then the bins
    in order of probability, at L's size."""
    from types import SimpleNamespace

    from trainers.colorful import ColorfulColorizer
    from util.colour import AB_SCALE

    centres, _ = ab_gamut("corners")
    logits = torch.full((1, len(centres), 2, 2), -20.0)
    logits[0, 7], logits[0, 3] = 5.0, 4.0  # bin 7 most probable everywhere, then bin 3
    colorizer = ColorfulColorizer.__new__(ColorfulColorizer)
    colorizer.net, colorizer.centres = (lambda L: logits), centres
    colorizer.cfg = SimpleNamespace(temperature=0.38)
    out = colorizer.proposals(torch.zeros(1, 1, 8, 8), k=2)
    assert out.shape == (3, 1, 2, 8, 8)
    assert torch.allclose(out[0], colorizer.predict_ab(torch.zeros(1, 1, 8, 8)))
    assert torch.allclose(out[1] * AB_SCALE, centres[7].view(2, 1, 1).expand(2, 8, 8))
    assert torch.allclose(out[2] * AB_SCALE, centres[3].view(2, 1, 1).expand(2, 8, 8))
