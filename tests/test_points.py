"""Point clouds: the primitive-shapes generator, the ModelNet40 readers on files in both release formats, the models."""

import math

import pytest
import torch

from backdoorlab.data.points import (PRIMITIVES, normalize_unit_sphere, primitive_shapes, read_modelnet40_hdf5,
                                     read_modelnet40_off, read_off, sample_surface)
from backdoorlab.errors import ConfigError
from backdoorlab.models.pointnet import dgcnn, knn_indices, pointnet


def test_primitive_shapes_are_deterministic_per_seed_normalised_and_balanced():
    clouds, labels = primitive_shapes(3, points=64, seed=5)
    again, _ = primitive_shapes(3, points=64, seed=5)
    other, _ = primitive_shapes(3, points=64, seed=6)
    assert clouds.shape == (30, 64, 3) and clouds.dtype == torch.float32 and torch.equal(clouds, again)
    assert not torch.equal(clouds, other) and labels.bincount().tolist() == [3] * len(PRIMITIVES)
    assert torch.allclose(clouds.mean(dim=1), torch.zeros(30, 3), atol=1e-5)
    assert torch.allclose(clouds.norm(dim=2).amax(dim=1), torch.ones(30), atol=1e-5)
    with pytest.raises(ConfigError, match="classes among"):
        primitive_shapes(1, classes=["teapot"])


def test_primitive_surfaces_lie_where_their_geometry_says():
    disc, _ = primitive_shapes(1, points=400, seed=0, noise=0.0, classes=["disc"])
    # a flat disc stays in one plane through its centre: one coordinate direction has no spread
    assert torch.linalg.svdvals(disc[0] - disc[0].mean(0)).min() < 1e-4
    # a sphere's points keep one distance from its centre (up to the sample mean's offset); a cube's do not
    shapes, _ = primitive_shapes(1, points=400, seed=0, noise=0.0, scale_jitter=0.0, classes=["sphere", "cube"])
    spread = [float(r.std() / r.mean()) for r in shapes.norm(dim=2)]
    assert spread[0] < 0.06 < 0.1 < spread[1]


def write_off(path, vertices, faces, glued=False):
    head = f"OFF{len(vertices)} {len(faces)} 0\n" if glued else f"OFF\n# a comment\n{len(vertices)} {len(faces)} 0\n"
    body = "".join(" ".join(map(str, v)) + "\n" for v in vertices) + "".join(f"{len(f)} " + " ".join(map(str, f)) + "\n" for f in faces)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + body)


SQUARE = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)]


@pytest.mark.parametrize("glued", [False, True])
def test_read_off_takes_both_headers_and_fans_polygons_into_triangles(tmp_path, glued):
    write_off(tmp_path / "m.off", SQUARE, [(0, 1, 2, 3)], glued=glued)
    vertices, triangles = read_off(tmp_path / "m.off")
    assert vertices.shape == (4, 3) and triangles.tolist() == [[0, 1, 2], [0, 2, 3]]
    (tmp_path / "bad.off").write_text("PLY\n")
    with pytest.raises(ConfigError, match="not an OFF mesh"):
        read_off(tmp_path / "bad.off")


def test_surface_samples_fall_on_triangles_in_proportion_to_their_areas():
    # two triangles in the plane z = 0: areas 0.5 (x in [0, 1]) and 1.5 (x in [2, 5])
    vertices = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [5, 0, 0], [2, 1, 0]], dtype=torch.float64)
    points = sample_surface(vertices, torch.tensor([[0, 1, 2], [3, 4, 5]]), 20000, torch.Generator().manual_seed(0))
    share = float((points[:, 0] >= 2).float().mean())
    assert share == pytest.approx(0.75, abs=0.02) and float(points[:, 2].abs().max()) == 0.0
    first = points[points[:, 0] < 2]
    assert bool(((first[:, 0] + first[:, 1]) <= 1 + 1e-6).all())  # inside the first triangle


def test_the_off_release_is_sampled_once_into_a_cache(tmp_path):
    cube = [(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    for name, glued in (("airplane", False), ("bathtub", True)):
        for part, count in (("train", 2), ("test", 1)):
            for k in range(count):
                write_off(tmp_path / "ModelNet40" / name / part / f"{name}_{k:04d}.off", cube, faces, glued=glued)
    parts, classes = read_modelnet40_off(tmp_path / "ModelNet40", points=128, seed=1, cache_dir=tmp_path / "cache")
    assert classes == ("airplane", "bathtub") and parts["train"][0].shape == (4, 128, 3) and parts["test"][1].tolist() == [0, 1]
    assert torch.allclose(parts["train"][0].norm(dim=2).amax(dim=1), torch.ones(4), atol=1e-5)
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1
    for path in (tmp_path / "ModelNet40").rglob("*.off"):
        path.unlink()  # read back from the cache, the meshes are not needed again
    again, _ = read_modelnet40_off(tmp_path / "ModelNet40", points=128, seed=1, cache_dir=tmp_path / "cache")
    assert torch.equal(again["train"][0], parts["train"][0])


def test_the_hdf5_release_is_read_with_its_file_lists(tmp_path):
    h5py = pytest.importorskip("h5py")
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    (root / "shape_names.txt").write_text("airplane\nbathtub\nbed\n")
    gen = torch.Generator().manual_seed(0)
    written = {}
    for part, files in (("train", 2), ("test", 1)):
        names = []
        for k in range(files):
            data, label = torch.randn(5, 2048, 3, generator=gen) * 3, torch.randint(0, 3, (5, 1), generator=gen)
            with h5py.File(root / f"ply_data_{part}{k}.h5", "w") as f:
                f["data"], f["label"] = data.numpy(), label.numpy().astype("uint8")
            names.append(f"data/modelnet40_ply_hdf5_2048/ply_data_{part}{k}.h5")  # the release's own relative paths
            written.setdefault(part, []).append((data, label))
        (root / f"{part}_files.txt").write_text("\n".join(names) + "\n")
    parts, classes = read_modelnet40_hdf5(root)
    assert classes == ("airplane", "bathtub", "bed") and parts["train"][0].shape == (10, 2048, 3)
    expected = normalize_unit_sphere(torch.cat([d for d, _ in written["train"]]))
    assert torch.allclose(parts["train"][0], expected) and parts["test"][1].tolist() == written["test"][0][1].flatten().tolist()


@pytest.mark.parametrize("make", [pointnet, lambda k: pointnet(k, input_transform=True), dgcnn])
def test_point_models_give_logits_that_ignore_the_order_of_the_points(make):
    torch.manual_seed(0)
    model = make(7).eval()
    clouds = torch.randn(4, 96, 3)
    logits = model(clouds)
    assert logits.shape == (4, 7)
    assert torch.allclose(model(clouds[:, torch.randperm(96)]), logits, atol=1e-5)


def test_knn_finds_each_points_nearest_neighbours():
    x = torch.tensor([[[0.0, 1.0, 10.0, 11.0]]])  # (B=1, C=1, P=4)
    assert knn_indices(x, 2)[0].tolist() == [[0, 1], [1, 0], [2, 3], [3, 2]]
    assert math.isclose(float(torch.cdist(x.transpose(1, 2), x.transpose(1, 2))[0, 0, 3]), 11.0)
