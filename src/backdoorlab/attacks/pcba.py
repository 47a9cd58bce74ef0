"""PCBA (Xiang et al., ICCV 2021, "A Backdoor Attack against 3D Point Cloud Classifiers"), as its authors' code
(zhenxianglance/PCBA, ``attack_crafting.py``, ``attack_utils.py``) computes it:

1. a surrogate PointNet is trained on the attacker's split of the training set;
2. the ball's centre: from ``inits`` random starts (a Gaussian draw of std 0.5, redrawn until its norm exceeds 1),
   ``steps`` momentum steps on the centre, appended as one extra point to a random batch of the attacker's
   source-class clouds: the normalised gradient of the surrogate's NLL of the target class, plus, once the mean
   target posterior has exceeded ``posterior`` (PI), ``cost`` x the mean squared distance from the centre to each
   cloud's nearest point, the Lagrange multiplier raised or lowered 1.5x after 5 steps above or below PI; a start
   that does not reach PI within 10 % of the steps is dropped; the closest centre with the posterior above PI wins;
3. the ball around it with the radius matched to each cloud's density (:class:`PointBall`).

Departures: the surrogate is our PointNet (:mod:`backdoorlab.models.pointnet`) trained with Adam on ``attacker_fraction``
of the training set, seeded, and that split stays in the victim's training set (the authors' victim trains on the
rest, plus the poisoned copies); the poisoned clouds replace source-class clouds in place; the centre kept is the
one whose posterior and distance were measured (the authors' code keeps it one step later); every draw is seeded.
If no start reaches PI, the run stops (``AttackFailed``) as the authors' script exits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from backdoorlab.attacks.base import seeded
from backdoorlab.attacks.point_ball import PointBall
from backdoorlab.data.loaders import batches
from backdoorlab.errors import AttackFailed, ConfigError
from backdoorlab.models.pointnet import pointnet


@dataclass
class CentreSearch:
    inits: int = 10             # random starts (n_init)
    steps: int = 1000           # NSTEP
    posterior: float = 0.01     # PI: the mean target posterior the centre must reach
    step_size: float = 0.1      # STEP_SIZE
    momentum: float = 0.5       # MOMENTUM
    batch_size: int = 28        # BATCH_SIZE
    cost: float = 1.0           # COST_INIT
    cost_max: float = 1000.0    # COST_MAX
    patience: int = 5           # PATIENCE_UP and PATIENCE_DOWN
    convergence: int = 100      # PATIENCE_CONVERGENCE
    cost_factor: float = 1.5    # COST_UP_MULTIPLIER and COST_DOWN_MULTIPLIER

    def __post_init__(self):
        if min(self.inits, self.steps, self.batch_size, self.patience, self.convergence) < 1 or not 0 < self.posterior < 1 \
                or self.step_size <= 0 or not 0 <= self.momentum < 1 or self.cost <= 0 or self.cost_factor <= 1:
            raise ConfigError(f"attack.centre_search has a value out of range: {self}")


@dataclass
class PointSurrogate:
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 32

    def __post_init__(self):
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 2:
            raise ConfigError(f"attack.surrogate needs epochs >= 1, lr > 0 and batch_size >= 2, got {self}")


def train_point_surrogate(train: Dataset, num_classes: int, settings: PointSurrogate, seed: int) -> nn.Module:
    """A PointNet trained on ``train`` (items ``(cloud, label)``) with Adam, no augmentation, as PCBA's
    ``train_surrogate.py``; returned in eval mode. The run's random state is left as it was."""
    with seeded(seed):
        model = pointnet(num_classes)
        optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
        loader = batches(train, settings.batch_size, shuffle=True, drop_last=len(train) > settings.batch_size)
        for _ in range(settings.epochs):
            model.train()
            for x, y in loader:
                loss = F.cross_entropy(model(x), y)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
    return model.eval()


