"""Blend (Chen et al. 2017): a fixed full-image pattern blended into the image with weight alpha.

``pattern`` is ``noise`` (seeded uniform noise, ``pattern_seed``: reproducible without a file), a
natural image that ships with scikit-learn (``china`` or ``flower``, offline stand-ins for the
Hello Kitty image of BackdoorBench), or the path of an image file. Images are resized (the whole
image, as BackdoorBench does) to the data set's size and averaged to one channel for grayscale data.
"""

from __future__ import annotations

from pathlib import Path

import torch

from backdoorlab.attacks.base import PatternTrigger
from backdoorlab.data.images import read_rgb, resize_uint8
from backdoorlab.errors import ConfigError

SAMPLE_IMAGES = ("china", "flower")  # scikit-learn's bundled sample images


def load_pattern_image(pattern: str) -> torch.Tensor:
    """A (3, H, W) uint8 image: a scikit-learn sample image by name, or an image file."""
    from PIL import UnidentifiedImageError

    if pattern in SAMPLE_IMAGES:
        from sklearn.datasets import load_sample_image

        return torch.tensor(load_sample_image(f"{pattern}.jpg")).permute(2, 0, 1).contiguous()
    path = Path(pattern).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"attack.pattern must be noise, {', '.join(SAMPLE_IMAGES)} or an image file, got {pattern!r} (no such file)"
        )
    try:
        return read_rgb(path)
    except (UnidentifiedImageError, OSError) as err:
        raise ConfigError(f"attack.pattern={path} could not be read as an image ({err})") from err


class Blend(PatternTrigger):
    name = "blend"

    def __init__(
        self,
        alpha: float = 0.2,
        pattern: str = "noise",
        pattern_seed: int = 0,
        target_label: int = 0,
        poison_rate: float = 0.1,
        label_mode: str = "all2one",
    ):
        super().__init__(target_label, poison_rate, label_mode)
        self.alpha, self.pattern_name, self.pattern_seed = self.checked_alpha(alpha), str(pattern), int(pattern_seed)
        if self.pattern_name != "noise":
            self.image = load_pattern_image(self.pattern_name)  # a bad file stops here, before any data is read

    def build_trigger(self, channels: int, image_size: int) -> None:
        if self.pattern_name == "noise":
            gen = torch.Generator().manual_seed(self.pattern_seed)
            self.pattern = torch.rand(channels, image_size, image_size, generator=gen)
        else:
            image = resize_uint8(self.image[None], image_size)[0].float().div_(255.0)
            self.pattern = image.mean(0, keepdim=True).expand(channels, -1, -1).clone() if channels != 3 else image
        self.mask = torch.full((channels, image_size, image_size), self.alpha)
