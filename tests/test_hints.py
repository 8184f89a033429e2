"""User-guided colorization (models/hints.py): simulated and revealed hints, hint files, a toy
whose colours only hints can tell, refusals, resume, the hint curve in the report."""
import json

import conftest
import numpy as np
import pytest
import torch
from conftest import write_images

import main
import metrics
from models import hints
from registry import REGISTRY
from util import hint_files
from util.colour import compose_rgb, rgb_to_model

TINY = [*conftest.TINY, "--num_images", "2", "--input", ""]


def run(*argv):
    return main.main([str(a) for a in argv])


def test_simulated_hints_follow_the_paper():
    g = torch.Generator().manual_seed(0)
    boxes = hints.draw(20000, 256, 256, generator=g)
    counts = torch.tensor([len(b) for b in boxes], dtype=torch.float64)
    assert counts.mean() == pytest.approx(7.0, abs=0.2)           # Geometric(1/8) on 0, 1, ...: mean 7
    assert (counts == 0).double().mean() == pytest.approx(1 / 8, abs=0.01)  # automatic images
    assert (counts == 1).double().mean() == pytest.approx(7 / 64, abs=0.01)
    widths = [w for b in boxes for _, _, w in b]
    assert set(widths) == set(range(1, 10))                       # 1 to 9 px at 256 px
    assert all(0 <= y <= 256 - w and 0 <= x <= 256 - w for b in boxes for y, x, w in b)
    assert hints.patch_limit(32) == 1 and hints.patch_limit(64) == 2 and hints.patch_limit(128) == 4
    # --hint_p: another p, mean (1 - p) / p and p of the images without a hint
    counts = torch.tensor([len(b) for b in hints.draw(20000, 32, 32, p=1 / 16, generator=g)], dtype=torch.float64)
    assert counts.mean() == pytest.approx(15.0, abs=0.4) and (counts == 0).double().mean() == pytest.approx(1 / 16,
                                                                                                          abs=0.01)
    # --hint_none: a further share without hints; the others keep the geometric (mean (1 - none) (1 - p) / p)
    counts = torch.tensor([len(b) for b in hints.draw(20000, 32, 32, p=1 / 32, none=1 / 8, generator=g)],
                          dtype=torch.float64)
    assert (counts == 0).double().mean() == pytest.approx(1 / 8 + 7 / 8 / 32, abs=0.01)
    assert counts.mean() == pytest.approx(7 / 8 * 31, abs=0.8)
    # none = 0 draws exactly the paper's stream (runs from before --hint_none resume onto the same hints)
    assert hints.draw(50, 32, 32, none=0.0, generator=torch.Generator().manual_seed(3)) == hints.draw(
        50, 32, 32, generator=torch.Generator().manual_seed(3))


def test_hint_map_is_the_patch_mean_under_a_consistent_mask():
    torch.manual_seed(0)
    ab = torch.rand(64, 2, 64, 64) - 0.5
    g = torch.Generator().manual_seed(1)
    boxes = hints.draw(64, 64, 64, generator=g)
    m = hints.simulate(ab, generator=torch.Generator().manual_seed(1))
    assert set(m[:, 2].unique().tolist()) <= {0.0, 1.0}
    assert (m[:, :2] * (1 - m[:, 2:])).abs().max() == 0            # no colour without the mask
    for i, b in enumerate(boxes):
        mask = torch.zeros(64, 64)
        for y, x, w in b:
            mask[y:y + w, x:x + w] = 1
        assert torch.equal(m[i, 2], mask)                          # the mask covers exactly the patches
        if len(b) == 1:
            y, x, w = b[0]
            assert torch.allclose(m[i, :2, y, x], ab[i, :, y:y + w, x:x + w].mean((1, 2)), atol=1e-6)
    # the global generator by default: the same seed draws the same hints (a resumed run's hints)
    torch.manual_seed(5)
    a = hints.simulate(ab)
    torch.manual_seed(5)
    assert torch.equal(a, hints.simulate(ab))


