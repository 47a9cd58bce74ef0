"""Standard vision benchmarks (CIFAR-10/100, GTSRB, Tiny-ImageNet, ImageNet) as DatasetBundles.

Every loader reads the official archives' layout under ``root`` (``paths.data_dir``), checks that
the files are there before calling torchvision, and otherwise raises a one-sentence
:class:`ConfigError` naming the directory where they are expected. Train is the official training
part, test the official test (or validation) part; images are RGB floats in [0, 1] resized to
``image_size`` x ``image_size``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torchvision.datasets as tvd
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from backdoorlab.data.images import DatasetBundle, FolderImages, LabelledImages, TensorImages
from backdoorlab.errors import ConfigError

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]  # (mean, std) per channel
CIFAR10_STATS: Stats = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS: Stats = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
GTSRB_STATS: Stats = ((0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669))
IMAGENET_STATS: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

TINY_IMAGENET_LAYOUT = "wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt"
IMAGENET_LAYOUT = "train/<class>/* and val/<class>/* (the validation images sorted into class folders)"


def _data_error(name: str, directory: Path, problem: str, layout: str | None = None) -> ConfigError:
    """One sentence: the data set, where its files are expected, what is wrong, and the fix
    (``dataset.download=true`` for sources torchvision fetches, else placing ``layout`` by hand)."""
    fix = "set dataset.download=true to fetch them" if layout is None else f"place {layout} there by hand"
    return ConfigError(f"{name} files are expected in {directory} but {problem}; {fix}.")


@contextmanager
def _readable(name: str, directory: Path, layout: str | None = None) -> Iterator[None]:
    """Turn torchvision's unclear missing/corrupt-file errors into :func:`_data_error`."""
    try:
        yield
    except (RuntimeError, FileNotFoundError) as err:
        raise _data_error(name, directory, f"could not be read ({err})", layout) from err


def _folder(samples: Sequence[tuple[str | Path, int]], image_size: int) -> FolderImages:
    return FolderImages([path for path, _ in samples], [label for _, label in samples], image_size)


def _bundle(train: LabelledImages, test: LabelledImages, classes: int, image_size: int, stats: Stats) -> DatasetBundle:
    return DatasetBundle(train, test, classes, channels=3, image_size=image_size, mean=stats[0], std=stats[1])


def _load_cifar(
    cls: type[tvd.CIFAR10], name: str, root: str | Path, download: bool, image_size: int, stats: Stats
) -> DatasetBundle:
    directory = Path(root) / cls.base_folder
    files = [file for file, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    if not download and not all((directory / file).is_file() for file in files):
        raise _data_error(name, directory, "were not found")
    with _readable(name, directory):  # torchvision also checks every file's md5
        parts = [cls(str(root), train=train, download=download) for train in (True, False)]
    train, test = (TensorImages.from_hwc(part.data, part.targets, image_size) for part in parts)
    return _bundle(train, test, len(parts[0].classes), image_size, stats)


def load_cifar10(root: str | Path, download: bool = False, image_size: int = 32) -> DatasetBundle:
    """CIFAR-10 (50,000 train / 10,000 test, 10 classes) from ``<root>/cifar-10-batches-py/``."""
    return _load_cifar(tvd.CIFAR10, "CIFAR-10", root, download, image_size, CIFAR10_STATS)


def load_cifar100(root: str | Path, download: bool = False, image_size: int = 32) -> DatasetBundle:
    """CIFAR-100 (50,000 train / 10,000 test, 100 fine classes) from ``<root>/cifar-100-python/``."""
    return _load_cifar(tvd.CIFAR100, "CIFAR-100", root, download, image_size, CIFAR100_STATS)


def load_gtsrb(root: str | Path, download: bool = False, image_size: int = 32) -> DatasetBundle:
    """GTSRB (39,209 train / 12,630 test, 43 classes) in torchvision's layout under ``<root>/gtsrb/``:
    ``GTSRB/Training/<5-digit class>/*.ppm``, ``GTSRB/Final_Test/Images/*.ppm`` and the test labels
    in ``GT-final_test.csv``. Training labels are the class folders' sorted positions (torchvision's
    ``make_dataset``), which equal the folder numbers when all 43 folders are present."""
    directory = Path(root) / "gtsrb"
    needed = [directory / "GTSRB/Training", directory / "GTSRB/Final_Test/Images", directory / "GT-final_test.csv"]
    if not download and not all(path.exists() for path in needed):
        raise _data_error("GTSRB", directory, "were not found")
    with _readable("GTSRB", directory):
        parts = [tvd.GTSRB(str(root), split=split, download=download) for split in ("train", "test")]
    train, test = (_folder(part._samples, image_size) for part in parts)
    return _bundle(train, test, 43, image_size, GTSRB_STATS)


def load_tiny_imagenet(root: str | Path, download: bool = False, image_size: int = 64) -> DatasetBundle:
    """Tiny-ImageNet (100,000 train / 10,000 val, 200 classes) from ``<root>/tiny-imagenet-200/``.

    Class ``i`` is the ``i``-th wnid of ``wnids.txt`` in *sorted* order, the order ImageFolder gives
    ``train/``. Test is the labelled validation part (the official test part has no labels).
    """
    directory = Path(root) / "tiny-imagenet-200"
    if download:
        raise _data_error("Tiny-ImageNet", directory, "cannot be downloaded automatically", TINY_IMAGENET_LAYOUT)
    wnids_file, annotations = directory / "wnids.txt", directory / "val" / "val_annotations.txt"
    if not (wnids_file.is_file() and annotations.is_file() and (directory / "train").is_dir()):
        raise _data_error("Tiny-ImageNet", directory, "were not found", TINY_IMAGENET_LAYOUT)
    index = {wnid: i for i, wnid in enumerate(sorted(wnids_file.read_text().split()))}
    train = [(path, i) for wnid, i in index.items() for path in sorted(directory.glob(f"train/{wnid}/images/*.JPEG"))]
    rows = (line.split("\t") for line in annotations.read_text().splitlines() if line.strip())
    test = [(directory / "val" / "images" / row[0], index[row[1]]) for row in rows]
    return _bundle(_folder(train, image_size), _folder(test, image_size), len(index), image_size, IMAGENET_STATS)


def load_imagenet(root: str | Path, download: bool = False, image_size: int = 224) -> DatasetBundle:
    """ImageNet, or a subset such as ImageNet-100, from class folders ``<root>/imagenet/{train,val}/``.

    Classes are the sorted folder names of ``train/`` (ImageFolder's order; with wnid folders, the
    standard ImageNet indices); ``val/`` must hold the same folders. Images are resized, not cropped.
    """
    directory = Path(root) / "imagenet"
    if download:
        raise _data_error("ImageNet", directory, "cannot be downloaded automatically", IMAGENET_LAYOUT)
    if not all((directory / split).is_dir() for split in ("train", "val")):
        raise _data_error("ImageNet", directory, "were not found", IMAGENET_LAYOUT)
    with _readable("ImageNet", directory, IMAGENET_LAYOUT):
        classes, class_to_idx = find_classes(directory / "train")
        if find_classes(directory / "val")[0] != classes:
            raise _data_error("ImageNet", directory, "train/ and val/ hold different class folders", IMAGENET_LAYOUT)
        train, test = (make_dataset(directory / split, class_to_idx, IMG_EXTENSIONS) for split in ("train", "val"))
    return _bundle(_folder(train, image_size), _folder(test, image_size), len(classes), image_size, IMAGENET_STATS)
