"""The real-data loaders of backdoorlab.data.vision on tiny stand-ins written in the official on-disk
formats (CIFAR pickles, GTSRB .ppm + CSV, Tiny-ImageNet and ImageNet JPEG folders)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from PIL import Image

from backdoorlab.data.vision import load_cifar10, load_cifar100, load_gtsrb, load_imagenet, load_tiny_imagenet
from backdoorlab.errors import ConfigError


def colour(label: int) -> tuple[int, int, int]:
    """A distinct solid RGB colour per class, so a pixel round-trip also checks the channel order."""
    return (2 * label, 250 - 2 * label, 30 + label)


def save_image(path: Path, label: int, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour(label)).save(path)  # the format follows the suffix (.ppm, .JPEG)


def check_bundle(bundle, train_labels, test_labels, num_classes: int, image_size: int) -> None:
    """Sizes, labels, facts, and every image: (3, size, size) float32 in [0, 1] with its class colour."""
    assert bundle.train.labels.tolist() == list(train_labels)
    assert bundle.test.labels.tolist() == list(test_labels)
    assert bundle.train.labels.dtype == torch.int64 and bundle.test.labels.dtype == torch.int64
    assert (bundle.num_classes, bundle.channels, bundle.image_size) == (num_classes, 3, image_size)
    assert len(bundle.mean) == len(bundle.std) == 3
    for part in (bundle.train, bundle.test):
        for x, y in part:
            assert x.shape == (3, image_size, image_size) and x.dtype == torch.float32
            assert 0.0 <= x.min() and x.max() <= 1.0
            expected = torch.tensor(colour(y), dtype=torch.float32) / 255.0
            assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=0.02), (y, x.mean(dim=(1, 2)), expected)


# --- CIFAR ---------------------------------------------------------------------------------------


def write_cifar_batch(path: Path, labels: list[int], label_key: str) -> None:
    """One CIFAR python batch: ``data`` uint8 (N, 3072) as 1024 R, 1024 G, 1024 B values per row.
    The official files are Python 2 pickles whose str keys torchvision reads as ``"data"`` with
    ``encoding="latin1"`` (the ``b"data"`` keys of the CIFAR web page come from ``encoding="bytes"``)."""
    data = np.stack([np.repeat(np.array(colour(y), dtype=np.uint8), 1024) for y in labels])
    with open(path, "wb") as f:
        pickle.dump({"data": data, label_key: labels, "batch_label": path.name}, f, protocol=2)


def write_cifar10(root: Path) -> tuple[list[int], list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = list(range(10))  # two images in each of the five training batches
    for b in range(5):
        write_cifar_batch(folder / f"data_batch_{b + 1}", train[2 * b : 2 * b + 2], "labels")
    test = [9, 0, 5]
    write_cifar_batch(folder / "test_batch", test, "labels")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 2}, f, protocol=2)
    return train, test


def write_cifar100(root: Path) -> tuple[list[int], list[int]]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train, test = [0, 99, 42, 7], [99, 3]
    write_cifar_batch(folder / "train", train, "fine_labels")
    write_cifar_batch(folder / "test", test, "fine_labels")
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return train, test


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    """torchvision checks every CIFAR file against the md5 of the official archive
    (``cifar.check_integrity`` in ``CIFAR10._check_integrity`` and ``_load_meta``); tiny stand-ins
    cannot match those sums, so in these tests only the md5 comparison is skipped (with
    ``md5=None`` torchvision still checks that each file exists)."""
    real = tv_cifar.check_integrity
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: real(fpath, None))


def test_cifar10_reads_the_python_batches(tmp_path, skip_cifar_md5):
    train, test = write_cifar10(tmp_path)
    bundle = load_cifar10(tmp_path)
    check_bundle(bundle, train, test, num_classes=10, image_size=32)
    assert bundle.mean == (0.4914, 0.4822, 0.4465)


def test_cifar100_reads_fine_labels_and_resizes(tmp_path, skip_cifar_md5):
    train, test = write_cifar100(tmp_path)
    check_bundle(load_cifar100(str(tmp_path), image_size=16), train, test, num_classes=100, image_size=16)


def test_cifar_files_with_wrong_checksums_give_a_config_error(tmp_path):
    write_cifar10(tmp_path)  # present, but not the official files: torchvision's md5 check fails
    with pytest.raises(ConfigError, match="could not be read") as err:
        load_cifar10(tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)


# --- GTSRB ---------------------------------------------------------------------------------------

GTSRB_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"


def write_gtsrb(root: Path) -> tuple[list[int], list[int]]:
    """All 43 class folders with one 12x10 .ppm each plus their GT-<class>.csv (ignored by
    torchvision), and three test images labelled by ``gtsrb/GT-final_test.csv``."""
    base = root / "gtsrb"
    for c in range(43):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        save_image(folder / "00000_00000.ppm", c, (12, 10))
        (folder / f"GT-{c:05d}.csv").write_text(GTSRB_HEADER + f"00000_00000.ppm;12;10;1;1;11;9;{c}\n")
    test = [5, 0, 42]
    rows = ""
    for i, c in enumerate(test):
        save_image(base / "GTSRB" / "Final_Test" / "Images" / f"{i:05d}.ppm", c, (12, 10))
        rows += f"{i:05d}.ppm;12;10;1;1;11;9;{c}\n"
    (base / "GT-final_test.csv").write_text(GTSRB_HEADER + rows)
    return list(range(43)), test


def test_gtsrb_reads_class_folders_and_test_csv(tmp_path):
    train, test = write_gtsrb(tmp_path)
    check_bundle(load_gtsrb(tmp_path), train, test, num_classes=43, image_size=32)


# --- Tiny-ImageNet -------------------------------------------------------------------------------


def write_tiny_imagenet(root: Path) -> tuple[list[int], list[int]]:
    """Three wnids listed out of order; classes follow their sorted order (n01 -> 0, ...)."""
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("n03\nn01\nn02\n")
    for label, wnid in enumerate(["n01", "n02", "n03"]):
        for i in range(2):
            save_image(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", label, (64, 64))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    annotations = ""
    for i, (wnid, label) in enumerate([("n02", 1), ("n03", 2), ("n01", 0)]):
        save_image(base / "val" / "images" / f"val_{i}.JPEG", label, (64, 64))
        annotations += f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63\n"
    (base / "val" / "val_annotations.txt").write_text(annotations)
    return [0, 0, 1, 1, 2, 2], [1, 2, 0]


def test_tiny_imagenet_reads_wnids_train_folders_and_val_annotations(tmp_path):
    train, test = write_tiny_imagenet(tmp_path)
    check_bundle(load_tiny_imagenet(tmp_path), train, test, num_classes=3, image_size=64)


# --- ImageNet folders ----------------------------------------------------------------------------


def write_imagenet(root: Path) -> tuple[list[int], list[int]]:
    base = root / "imagenet"
    for label, wnid in enumerate(["n01440764", "n01443537"]):
        for i in range(2):
            save_image(base / "train" / wnid / f"{wnid}_{i}.JPEG", label, (40, 30))
        save_image(base / "val" / wnid / f"ILSVRC2012_val_{label}.JPEG", label, (30, 40))
    (base / "train" / "n01440764" / "README.txt").write_text("not an image: skipped")
    return [0, 0, 1, 1], [0, 1]


def test_imagenet_reads_class_folders(tmp_path):
    train, test = write_imagenet(tmp_path)
    check_bundle(load_imagenet(tmp_path, image_size=16), train, test, num_classes=2, image_size=16)


def test_imagenet_val_with_other_classes_is_refused(tmp_path):
    write_imagenet(tmp_path)
    (tmp_path / "imagenet" / "val" / "n99999999").mkdir()
    with pytest.raises(ConfigError, match="train/ and val/ hold different class folders"):
        load_imagenet(tmp_path)


# --- Missing data --------------------------------------------------------------------------------

LOADERS = [
    (load_cifar10, "cifar-10-batches-py", "dataset.download=true"),
    (load_cifar100, "cifar-100-python", "dataset.download=true"),
    (load_gtsrb, "gtsrb", "dataset.download=true"),
    (load_tiny_imagenet, "tiny-imagenet-200", "by hand"),
    (load_imagenet, "imagenet", "by hand"),
]


@pytest.mark.parametrize(("load", "folder", "fix"), LOADERS, ids=[folder for _, folder, _ in LOADERS])
def test_missing_data_names_the_expected_directory(tmp_path, load, folder, fix):
    with pytest.raises(ConfigError, match="were not found") as err:
        load(tmp_path)
    message = str(err.value)
    assert str(tmp_path / folder) in message and fix in message
    assert message.count(". ") == 0  # one sentence


@pytest.mark.parametrize("load", [load_tiny_imagenet, load_imagenet])
def test_manual_datasets_refuse_download(tmp_path, load):
    with pytest.raises(ConfigError, match="cannot be downloaded automatically.*by hand"):
        load(tmp_path, download=True)