def test_painting_is_the_patch_by_patch_loop():
    """hints.paint (vectorised, no host sync) gives what painting patch by patch would: each patch
    the mean ab under it, later patches over earlier ones where they overlap."""
    g = torch.Generator().manual_seed(2)
    ab = torch.rand(3, 2, 12, 10, generator=g) - 0.5
    patches = [(0, 0, 0, 4), (0, 2, 2, 4), (1, 8, 6, 4), (0, 1, 1, 1), (2, 0, 9, 1), (1, 7, 5, 3)]
    expected = torch.zeros(3, 3, 12, 10)
    for i, y, x, w in patches:
        expected[i, :2, y:y + w, x:x + w] = ab[i, :, y:y + w, x:x + w].mean((1, 2), keepdim=True)
        expected[i, 2, y:y + w, x:x + w] = 1
    assert torch.allclose(hints.paint(ab, patches, 4), expected, atol=1e-6)
    assert hints.paint(ab, [], 4).abs().sum() == 0


def test_revealed_hints_are_nested_seeded_by_image_and_true():
    ab = torch.rand(6, 2, 32, 32) - 0.5
    assert hints.reveal(ab, 0).abs().sum() == 0
    five, ten = hints.reveal(ab, 5), hints.reveal(ab, 10)
    assert (five[:, 2] <= ten[:, 2]).all()                        # the first 5 of 10 hints are the 5 hints
    assert ((five[:, 2].flatten(1).sum(1) >= 1) & (five[:, 2].flatten(1).sum(1) <= 5)).all()
    on = ten[:, 2] > 0                                              # 1 px hints at 32 px: the true colour
    assert torch.allclose(ten[:, 0][on], ab[:, 0][on]) and torch.allclose(ten[:, 1][on], ab[:, 1][on])
    split = torch.cat([hints.reveal(ab[:2], 5, first_index=0), hints.reveal(ab[2:], 5, first_index=2)])
    assert torch.equal(split, five)                                 # independent of the batch size


def test_hint_files_json_and_png(tmp_path):
    from PIL import Image

    good = tmp_path / "h.json"
    good.write_text(json.dumps([[0, 0, "#ff0000"], {"x": 99, "y": 49, "color": [0, 0, 255]}]))
    points = hint_files.read_points(good, 100, 50)
    assert points == [(0, 0, (255, 0, 0)), (99, 49, (0, 0, 255))]
    m = hints.map_from_points(points, 100, 50, 16)
    assert m.shape == (1, 3, 16, 16) and m[0, 2].sum() == 2 and m[0, 2, 0, 0] == 1 and m[0, 2, 15, 15] == 1
    assert m[0, 0, 0, 0] * 110 == pytest.approx(80.1, abs=0.5)     # red: a* of sRGB red
    assert m[0, 1, 15, 15] * 110 == pytest.approx(-107.9, abs=0.5)  # blue: b* of sRGB blue
    for content, message in [([[100, 0, "#ff0000"]], "outside the 100 x 50 image"),
                             ([[0, 0, "red"]], "#rrggbb"), ({"x": 1}, "JSON list"), ([[1, 2]], r"\[x, y, colour\]")]:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(content))
        with pytest.raises(hint_files.HintError, match=message):
            hint_files.read_points(bad, 100, 50)
    picture = np.zeros((50, 100, 4), np.uint8)
    picture[10, 20] = (0, 255, 0, 255)
    Image.fromarray(picture).save(tmp_path / "h.png")
    assert hint_files.read_points(tmp_path / "h.png", 100, 50) == [(20, 10, (0, 255, 0))]
    with pytest.raises(hint_files.HintError, match="draw the hints at the image's resolution"):
        hint_files.read_points(tmp_path / "h.png", 64, 64)
    Image.fromarray(picture[..., :3]).save(tmp_path / "opaque.png")
    with pytest.raises(hint_files.HintError, match="no transparency"):
        hint_files.read_points(tmp_path / "opaque.png", 100, 50)


def toy_data(root, n_train=96, n_test=8, seed=0):
    """Two classes of the same grey textures, one reddish (a* +30), one greenish (a* -30): L says
    nothing of the colour."""
    from skimage.color import lab2rgb

    rng = np.random.default_rng(seed)

    def paint(L, sign):
        lab = np.stack([L, np.full_like(L, 30.0 * sign), np.zeros_like(L)], -1)
        return (lab2rgb(lab).clip(0, 1) * 255).round().astype(np.uint8)

    for split, n in (("train", n_train), ("test", n_test)):
        textures = [60 + 4 * rng.standard_normal((16, 16)) for _ in range(n)]
        write_images(root / split / "red", [paint(L, 1) for L in textures])
        write_images(root / split / "green", [paint(L, -1) for L in textures])
    return root


