"""scikit-learn's bundled handwritten digits (1,797 grayscale 8x8 images), the offline default."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits as _sklearn_digits

from backdoorlab.data.images import DatasetBundle, TensorImages, resize_uint8
from backdoorlab.data.split import stratified_holdout


def load_digits(image_size: int = 16, channels: int = 3, test_fraction: float = 0.2, seed: int = 0) -> DatasetBundle:
    """Digits resized to ``image_size`` and repeated to ``channels``, split (stratified, seeded) into
    train and test parts, since the data set has no official split."""
    raw = _sklearn_digits()
    pixels = torch.as_tensor(raw.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    images = resize_uint8(pixels, image_size).repeat(1, channels, 1, 1)
    labels = torch.as_tensor(raw.target, dtype=torch.long)
    train_idx, test_idx = stratified_holdout(labels, test_fraction, seed)
    return DatasetBundle(
        train=TensorImages(images[train_idx], labels[train_idx]),
        test=TensorImages(images[test_idx], labels[test_idx]),
        num_classes=10,
        channels=channels,
        image_size=image_size,
        mean=(0.5,) * channels,
        std=(0.5,) * channels,
    )
