"""Class-folder data sets: ``train/<class>/*`` and ``test/<class>/*`` in a directory or an archive.

The images are decoded once (Pillow, converted to RGB, resized to ``image_size``) into a uint8
cache, ``<cache_dir>/<name>-<checksum>-<size>px.safetensors``, keyed by the archive's sha256 (for a
directory: by the paths, sizes and modification times of its files), so that a second run starts
in seconds and a changed archive is never read from a stale cache. Classes are the sorted folder
names; train and test must hold the same ones. Every problem with the input is a one-sentence
:class:`ConfigError` raised before any training, naming the offending path or class.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from backdoorlab.data.images import DatasetBundle, TensorImages, read_rgb
from backdoorlab.errors import ConfigError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLITS = ("train", "test")
LAYOUT = "train/<class>/<image> and test/<class>/<image>"
CACHE_VERSION = 1  # bump when decoding changes, so older caches are not reused


@dataclass
class _Listing:
    """The image files of one source, by split and class: class folder -> member names as the
    source spells them (so ``./train/...`` tar members and wrapping folders read back as listed)."""

    images: dict[str, dict[str, list[str]]] = field(default_factory=lambda: {s: {} for s in SPLITS})


def archive_kind(path: Path) -> str | None:
    """``"tar"``, ``"zip"`` or ``None`` (a directory or an unsupported file) from the file name."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    return None


def _is_hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _list_members(names: list[tuple[str, bool]], source: Path) -> _Listing:
    """Sort member paths (``(posix path, is_dir)``) into splits and classes; layout errors here."""
    entries = [(name, PurePosixPath(name.strip("/")).parts, is_dir) for name, is_dir in names]
    entries = [(name, parts, is_dir) for name, parts, is_dir in entries if parts and not _is_hidden(parts)]
    tops = {parts[0] for _, parts, _ in entries}
    if not tops & set(SPLITS) and len(tops) == 1:  # one wrapping folder: look inside it
        entries = [(name, parts[1:], is_dir) for name, parts, is_dir in entries if len(parts) > 1]
    listing = _Listing()
    for name, parts, is_dir in entries:
        if parts[0] not in SPLITS:
            continue
        if len(parts) == 2 and is_dir:
            listing.images[parts[0]].setdefault(parts[1], [])
        elif len(parts) == 2:
            raise ConfigError(f"{source}: {'/'.join(parts)} is not inside a class folder; expected {LAYOUT}")
        elif len(parts) >= 3:
            files = listing.images[parts[0]].setdefault(parts[1], [])
            if not is_dir and parts[-1].lower().endswith(IMAGE_SUFFIXES):
                files.append(name)
    _check_layout(listing, source)
    return listing


def _check_layout(listing: _Listing, source: Path) -> None:
    for split in SPLITS:
        if not listing.images[split]:
            raise ConfigError(f"{source} holds no {split}/<class>/ folders; expected {LAYOUT}")
    train, test = (set(listing.images[s]) for s in SPLITS)
    if train != test:
        only = [f"{c} (only in train)" for c in sorted(train - test)] + [f"{c} (only in test)" for c in sorted(test - train)]
        raise ConfigError(f"{source}: train and test hold different classes: {', '.join(only)}")
    for split in SPLITS:
        for cls, files in sorted(listing.images[split].items()):
            if not files:
                raise ConfigError(f"{source}: class {cls!r} has no images in {split}/{cls}/")