@pytest.mark.slow
def test_one_hint_tells_the_colour_that_grey_cannot(tmp_path):
    data = toy_data(tmp_path / "toy")
    flags = TINY + ["--data", data, "--results", tmp_path / "R", "--batch_size", 16, "--unet_channels", 8,
                    "--unet_depth", 2, "--val_every", 100, "--learning_rate", 1e-2, "--num_images", 0]
    assert run("--model", "unet", "--guided", "--epochs", 20, "--run_name", "guided", *flags) == 0
    assert run("--model", "unet", "--mode", "test", "--run_name", "guided", "--hint_counts", "0,1", *flags) == 0
    assert run("--model", "unet", "--epochs", 5, "--run_name", "plain", *flags) == 0
    assert run("--model", "unet", "--mode", "test", "--run_name", "plain", *flags) == 0
    guided = json.loads((tmp_path / "R" / "guided" / "metrics.json").read_text())
    plain = json.loads((tmp_path / "R" / "plain" / "metrics.json").read_text())
    curve = {r["count"]: r["delta_e"] for r in guided["hints"]}
    assert curve[0] == pytest.approx(guided["delta_e"])             # 0 hints: the automatic figures
    paste = {r["count"]: r["delta_e"] for r in guided["hints_paste"]}  # the hints alone, no model
    assert paste[1] < paste[0] and curve[1] < paste[1]
    assert plain["delta_e"] > 15 and curve[0] > 15                  # a* +-30 cannot be told from L
    assert curve[1] < 6                                             # one hint tells it


@pytest.mark.parametrize("name", [n for n in REGISTRY if hints.takes_hints(REGISTRY[n].network)])
def test_every_network_taking_hints_takes_them_by_name(name):
    """Read from the registry: a new family that takes no hints is not listed here, one that does is.
    The hints are a named input (hints=...), never channels of L."""
    from runs.memory import example_inputs

    family = REGISTRY[name]
    guided, plain = (family.configs({**family.network.SMOKE, "guided": g})[0] for g in (True, False))
    inputs, named = example_inputs(family.network, guided, 2, 16)
    assert [x.shape[1] for x in inputs if x.dim() == 4].count(1) >= 1 and named["hints"].shape[1] == hints.CHANNELS
    net, first = family.network.build(guided).eval(), lambda o: o[0] if isinstance(o, tuple) else o
    torch.manual_seed(0)  # (a VAE draws its latent)
    out = first(net(*inputs, **named))
    torch.manual_seed(0)
    assert out.shape[0] == 2 and torch.equal(first(net(*inputs)), out)  # no hints given: an empty map
    with pytest.raises(ValueError, match="without colour hints"):  # an unguided network takes L alone
        family.network.build(plain)(*inputs, **named)


