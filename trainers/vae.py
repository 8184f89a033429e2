"""Variational training: `basicvae` and `unetvae` (VAETrainer), `cvae_mdn` (CVAEMDNTrainer).

VAETrainer: loss = reconstruction (L1 on ab) + beta * KL(q(z | ab, L) || N(0, I)), beta rising
linearly from 0 to --kl_weight over --kl_anneal_epochs. The KL is reported per latent dimension
(`train/kl_active_dims`: dimensions whose KL exceeds 0.01 nats); when none is active the decoder
ignores z (posterior collapse, easy for `unetvae` with its skips) and a warning says so.
Colorizing: the first colorization decodes z = 0 (the prior's mode), the others z ~ N(0, I).

CVAEMDNTrainer (Deshpande et al. 2017, "Learning Diverse Image Colorization"):
    stage vae  L_hist: squared ab error weighted per pixel by the rebalanced inverse frequency of
               its ground-truth colour bin (10 x 10 ab bins, frequencies counted on the training
               split, weights as Zhang et al. 2016 eq. 4 with lambda 0.5); L_grad: squared error of
               the horizontal and vertical ab gradients (--lambda_grad); the annealed KL.
    stage mdn  the CVAE frozen; an MDN on grey-image features predicts K (--mdn_components, 8)
               Gaussians over z; loss: -log pi_k* + ||z - mu_k*||^2, k* the component nearest to the
               encoder's z (its posterior mean).
    --stage both (default) trains the VAE for the first epochs and the MDN for the last
    --mdn_epochs (half of --epochs by default), in one checkpoint; only second-stage epochs may
    become best.pt.
    Grey-image features (--mdn_features): the paper used Zhang et al.'s pretrained network, which
    cannot be downloaded here; the default, `conditional`, is the bottleneck of the CVAE's own
    conditional encoder on L, trained in stage vae on the same data: no extra network and nothing
    to download. `colorful` takes the frozen trunk of a `colorful` model trained here
    (--colorful_weights), the closest to the paper's choice.
    Colorizing: the mixture means, in decreasing weight, decoded; the first is the most likely.
"""
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from models.config import setting
from models.hints import given
from models.vae import MDN, mdn_loss
from trainers.base import TrainConfig, Trainer
from trainers.inference import Colorizer, Sampling
from trainers.statistics import rebalancing_weights, train_ab_counts
from util.colour import ab_bin_index


@dataclass(frozen=True)
class VAEConfig(Sampling, TrainConfig):
    kl_weight: float = setting(1e-3, "weight of the KL term after warm-up", minimum=0.0)
    kl_anneal_epochs: float = setting(5, "epochs of linear KL warm-up from 0", minimum=0.0)


@dataclass(frozen=True)
class CVAEMDNConfig(VAEConfig):
    stage: str = setting("both", "train the CVAE, the MDN (on a trained CVAE, with --resume), or both in turn",
                         choices=("both", "vae", "mdn"), role="resume")  # --stage mdn --resume: the MDN
    mdn_epochs: int | None = setting(None, "with --stage both: the last epochs, for the MDN (default: half)",
                                     minimum=0, role="resume")
    mdn_components: int = setting(8, "Gaussians in the mixture over z", minimum=1)
    mdn_features: str = setting("conditional", "grey-image features of the MDN: the CVAE's conditional encoder on "
                                "L, or the trunk of a trained `colorful` model (--colorful_weights)",
                                choices=("conditional", "colorful"))
    colorful_weights: str | None = setting(None, "a `colorful` checkpoint, for --mdn_features colorful")
    lambda_grad: float = setting(1.0, "weight of L_grad", minimum=0.0)
    # the colorful trunk's architecture, read from --colorful_weights when the run is configured
    mdn_colorful_width: int | None = setting(None, "width of the colorful trunk", cli=False)
    mdn_colorful_gamut: str | None = setting(None, "ab bins of the colorful trunk", cli=False)


