"""The class-folder loader (dataset=image_folder, dataset=cifar10_jpeg) on small data sets the tests
write themselves, as a directory and as .tar, .tar.gz and .zip archives."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backdoorlab.builders import build_data
from backdoorlab.data import image_folder
from backdoorlab.data.image_folder import channel_stats, load_image_folder
from backdoorlab.errors import ConfigError

CLASSES = ("cat", "dog", "frog")  # written out of order below: labels follow the sorted names
TRAIN_PER_CLASS, TEST_PER_CLASS = 4, 2


def pixels(label: int, index: int, size: int = 8) -> np.ndarray:
    """A distinct (size, size, 3) uint8 image per class and index (a gradient, so order matters)."""
    base = np.arange(size * size * 3, dtype=np.int64).reshape(size, size, 3)
    return ((base * (label + 1) + 17 * index) % 256).astype(np.uint8)


def write_folder(root: Path, classes=CLASSES, per_split=None, size: int = 8) -> Path:
    """``root/{train,test}/<class>/<i>.png`` (lossless, so decoded pixels are checked exactly)."""
    per_split = per_split or {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS}
    for split, count in per_split.items():
        for cls in reversed(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(pixels(CLASSES.index(cls), i, size)).save(folder / f"{i:04d}.png")
    return root


def pack(folder: Path, kind: str, arcroot: str = "") -> Path:
    """``folder``'s contents as a directory (``dir``) or a tar / tar.gz / zip archive beside it."""
    if kind == "dir":
        return folder
    out = folder.parent / f"data.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(out, "w") as z:
            for path in sorted(folder.rglob("*")):
                z.write(path, str(Path(arcroot) / path.relative_to(folder)))
    else:
        with tarfile.open(out, "w:gz" if kind == "tar.gz" else "w") as t:
            for top in sorted(folder.iterdir()):
                t.add(top, str(Path(arcroot) / top.name))
    return out


@pytest.mark.parametrize("kind", ["dir", "tar", "tar.gz", "zip"])
def test_every_source_kind_gives_sorted_classes_and_exact_pixels(tmp_path, kind):
    source = pack(write_folder(tmp_path / "data"), kind)
    bundle = load_image_folder(source, image_size=8, cache_dir=tmp_path / "cache")
    assert bundle.classes == ("cat", "dog", "frog") and bundle.num_classes == 3
    assert bundle.train.labels.tolist() == [c for c in range(3) for _ in range(TRAIN_PER_CLASS)]
    assert bundle.test.labels.tolist() == [c for c in range(3) for _ in range(TEST_PER_CLASS)]
    assert bundle.train.images.dtype == torch.uint8 and bundle.train.images.shape == (12, 3, 8, 8)
    # within a class, files in path order: train image 5 is dog/0001.png
    assert torch.equal(bundle.train.images[5], torch.from_numpy(pixels(1, 1)).permute(2, 0, 1))
    assert torch.equal(bundle.test.images[4], torch.from_numpy(pixels(2, 0)).permute(2, 0, 1))
    x, y = bundle.train[5]
    assert y == 1 and x.dtype == torch.float32 and torch.allclose(x * 255, bundle.train.images[5].float())


def test_a_single_wrapping_folder_inside_an_archive_is_looked_into(tmp_path):
    source = pack(write_folder(tmp_path / "data"), "zip", arcroot="mydata")
    bundle = load_image_folder(source, image_size=8, cache_dir=None)
    assert bundle.classes == CLASSES and len(bundle.train) == 12


def test_tar_members_spelled_with_a_leading_dot_slash_are_read(tmp_path):
    folder = write_folder(tmp_path / "data")
    with tarfile.open(tmp_path / "dotted.tar", "w") as t:
        t.add(folder, arcname=".")  # members ".", "./train", "./train/cat/0000.png", ...
    bundle = load_image_folder(tmp_path / "dotted.tar", image_size=8, cache_dir=None)
    assert bundle.classes == CLASSES and len(bundle.train) == 12
    assert torch.equal(bundle.train.images[5], torch.from_numpy(pixels(1, 1)).permute(2, 0, 1))


def test_images_are_resized_and_converted_to_rgb(tmp_path):
    root = write_folder(tmp_path / "data", size=12)
    Image.fromarray(pixels(0, 0, 12)[..., 0]).save(root / "train" / "cat" / "0000.png")  # grayscale
    bundle = load_image_folder(root, image_size=6, cache_dir=None)
    assert bundle.train.images.shape == (12, 3, 6, 6) and bundle.image_size == 6
    gray = bundle.train.images[0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_statistics_are_measured_on_the_training_images_unless_given(tmp_path):
    root = write_folder(tmp_path / "data")
    bundle = load_image_folder(root, image_size=8, cache_dir=None)
    x = bundle.train.images.double() / 255
    assert bundle.mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert bundle.std == pytest.approx(x.permute(1, 0, 2, 3).reshape(3, -1).std(1, unbiased=False).tolist(), abs=1e-9)
    chunked = channel_stats(bundle.train.images, chunk=5)
    assert chunked[0] == pytest.approx(bundle.mean, abs=1e-12) and chunked[1] == pytest.approx(bundle.std, abs=1e-12)
    given = load_image_folder(root, image_size=8, cache_dir=None, mean=[0.1, 0.2, 0.3], std=[1, 2, 3])
    assert given.mean == (0.1, 0.2, 0.3) and given.std == (1.0, 2.0, 3.0)


def test_the_second_load_reads_the_cache_and_a_changed_archive_is_decoded_again(tmp_path, monkeypatch):
    source = pack(write_folder(tmp_path / "data"), "tar.gz")
    first = load_image_folder(source, image_size=8, cache_dir=tmp_path / "cache", name="mine")
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].name.startswith("mine-") and cached[0].name.endswith("-8px.safetensors")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although a cache exists")

    monkeypatch.setattr(image_folder, "_decode_all", no_decoding)
    second = load_image_folder(source, image_size=8, cache_dir=tmp_path / "cache", name="mine")
    assert torch.equal(first.train.images, second.train.images) and second.classes == first.classes
    monkeypatch.undo()
    shutil.rmtree(tmp_path / "data" / "train" / "frog")
    shutil.rmtree(tmp_path / "data" / "test" / "frog")
    changed = load_image_folder(pack(tmp_path / "data", "tar.gz"), image_size=8, cache_dir=tmp_path / "cache", name="mine")
    assert changed.classes == ("cat", "dog") and len(list((tmp_path / "cache").iterdir())) == 2