def test_refusals_and_a_guided_run_end_to_end(tiny_data, tmp_path, capsys):
    from PIL import Image

    res = tmp_path / "R"
    flags = TINY + REGISTRY["unet"].smoke_flags() + ["--data", tiny_data, "--results", res]
    assert run("--model", "unet", "--epochs", 1, "--run_name", "plain", *flags) == 0
    assert run("--model", "unet", "--epochs", 1, "--run_name", "guided", "--guided", *flags) == 0
    assert torch.load(res / "guided" / "best.pt", weights_only=True)["network"]["guided"] is True
    photo = tiny_data / "test" / "img_000.png"
    hint = tmp_path / "hint.json"
    hint.write_text(json.dumps([[5, 5, "#ff0000"]]))
    # a model trained without hints refuses them, in test and colorize modes
    with pytest.raises(SystemExit) as e:
        run("--model", "unet", "--mode", "test", "--run_name", "plain", "--hint_counts", "0,1", *flags)
    assert e.value.code == 2 and "trained without colour hints" in capsys.readouterr().err
    colorize = ["--model", "unet", "--mode", "colorize", "--results", res, "--input", photo, "--device", "cpu"]
    with pytest.raises(SystemExit) as e:
        run(*colorize, "--run_name", "plain", "--hints", hint)
    assert e.value.code == 2 and "trained without colour hints" in capsys.readouterr().err
    # a hint outside the 48 x 40 photo, hints for a folder, hints in train mode
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps([[48, 0, "#ff0000"]]))
    with pytest.raises(SystemExit) as e:
        run(*colorize, "--run_name", "guided", "--hints", outside)
    assert e.value.code == 2 and "outside the 48 x 40 image" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run("--model", "unet", "--mode", "colorize", "--results", res, "--input", tiny_data / "test",
            "--run_name", "guided", "--hints", hint)
    assert e.value.code == 2 and "give one image file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("--model", "unet", "--hints", hint, *flags)
    assert "--hints FILE goes with --mode colorize" in capsys.readouterr().err
    # colorized with and without the hint: the hint changes the colours
    assert run(*colorize, "--run_name", "guided", "--hints", hint, "--output", tmp_path / "with", "--sheet") == 0
    sheet = np.asarray(Image.open(tmp_path / "with" / "sheets" / "img_000.png").convert("RGB"), dtype=int)
    assert (np.abs(sheet[..., 0] - sheet[..., 1]) > 100).any()     # the red hint dot on the grey panel
    assert run(*colorize, "--run_name", "guided", "--output", tmp_path / "without") == 0
    a = np.asarray(Image.open(tmp_path / "with" / "img_000.png"), dtype=float)
    b = np.asarray(Image.open(tmp_path / "without" / "img_000.png"), dtype=float)
    assert a.shape == (40, 48, 3) and np.abs(a - b).max() > 0
    # the hint curve: metrics.json, summary.md and its chart
    assert run("--model", "unet", "--mode", "test", "--run_name", "guided", "--hint_counts", "5,0,1", *flags) == 0
    m = json.loads((res / "guided" / "metrics.json").read_text())
    assert [r["count"] for r in m["hints"]] == [0, 1, 5] and m["hints"][0]["delta_e"] == pytest.approx(m["delta_e"])
    import report

    report.write_summary(res)
    text = (res / "summary.md").read_text()
    assert "Colour hints" in text and "| guided |" in text.split("Colour hints")[1]
    assert (res / "hints.png").is_file()
    # fine-tuning a guided run with other training hints: a training setting, taken from this command
    capsys.readouterr()
    assert run("--model", "unet", "--epochs", 1, "--run_name", "tuned", "--init_from", "guided", "--hint_p", "0.5",
               "--hint_none", "0.25", *flags) == 0
    tuned = torch.load(res / "tuned" / "best.pt", weights_only=True)
    assert tuned["network"]["guided"] is True and (tuned["args"]["hint_p"], tuned["args"]["hint_none"]) == (0.5, 0.25)
    assert "ignored" not in capsys.readouterr().out