class _Source:
    """Read access to the files of a directory or archive, in the order that reads them fastest."""

    def __init__(self, path: Path):
        self.path, self.kind = path, archive_kind(path)

    def names(self) -> list[tuple[str, bool]]:
        if self.kind == "zip":
            with zipfile.ZipFile(self.path) as z:
                return [(i.filename, i.is_dir()) for i in z.infolist()]
        if self.kind == "tar":
            with tarfile.open(self.path) as t:
                return [(m.name, m.isdir()) for m in t.getmembers() if m.isfile() or m.isdir()]
        return [(p.relative_to(self.path).as_posix(), p.is_dir()) for p in sorted(self.path.rglob("*"))]

    def read(self, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
        """``(name, bytes)`` of every wanted member, in archive order (a gzip stream is read once)."""
        if self.kind == "zip":
            with zipfile.ZipFile(self.path) as z:
                for info in z.infolist():
                    if info.filename in wanted:
                        yield info.filename, z.read(info)
        elif self.kind == "tar":
            with tarfile.open(self.path) as t:
                for member in t:
                    if member.name in wanted:
                        yield member.name, t.extractfile(member).read()
        else:
            for name in sorted(wanted):
                yield name, (self.path / name).read_bytes()

    def checksum(self) -> str:
        """sha256 of an archive's bytes; of a directory's (path, size, mtime) listing."""
        digest = hashlib.sha256()
        if self.kind is not None:
            with open(self.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        else:
            for p in sorted(self.path.rglob("*")):
                if p.is_file():
                    st = p.stat()
                    digest.update(f"{p.relative_to(self.path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()


def _decode(data: bytes, image_size: int, name: str, source: Path) -> torch.Tensor:
    """One image as a (3, ``image_size``, ``image_size``) uint8 tensor, or a one-sentence error."""
    from PIL import UnidentifiedImageError

    try:
        return read_rgb(io.BytesIO(data), image_size)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ConfigError(f"{source}: image {name} could not be read ({err})") from err


def _decode_all(source: _Source, listing: _Listing, classes: list[str], image_size: int) -> dict[str, torch.Tensor]:
    """Decode every image; tensors ``<split>_images`` (N, 3, S, S) uint8 and ``<split>_labels``,
    ordered by class, then by path."""
    order = {split: [(label, name) for label, c in enumerate(classes) for name in sorted(listing.images[split][c])]
             for split in SPLITS}
    decoded = {name: _decode(data, image_size, name, source.path)
               for name, data in source.read({name for split in SPLITS for _, name in order[split]})}
    tensors = {}
    for split in SPLITS:
        tensors[f"{split}_images"] = torch.stack([decoded[name] for _, name in order[split]])
        tensors[f"{split}_labels"] = torch.tensor([label for label, _ in order[split]], dtype=torch.long)
    return tensors


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 images (N, C, H, W), in [0, 1]
    units, accumulated in float64 over chunks of images to bound memory."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    return tuple(mean.tolist()), tuple((squares / count - mean.square()).clamp_min(0).sqrt().tolist())


def check_source(path: str | Path | None, missing_hint: str | None = None) -> Path:
    """The data set's path, or a one-sentence error: unset, missing or of an unsupported kind."""
    if path is None or str(path).strip() == "":
        raise ConfigError(f"dataset.path is not set: give a directory or a {'/'.join(ARCHIVE_SUFFIXES)} archive holding {LAYOUT}")
    source = Path(os.path.normpath(Path(str(path)).expanduser()))
    if not source.exists():
        hint = f"; {missing_hint}" if missing_hint else f" (give a directory or archive holding {LAYOUT})"
        raise ConfigError(f"dataset.path={source} does not exist{hint}")
    if source.is_file() and archive_kind(source) is None:
        raise ConfigError(f"dataset.path={source} is neither a directory nor a {', '.join(ARCHIVE_SUFFIXES)} archive")
    return source


def load_image_folder(
    path: str | Path | None,
    image_size: int = 32,
    cache_dir: str | Path | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    name: str = "image_folder",
    missing_hint: str | None = None,
) -> DatasetBundle:
    """Train and test parts of a class-folder data set (RGB, ``image_size`` x ``image_size``).

    ``mean``/``std`` normalise the model's input; ``None`` computes them from the training images.
    ``cache_dir=None`` decodes without caching. ``missing_hint`` ends the error for a missing path.
    """
    if int(image_size) < 1:
        raise ConfigError(f"dataset.image_size must be >= 1, got {image_size}")
    source = _Source(check_source(path, missing_hint))
    cache = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{source.checksum()}-{CACHE_VERSION}".encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"{name}-{key}-{int(image_size)}px.safetensors"
    if cache is not None and cache.is_file():
        tensors = load_file(str(cache))
        with safe_open(str(cache), "pt") as f:  # the class names travel in the file's metadata
            classes = json.loads(f.metadata()["classes"])
    else:
        try:
            listing = _list_members(source.names(), source.path)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
            raise ConfigError(f"dataset.path={source.path} could not be read as an archive ({err})") from err
        classes = sorted(listing.images["train"])
        tensors = _decode_all(source, listing, classes, int(image_size))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")  # processes decoding side by side never share it
            save_file(tensors, str(tmp), metadata={"classes": json.dumps(classes), "source": str(source.path)})
            tmp.replace(cache)
    if mean is None or std is None:
        measured = channel_stats(tensors["train_images"])
        mean, std = measured[0] if mean is None else mean, measured[1] if std is None else std
    return DatasetBundle(
        train=TensorImages(tensors["train_images"], tensors["train_labels"]),
        test=TensorImages(tensors["test_images"], tensors["test_labels"]),
        num_classes=len(classes),
        channels=3,
        image_size=int(image_size),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        classes=tuple(classes),
    )
