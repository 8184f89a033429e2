"""Diffusion: known answers for both samplers, the schedule, shared checkpoints, K samples."""
import json

import conftest
import pytest
import torch

import main
import metrics
from models.diffusion import Denoiser, NoiseSchedule, ddim_sample, ddpm_sample
from trainers import checkpoint as ckpt_io

TINY = [*conftest.TINY, "--num_images", "2", "--diff_channels", "8", "--diff_depth", "2", "--timesteps", "20",
        "--steps", "4", "--val_images", "2", "--val_steps", "2"]


def oracle_for(schedule, x0):
    def eps(x_t, L, t):
        abar = schedule.at(schedule.abar, t)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
    return eps


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_samplers_return_x0_with_an_oracle(kind):
    schedule = NoiseSchedule(200, kind)
    x0 = torch.rand(3, 2, 8, 8) * 1.8 - 0.9
    L = torch.zeros(3, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert (ddpm_sample(oracle_for(schedule, x0), schedule, L, g) - x0).abs().max() < 1e-3
    for steps in (1, 2, 10, 50, 200):
        assert (ddim_sample(oracle_for(schedule, x0), schedule, L, steps, eta=0.0) - x0).abs().max() < 1e-3, steps
    # with eta > 0 the oracle still pins x0 at every step: only the last step's x0 matters
    assert (ddim_sample(oracle_for(schedule, x0), schedule, L, 25, eta=1.0, generator=g) - x0).abs().max() < 1e-3


def test_samplers_keep_the_hints_and_leave_unhinted_inputs_alone():
    """Given a hint map (by name), both samplers hold the hinted pixels to their hints (the predicted
    x0 takes the hint at every step, so the sample ends on it); an empty hint map changes nothing."""
    from models import hints

    schedule = NoiseSchedule(20, "cosine")
    net = Denoiser(8, 2, in_channels=1 + hints.CHANNELS).eval()
    L = torch.rand(2, 1, 8, 8) * 2 - 1
    hint_map = torch.zeros(2, 3, 8, 8)
    hint_map[0, :, 2, 5] = torch.tensor([0.5, -0.3, 1.0])
    hint_map[1, :, 7, 0] = torch.tensor([-0.2, 0.4, 1.0])

    def denoiser(h):
        return lambda x, L_, t: net(x, L_, t, hints=h)

    for sample in (lambda h, g: ddpm_sample(denoiser(h), schedule, L, g, hints=h),
                   lambda h, g: ddim_sample(denoiser(h), schedule, L, 5, eta=0.0, generator=g, hints=h),
                   lambda h, g: ddim_sample(denoiser(h), schedule, L, 5, eta=1.0, generator=g, hints=h)):
        with_hints = sample(hint_map, torch.Generator().manual_seed(0))
        assert torch.allclose(with_hints[0, :, 2, 5], torch.tensor([0.5, -0.3]))
        assert torch.allclose(with_hints[1, :, 7, 0], torch.tensor([-0.2, 0.4]))
        empty = torch.zeros_like(hint_map)
        without = sample(empty, torch.Generator().manual_seed(0))
        assert not torch.allclose(without[0, :, 2, 5], torch.tensor([0.5, -0.3]))
        # no hint: no projection (compare with a sampler that keeps no hints at all)
        assert torch.equal(without, sample_without_projection(sample, empty))


def sample_without_projection(sample, hint_map):
    from models import diffusion

    keep, diffusion._keep_hints = diffusion._keep_hints, lambda x0, hinted: x0
    try:
        return sample(hint_map, torch.Generator().manual_seed(0))
    finally:
        diffusion._keep_hints = keep


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_properties(kind):
    s = NoiseSchedule(1000, kind)
    assert s.abar.dtype == torch.float32 and s.abar.shape == (1000,)
    assert (s.abar[1:] < s.abar[:-1]).all() and s.abar[0] > 0.99 and s.abar[-1] < 1e-3
    x0, noise = torch.ones(2, 2, 4, 4), torch.zeros(2, 2, 4, 4)
    t = torch.tensor([0, 999])
    xt = s.q_sample(x0.bfloat16(), t, noise)
    assert xt.dtype == torch.float32 and torch.allclose(xt[1], x0[1] * s.abar[999].sqrt())


def test_denoiser_shapes_and_timestep_conditioning():
    net = Denoiser(8, 2).eval()
    x, L = torch.randn(2, 2, 16, 16), torch.randn(2, 1, 16, 16)
    out = net(x, L, torch.tensor([1, 1]))
    assert out.shape == (2, 2, 16, 16)
    assert not torch.allclose(out, net(x, L, torch.tensor([15, 15])))
    assert not torch.allclose(out, net(x, -L, torch.tensor([1, 1])))  # conditioned on the grey image


def test_diversity_metrics_on_hand_made_inputs():
    target = torch.rand(2, 3, 12, 12)
    pred = torch.rand(2, 3, 12, 12)
    same = metrics.diversity(torch.stack([pred, pred, pred]), target)
    assert same["diversity_delta_e"].abs().max() < 1e-6
    assert torch.allclose(same["best_of_k_delta_e"], metrics.delta_e_2000(pred, target))
    mixed = metrics.diversity(torch.stack([pred, target]), target)
    assert mixed["best_of_k_delta_e"].abs().max() < 1e-4  # one sample is perfect
    assert torch.allclose(mixed["diversity_delta_e"], metrics.delta_e_2000(pred, target))


def test_ddpm_checkpoint_samples_as_ddim_with_k_samples(tiny_data, tmp_path):
    flags = TINY + ["--data", str(tiny_data), "--results", str(tmp_path)]
    assert main.main(["--model", "unetddpm", "--epochs", "2", *flags]) == 0
    ckpt = ckpt_io.load(tmp_path / "unetddpm" / "best.pt")
    assert "ema" in ckpt and ckpt["family"] == "unetddpm"
    assert any(not torch.equal(ckpt["ema"][k], ckpt["model"][k]) for k in ckpt["model"])
    history = [json.loads(x) for x in (tmp_path / "unetddpm" / "history.jsonl").read_text().splitlines()]
    assert any("val/loss" in h for h in history) and any("val/delta_e" in h for h in history)
    assert main.main(["--model", "unetddim", "--mode", "test", "--weights", str(tmp_path / "unetddpm" / "best.pt"),
                      "--num_samples", "3", *flags]) == 0
    m = json.loads((tmp_path / "unetddim" / "metrics.json").read_text())
    assert m["model"] == "unetddim" and m["n_images"] == 4
    assert m["best_of_k_delta_e"] <= m["delta_e"] + 1e-6
    assert m["diversity_delta_e"] > 0.1  # the K samples really differ
    from PIL import Image

    width = Image.open(tmp_path / "unetddim" / "test_grid.png").size[0]
    assert width == 2 + 5 * (96 + 2)  # grey | 3 samples | ground truth, 16 px shown at 96
    assert main.main(["--model", "unetddpm", "--mode", "test", "--num_samples", "1", *flags]) == 0
    m = json.loads((tmp_path / "unetddpm" / "metrics.json").read_text())
    assert "diversity_delta_e" not in m


def test_bf16_autocast_training_step_stays_finite(tiny_data, tmp_path):
    assert main.main(["--model", "unetddim", "--epochs", "1", "--amp", "bf16", *TINY, "--data", str(tiny_data),
                      "--results", str(tmp_path)]) == 0
    ckpt = ckpt_io.load(tmp_path / "unetddim" / "last.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_ema_decay_warms_up_so_the_random_start_is_forgotten():
    """The base trainer's average: after n updates the decay is min(decay, (1 + n) / (10 + n)),
    not a constant 0.999 that would keep 0.999^n of the random initial weights."""
    from trainers.base import TrainConfig, Trainer

    net = torch.nn.Linear(1, 1, bias=False)
    trainer = Trainer(net, TrainConfig(ema_decay=0.999), "cpu")
    with torch.no_grad():
        net.weight.fill_(0.0)
        trainer.ema.weight.fill_(0.0)
    expected = 0.0
    for n in range(300):
        with torch.no_grad():
            net.weight.fill_(1.0)  # the trained weight; the average started at 0
        trainer.step = n + 1
        trainer.update_ema()
        decay = min(0.999, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * 1.0
        assert trainer.ema.weight.item() == pytest.approx(expected, abs=1e-6)
    assert trainer.ema.weight.item() > 0.96  # a constant 0.999 would give 1 - 0.999^300 = 0.26
    assert trainer.eval_model is trainer.ema
    assert Trainer(net, TrainConfig(ema_decay=0.0), "cpu").eval_model is net  # off: the weights


def test_after_a_short_run_the_average_is_no_worse_than_the_raw_weights(tmp_path):
    """On a fixed validation batch (fixed t and noise), the EMA's noise error after 140 steps is at
    most the raw weights' (with a constant 0.999 it was 8x worse, 0.93 against 0.11: mostly the
    random start)."""
    from conftest import colour_crops, write_images

    import colorize_data as cd
    from registry import REGISTRY

    root = tmp_path / "data"
    write_images(root / "train", colour_crops(33, seed=1))
    write_images(root / "test", colour_crops(4, seed=2))
    flags = [*TINY, "--timesteps", "100", "--data", str(root), "--results", str(tmp_path / "R"),
             "--learning_rate", "3e-3", "--lr_schedule", "constant", "--val_every", "1000", "--num_images", "0"]
    assert main.main(["--model", "unetddim", "--epochs", "20", *flags]) == 0
    ckpt = ckpt_io.load(tmp_path / "R" / "unetddim" / "last.pt")
    assert ckpt["step"] == 140 and ckpt["args"]["ema_decay"] == 0.999
    _, args, _ = main.parse_args(["--model", "unetddim", *flags])
    trainer = REGISTRY["unetddim"].make(args, "cpu", training=False)
    trainer.load_state_dict(ckpt)
    split = json.loads((tmp_path / "R" / "unetddim" / "split.json").read_text())
    images, _, _ = cd.load_eval_images(root, split["val"] + split["test"], 16)
    batch = trainer.prepare(images)

    def noise_error(net):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return sum(float(trainer.noise_loss(net.eval(), batch["ab"], batch["L"], g)) for _ in range(20)) / 20

    raw, average = noise_error(trainer.model), noise_error(trainer.ema)
    assert average <= raw, (average, raw)
    assert raw < 0.5  # it did learn: the error of an untrained network is about 1
