"""Training `colorful` (Zhang et al. 2016): class-rebalanced multinomial cross-entropy over ab bins.

Before the first step the prior is counted over the training split (pixels per ab bin, cached per
data set; smoothed by a Gaussian of --prior_sigma ab units in ab space), giving the rebalancing weights
w ~ ((1 - lambda) p + lambda / Q)^-1 with E_p[w] = 1 (--rebalance_lambda 0.5); it is kept in the
checkpoint, so test mode needs no data. The target is the soft encoding of the ab of each pixel
at the logits' (quarter) resolution: its 5 nearest bins, Gaussian weights (--soft_sigma 5). The
loss per pixel is -sum_q target_q log softmax(logits)_q times the weight of the pixel's nearest bin.
Decoding: the annealed mean with --temperature (0.38, the paper's), upsampled to full size."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.colorful import ab_gamut, annealed_mean, grid_to_gamut, smoothed_prior, soft_encode
from models.config import setting
from models.hints import given
from trainers.base import TrainConfig, Trainer
from trainers.inference import Colorizer
from trainers.statistics import rebalancing_weights, train_ab_counts
from util.colour import AB_SCALE


@dataclass(frozen=True)
class ColorfulConfig(TrainConfig):
    learning_rate: float = setting(3e-4, "peak learning rate of AdamW", above=0.0)
    temperature: float = setting(0.38, "annealed mean: 1 the mean, near 0 the mode", above=0.0, role="resume")
    rebalance_lambda: float = setting(0.5, "mix of the prior with a uniform one", minimum=0.0, maximum=1.0)
    prior_sigma: float = setting(5.0, "smoothing of the prior, ab units", above=0.0)
    soft_sigma: float = setting(5.0, "soft-encoding Gaussian, ab units", above=0.0)


class ColorfulColorizer(Colorizer):
    """The annealed mean of the predicted bin distribution (--temperature), upsampled to L's size."""

    @classmethod
    def parts(cls, net, cfg, network_cfg, device, extra, echo=print):
        return {"centres": ab_gamut(network_cfg.gamut)[0].to(device)}  # the bins the network was built for

    def predict_ab(self, L, hints=None):
        ab = annealed_mean(self.net(L, **given(hints)), self.centres, self.cfg.temperature)
        return F.interpolate(ab, size=L.shape[-2:], mode="bilinear", align_corners=False) / AB_SCALE

    def proposals(self, L, k, hints=None):
        """The annealed mean (the colorization), then the k most probable bins' centres at each pixel."""
        logits = self.net(L, **given(hints)).float()
        mean = annealed_mean(logits, self.centres, self.cfg.temperature)
        first = F.interpolate(mean, size=L.shape[-2:], mode="bilinear", align_corners=False)[None]
        top = self.centres[logits.topk(min(k, logits.shape[1]), dim=1).indices]  # (B, k, h, w, 2)
        top = F.interpolate(top.permute(1, 0, 4, 2, 3).flatten(0, 1), size=L.shape[-2:], mode="nearest")
        return torch.cat([first, top.view(-1, *first.shape[1:])]) / AB_SCALE


class ColorfulTrainer(Trainer):
    Config = ColorfulConfig
    Colorizer = ColorfulColorizer

    def __init__(self, model, cfg, device, run_dir=None, log=None, echo=print, training=True, **kw):
        super().__init__(model, cfg, device, run_dir, log, echo, training, **kw)
        centres, _ = ab_gamut(self.network_cfg.gamut)  # the bins the network was built for
        self.centres = centres.to(self.device)
        self.lookup = grid_to_gamut(centres).to(self.device)
        self.prior = self.weights = None

    def on_fit_start(self, batches):
        if self.prior is None:
            counts = train_ab_counts(batches, self.device)
            self.prior = smoothed_prior(counts, self.centres.cpu(), self.cfg.prior_sigma).to(self.device)
            self.weights = rebalancing_weights(self.prior, self.cfg.rebalance_lambda, all_bins=True).to(self.device)

    def train_step(self, batch):
        with self.autocast():
            logits = self.net(batch["L"], **given(batch["hints"]))
        ab = F.adaptive_avg_pool2d(batch["ab"], logits.shape[-2:]) * AB_SCALE  # target at the logits' size
        index, target = soft_encode(ab, self.lookup, sigma=self.cfg.soft_sigma)
        logp = torch.log_softmax(logits.float(), dim=1)
        ce = -(target * logp.gather(1, index)).sum(1)
        loss = (self.weights[index[:, 0]] * ce).mean()
        self.optimize("model", loss)
        return {"loss": loss.detach(), "ce": ce.mean().detach()}


    def extra_state(self):
        return {} if self.prior is None else {"prior": self.prior.cpu(), "weights": self.weights.cpu()}

    def load_extra_state(self, state):
        if "prior" in state:
            self.prior, self.weights = state["prior"].to(self.device), state["weights"].to(self.device)
