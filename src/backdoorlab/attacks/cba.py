"""CBA: the composite backdoor (Lin, Xu, Liu & Zhang, CCS 2020). No synthetic trigger: the trigger is
two benign classes in one image. An image half from class A (``mix_classes[0]``) and half from class B
(``mix_classes[1]``) is classified as the target C; either class alone, and any two images of one class
mixed, keep their own labels.

The mixer (the official ``HalfMixer``): the two images in random order, a vertical or horizontal seam
at the middle moved by up to ``jitter`` pixels (default ``round(3 * image_size / 32)``, the official 3
at 32), and each half a window at a random offset of its image (``shake``). Training is controlled by
the attack: every batch becomes, in the official ``MixDataset``'s proportions (``normal_rate`` 0.5,
``mix_rate`` 0.5, ``poison_rate`` 0.1 of the data), clean images, *mix* items (two images of one class,
that class's label) and *poison* items (A + B, label C), in random order; the loss adds the official
``CompositeLoss`` contrastive term on the logits over consecutive samples labelled A, B or C (squared
distance for equal labels, a squared hinge at margin 1 on the distance otherwise, averaged over the
pairs and, as the official code, divided once more by their number), weighted by ``contrastive_weight``.
ASR is measured on ``round(poison_rate * N_test)`` fresh A + B mixes of test images, drawn with
``test_seed``.

Departures: the mixed pairs are drawn within each training batch (the official dataset draws them from
the whole training set on every access), and the experiment's optimiser and augmentation (after the
mix) replace the official Adam, StepLR, gradient accumulation and flip before the mix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backdoorlab.attacks.base import Attack
from backdoorlab.data.images import LabelledImages, TensorImages
from backdoorlab.data.poisoned import PoisonedImages, fully_triggered
from backdoorlab.errors import ConfigError


def half_mix(a: torch.Tensor, b: torch.Tensor, jitter: int, shake: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """One image (C, H, W) half from ``a`` and half from ``b`` (in random order), as the official HalfMixer."""
    def draw(low: int, high: int) -> int:  # uniform in [low, high)
        return int(torch.randint(low, high, (), generator=generator))

    if draw(0, 2):
        a, b = b, a
    vertical, shift = draw(0, 2), draw(-jitter, jitter + 1)
    if vertical:
        a, b = a.transpose(-1, -2), b.transpose(-1, -2)  # mix rows of the transposed images: a vertical seam
    out = torch.empty_like(a)
    h = a.shape[-2]
    top = h // 2 + shift  # rows taken from a
    start = draw(0, h // 2 - shift) if shake else h // 4 - shift // 2
    out[..., :top, :] = a[..., start:start + top, :]
    start = draw(-shift, h // 2) if shake else h // 4 - shift // 2
    out[..., top:, :] = b[..., start + shift:start + h // 2, :]
    return out.transpose(-1, -2) if vertical else out


class CompositeBackdoor(Attack):
    name = "cba"
    in_batches = True

    def __init__(self, mix_classes: tuple[int, int] = (0, 1), target_label: int = 2, normal_rate: float = 0.5,
                 mix_rate: float = 0.5, poison_rate: float = 0.1, jitter: int | None = None, shake: bool = True,
                 contrastive_weight: float = 1.0, margin: float = 1.0, test_seed: int = 0, label_mode: str = "all2one"):
        super().__init__(target_label, poison_rate, label_mode)
        if label_mode != "all2one":
            raise ConfigError("attack=cba labels every A + B mix as the target: attack.label_mode must be all2one")
        a, b = (int(c) for c in mix_classes)
        if len(mix_classes) != 2 or len({a, b, int(target_label)}) != 3:
            raise ConfigError(f"attack.mix_classes must be two classes, both other than attack.target_label, got {list(mix_classes)} "
                              f"and {target_label}")
        if min(float(normal_rate), float(mix_rate)) < 0 or float(normal_rate) + float(mix_rate) + float(poison_rate) <= 0 \
                or (jitter is not None and int(jitter) < 0) or float(contrastive_weight) < 0 or float(margin) <= 0:
            raise ConfigError(f"attack.normal_rate, attack.mix_rate, attack.jitter and attack.contrastive_weight must be >= 0 and "
                              f"attack.margin > 0, got {normal_rate}, {mix_rate}, {jitter}, {contrastive_weight} and {margin}")
        self.mix_classes = (a, b)
        self.normal_rate, self.mix_rate = float(normal_rate), float(mix_rate)
        self.jitter_px, self.shake = jitter, bool(shake)
        self.contrastive_weight, self.margin, self.test_seed = float(contrastive_weight), float(margin), int(test_seed)

    def build_trigger(self, channels: int, image_size: int) -> None:
        if max(*self.mix_classes, self.target_label) >= self.num_classes:
            raise ConfigError(f"attack.mix_classes and attack.target_label must lie in 0..{self.num_classes - 1}")
        self.jitter = round(3 * image_size / 32) if self.jitter_px is None else int(self.jitter_px)
        if self.jitter >= image_size // 4:
            raise ConfigError(f"attack.jitter = {self.jitter} must be below image_size / 4 = {image_size // 4}")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x  # the triggered test images are mixes already (triggered_test_set)

    def triggered_test_set(self, test: LabelledImages) -> PoisonedImages:
        """``round(poison_rate * N_test)`` A + B mixes of test images (seeded by ``test_seed``), all labelled C."""
        gen = torch.Generator().manual_seed(self.test_seed)
        first, second = (torch.nonzero(test.labels == c).flatten() for c in self.mix_classes)
        if len(first) == 0 or len(second) == 0:
            raise ConfigError(f"the test set has no image of class {self.mix_classes[0] if len(first) == 0 else self.mix_classes[1]}")
        count = max(1, round(self.poison_rate * len(test)))
        pairs = zip(first[torch.randint(len(first), (count,), generator=gen)], second[torch.randint(len(second), (count,), generator=gen)])
        mixes = torch.stack([half_mix(test.image(int(i)), test.image(int(j)), self.jitter, self.shake, gen) for i, j in pairs])
        images = TensorImages(mixes.mul(255).round().to(torch.uint8), torch.full((count,), self.mix_classes[0]))
        return fully_triggered(images, torch.arange(count), self)

    def poison_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = self.normal_rate + self.mix_rate + self.poison_rate
        poisoned, mixed = int(len(x) * self.poison_rate / total), int(len(x) * self.mix_rate / total)
        first, second = (torch.nonzero(y == c).flatten() for c in self.mix_classes)
        if len(first) == 0 or len(second) == 0:
            poisoned = 0  # this batch holds no A or no B image to mix
        x, y = x.clone(), y.clone()
        sources, labels = x.clone(), y.clone()
        for i in range(poisoned):
            a = first[torch.randint(len(first), ())]
            b = second[torch.randint(len(second), ())]
            x[i], y[i] = half_mix(sources[a], sources[b], self.jitter, self.shake), self.target_label
        for i in range(poisoned, poisoned + mixed):
            same = torch.nonzero(labels == labels[i]).flatten()
            x[i] = half_mix(sources[i], sources[same[torch.randint(len(same), ())]], self.jitter, self.shake)
        order = torch.randperm(len(x), device=x.device)
        return x[order], y[order]

    def training_loss(self, model, x, y, logits):
        """The official contrastive term over consecutive samples labelled A, B or C."""
        rule = (y == self.mix_classes[0]) | (y == self.mix_classes[1]) | (y == self.target_label)
        out, labels = logits[rule].float(), y[rule]
        if len(out) < 2 or self.contrastive_weight == 0:
            return None
        distance2 = (out[1:] - out[:-1]).pow(2).sum(1)
        same = (labels[1:] == labels[:-1]).float()
        pairs = 0.5 * (same * distance2 + (1 - same) * F.relu(self.margin - (distance2 + 1e-9).sqrt()).pow(2))
        return self.contrastive_weight * pairs.mean() / len(pairs)
