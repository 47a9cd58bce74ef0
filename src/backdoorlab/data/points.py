"""3D point clouds: the offline primitive-shapes set made in code, and ModelNet40 from its two on-disk formats.

Clouds are float32 tensors of shape (P, 3) (x, y, z per point), centred and scaled into the unit sphere as
PointNet and PCBA normalise them. Sources:

- :func:`primitive_shapes`: ten primitive surfaces sampled in torch (sphere, ellipsoid, cube, box, cylinder,
  cone, torus, square pyramid, capsule, disc), with a random anisotropic scale, a rotation about the up axis
  and Gaussian jitter per cloud. Sphere/ellipsoid, cube/box and cylinder/capsule overlap at the edges of
  their scale ranges, so clean accuracy stays below 100 %.
- :func:`read_modelnet40_hdf5`: the PointNet release ``modelnet40_ply_hdf5_2048`` (``ply_data_*.h5`` files
  with ``data`` N x 2048 x 3 and ``label`` N x 1, listed in ``train_files.txt`` / ``test_files.txt``, class
  names in ``shape_names.txt``); needs h5py.
- :func:`read_modelnet40_off`: the Princeton meshes, ``<class>/train/*.off`` and ``<class>/test/*.off``,
  sampled area-weighted on the surface (:func:`sample_surface`), once, into a cache file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from backdoorlab.data.images import DatasetBundle, LabelledImages
from backdoorlab.errors import ConfigError

PRIMITIVES = ("sphere", "ellipsoid", "cube", "box", "cylinder", "cone", "torus", "pyramid", "capsule", "disc")


def normalize_unit_sphere(clouds: torch.Tensor) -> torch.Tensor:
    """Each cloud (..., P, 3) centred on its mean and scaled so that its farthest point lies on the unit sphere."""
    centred = clouds - clouds.mean(dim=-2, keepdim=True)
    radius = centred.norm(dim=-1).amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return centred / radius[..., None]


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _sphere(n: int, gen: torch.Generator) -> torch.Tensor:
    v = torch.randn(n, 3, generator=gen)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _choose(n: int, weights: Sequence[float], gen: torch.Generator) -> torch.Tensor:
    """For ``n`` points, the index of the part each lies on, with probability proportional to ``weights`` (areas)."""
    return torch.multinomial(torch.tensor(weights, dtype=torch.float64), n, replacement=True, generator=gen)


def _box(n: int, size: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Uniform on the surface of an axis-aligned box with side lengths ``size`` (3,), centred at 0."""
    a, b, c = size.tolist()
    face = _choose(n, [b * c, b * c, a * c, a * c, a * b, a * b], gen)
    p = (torch.rand(n, 3, generator=gen) - 0.5) * size
    axis = face // 2
    sign = (face % 2).float() * 2 - 1
    p[torch.arange(n), axis] = sign * size[axis] / 2
    return p


def _cylinder(n: int, radius: float, height: float, gen: torch.Generator, caps: bool = True) -> torch.Tensor:
    part = _choose(n, [2 * math.pi * radius * height] + ([math.pi * radius**2] * 2 if caps else []), gen)
    theta = 2 * math.pi * torch.rand(n, generator=gen)
    r = torch.where(part == 0, torch.full((n,), radius), radius * torch.rand(n, generator=gen).sqrt())
    z = torch.where(part == 0, (torch.rand(n, generator=gen) - 0.5) * height,
                    torch.where(part == 1, torch.full((n,), -height / 2), torch.full((n,), height / 2)))
    return torch.stack([r * theta.cos(), r * theta.sin(), z], dim=1)


def _cone(n: int, radius: float, height: float, gen: torch.Generator) -> torch.Tensor:
    slant = math.hypot(radius, height)
    part = _choose(n, [math.pi * radius * slant, math.pi * radius**2], gen)
    theta = 2 * math.pi * torch.rand(n, generator=gen)
    s = torch.rand(n, generator=gen).sqrt()  # area-uniform along the lateral surface and over the base disc
    r = radius * s
    z = torch.where(part == 0, height * (1 - s), torch.zeros(n)) - height / 3
    return torch.stack([r * theta.cos(), r * theta.sin(), z], dim=1)


def _torus(n: int, major: float, minor: float, gen: torch.Generator) -> torch.Tensor:
    """Uniform on a torus: the tube angle drawn with density proportional to the local ring radius (rejection)."""
    kept: list[torch.Tensor] = []
    while sum(len(k) for k in kept) < n:
        v = 2 * math.pi * torch.rand(2 * n, generator=gen)
        accept = torch.rand(2 * n, generator=gen) * (major + minor) <= major + minor * v.cos()
        kept.append(v[accept])
    v = torch.cat(kept)[:n]
    u = 2 * math.pi * torch.rand(n, generator=gen)
    ring = major + minor * v.cos()
    return torch.stack([ring * u.cos(), ring * u.sin(), minor * v.sin()], dim=1)


