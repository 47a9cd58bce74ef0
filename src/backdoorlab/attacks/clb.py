"""CLB: the label-consistent backdoor (Turner, Tsipras & Madry 2019), clean-label.

1. An adversarially trained surrogate is trained in the run (:mod:`backdoorlab.attacks.surrogate`,
   ``surrogate.eps`` > 0; the peers' robust surrogates are files their users cannot find).
2. The poisoned images, ``poison_rate`` of the target class, are made hard to classify by their own
   features: l_inf PGD (``eps``, ``pgd_steps`` steps of ``pgd_step``, random start) that raises the
   surrogate's loss of their true label.
3. The trigger, a ``size`` x ``size`` checkerboard in every corner (``corners: all``, mirrored so that a
   horizontal flip keeps a copy in place) or the bottom-right one, is pasted on them (``amplitude`` 1)
   or added as +-``amplitude``. Labels are kept. At test time only the trigger is stamped, with no
   perturbation, on images of the other classes.

Defaults: the ANP authors' recipe that the FIP code cites (eps 16/255, 80 % of the target class), PGD
as BackdoorBench's ``craft_adv_dataset.py`` (100 steps of 1.5/255), the four-corner trigger at full
amplitude. Departures: the surrogate is a small PreActResNet-18 with fast adversarial training, not
BackdoorBench's PGD-trained ResNet-18 checkpoint; the perturbed images are rounded to 8-bit levels, as the
authors' stored arrays are (and kept so beside an interrupted run's checkpoint); the FIP authors' code stamps
the trigger without the perturbation (``ALGORITHMS.md``), which ``eps: 0`` reproduces.
"""

from __future__ import annotations

import logging

import torch
from torch.utils.data import Dataset

from backdoorlab.attacks.badnets import checkerboard
from backdoorlab.attacks.base import PatternTrigger, seeded
from backdoorlab.attacks.surrogate import SurrogateSettings, accuracy, model_hash, pgd, train_surrogate
from backdoorlab.errors import ConfigError

CORNERS = ("all", "bottom_right")
log = logging.getLogger(__name__)


def quantised(images: torch.Tensor) -> torch.Tensor:
    """``images`` rounded to 8-bit levels, as the authors store their adversarial images (uint8 arrays). The
    PGD ball and [0, 1] are kept: the clean images lie on these levels and so do ``eps`` values of k / 255."""
    return (images * 255).round() / 255


class LabelConsistent(PatternTrigger):
    name = "clb"
    clean_label = True
    needs_fit = True
    fit_tensor_names = ("perturbed", "perturbed_rows")

    def __init__(self, eps: float = 16 / 255, pgd_steps: int = 100, pgd_step: float = 1.5 / 255, size: int = 3,
                 corners: str = "all", amplitude: float = 1.0, surrogate: dict | None = None, target_label: int = 0,
                 poison_rate: float = 0.8, label_mode: str = "all2one"):
        super().__init__(target_label, poison_rate, label_mode)
        if corners not in CORNERS:
            raise ConfigError(f"attack.corners must be one of {', '.join(CORNERS)}, got {corners!r}")
        if float(eps) < 0 or int(pgd_steps) < 0 or float(pgd_step) <= 0 or int(size) < 1 or not 0 < float(amplitude) <= 1:
            raise ConfigError(f"attack.eps must be >= 0, attack.pgd_steps >= 0, attack.pgd_step > 0, attack.size >= 1 and "
                              f"attack.amplitude in (0, 1], got {eps}, {pgd_steps}, {pgd_step}, {size} and {amplitude}")
        self.eps, self.pgd_steps, self.pgd_step = float(eps), int(pgd_steps), float(pgd_step)
        self.size, self.corners, self.amplitude = int(size), corners, float(amplitude)
        self.surrogate = SurrogateSettings(**{"eps": 8 / 255, **dict(surrogate or {})})
        self.perturbed_rows = torch.zeros(0, dtype=torch.long)
        self.perturbed = torch.zeros(0)

    def build_trigger(self, channels: int, image_size: int) -> None:
        s = self.size
        if 2 * s > image_size:
            raise ConfigError(f"attack.size = {s} leaves no room for corner patches in {image_size}x{image_size} images")
        board = checkerboard(s)
        self.pattern = torch.zeros(channels, image_size, image_size)
        self.mask = torch.zeros(channels, image_size, image_size)
        corners = [(False, False)] if self.corners == "bottom_right" else [(a, b) for a in (False, True) for b in (False, True)]
        for flip_rows, flip_cols in corners:  # mirrored copies: (rows, cols) flipped for the top / left corners
            rows = slice(0, s) if flip_rows else slice(image_size - s, image_size)
            cols = slice(0, s) if flip_cols else slice(image_size - s, image_size)
            patch = board.flip(0) if flip_rows else board
            self.pattern[:, rows, cols] = patch.flip(1) if flip_cols else patch
            self.mask[:, rows, cols] = 1.0

    def fit(self, train: Dataset, seed: int) -> None:
        positions = self.poison_indices(train.labels, seed)
        if self.eps == 0 or self.pgd_steps == 0 or len(positions) == 0:
            self.info = {"perturbed_images": 0}  # train_image stamps the clean images
            return
        self.perturbed_rows = torch.full((len(train),), -1, dtype=torch.long)
        self.perturbed_rows[positions] = torch.arange(len(positions))
        x = torch.stack([train[int(i)][0] for i in positions])
        surrogate = train_surrogate(train, self.mask.shape[0], self.num_classes, self.surrogate, seed)
        y = train.labels[positions]
        perturbed, done = [], 0
        with seeded(seed), self.surrogate.autocast():
            for xb, yb in zip(x.split(256), y.split(256)):
                perturbed.append(pgd(surrogate, xb, yb, self.eps, self.pgd_steps, self.pgd_step))
                done += len(xb)
                log.info("CLB: PGD done on %d of %d poisoned images", done, len(x))
        self.perturbed = quantised(torch.cat(perturbed))
        with torch.no_grad():
            kept = 100.0 * float((surrogate(self.perturbed).argmax(1) == y).float().mean())
        self.info = {"surrogate_sha256": model_hash(surrogate), "surrogate_train_acc": accuracy(surrogate, train),
                     "perturbed_images": len(positions), "perturbed_still_correct": kept}

    def fit_tensors(self) -> dict[str, torch.Tensor]:
        """The perturbed images as 8-bit values (exact: ``fit`` rounds them so) and their rows."""
        return {"perturbed": (self.perturbed * 255).round().to(torch.uint8), "perturbed_rows": self.perturbed_rows.clone()}

    def load_fit_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_fit_tensors(tensors)
        self.perturbed = self.perturbed.float() / 255

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.amplitude == 1.0:
            return super().apply(x)
        mask, pattern = self.mask.to(x.device, x.dtype), self.pattern.to(x.device, x.dtype)
        return (x + mask * self.amplitude * (2 * pattern - 1)).clamp_(0.0, 1.0)

    def train_image(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The trigger on the PGD-perturbed image where the position was perturbed (the poisoned ones)."""
        rows = self.perturbed_rows[positions.cpu()] if len(self.perturbed_rows) else torch.full((len(positions),), -1)
        hit = rows >= 0
        if hit.any():
            x = x.clone()
            x[hit.to(x.device)] = self.perturbed[rows[hit]].to(x.device, x.dtype)
        return self.apply(x)