class VAEColorizer(Colorizer):
    """Decodes z = 0 (the prior's mode) first, then z ~ N(0, I)."""

    def decode(self, L, z, hints=None):
        return self.net.decode(L, z, hints)

    def predict_ab(self, L, hints=None):
        return self.decode(L, L.new_zeros(len(L), self.net.latent_dim), hints)

    def sample_ab(self, L, k, hints=None):
        zs = [L.new_zeros(len(L), self.net.latent_dim)] + [torch.randn(len(L), self.net.latent_dim, device=L.device)
                                                           for _ in range(k - 1)]
        return torch.stack([self.decode(L, z, hints) for z in zs])


def colorful_trunk(cfg):
    """The (untrained) network of a `colorful` model of the width and bins the settings name, whose
    trunk gives cvae_mdn's grey-image features with --mdn_features colorful."""
    from models.colorful import ColorfulNet, ab_gamut

    net = ColorfulNet(len(ab_gamut(cfg.mdn_colorful_gamut)[0]), cfg.mdn_colorful_width)
    net.width = cfg.mdn_colorful_width
    return net


class CVAEMDNColorizer(VAEColorizer):
    """The mixture's component means, in decreasing weight, decoded (z = 0 while the mixture
    network is untrained: a plain CVAE)."""

    @classmethod
    def parts(cls, net, cfg, network_cfg, device, extra, echo=print):
        feature_net = None
        if cfg.mdn_features == "colorful":
            feature_net = colorful_trunk(cfg)
            if "feature_net" in extra:
                feature_net.load_state_dict(extra["feature_net"])
            feature_net = feature_net.to(device).eval().requires_grad_(False)
        channels = 8 * feature_net.width if feature_net is not None else net.decoder.bottleneck_channels
        mdn = MDN(channels, net.latent_dim, cfg.mdn_components)
        if "mdn" in extra:
            mdn.load_state_dict(extra["mdn"])
        trained = bool(extra.get("mdn_trained", False))
        if not trained:
            echo("note: this cvae_mdn checkpoint's mixture network was never trained: its colorizations "
                 "decode z = 0 (a plain CVAE), not Deshpande et al.'s method")
        return {"mdn": mdn.to(device).eval(), "feature_net": feature_net, "mdn_trained": trained}

    def features(self, L, hints=None):
        if self.feature_net is not None:
            return self.feature_net.trunk(L)  # grey-image features: L alone
        return self.net.decoder.encode(L, hints=hints)[0]

    def mixture(self, L, hints=None):
        """Component means ordered by decreasing weight (B, K, latent) and the weights (B, K)."""
        self.mdn.eval()
        logits, means = self.mdn(self.features(L, hints))
        order = logits.argsort(1, descending=True)
        return torch.gather(means, 1, order[..., None].expand_as(means)), torch.softmax(logits, 1).gather(1, order)

    def predict_ab(self, L, hints=None):
        if not self.mdn_trained:
            return super().predict_ab(L, hints)
        return self.decode(L, self.mixture(L, hints)[0][:, 0], hints)

    def sample_ab(self, L, k, hints=None):
        if not self.mdn_trained:
            return super().sample_ab(L, k, hints)
        means, weights = self.mixture(L, hints)
        zs = [means[:, i] for i in range(min(k, means.shape[1]))]
        for _ in range(k - len(zs)):  # more colorizations than components: draw from the mixture
            pick = torch.multinomial(weights.float(), 1)[:, 0]
            zs.append(means[torch.arange(len(L), device=L.device), pick] + torch.randn_like(means[:, 0]))
        return torch.stack([self.decode(L, z, hints) for z in zs])


class VAETrainer(Trainer):
    Config = VAEConfig
    Colorizer = VAEColorizer

    def kl_factor(self) -> float:
        warm = self.cfg.kl_anneal_epochs * max(1, getattr(self, "steps_per_epoch", 1))
        return self.cfg.kl_weight * (min(1.0, self.step / warm) if warm > 0 else 1.0)

    def kl_terms(self, mu, logvar):
        per_dim = 0.5 * (mu.float() ** 2 + logvar.float().exp() - 1 - logvar.float()).mean(0)
        return per_dim.sum(), (per_dim > 0.01).sum().float()

    def reconstruction(self, pred, ab):
        return F.l1_loss(pred, ab)

    def train_step(self, batch):
        L, ab, hints = batch["L"], batch["ab"], batch["hints"]
        with self.autocast():
            pred, mu, logvar = self.net(L, ab, **given(hints))
        recon = self.reconstruction(pred.float(), ab)
        kl, active = self.kl_terms(mu, logvar)
        beta = self.kl_factor()
        loss = recon + beta * kl
        self.optimize("model", loss)
        return {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach(), "kl_active_dims": active,
                "kl_beta": beta}

    def on_epoch_end(self, scalars):
        if scalars.get("train/kl_active_dims", 1) < 0.5:
            self.echo(f"warning: posterior collapse: no latent dimension carries information "
                      f"(KL {scalars.get('train/kl', 0):.4f}); the decoder ignores z, so samples will not differ. "
                      f"Try a larger --kl_anneal_epochs or a smaller --kl_weight")