def corrupt(root: Path) -> Path:
    (root / "train" / "dog" / "0002.png").write_bytes(b"not an image at all")
    return root


def different_classes(root: Path) -> Path:
    (root / "test" / "dog").rename(root / "test" / "wolf")
    return root


def empty_class(root: Path) -> Path:
    for path in (root / "test" / "frog").iterdir():
        path.unlink()
    return root


def no_test_part(root: Path) -> Path:
    shutil.rmtree(root / "test")
    return root


def loose_file(root: Path) -> Path:
    shutil.copy(root / "train" / "cat" / "0000.png", root / "train" / "stray.png")
    return root


@pytest.mark.parametrize(
    "damage, kind, expected",
    [
        (corrupt, "tar.gz", ["train/dog/0002.png", "could not be read"]),
        (corrupt, "dir", ["train/dog/0002.png", "could not be read"]),
        (different_classes, "zip", ["different classes", "dog (only in train)", "wolf (only in test)"]),
        (empty_class, "dir", ["class 'frog'", "test/frog/"]),
        (empty_class, "tar", ["class 'frog'", "test/frog/"]),
        (no_test_part, "tar", ["no test/<class>/ folders", "train/<class>/<image> and test/<class>/<image>"]),
        (loose_file, "dir", ["train/stray.png", "not inside a class folder"]),
    ],
)
def test_bad_data_stops_with_one_sentence_naming_the_path_or_class(tmp_path, damage, kind, expected):
    source = pack(damage(write_folder(tmp_path / "data")), kind)
    with pytest.raises(ConfigError) as err:
        load_image_folder(source, image_size=8, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert str(source) in message and all(part in message for part in expected), message
    assert "\n" not in message
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())  # nothing half-written


def test_missing_unset_and_unsupported_paths_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.path=.*nowhere.tar.gz does not exist"):
        load_image_folder(tmp_path / "nowhere.tar.gz")
    with pytest.raises(ConfigError, match="dataset.path is not set"):
        load_image_folder(None)
    (tmp_path / "data.rar").write_bytes(b"x")
    with pytest.raises(ConfigError, match="neither a directory nor"):
        load_image_folder(tmp_path / "data.rar")
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    with pytest.raises(ConfigError, match="could not be read as an archive"):
        load_image_folder(tmp_path / "broken.tar.gz", cache_dir=None)


def test_image_folder_dataset_through_the_config_tree(make_config, tmp_path):
    source = pack(write_folder(tmp_path / "images"), "tar")
    cfg = make_config("train", ["dataset=image_folder", f"dataset.path={source}", "dataset.image_size=8",
                                "dataset.pool_fraction=0.25"])
    data = build_data(cfg)
    assert data.num_classes == 3 and len(data.pool) == 3 and len(data.train) == 9
    assert len(list((tmp_path / "data" / "cache").glob("image_folder-*-8px.safetensors"))) == 1  # paths.data_dir/cache


def test_image_folder_without_a_path_stops_before_anything_is_read(make_config):
    with pytest.raises(ConfigError, match="dataset.path is not set"):
        build_data(make_config("train", ["dataset=image_folder"]))


def test_cifar10_jpeg_names_the_missing_archive_and_the_official_download(make_config, tmp_path):
    cfg = make_config("train", ["dataset=cifar10_jpeg", f"paths.shared_dir={tmp_path / 'elsewhere'}"])
    with pytest.raises(ConfigError) as err:
        build_data(cfg)
    message = str(err.value)
    assert str(tmp_path / "elsewhere" / "data" / "cifar10-jpeg.tar.gz") in message
    assert "dataset=cifar10 dataset.download=true" in message


def test_cifar10_jpeg_defaults_to_the_shared_archive_with_cifar_statistics(make_config):
    cfg = make_config("train", ["dataset=cifar10_jpeg"], fast=False)
    assert Path(cfg.dataset.path).name == "cifar10-jpeg.tar.gz"
    assert Path(cfg.dataset.path).parent.parent.name == "shared"
    assert cfg.dataset.pool_fraction == 0.01 and list(cfg.dataset.mean) == [0.4914, 0.4822, 0.4465]
    assert cfg.dataset.image_size == 32


def test_jpeg_files_decode_close_to_their_source(tmp_path):
    """JPEG is lossy: a smooth image comes back within a few grey levels."""
    root = tmp_path / "data"
    smooth = np.broadcast_to(np.linspace(40, 200, 16).astype(np.uint8)[None, :, None], (16, 16, 3)).copy()
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        buffer = io.BytesIO()
        Image.fromarray(smooth).save(buffer, format="JPEG", quality=95)
        (root / split / "a" / "0.jpg").write_bytes(buffer.getvalue())
    bundle = load_image_folder(root, image_size=16, cache_dir=None)
    diff = (bundle.train.images[0].permute(1, 2, 0).int() - torch.from_numpy(smooth).int()).abs()
    assert diff.max() <= 6