def test_guided_on_a_family_without_hints_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main.parse_args(["--model", "gray", "--guided"])
    assert e.value.code == 2 and "gray takes no colour hints" in capsys.readouterr().err
    # basicvae's network could be built with hint channels, but its decoder (no skips) loses them: refused, saying why
    with pytest.raises(SystemExit) as e:
        main.parse_args(["--model", "basicvae", "--guided"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "basicvae takes no colour hints: its decoder has no skip connections" in err
    assert "unetvae" in err.split("the families that do:")[1]


def test_hint_p_and_hint_none_set_the_training_hints_of_a_guided_run(capsys, monkeypatch):
    from trainers.inference import Colorizer

    _, args, _ = main.parse_args(["--model", "unet", "--guided", "--hint_p", "0.25", "--hint_none", "0.5"])
    network_cfg, cfg = REGISTRY["unet"].configs(args)
    assert (cfg.hint_p, cfg.hint_none) == (0.25, 0.5)             # training settings: --init_from may change them
    _, default = REGISTRY["unet"].configs(main.parse_args(["--model", "unet", "--guided"])[1])
    assert (default.hint_p, default.hint_none) == (1 / 8, 0.0)   # the paper's, by default
    drawn = []
    monkeypatch.setattr(hints, "simulate",
                        lambda ab, p, none: drawn.append((p, none)) or torch.zeros(ab.shape[0], 3, *ab.shape[2:]))
    colorizer = Colorizer(torch.nn.Identity(), cfg, network_cfg, "cpu")
    batch = colorizer.prepare(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), simulated=True)
    assert drawn == [(0.25, 0.5)] and batch["L"].shape == (2, 1, 16, 16) and batch["hints"].shape == (2, 3, 16, 16)
    for argv, why in ((["--hint_p", "0.25"], "add --guided"), (["--hint_none", "0.1"], "add --guided"),
                      (["--guided", "--hint_p", "0"], "must be in (0, 1]"),
                      (["--guided", "--hint_p", "1.5"], "must be in (0, 1]"),
                      (["--guided", "--hint_none", "1"], "must be in [0, 1)"),
                      (["--guided", "--hint_none", "-0.1"], "must be in [0, 1)")):
        with pytest.raises(SystemExit) as e:
            main.parse_args(["--model", "unet", *argv])
        assert e.value.code == 2 and why in capsys.readouterr().err


def test_the_pasted_hints_row_is_the_grey_baseline_at_0_hints_and_improves_with_more():
    """The no-model row of every hint curve: 0 hints is exactly the grey image, and each hint
    pasted in lowers delta E (the revealed patches carry the true mean colour)."""
    from trainers.evaluation import paste_hints

    crops = np.stack(conftest.colour_crops(6, size=(32, 32), seed=4))
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
    rows = {r["count"]: r for r in paste_hints(images, [0, 1, 10], batch_size=4)}
    rgb = images.float() / 255
    L, _ = rgb_to_model(rgb)
    grey = metrics.delta_e_2000(compose_rgb(L, torch.zeros(6, 2, 32, 32)), rgb).mean().item()
    assert rows[0]["delta_e"] == pytest.approx(grey, abs=1e-4) and rows[0]["colorfulness"] < 0.01
    assert rows[0]["delta_e"] > rows[1]["delta_e"] > rows[10]["delta_e"]


def test_every_hint_count_samples_with_the_same_noise(tiny_data, tmp_path, monkeypatch):
    """A stochastic sampler (DDPM) draws the same noise at every count of --hint_counts: with the
    revealed hints emptied, the curve is exactly flat, so a real curve shows the hints, not noise."""
    res = tmp_path / "R"
    flags = TINY + REGISTRY["unetddpm"].smoke_flags() + ["--data", tiny_data, "--results", res, "--timesteps", 4]
    assert run("--model", "unetddpm", "--epochs", 1, "--guided", *flags) == 0
    monkeypatch.setattr(hints, "reveal", lambda ab, count, first_index=0: torch.zeros(len(ab), 3, *ab.shape[2:]))
    assert run("--model", "unetddpm", "--mode", "test", "--hint_counts", "0,1,2", *flags) == 0
    curve = json.loads((res / "unetddpm" / "metrics.json").read_text())["hints"]
    assert curve[0]["delta_e"] > 0 and [r["delta_e"] for r in curve] == [curve[0]["delta_e"]] * 3
    # also with --num_samples K, whose automatic evaluation draws K samples a batch (two batches here)
    assert run("--model", "unetddpm", "--mode", "test", "--hint_counts", "0,1", "--num_samples", 3,
               *flags, "--batch_size", 2) == 0
    curve = json.loads((res / "unetddpm" / "metrics.json").read_text())["hints"]
    assert curve[0]["delta_e"] == curve[1]["delta_e"]


def test_a_one_pixel_hint_is_drawn_large_enough_to_see_in_the_grid():
    from trainers.evaluation import visible_hints

    ab, mask = torch.zeros(1, 2, 32, 32), torch.zeros(1, 1, 32, 32)
    ab[0, :, 10, 20], mask[0, 0, 10, 20] = torch.tensor([0.5, -0.25]), 1.0
    shown = visible_hints(ab, mask)
    assert torch.allclose(shown[0, :, 9:12, 19:22], torch.tensor([0.5, -0.25]).view(2, 1, 1).expand(2, 3, 3))
    assert shown[0, :, 13:, :].abs().sum() == 0 and shown[0, :, :, :18].abs().sum() == 0
