"""The point-cloud backdoors: PCBA's ball (its radius matched to the cloud) and its centre found on a surrogate."""

import pytest
import torch
from torch.utils.data import TensorDataset

from backdoorlab.attacks.pcba import PCBA, CentreSearch, search_centre
from backdoorlab.attacks.point_ball import PointBall, knn_mean_distance, matched_ball
from backdoorlab.data.points import primitive_shapes
from backdoorlab.errors import ConfigError


def test_the_ball_replaces_points_keeps_the_cloud_size_and_is_the_same_on_every_call():
    clouds, _ = primitive_shapes(2, points=128, seed=1, classes=["cube"])
    attack = PointBall(source_label=1, target_label=0, centre=(0.0, 0.0, 1.2), radius=0.1, pattern_points=16).build(3, 128, 3)
    out = attack.apply(clouds)
    assert out.shape == clouds.shape and torch.equal(out, attack.apply(clouds)) and torch.equal(out[1], attack.apply(clouds[1]))
    ball = out[:, -16:]
    assert torch.allclose((ball - torch.tensor([0.0, 0.0, 1.2])).norm(dim=-1), torch.full((2, 16), 0.1), atol=1e-5)
    for cloud, triggered in zip(clouds, out):  # the other 112 points are the cloud's own, in order
        kept = triggered[:-16]
        assert all(bool((cloud == p).all(dim=1).any()) for p in kept)


def test_the_matched_radius_follows_the_clouds_density():
    gen = torch.Generator().manual_seed(0)
    sparse, dense = (primitive_shapes(1, points=n, seed=0, classes=["sphere"])[0][0] for n in (64, 1024))
    radii = torch.arange(0.01, 0.5, 0.01)
    balls = [matched_ball(c, 32, radii, 10, 4, gen) for c in (sparse, dense)]
    spread = [float(b.norm(dim=1).max()) for b in balls]
    assert spread[1] < spread[0]  # a denser object gets a tighter ball
    for cloud, ball in zip((sparse, dense), balls):  # whose neighbour distances are close to the object's own
        ratio = float(knn_mean_distance(ball, 4).median() / knn_mean_distance(cloud.double(), 4).median())
        assert 0.7 < ratio < 1.4


def test_poisoning_and_the_asr_population_are_the_source_class_only():
    labels = torch.tensor([0, 1, 2, 2, 1, 2, 0, 2])
    attack = PointBall(source_label=2, target_label=0, poison_rate=0.5).build(3, 64, 3)
    assert attack.asr_indices(labels).tolist() == [2, 3, 5, 7]
    chosen = attack.poison_indices(labels, seed=3)
    assert len(chosen) == 2 and set(chosen.tolist()) <= {2, 3, 5, 7} and torch.equal(chosen, attack.poison_indices(labels, 3))
    assert attack.relabel(labels[chosen]).tolist() == [0, 0]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"label_mode": "all2all"}, "source-specific"), ({"source_label": 0}, "must differ"), ({"radius": -1.0}, "radius"),
])
def test_bad_settings_stop_before_anything_runs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PointBall(**{"source_label": 2, "target_label": 0, **kwargs})
    with pytest.raises(ConfigError, match="source_label must lie in 0..2"):
        PointBall(source_label=5, target_label=0).build(3, 64, 3)


def test_the_centre_search_reaches_the_target_posterior_close_to_the_objects():
    class AttractedToPoint(torch.nn.Module):
        """Target 1's logit grows as the last point (the appended centre) nears (0.5, 0, 0)."""

        def forward(self, clouds):
            d = (clouds[:, -1] - torch.tensor([0.5, 0.0, 0.0])).norm(dim=1)
            return torch.stack([torch.zeros_like(d), 2.0 - 4.0 * d], dim=1)

    clouds = torch.zeros(6, 10, 3)
    clouds[:, :, 0] = torch.linspace(-0.5, 0.5, 10)  # points on the x axis up to 0.5
    centre, found = search_centre(AttractedToPoint(), clouds, 1, CentreSearch(inits=3, steps=200, posterior=0.5),
                                  torch.Generator().manual_seed(0))
    assert centre is not None and found["starts_reaching_pi"] >= 1
    logit = 2.0 - 4.0 * float((centre - torch.tensor([0.5, 0.0, 0.0])).norm())
    assert torch.sigmoid(torch.tensor(logit)) > 0.5 and found["centre_distance"] < 0.05


def test_pcba_fits_its_centre_on_a_surrogate_and_stores_it():
    clouds, labels = primitive_shapes(12, points=96, seed=0, classes=["sphere", "cube", "cone"])
    train = TensorDataset(clouds, labels)
    train.labels = labels
    attack = PCBA(source_label=1, target_label=0, attacker_fraction=0.5, surrogate={"epochs": 3},
                  centre_search={"inits": 2, "steps": 100, "posterior": 0.05}, radius=0.05, pattern_points=8).build(3, 96, 3)
    attack.fit(train, seed=0)
    info = attack.trigger_info()
    assert info["attacker_clouds"] == 18 and info["starts_reaching_pi"] >= 1 and len(info["centre"]) == 3
    again = PCBA(source_label=1, target_label=0, radius=0.05, pattern_points=8).build(3, 96, 3)
    again.load_trigger(attack.trigger_tensors())
    assert torch.equal(again.apply(clouds[:2]), attack.apply(clouds[:2]))  # a stored trigger triggers the same way


def test_an_attack_for_another_modality_is_refused_before_training(make_config):
    from backdoorlab.builders import build_data

    with pytest.raises(ConfigError, match="attack=pcba triggers points samples and this dataset holds image samples"):
        build_data(make_config("train", ["attack=pcba"]))
    with pytest.raises(ConfigError, match="attack=badnets triggers image samples and this dataset holds points samples"):
        build_data(make_config("train", ["dataset=primitive_shapes", "dataset.source.train_per_class=3",
                                         "dataset.source.test_per_class=1", "attack=badnets"]))
