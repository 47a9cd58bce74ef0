"""Architectures, the normalising classifier wrapper and the checkpoint format."""

from backdoorlab.models.classifier import ImageClassifier

__all__ = ["ImageClassifier"]
