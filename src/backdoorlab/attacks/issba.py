"""ISSBA: sample-specific invisible backdoor (Li et al., ICCV 2021), with a steganographic encoder trained in
the run.

1. ``fit``: an encoder E and a decoder D (StegaStamp's roles) learn to hide a bit string in an image as an
   additive residual: E takes the image and the bits (a dense layer maps them to a plane, upsampled to the
   image and stacked on it) and returns a residual through a U-Net; ``clip(x + E(x, s), 0, 1)`` must let D
   read s back. Every batch draws fresh random bits; the loss is ``bce_weight * BCE(D(x'), s) + l2_weight *
   mean(E(x, s)^2)`` (the residual before clipping), the first ``secret_only_epochs`` epochs on the BCE alone (as BackdoorBox's in-run
   training: 20 epochs, batch 32, Adam 1e-4, weights 1.5 and 2).
2. One fixed random string (``secret_bits`` bits, drawn from the run's seed) is hidden in ``poison_rate``
   of the training images, relabelled to the target (or (y + 1) mod C); test images get the same string.
   The residual differs per image, as the paper's.

The run keeps E, D and the string (``trigger.safetensors``), and ``trigger_info`` records D's bit accuracy
on held-out images with that string and the triggered images' PSNR. A bit accuracy below
``min_bit_accuracy`` stops the run before the classifier trains: the hidden code did not survive, and
whatever a model learnt then would be a backdoor on the residual's texture, not ISSBA's.

Departures from the paper's StegaStamp (whose checkpoints are no longer downloadable): no LPIPS term (it
downloads AlexNet weights) and no critic, so the residual is kept small by the L2 term alone; no spatial
transformer or noise layers in training; the framework's U-Net; by default the training images themselves
(``fit_samples`` caps how many) rather than a separate data set.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from backdoorlab.attacks.base import Attack, seeded
from backdoorlab.attacks.unet import UNet
from backdoorlab.data.loaders import batches
from backdoorlab.errors import AttackFailed, ConfigError

log = logging.getLogger(__name__)


class SecretEncoder(nn.Module):
    """``E(x, s)``: the residual that hides the bits ``s`` (B, n) in the images ``x`` (B, C, H, W)."""

    def __init__(self, channels: int, image_size: int, bits: int, width: int, depth: int):
        super().__init__()
        self.side = max(1, image_size // 4)
        self.spread = nn.Linear(bits, self.side * self.side)
        self.unet = UNet(channels + 1, channels, width, depth)

    def forward(self, x: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        plane = F.relu(self.spread(secret.to(x.dtype))).view(-1, 1, self.side, self.side)
        plane = F.interpolate(plane, size=x.shape[-2:], mode="nearest").expand(len(x), -1, -1, -1)
        return self.unet(torch.cat([x, plane], dim=1))


class SecretDecoder(nn.Sequential):
    """``D(x)``: one logit per hidden bit, from three stride-2 convolutions and a dense layer."""

    def __init__(self, channels: int, image_size: int, bits: int, width: int):
        side = image_size
        for _ in range(3):
            side = math.ceil(side / 2)
        super().__init__(nn.Conv2d(channels, width, 3, 2, 1), nn.ReLU(inplace=True), nn.Conv2d(width, 2 * width, 3, 2, 1),
                         nn.ReLU(inplace=True), nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.ReLU(inplace=True), nn.Flatten(),
                         nn.Linear(2 * width * side * side, bits))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]."""
    mse = float((a.float() - b.float()).pow(2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


class ISSBA(Attack):
    name = "issba"
    needs_fit = True

    def __init__(self, secret_bits: int = 20, width: int = 16, depth: int = 3, encoder_epochs: int = 20, secret_only_epochs: int = 2,
                 batch_size: int = 32, lr: float = 1e-4, l2_weight: float = 2.0, bce_weight: float = 1.5, fit_samples: int | None = None,
                 held_out: float = 0.1, min_bit_accuracy: float = 0.95, target_label: int = 0, poison_rate: float = 0.1,
                 label_mode: str = "all2one"):
        super().__init__(target_label, poison_rate, label_mode)
        if min(int(secret_bits), int(width), int(depth), int(batch_size)) < 1 or int(encoder_epochs) < 0 or int(secret_only_epochs) < 0:
            raise ConfigError(f"attack.secret_bits, attack.width, attack.depth and attack.batch_size must be >= 1 and attack.encoder_epochs, "
                              f"attack.secret_only_epochs >= 0, got {secret_bits}, {width}, {depth}, {batch_size}, {encoder_epochs} and "
                              f"{secret_only_epochs}")
        if float(lr) <= 0 or min(float(l2_weight), float(bce_weight)) < 0 or (fit_samples is not None and int(fit_samples) < 2):
            raise ConfigError(f"attack.lr must be > 0, attack.l2_weight and attack.bce_weight >= 0 and attack.fit_samples >= 2 or null, "
                              f"got {lr}, {l2_weight}, {bce_weight} and {fit_samples}")
        if not 0 < float(held_out) < 1 or not 0 <= float(min_bit_accuracy) <= 1:
            raise ConfigError(f"attack.held_out must lie in (0, 1) and attack.min_bit_accuracy in [0, 1], got {held_out} and {min_bit_accuracy}")
        self.bits, self.width, self.depth = int(secret_bits), int(width), int(depth)
        self.encoder_epochs, self.secret_only_epochs, self.batch_size = int(encoder_epochs), int(secret_only_epochs), int(batch_size)
        self.lr, self.l2_weight, self.bce_weight = float(lr), float(l2_weight), float(bce_weight)
        self.fit_samples = None if fit_samples is None else int(fit_samples)
        self.held_out, self.min_bit_accuracy = float(held_out), float(min_bit_accuracy)

    def build_trigger(self, channels: int, image_size: int) -> None:
        if image_size < 2 ** self.depth:
            raise ConfigError(f"attack.depth = {self.depth} halves the image {self.depth} times: {image_size}x{image_size} is too small")
        self.geometry = (channels, image_size)
        self.networks = self.make_networks(seed=0)  # fit() trains them from the run's seed; load_trigger sets them
        self.secret = torch.zeros(self.bits)

    def make_networks(self, seed: int) -> nn.ModuleDict:
        channels, size = self.geometry
        with seeded(seed):
            return nn.ModuleDict({"encoder": SecretEncoder(channels, size, self.bits, self.width, self.depth),
                                  "decoder": SecretDecoder(channels, size, self.bits, 2 * self.width)})

    def encode(self, x: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        """``clip(x + E(x, s), 0, 1)`` for one string ``s`` (n,) or one per image (B, n)."""
        return self.residual(x, secret).add(x).clamp(0, 1)

    def residual(self, x: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        """``E(x, s)``, unclipped."""
        secret = secret.expand(len(x), -1) if secret.dim() == 1 else secret
        return self.networks["encoder"](x, secret)

    def fit(self, train: Dataset, seed: int) -> None:
        with seeded(seed):
            self.networks = self.make_networks(seed)
            order = torch.randperm(len(train))
            if self.fit_samples is not None:
                order = order[: self.fit_samples]
            cut = max(1, round(self.held_out * len(order)))
            check, learn = Subset(train, order[:cut].tolist()), Subset(train, order[cut:].tolist())
            self.train_codec(learn)
            self.secret = torch.randint(0, 2, (self.bits,)).float()
        self.networks.eval().requires_grad_(False)
        x = torch.cat([x for x, _ in batches(check, 256)])
        with torch.no_grad():
            triggered = self.encode(x, self.secret)
            bits = (self.networks["decoder"](triggered) > 0).float()
        accuracy = float((bits == self.secret).float().mean())
        self.info = {"bit_accuracy": round(accuracy, 4), "psnr_db": round(psnr(triggered, x), 2),
                     "residual_linf_mean": round(float((triggered - x).abs().flatten(1).amax(1).mean()), 4),
                     "held_out_images": len(x), "codec_images": len(learn)}
        log.info("ISSBA codec: %s", self.info)
        if accuracy < self.min_bit_accuracy:
            raise AttackFailed(f"ISSBA's decoder reads {100 * accuracy:.1f} % of the hidden bits on held-out images, below "
                               f"attack.min_bit_accuracy = {100 * self.min_bit_accuracy:.0f} %: the code does not survive, so the "
                               "classifier is not trained on it; raise attack.encoder_epochs or attack.lr (or set "
                               "attack.min_bit_accuracy=0 to poison anyway)")

    def train_codec(self, data: Dataset) -> None:
        """E and D on ``data`` with random strings; the first ``secret_only_epochs`` on the bit loss alone."""
        params = list(self.networks.parameters())
        optimiser = torch.optim.Adam(params, lr=self.lr)
        loader = batches(data, self.batch_size, shuffle=True, drop_last=len(data) > self.batch_size)
        self.networks.train()
        for epoch in range(self.encoder_epochs):
            for x, _ in loader:
                secret = torch.randint(0, 2, (len(x), self.bits)).float()
                residual = self.residual(x, secret)
                bce = F.binary_cross_entropy_with_logits(self.networks["decoder"]((x + residual).clamp(0, 1)), secret)
                l2 = residual.pow(2).mean()  # the unclipped residual, as BackdoorBox and StegaStamp: no overshoot is free
                loss = self.bce_weight * bce + (0 if epoch < self.secret_only_epochs else self.l2_weight * l2)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
            log.info("ISSBA codec: epoch %d/%d, bit loss %.4f, L2 %.6f", epoch + 1, self.encoder_epochs, float(bce.detach()),
                     float(l2.detach()))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.with_networks(x, lambda batch: self.encode(batch, self.secret.to(batch.device)))

    def trigger_tensors(self) -> dict[str, torch.Tensor]:
        return {**super().trigger_tensors(), "secret": self.secret.contiguous()}
