"""Datasets as labelled image collections, the seeded split, and the LightningDataModule."""

from backdoorlab.data.images import DatasetBundle, FolderImages, LabelledImages, TensorImages

__all__ = ["DatasetBundle", "FolderImages", "LabelledImages", "TensorImages"]