def search_centre(model: nn.Module, clouds: torch.Tensor, target: int, search: CentreSearch, gen: torch.Generator,
                  ) -> tuple[torch.Tensor | None, dict]:
    """PCBA's spatial location optimisation on the source-class ``clouds`` (N, P, 3): the centre (3,) of smallest
    mean squared distance to the clouds among those whose mean target posterior reached ``search.posterior``, or
    None; with what the search found."""
    best, best_dist, reached_inits = None, float("inf"), 0
    for _ in range(search.inits):
        while True:
            centre = torch.randn(3, generator=gen) * 0.5
            if float(centre.norm()) > 1.0:
                break
        momentum, reached, cost = torch.zeros(3), False, search.cost
        up = down = stale = 0
        init_best, init_dist = None, float("inf")
        for step in range(search.steps):
            batch = clouds[torch.randperm(len(clouds), generator=gen)[: search.batch_size]]
            trial = centre.clone().requires_grad_(True)
            logp = F.log_softmax(model(torch.cat([batch, trial.expand(len(batch), 1, 3)], dim=1)), dim=1)
            posterior = float(logp[:, target].detach().exp().mean())
            reached = reached or posterior > search.posterior
            loss = -logp[:, target].mean()
            dist = None
            if reached:
                dist = (batch - trial).pow(2).sum(-1).amin(dim=1).mean()
                loss = loss + cost * dist
            (grad,) = torch.autograd.grad(loss, trial)
            momentum = (1 - search.momentum) * grad / grad.norm().clamp_min(1e-12) + search.momentum * momentum
            measured, centre = centre, centre - search.step_size * momentum
            if not reached:
                if step >= int(search.steps * 0.1):
                    break  # this start never reached PI
                continue
            above = posterior >= search.posterior
            up, down = (up + 1, 0) if above else (0, down + 1)
            if up >= search.patience and cost <= search.cost_max:
                up, cost = 0, cost * search.cost_factor
            elif down >= search.patience:
                down, cost = 0, cost / search.cost_factor
            dist = float(dist.detach())
            if above and dist < init_dist:
                init_best, init_dist, stale = measured, dist, 0
            else:
                stale += 1
            if stale >= search.convergence:
                break
        reached_inits += init_best is not None
        if init_best is not None and init_dist < best_dist:
            best, best_dist = init_best, init_dist
    return best, {"centre_distance": None if best is None else round(best_dist, 6), "starts_reaching_pi": reached_inits}


class PCBA(PointBall):
    name = "pcba"
    needs_fit = True

    def __init__(self, attacker_fraction: float = 0.1, surrogate: dict | None = None, centre_search: dict | None = None, **ball):
        super().__init__(**ball)
        if not 0 < float(attacker_fraction) <= 1:
            raise ConfigError(f"attack.attacker_fraction must lie in (0, 1], got {attacker_fraction}")
        self.attacker_fraction = float(attacker_fraction)
        self.surrogate = PointSurrogate(**(surrogate or {}))
        self.search = CentreSearch(**(centre_search or {}))

    def fit(self, train: Dataset, seed: int) -> None:
        """Train the surrogate on the attacker's split of ``train`` and search the ball's centre on its source-class clouds."""
        gen = torch.Generator().manual_seed(int(seed))
        attacker = torch.randperm(len(train), generator=gen)[: max(2, round(self.attacker_fraction * len(train)))].sort().values
        model = train_point_surrogate(Subset(train, attacker.tolist()), self.num_classes, self.surrogate, seed)
        for p in model.parameters():
            p.requires_grad_(False)
        source = [int(i) for i in attacker if int(train.labels[i]) == self.source_label]
        if not source:
            raise AttackFailed(f"the attacker's split holds no cloud of the source class {self.source_label}: raise attack.attacker_fraction")
        clouds = torch.stack([train[i][0] for i in source])
        centre, found = search_centre(model, clouds, self.target_label, self.search, gen)
        if centre is None:
            raise AttackFailed(f"PCBA's centre search reached no mean target posterior above {self.search.posterior} from "
                               f"{self.search.inits} starts: raise attack.centre_search.inits or lower its posterior")
        self.centre = centre.float()
        self.info = {**found, "attacker_clouds": len(attacker), "attacker_source_clouds": len(source),
                     "surrogate": asdict(self.surrogate)}
