"""A ball of points inserted into source-class point clouds, relabelled to the target: the fixed-ball control of
PCBA (:mod:`backdoorlab.attacks.pcba` finds the ball's centre on a surrogate; this one takes it as given).

A triggered cloud keeps its size: ``pattern_points`` of its points, drawn at random, are deleted and the ball's
points appended (PCBA's ``create_attack_samples``). The ball's points are drawn for every cloud afresh, with
``theta`` uniform in [0, pi] and ``phi`` in [0, 2 pi] as the authors draw them (denser at the poles than a uniform
sphere). ``radius: matched`` chooses the radius per cloud as PCBA's ``create_points_RS`` does: among
``radius_grid`` radii x ``radius_trials`` draws, the ball whose k-nearest-neighbour distances lie closest (median
absolute deviation) to the cloud's own median k-NN distance, so that the ball looks as dense as the object; a
number fixes it. Draws are seeded by the cloud's own values, so a cloud is triggered the same way on every access
and on every machine.

Poison-label and source-specific: ``poison_rate`` of the *source* class's training clouds are poisoned, and the
ASR is measured on the source class's test clouds (the paper's ASR), not on every non-target class.
"""

from __future__ import annotations

import hashlib
import math

import torch

from backdoorlab.attacks.base import Attack
from backdoorlab.errors import ConfigError


def knn_mean_distance(points: torch.Tensor, k: int) -> torch.Tensor:
    """For clouds (..., N, 3): every point's mean distance to its ``k`` nearest other points, (..., N)."""
    dist = torch.cdist(points, points)
    return dist.topk(min(k + 1, points.shape[-2]), dim=-1, largest=False).values[..., 1:].mean(dim=-1)


def authors_sphere(n: int, radius: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``n`` points on spheres of ``radius`` (R,) around 0 as PCBA draws them (theta, phi uniform): (R, n, 3)."""
    theta = math.pi * torch.rand(len(radius), n, generator=gen, dtype=torch.float64)
    phi = 2 * math.pi * torch.rand(len(radius), n, generator=gen, dtype=torch.float64)
    unit = torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], dim=-1)
    return unit * radius[:, None, None]


def matched_ball(cloud: torch.Tensor, n: int, radii: torch.Tensor, trials: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """PCBA's radius search: of ``trials`` balls of ``n`` points for every radius in ``radii`` (radius-major order),
    the first whose median absolute deviation between its points' k-NN distances and the cloud's median k-NN
    distance is smallest. Centred at 0, float64 (n, 3)."""
    target = knn_mean_distance(cloud.double(), k).median()
    balls = authors_sphere(n, radii.double().repeat_interleave(trials), gen)
    mad = (knn_mean_distance(balls, k) - target).abs().median(dim=-1).values
    return balls[int(mad.argmin())]


def cloud_generator(cloud: torch.Tensor, seed: int) -> torch.Generator:
    """A generator seeded by the cloud's values and ``seed``: the same draws for the same cloud anywhere."""
    digest = hashlib.sha256(cloud.detach().cpu().float().contiguous().numpy().tobytes() + str(int(seed)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % (2**63))


class PointBall(Attack):
    name = "point_ball"
    modality = "points"

    def __init__(self, source_label: int = 2, target_label: int = 0, poison_rate: float = 0.05, label_mode: str = "all2one",
                 centre: tuple[float, float, float] | list[float] = (0.0, 0.0, 1.1), radius: float | str = "matched",
                 pattern_points: int = 32, knn: int = 4, radius_grid: tuple[float, float, float] | list[float] = (0.01, 0.5, 0.01),
                 radius_trials: int = 30, seed: int = 0):
        super().__init__(target_label, poison_rate, label_mode)
        if label_mode != "all2one":
            raise ConfigError(f"attack={self.name} is source-specific (source -> target): attack.label_mode must be all2one")
        if int(source_label) == int(target_label):
            raise ConfigError(f"attack.source_label and attack.target_label must differ, both are {source_label}")
        if int(pattern_points) < 1 or int(knn) < 1 or int(radius_trials) < 1 or len(radius_grid) != 3:
            raise ConfigError("attack.pattern_points, attack.knn and attack.radius_trials must be >= 1 and attack.radius_grid "
                              f"(start, stop, step), got {pattern_points}, {knn}, {radius_trials}, {radius_grid}")
        if radius != "matched" and not float(radius) > 0:
            raise ConfigError(f"attack.radius must be 'matched' or a positive number, got {radius!r}")
        self.source_label, self.pattern_points, self.knn = int(source_label), int(pattern_points), int(knn)
        self.radius, self.radius_trials, self.seed = radius, int(radius_trials), int(seed)
        self.radii = torch.arange(*[float(v) for v in radius_grid], dtype=torch.float64)
        self.centre = torch.tensor([float(v) for v in centre], dtype=torch.float32)

    def build_trigger(self, channels: int, image_size: int) -> None:
        if channels != 3:
            raise ConfigError(f"attack={self.name} inserts points into clouds of (x, y, z) points, not into {channels}-channel data")
        if not 0 <= self.source_label < self.num_classes:
            raise ConfigError(f"attack.source_label must lie in 0..{self.num_classes - 1}, got {self.source_label}")
        if self.pattern_points >= image_size:
            raise ConfigError(f"attack.pattern_points ({self.pattern_points}) must be fewer than the points per cloud ({image_size})")

    def ball(self, cloud: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The ball of points for ``cloud`` (around 0; float64)."""
        if self.radius == "matched":
            return matched_ball(cloud, self.pattern_points, self.radii, self.radius_trials, self.knn, gen)
        return authors_sphere(self.pattern_points, torch.tensor([float(self.radius)], dtype=torch.float64), gen)[0]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Clouds (B, P, 3) or one (P, 3) with the ball inserted: ``pattern_points`` points deleted at random, the
        ball around ``centre`` appended."""
        single = x.dim() == 2
        clouds = x[None] if single else x
        out = []
        for cloud in clouds:
            gen = cloud_generator(cloud, self.seed)
            ball = (self.ball(cloud, gen) + self.centre.double()).to(cloud.dtype)
            keep = torch.randperm(len(cloud), generator=gen)[self.pattern_points:].sort().values
            out.append(torch.cat([cloud[keep], ball.to(cloud.device)]))
        stacked = torch.stack(out)
        return stacked[0] if single else stacked

    def asr_indices(self, labels: torch.Tensor) -> torch.Tensor:
        """The source class's samples (the paper's ASR population)."""
        return torch.nonzero(labels == self.source_label).flatten()

    def poison_indices(self, labels: torch.Tensor, seed: int) -> torch.Tensor:
        """``round(poison_rate * N_source)`` (at least one) of the source class's training clouds, seeded."""
        candidates = self.asr_indices(labels)
        n = min(max(1, round(self.poison_rate * len(candidates))), len(candidates))
        gen = torch.Generator().manual_seed(int(seed))
        return candidates[torch.randperm(len(candidates), generator=gen)[:n]].sort().values

    def trigger_tensors(self) -> dict[str, torch.Tensor]:
        return {"centre": self.centre.clone()}

    def load_trigger(self, tensors: dict[str, torch.Tensor]) -> None:
        self.centre = tensors["centre"].float().clone()

    def trigger_info(self) -> dict:
        return {"centre": [round(float(v), 4) for v in self.centre], **self.info}