class CVAEMDNTrainer(VAETrainer):
    Config = CVAEMDNConfig
    Colorizer = CVAEMDNColorizer

    @classmethod
    def derive(cls, cfg, network_cfg):
        """--mdn_features colorful: the trunk's width and ab bins, read once from
        --colorful_weights and saved with the run, so test mode does not need that file."""
        if cfg.mdn_features != "colorful" or cfg.mdn_colorful_width is not None:
            return cfg
        from trainers import checkpoint

        path = cfg.colorful_weights
        if not (path and Path(path).is_file()):
            raise SystemExit(f"error: --mdn_features colorful needs --colorful_weights, a checkpoint of a trained "
                             f"`colorful` model (got {path!r})")
        saved = checkpoint.load(path, family="colorful")
        net = saved.get("network") or saved["args"]
        if net.get("guided"):
            raise SystemExit(f"error: --mdn_features colorful takes the trunk of a `colorful` model trained without "
                             f"--guided (the MDN's features come from L alone); {path} was trained with colour hints")
        if net.get("colorful_halvings", 3) != 3:
            raise SystemExit(f"error: --mdn_features colorful takes the trunk of a `colorful` model of the paper's "
                             f"layout (--colorful_halvings 3); {path} has {net['colorful_halvings']}")
        return dataclasses.replace(cfg, mdn_colorful_width=net["colorful_width"],
                                   mdn_colorful_gamut=net.get("gamut", "inside"))

    def __init__(self, model, cfg, device, run_dir=None, log=None, echo=print, training=True, **kw):
        super().__init__(model, cfg, device, run_dir, log, echo, training, **kw)
        self.feature_net = self._colorful_trunk() if cfg.mdn_features == "colorful" else None
        channels = (8 * self.feature_net.width if self.feature_net is not None
                    else self.model.decoder.bottleneck_channels)
        self.mdn, self.mdn_net = self.wrap(MDN(channels, self.model.latent_dim, cfg.mdn_components))
        self.bin_weights = None
        self.mdn_trained = False
        if training and cfg.stage == "both" and self.mdn_epochs() == 0:
            echo(f"warning: --epochs {cfg.epochs} leaves no epoch for the mixture network (--mdn_epochs "
                 f"{self.mdn_epochs()}): this run trains a plain CVAE, not Deshpande et al.'s method; "
                 f"give --epochs 2 or more")

    def build_colorizer(self):
        """The colorizer around this trainer's own CVAE (its average when kept), MDN and trunk."""
        return self.Colorizer(self.eval_model, self.cfg, self.network_cfg, self.device, mdn=self.mdn,
                              feature_net=self.feature_net, mdn_trained=False)

    @property
    def mdn_trained(self) -> bool:
        """Whether the mixture network has been trained (the colorizer decodes its means then)."""
        return self.colorizer.mdn_trained

    @mdn_trained.setter
    def mdn_trained(self, value: bool) -> None:
        self.colorizer.mdn_trained = value

    def configure_optimizers(self, total_steps):
        opts = {"model": self.adam(self.model.parameters(), self.cfg.learning_rate, betas=(0.9, 0.99)),
                "mdn": self.adam(self.mdn.parameters(), self.cfg.learning_rate, betas=(0.9, 0.99))}
        return opts, self.cosine({"model": opts["model"]}, total_steps)  # the MDN's rate stays constant

    def mdn_epochs(self) -> int:
        """With --stage both, the last epochs, which train the MDN (0: none)."""
        a = self.cfg
        return a.epochs // 2 if a.mdn_epochs is None else a.mdn_epochs

    def in_mdn_stage(self) -> bool:
        a = self.cfg
        if a.stage != "both":
            return a.stage == "mdn"
        return self.epoch >= a.epochs - self.mdn_epochs()  # self.epoch counts completed epochs

    def on_fit_start(self, batches):
        if self.bin_weights is None:  # colour-bin frequencies of the training split, once per run
            counts = train_ab_counts(batches, self.device)
            self.bin_weights = rebalancing_weights(counts).to(self.device)

    def _colorful_trunk(self):
        """The frozen network of a trained `colorful` model; its width and bins are in this run's
        settings (derive) and its weights in this family's checkpoint, so test mode does not need
        the file again."""
        from trainers import checkpoint

        cfg = self.derive(self.cfg, self.network_cfg)
        net = colorful_trunk(cfg)
        path = cfg.colorful_weights
        if path and Path(path).is_file():
            net.load_state_dict(checkpoint.load(path, family="colorful")["model"])
        return net.to(self.device).eval().requires_grad_(False)

    def features(self, L, hints=None):
        if self.feature_net is not None:
            return self.feature_net.trunk(L)  # grey-image features: L alone
        return self.model.decoder.encode(L, hints=hints)[0]

    def train_step(self, batch):
        L, ab, hints = batch["L"], batch["ab"], batch["hints"]
        if self.in_mdn_stage():
            self.model.eval()  # frozen CVAE: its posterior mean is the MDN's target
            with torch.no_grad(), self.autocast():
                z, _ = self.model.posterior(L, ab, hints)
                feats = self.features(L, hints)
            self.mdn.train()
            with self.autocast():
                logits, means = self.mdn_net(feats)
            loss = mdn_loss(logits.float(), means.float(), z.float())
            self.optimize("mdn", loss)
            self.mdn_trained = True
            return {"mdn": loss.detach()}
        with self.autocast():
            pred, mu, logvar = self.net(L, ab, **given(hints))
        pred = pred.float()
        w = self.bin_weights[ab_bin_index(ab)]
        hist = (w * ((pred - ab) ** 2).sum(1)).mean()
        grad = (F.mse_loss(pred.diff(dim=-1), ab.diff(dim=-1)) + F.mse_loss(pred.diff(dim=-2), ab.diff(dim=-2)))
        kl, active = self.kl_terms(mu, logvar)
        beta = self.kl_factor()
        loss = hist + self.cfg.lambda_grad * grad + beta * kl
        self.optimize("model", loss)
        return {"loss": loss.detach(), "hist": hist.detach(), "grad": grad.detach(), "kl": kl.detach(),
                "kl_active_dims": active, "kl_beta": beta}

    def on_epoch_end(self, scalars):
        if "train/kl_active_dims" in scalars:
            super().on_epoch_end(scalars)

    def best_phase(self):
        """A two-stage run's best.pt comes from its second stage only: a first-stage checkpoint
        decodes z = 0, a plain CVAE, which often scores slightly better on delta E but is not the
        method. A run of one stage, or a --stage mdn resumed from a CVAE, starts a new phase."""
        if self.cfg.stage == "both" and self.mdn_epochs() > 0 and not self.mdn_trained:
            return None
        return "mdn" if self.mdn_trained else "vae"

    def extra_state(self):
        return {"mdn": self.mdn.state_dict(), "mdn_trained": self.mdn_trained,
                **({"feature_net": self.feature_net.state_dict()} if self.feature_net is not None else {}),
                **({"bin_weights": self.bin_weights.cpu()} if self.bin_weights is not None else {})}

    def load_extra_state(self, state):
        if "mdn" in state:
            self.mdn.load_state_dict(state["mdn"])
        if "feature_net" in state and self.feature_net is not None:
            self.feature_net.load_state_dict(state["feature_net"])
        self.mdn_trained = bool(state.get("mdn_trained", False))
        if not self.training and not self.mdn_trained:
            self.echo("note: this cvae_mdn checkpoint's mixture network was never trained: its colorizations "
                      "decode z = 0 (a plain CVAE), not Deshpande et al.'s method")
        if "bin_weights" in state:
            self.bin_weights = state["bin_weights"].to(self.device)