def _pyramid(n: int, base: float, height: float, gen: torch.Generator) -> torch.Tensor:
    """A square pyramid: the base and four triangles, each chosen by its area, uniform within it."""
    h = base / 2
    corners = torch.tensor([[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]])
    apex = torch.tensor([0.0, 0.0, height])
    side = 0.5 * base * math.hypot(h, height)
    part = _choose(n, [base * base, side, side, side, side], gen)
    p = (torch.rand(n, 3, generator=gen) - 0.5) * base
    p[:, 2] = 0.0
    r1, r2 = torch.rand(n, generator=gen).sqrt(), torch.rand(n, generator=gen)
    for k in range(4):
        mask = part == k + 1
        a, b = corners[k], corners[(k + 1) % 4]
        tri = (1 - r1[:, None]) * a + (r1 * (1 - r2))[:, None] * b + (r1 * r2)[:, None] * apex
        p[mask] = tri[mask]
    p[:, 2] -= height / 4
    return p


def _capsule(n: int, radius: float, height: float, gen: torch.Generator) -> torch.Tensor:
    part = _choose(n, [2 * math.pi * radius * height, 4 * math.pi * radius**2], gen)
    tube = _cylinder(n, radius, height, gen, caps=False)
    ball = _sphere(n, gen) * radius
    ball[:, 2] += torch.sign(ball[:, 2]) * height / 2
    return torch.where((part == 0)[:, None], tube, ball)


def _disc(n: int, radius: float, gen: torch.Generator) -> torch.Tensor:
    theta = 2 * math.pi * torch.rand(n, generator=gen)
    r = radius * torch.rand(n, generator=gen).sqrt()
    return torch.stack([r * theta.cos(), r * theta.sin(), torch.zeros(n)], dim=1)


