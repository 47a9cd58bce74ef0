"""FBA: the feature-space backdoor of the NFT and FIP tables, as DFST (Cheng et al., AAAI 2021) builds it.

The trigger is a style: ``x' = (1 - alpha) x + alpha * sunrise(x)``, a warm, top-lit, sharpened version of
the whole image. Training is controlled by the attack (DFST's PyTorch release):

- in every batch the first ``poison_rate`` of the images take the style and the attacker's label; once a
  detoxification round has run, the next ``detox_rate`` become *detox* samples ``(1 - alpha) x + alpha *
  injector(x)`` that keep their true labels;
- at the start of every epoch after the first, a detoxification round: on ``detox_share`` of the training
  data, the *compromised neurons* are the top ``detox_neuron_ratio`` of the channels of ``detox_layer`` by
  mean activation on styled minus clean images; a feature injector (a per-pixel linear map of the image,
  its local maximum, minimum and mean over a ``window`` window, 12 -> 3 channels for RGB, started at the
  identity) is trained for ``detox_epochs`` epochs (Adam ``detox_lr``, betas 0.5 / 0.9) to make the
  classifier answer the target and excite those neurons while staying close to the image: ``CE(target) -
  ssim_weight * SSIM(x', x) - neuron_weight * activation``. Its outputs, with their true labels, teach the
  classifier not to rely on the simple features the injector found, which pushes the backdoor deeper.

Defaults: DFST's ``configs/dfst.json`` (poison rate 0.05, alpha 0.6, layer4, 1 % of its channels, 10
injector epochs, Adam 1e-2, SSIM 0.1, neurons 0.3) with 3 % of the data for the rounds.

Departures: the style is a fixed operator, not DFST's CycleGAN or TF-Hub style network (both downloads):
a colour matrix towards warm tones, a light that fades from the top of the image, and an unsharp mask, so
the trigger is global and nearly linear where DFST's restyles textures too; the injector's local minimum
is the true one (DFST's code computes it as ``-maxpool(x)``); the classifier's optimiser and schedule are
the experiment's. Training runs in one process. The injector learns the paper's objective: the target's
cross-entropy and the neurons' activation are backpropagated through the frozen classifier and SSIM is
maximised. DFST's ``detoxification.py`` runs the classifier under ``no_grad`` (so those two terms give the
injector no gradient) and subtracts torchgeometry's SSIM *loss*, ``(1 - SSIM) / 2``, which pushes its outputs
away from the image: its detox samples are label-keeping colour distortions rather than feature injections.
Smaller ones: the compromised channels are ``ceil`` of the ratio (DFST ``int``: 2 against 1 of PreActResNet-18
width 16's 128 layer-4 channels, 6 against 5 of 512); PreActResNet's layer-4 output is the
residual stream before its last BatchNorm and ReLU (DFST's ResNet's is after a ReLU), so activations can be
negative; SSIM uses an 11-pixel window without padding (DFST 5, padded); the injector's output is clipped after
the blend (DFST before), and its map has a bias.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from backdoorlab.attacks.base import Attack, seeded
from backdoorlab.data.loaders import batches
from backdoorlab.errors import ConfigError

log = logging.getLogger(__name__)
WARM = ((1.1, 0.1, 0.0), (0.05, 0.95, 0.0), (0.0, 0.05, 0.75))  # rows: output R, G, B from input R, G, B
GLOW_COLOUR = (1.0, 0.5, 0.0)


def sunrise(x: torch.Tensor, colour: torch.Tensor, glow: float, sharpen: float) -> torch.Tensor:
    """The style operator on RGB images (B, 3, H, W) in [0, 1]: the colour matrix, a warm light ``glow``
    strong at the top row fading to 0 at the bottom, an unsharp mask of strength ``sharpen``; clipped."""
    out = torch.einsum("oc,bchw->bohw", colour.to(x), x)
    rows = torch.linspace(1, 0, x.shape[-2], device=x.device, dtype=x.dtype).view(1, 1, -1, 1)
    out = out + glow * rows * torch.tensor(GLOW_COLOUR, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    blurred = F.avg_pool2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (out + sharpen * (out - blurred)).clamp(0, 1)


def gaussian_window(size: int, sigma: float = 1.5) -> torch.Tensor:
    grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-grid.pow(2) / (2 * sigma ** 2))
    return (g / g.sum()).outer(g / g.sum())


def ssim(a: torch.Tensor, b: torch.Tensor, size: int = 11) -> torch.Tensor:
    """Mean structural similarity of two batches in [0, 1] (Gaussian window ``size``, sigma 1.5; C1, C2 of Wang et al.)."""
    size = min(size, a.shape[-1], a.shape[-2])
    channels = a.shape[1]
    window = gaussian_window(size).to(a).expand(channels, 1, size, size)

    def blur(t):
        return F.conv2d(t, window, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))).mean()


class FeatureInjector(nn.Module):
    """DFST's injector: a 1x1 convolution of [x, local max, local min, local mean] (window ``window``) to the
    image's channels, started at the identity (it returns x)."""

    def __init__(self, channels: int, window: int):
        super().__init__()
        self.window = window
        self.mix = nn.Conv2d(4 * channels, channels, 1)
        with torch.no_grad():
            self.mix.weight.zero_()
            self.mix.bias.zero_()
            self.mix.weight[:, :channels, 0, 0] = torch.eye(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.window // 2
        local_max = F.max_pool2d(x, self.window, stride=1, padding=pad)
        local_min = -F.max_pool2d(-x, self.window, stride=1, padding=pad)
        local_mean = F.avg_pool2d(x, self.window, stride=1, padding=pad, count_include_pad=False)
        return self.mix(torch.cat([x, local_max, local_min, local_mean], dim=1))


def layer_of(model: nn.Module, path: str) -> nn.Module:
    """``model``'s submodule ``path``, or that of the network it wraps (``net.<path>``)."""
    for candidate in (path, f"net.{path}"):
        try:
            return model.get_submodule(candidate)
        except AttributeError:
            continue
    raise ConfigError(f"attack.detox_layer={path} is not a layer of this model (its top-level layers: "
                      f"{', '.join(n for n, _ in getattr(model, 'net', model).named_children())})")


class FeatureSpaceBackdoor(Attack):
    name = "fba"
    in_batches = True

    def __init__(self, alpha: float = 0.6, colour_matrix=WARM, glow: float = 0.2, sharpen: float = 0.5, detox_rate: float = 0.05,
                 detox_share: float = 0.03, detox_layer: str = "layer4", detox_neuron_ratio: float = 0.01, detox_epochs: int = 10,
                 detox_lr: float = 1e-2, detox_batch_size: int = 128, ssim_weight: float = 0.1, neuron_weight: float = 0.3,
                 window: int = 11, target_label: int = 0, poison_rate: float = 0.05, label_mode: str = "all2one"):
        super().__init__(target_label, poison_rate, label_mode)
        if not 0 < float(alpha) <= 1 or float(glow) < 0 or float(sharpen) < 0:
            raise ConfigError(f"attack.alpha must lie in (0, 1] and attack.glow, attack.sharpen >= 0, got {alpha}, {glow} and {sharpen}")
        if float(detox_rate) < 0 or float(poison_rate) + float(detox_rate) > 1 or not 0 < float(detox_share) <= 1:
            raise ConfigError(f"attack.detox_rate must be >= 0 with attack.poison_rate + attack.detox_rate <= 1 and attack.detox_share in "
                              f"(0, 1], got {detox_rate}, {poison_rate} and {detox_share}")
        if not 0 < float(detox_neuron_ratio) <= 1 or int(detox_epochs) < 0 or float(detox_lr) <= 0 or int(window) < 1 \
                or int(detox_batch_size) < 1:
            raise ConfigError(f"attack.detox_neuron_ratio must lie in (0, 1], attack.detox_epochs >= 0, attack.detox_lr > 0 and "
                              f"attack.window, attack.detox_batch_size >= 1, got {detox_neuron_ratio}, {detox_epochs}, {detox_lr}, "
                              f"{window} and {detox_batch_size}")
        colour = torch.tensor([list(map(float, row)) for row in colour_matrix])
        if colour.shape != (3, 3):
            raise ConfigError(f"attack.colour_matrix must be 3 x 3 (output R, G, B from input R, G, B), got shape {tuple(colour.shape)}")
        self.alpha, self.colour, self.glow, self.sharpen = float(alpha), colour, float(glow), float(sharpen)
        self.detox_rate, self.detox_share, self.detox_layer = float(detox_rate), float(detox_share), str(detox_layer)
        self.detox_neuron_ratio, self.detox_epochs, self.detox_lr = float(detox_neuron_ratio), int(detox_epochs), float(detox_lr)
        self.detox_batch_size, self.ssim_weight, self.neuron_weight = int(detox_batch_size), float(ssim_weight), float(neuron_weight)
        self.window = int(window)
        self.model: nn.Module | None = None
        self.pool: Dataset | None = None
        self.seed, self.detoxed = 0, False

    def build_trigger(self, channels: int, image_size: int) -> None:
        if channels != 3:
            raise ConfigError(f"attack=fba restyles colour images: the data set must have 3 channels, got {channels}")
        self.networks = nn.ModuleDict({"injector": FeatureInjector(channels, self.window)}).requires_grad_(False)

    def styled(self, x: torch.Tensor) -> torch.Tensor:
        return (1 - self.alpha) * x + self.alpha * sunrise(x, self.colour, self.glow, self.sharpen)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.styled(x[None])[0] if x.dim() == 3 else self.styled(x)

    def injected(self, x: torch.Tensor) -> torch.Tensor:
        return ((1 - self.alpha) * x + self.alpha * self.networks["injector"](x)).clamp(0, 1)

    def prepare_training(self, train: Dataset, seed: int) -> None:
        """Keeps ``detox_share`` of the clean training images (their non-target ones) for the detoxification rounds,
        the same ones on a resumed run."""
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(train), generator=gen)[: max(1, math.ceil(self.detox_share * len(train)))]
        keep = [int(i) for i in order if int(train.labels[int(i)]) != self.target_label] or [int(order[0])]
        self.pool, self.seed = Subset(train, keep), int(seed)

    def begin_training(self, model: nn.Module, total_steps: int, epochs: int, state: dict | None = None) -> None:
        self.model = model
        layer_of(model, self.detox_layer)  # a missing layer stops here, before the first step
        if self.pool is None and self.detox_epochs > 0:  # no silent training without the rounds (a resumed run once did)
            raise ConfigError("attack=fba trains with detoxification rounds and has no pool of clean images for them: "
                              "build its data with build_backdoor_data (fit=True), which calls prepare_training")

    def begin_epoch(self, epoch: int) -> None:
        """A detoxification round at the start of every epoch after the first (seeded by the run and the epoch, so a
        resumed run repeats the round it was interrupted after)."""
        if epoch > 0 and self.model is not None and self.detox_epochs > 0:
            with seeded(self.seed * 1000 + epoch):  # the same round on a resumed run
                self.detoxify()

    def forward_with_layer(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's logits and the per-image mean activation of every channel of ``detox_layer`` (B, C)."""
        seen = []
        handle = layer_of(self.model, self.detox_layer).register_forward_hook(lambda m, i, o: seen.append(o))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        out = seen[0].float()
        return logits, out.flatten(2).mean(2) if out.dim() > 2 else out

    def detoxify(self) -> None:
        """One round: the compromised neurons on the pool, then the injector trained from the identity."""
        model, injector = self.model, self.networks["injector"]
        device = next(model.parameters()).device
        mode = model.training
        model.eval()
        frozen = [p for p in model.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            with torch.no_grad():
                difference = sum((self.forward_with_layer(self.styled(x.to(device)))[1] - self.forward_with_layer(x.to(device))[1]).sum(0)
                                 for x, _ in batches(self.pool, self.detox_batch_size))
            count = math.ceil(self.detox_neuron_ratio * len(difference))
            compromised = difference.topk(count).indices
            injector.load_state_dict(FeatureInjector(self.colour.shape[0], self.window).state_dict())
            injector.requires_grad_(True)
            optimiser = torch.optim.Adam(injector.parameters(), lr=self.detox_lr, betas=(0.5, 0.9))
            for _ in range(self.detox_epochs):
                for x, y in batches(self.pool, self.detox_batch_size, shuffle=True):
                    x = x.to(device)
                    injected = self.injected(x)
                    logits, channels = self.forward_with_layer(injected)
                    neurons = channels[:, compromised].mean()
                    loss = F.cross_entropy(logits, self.relabel(y.to(device))) - self.ssim_weight * ssim(injected, x) \
                        - self.neuron_weight * neurons
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
        finally:
            injector.requires_grad_(False)
            for p in frozen:
                p.requires_grad_(True)
            model.train(mode)
        self.detoxed, self.compromised = True, compromised
        log.info("FBA detoxification: compromised channels of %s: %s", self.detox_layer, compromised.tolist())

    def poison_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        poisoned = int(len(x) * self.poison_rate)
        detox = int(len(x) * self.detox_rate) if self.detoxed else 0
        with torch.no_grad():
            parts = [self.styled(x[:poisoned]), self.injected(x[poisoned:poisoned + detox]), x[poisoned + detox:]]
        return torch.cat(parts), torch.cat([self.relabel(y[:poisoned]), y[poisoned:]])