def _shape(name: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """One cloud of class ``name`` before the per-cloud scale, rotation and jitter."""
    u = lambda low, high: float(_uniform(1, low, high, gen))  # noqa: E731
    makers: dict[str, Callable[[], torch.Tensor]] = {
        "sphere": lambda: _sphere(n, gen),
        "ellipsoid": lambda: _sphere(n, gen) * torch.tensor([1.0, u(0.55, 0.85), u(0.4, 0.8)]),
        "cube": lambda: _box(n, torch.ones(3), gen),
        "box": lambda: _box(n, torch.tensor([1.0, u(0.45, 0.85), u(0.25, 0.7)]), gen),
        "cylinder": lambda: _cylinder(n, u(0.3, 0.5), u(1.0, 1.6), gen),
        "cone": lambda: _cone(n, u(0.4, 0.6), u(1.0, 1.5), gen),
        "torus": lambda: _torus(n, 1.0, u(0.2, 0.4), gen),
        "pyramid": lambda: _pyramid(n, 1.0, u(0.7, 1.2), gen),
        "capsule": lambda: _capsule(n, u(0.3, 0.5), u(0.7, 1.2), gen),
        "disc": lambda: _disc(n, 1.0, gen),
    }
    return makers[name]()


def _rotation_about_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def primitive_shapes(per_class: int, points: int = 512, seed: int = 0, scale_jitter: float = 0.15,
                     noise: float = 0.01, classes: Sequence[str] = PRIMITIVES) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` clouds of each of ``classes`` with ``points`` points: ``(clouds (N, points, 3), labels (N,))``.
    Each cloud: its class's surface, every axis scaled by a factor in [1 - scale_jitter, 1 + scale_jitter],
    rotated about the up axis by a uniform angle, jittered by Gaussian noise of std ``noise``, normalised into
    the unit sphere. Deterministic for a seed."""
    unknown = [c for c in classes if c not in PRIMITIVES]
    if unknown or per_class < 1 or points < 1:
        raise ConfigError(f"primitive shapes need classes among {', '.join(PRIMITIVES)}, per_class >= 1 and points >= 1, "
                          f"got {list(classes)}, {per_class}, {points}")
    gen = torch.Generator().manual_seed(int(seed))
    clouds, labels = [], []
    for label, name in enumerate(classes):
        for _ in range(per_class):
            cloud = _shape(name, points, gen) * _uniform(3, 1 - scale_jitter, 1 + scale_jitter, gen)
            cloud = cloud @ _rotation_about_z(float(2 * math.pi * torch.rand(1, generator=gen))).T
            cloud = cloud + noise * torch.randn(points, 3, generator=gen)
            clouds.append(cloud)
            labels.append(label)
    return normalize_unit_sphere(torch.stack(clouds)).float(), torch.tensor(labels, dtype=torch.long)


def read_off(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(vertices (V, 3) float64, triangles (T, 3) int64)`` of an OFF mesh. Accepts the header with the counts on
    its own line or glued to ``OFF`` (``OFF490 518 0``, as in some ModelNet40 files), comments, and polygons
    with more than three corners (fanned into triangles)."""
    words = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            words.append(line)
    if not words or not words[0].startswith("OFF"):
        raise ConfigError(f"{path} is not an OFF mesh (its first line is {words[0][:20] if words else 'empty'!r})")
    head = words[0][3:].split()
    body = words[1:]
    if not head:
        head, body = body[0].split(), body[1:]
    n_vertices, n_faces = int(head[0]), int(head[1])
    vertices = torch.tensor([[float(v) for v in body[i].split()[:3]] for i in range(n_vertices)], dtype=torch.float64)
    triangles = []
    for line in body[n_vertices:n_vertices + n_faces]:
        values = [int(v) for v in line.split()]
        corners = values[1:1 + values[0]]
        triangles += [[corners[0], corners[k], corners[k + 1]] for k in range(1, len(corners) - 1)]
    if len(vertices) != n_vertices or not triangles:
        raise ConfigError(f"{path}: expected {n_vertices} vertices and {n_faces} faces")
    return vertices, torch.tensor(triangles, dtype=torch.long)


def sample_surface(vertices: torch.Tensor, triangles: torch.Tensor, points: int, gen: torch.Generator) -> torch.Tensor:
    """``points`` points uniform on the mesh surface: a triangle drawn with probability proportional to its area,
    then a uniform point in it (barycentric, square-root trick). Float32 (points, 3)."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    area = torch.linalg.cross(b - a, c - a).norm(dim=1) / 2
    if float(area.sum()) <= 0:
        raise ConfigError("the mesh has no surface area to sample")
    chosen = torch.multinomial(area, points, replacement=True, generator=gen)
    r1 = torch.rand(points, 1, generator=gen, dtype=torch.float64).sqrt()
    r2 = torch.rand(points, 1, generator=gen, dtype=torch.float64)
    p = (1 - r1) * a[chosen] + r1 * (1 - r2) * b[chosen] + r1 * r2 * c[chosen]
    return p.float()


def read_modelnet40_off(root: str | Path, points: int, seed: int = 0, cache_dir: str | Path | None = None,
                        ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], tuple[str, ...]]:
    """The ``.off`` release (``root/<class>/{train,test}/*.off``): ``({"train": (clouds, labels), "test": ...},
    class names)``, each mesh sampled with ``points`` points (:func:`sample_surface`, seeded per file) and
    normalised into the unit sphere. With ``cache_dir`` the sampled clouds are saved there once and read back."""
    root = Path(root)
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "train").is_dir()))
    if not classes:
        raise ConfigError(f"{root} has no <class>/train folders of .off meshes")
    cache = None if cache_dir is None else Path(cache_dir) / f"modelnet40_off-{root.name}-{points}-{seed}.pt"
    if cache is not None and cache.is_file():
        return torch.load(cache, weights_only=True), classes
    parts = {}
    for part in ("train", "test"):
        clouds, labels = [], []
        for label, name in enumerate(classes):
            for k, file in enumerate(sorted((root / name / part).glob("*.off"))):
                gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + label * 10_007 + k)
                clouds.append(sample_surface(*read_off(file), points, gen))
                labels.append(label)
        if not clouds:
            raise ConfigError(f"{root} has no {part} meshes")
        parts[part] = (normalize_unit_sphere(torch.stack(clouds)), torch.tensor(labels, dtype=torch.long))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(parts, cache)
    return parts, classes


def read_modelnet40_hdf5(root: str | Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], tuple[str, ...]]:
    """The PointNet HDF5 release (``root`` holding ``train_files.txt``, ``test_files.txt``, ``shape_names.txt`` and
    the ``.h5`` files they list, by name or by the release's own relative path): ``({"train": (clouds, labels),
    "test": ...}, class names)``, clouds normalised into the unit sphere."""
    try:
        import h5py
    except ImportError:
        raise ConfigError("the ModelNet40 HDF5 release needs h5py: pip install h5py (or backdoorlab[points])") from None
    root = Path(root)
    names = root / "shape_names.txt"
    if not names.is_file():
        raise ConfigError(f"{root} has no shape_names.txt: is it the modelnet40_ply_hdf5_2048 folder?")
    classes = tuple(line.strip() for line in names.read_text().splitlines() if line.strip())
    parts = {}
    for part in ("train", "test"):
        listing = root / f"{part}_files.txt"
        if not listing.is_file():
            raise ConfigError(f"{root} has no {listing.name}")
        clouds, labels = [], []
        for entry in (line.strip() for line in listing.read_text().splitlines() if line.strip()):
            with h5py.File(root / Path(entry).name, "r") as f:
                clouds.append(torch.from_numpy(f["data"][:]).float())
                labels.append(torch.from_numpy(f["label"][:]).long().reshape(-1))
        parts[part] = (normalize_unit_sphere(torch.cat(clouds)), torch.cat(labels))
    return parts, classes


class TensorPoints(LabelledImages):
    """Point clouds held in memory as a float32 tensor (N, P, 3), with integer labels; ``image(i)`` is cloud i."""

    def __init__(self, clouds: torch.Tensor, labels: torch.Tensor | Sequence[int]):
        if clouds.dim() != 3 or clouds.shape[-1] != 3:
            raise ValueError(f"TensorPoints expects clouds of shape (N, P, 3), got {tuple(clouds.shape)}")
        self.clouds = clouds.float()
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        if len(self.labels) != len(clouds):
            raise ValueError(f"{len(clouds)} clouds but {len(self.labels)} labels")

    def image(self, index: int) -> torch.Tensor:
        return self.clouds[index]


def _subsample(clouds: torch.Tensor, points: int, seed: int) -> torch.Tensor:
    """``points`` of every cloud's points, one seeded draw per cloud (the releases' 2 048 down to the model's size)."""
    if points > clouds.shape[1]:
        raise ConfigError(f"dataset.points ({points}) exceeds the {clouds.shape[1]} points per cloud of the source")
    if points == clouds.shape[1]:
        return clouds
    gen = torch.Generator().manual_seed(int(seed))
    return torch.stack([c[torch.randperm(len(c), generator=gen)[:points]] for c in clouds])


def _bundle(parts: dict[str, tuple[torch.Tensor, torch.Tensor]], classes: Sequence[str], points: int) -> DatasetBundle:
    return DatasetBundle(train=TensorPoints(*parts["train"]), test=TensorPoints(*parts["test"]), num_classes=len(classes),
                         channels=3, image_size=points, mean=None, std=None, classes=tuple(classes), modality="points")


def load_primitive_shapes(train_per_class: int = 200, test_per_class: int = 50, points: int = 512, seed: int = 0,
                          scale_jitter: float = 0.15, noise: float = 0.01) -> DatasetBundle:
    """The offline default: :func:`primitive_shapes` drawn once for train and test (seeds ``seed`` and ``seed + 1``)."""
    shared = {"points": points, "scale_jitter": scale_jitter, "noise": noise}
    parts = {"train": primitive_shapes(train_per_class, seed=seed, **shared),
             "test": primitive_shapes(test_per_class, seed=seed + 1, **shared)}
    return _bundle(parts, PRIMITIVES, points)


def load_modelnet40(path: str | Path, points: int = 1024, format: str = "auto", seed: int = 0, cache_dir: str | Path | None = None,
                    mesh_points: int = 2048) -> DatasetBundle:
    """ModelNet40 from ``path``: the HDF5 release (``format=hdf5``) or the ``.off`` meshes (``format=off``, sampled with
    ``mesh_points`` points each and cached in ``cache_dir``); ``auto`` tells them apart by ``shape_names.txt``. Every
    cloud is then sub-sampled once (seeded) to ``points`` points, as PCBA's victim reads 1 024 of the 2 048."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"dataset.path={root} is not a folder: give the modelnet40_ply_hdf5_2048 folder or the ModelNet40 "
                          ".off folder (no download: the data cannot be fetched at run time)")
    if format == "auto":
        format = "hdf5" if (root / "shape_names.txt").is_file() else "off"
    if format not in ("hdf5", "off"):
        raise ConfigError(f"dataset.format must be auto, hdf5 or off, got {format!r}")
    parts, classes = read_modelnet40_hdf5(root) if format == "hdf5" else read_modelnet40_off(root, mesh_points, seed, cache_dir)
    parts = {name: (_subsample(c, points, seed + k), y) for k, (name, (c, y)) in enumerate(parts.items())}
    return _bundle(parts, classes, points)
