"""The common attack interface.

An :class:`Attack` is built for a dataset geometry (channels, image size, classes), then
- ``apply(x)`` stamps the trigger on images in [0, 1] (a batch (B, C, H, W) or one image (C, H, W)),
- ``relabel(y)`` gives the attacker's label (all2one: the target; all2all: (y + 1) mod C),
- ``poison_indices(labels, seed)`` chooses the training samples to poison,
- ``asr_indices(labels)`` chooses the test samples on which the attack success rate is measured.
Triggers are fixed per run; ``trigger_tensors()`` returns what is needed to rebuild them, and
``load_trigger(tensors)`` sets them back (a run directory's ``trigger.safetensors``), so a model is
evaluated on the trigger it was trained with, on any machine.

Three kinds of attack share the interface:
- *static* (BadNets, Blend, SIG, ...): ``apply`` stamps the chosen training samples once, before
  augmentation; the training loop sees a fixed poisoned set. ``clean_label`` attacks poison
  target-class samples only and keep every label (``poison_rate``: the share of the target class).
- *fitted* (``fit``; Trojan, LF, CLB): the trigger depends on the training data (a surrogate model
  trained in the run); ``fit`` runs once before poisoning, never when the trigger is loaded.
  ``train_image(x, positions)`` may give poisoned training images a different form than test-time
  triggered ones (CLB's adversarial perturbation).
- *in batches* (``in_batches``; WaNet, BppAttack): the training set stays clean and the training
  loop calls ``poison_batch(x, y)`` on every clean batch before augmentation, drawing its choices
  from the global (seeded) generator; ``training_loss`` adds a term to the cross-entropy.

An attack whose trigger is made by networks (input-aware's generators) keeps them in ``networks``:
the training loop moves them with the classifier and checkpoints them, steps the attack's own
optimiser after every classifier step (``begin_training``, ``end_step``, ``training_state``), and
``trigger_tensors`` stores their weights under ``networks.<name>``. What any attack's training hooks draw
from the clean training set (FBA's detoxification pool) is kept by ``prepare_training``, which runs whether
the trigger is fitted or loaded, so that a resumed run has it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from backdoorlab.errors import ConfigError

LABEL_MODES = ("all2one", "all2all")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The global CPU generator seeded with ``seed`` inside, and restored after: an attack's own random draws
    (a surrogate, a network's initialisation, a search) change nothing else in the run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Attack:
    """Poison-label attack base: subclasses provide the trigger via :meth:`build_trigger` and :meth:`apply`."""

    name = "attack"
    modality = "image"  # the samples it triggers: image (C, H, W) | points (P, 3) (a dataset bundle's modality)
    is_benign = False
    clean_label = False  # poisons target-class samples only and keeps every label
    needs_fit = False  # fit() builds the trigger from the training data (or load_trigger sets it)
    fit_tensor_names: tuple[str, ...] = ()  # what fit() makes for the poisoned training set beyond the trigger
    in_batches = False  # poisons every training batch afresh (poison_batch) instead of a fixed poisoned set
    networks: nn.ModuleDict | None = None  # networks that make the trigger, trained with the classifier or frozen
    trains_networks = False  # some of its networks learn with the classifier (their own optimiser, ``end_step``)

    def __init__(self, target_label: int = 0, poison_rate: float = 0.1, label_mode: str = "all2one"):
        if not 0.0 <= float(poison_rate) <= 1.0:
            raise ConfigError(f"attack.poison_rate must lie in [0, 1], got {poison_rate}")
        if label_mode not in LABEL_MODES:
            raise ConfigError(f"attack.label_mode must be one of {', '.join(LABEL_MODES)}, got {label_mode!r}")
        if self.clean_label and label_mode != "all2one":
            raise ConfigError(f"attack={self.name} is clean-label (it keeps every label): attack.label_mode must be all2one")
        self.target_label = int(target_label)
        self.poison_rate = float(poison_rate)
        self.info: dict = {}  # what fit() found (trigger_info)
        self.label_mode = label_mode
        self.num_classes: int | None = None

    def build(self, channels: int, image_size: int, num_classes: int) -> Attack:
        """Fix the trigger for this image geometry; checks the target label against the classes."""
        if self.label_mode == "all2one" and not 0 <= self.target_label < num_classes:
            raise ConfigError(
                f"attack.target_label must lie in 0..{num_classes - 1} for this dataset, got {self.target_label}"
            )
        self.num_classes = num_classes
        self.build_trigger(channels, image_size)
        return self

    def build_trigger(self, channels: int, image_size: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def relabel(self, y: torch.Tensor) -> torch.Tensor:
        if self.label_mode == "all2all":
            return (y + 1) % self.num_classes
        return torch.full_like(y, self.target_label)

    def fit(self, train: Dataset, seed: int) -> None:
        """Fits a trigger that depends on the training data: ``train`` is the clean training set (items
        ``(image in [0, 1], true label)``, all labels in ``train.labels``) before poisoning. Called once, before the poisoned samples are
        chosen; not called when the trigger is loaded from a run (``load_trigger``)."""

    def prepare_training(self, train: Dataset, seed: int) -> None:
        """Keeps what the attack's training hooks draw from the clean training set ``train`` (FBA's detoxification
        pool). Unlike :meth:`fit` it also runs when the trigger is loaded, so that a resumed run has it again."""

    def poison_indices(self, labels: torch.Tensor, seed: int) -> torch.Tensor:
        """The training positions (sorted) whose images carry the trigger: ``round(poison_rate * N)`` drawn
        among samples whose label changes; for a clean-label attack ``round(poison_rate * N_target)`` of
        the target class; none for an attack that poisons in batches."""
        if self.in_batches:
            return torch.zeros(0, dtype=torch.long)
        candidates = torch.nonzero(labels == self.target_label).flatten() if self.clean_label else self.asr_indices(labels)
        total = len(candidates) if self.clean_label else len(labels)
        n = min(round(self.poison_rate * total), len(candidates))
        gen = torch.Generator().manual_seed(int(seed))
        return candidates[torch.randperm(len(candidates), generator=gen)[:n]].sort().values

    def asr_indices(self, labels: torch.Tensor) -> torch.Tensor:
        """Samples whose attacker label differs from the true one: non-target ones (all2one), all (all2all)."""
        if self.label_mode == "all2all":
            return torch.arange(len(labels))
        return torch.nonzero(labels != self.target_label).flatten()

    def triggered_test_set(self, test):
        """The test images the ASR is measured on, triggered and labelled as the attacker wants: by default
        ``test``'s images at ``asr_indices`` with ``apply``'s trigger (CBA: mixes of two classes' images)."""
        from backdoorlab.data.poisoned import fully_triggered  # the data package builds on this one

        return fully_triggered(test, self.asr_indices(test.labels), self)

    def train_image(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The poisoned training images at training-set ``positions`` from their clean images ``x`` (a batch):
        by default the test-time trigger, ``apply(x)``."""
        return self.apply(x)

    def poison_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A clean training batch in [0, 1] (before augmentation) with this step's poisoned and auxiliary
        samples, for attacks that poison in batches; others return it unchanged."""
        return x, y

    def training_loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
        """A term the attack adds to the training cross-entropy on the (poisoned, augmented) batch, or None."""
        return None

    def begin_training(self, model: nn.Module, total_steps: int, epochs: int, state: dict | None = None) -> None:
        """Called once before the first step of training the classifier ``model`` for ``total_steps`` steps in
        ``epochs`` epochs: an attack that trains its ``networks`` with the classifier builds its optimiser here (and
        restores ``state``, its ``training_state`` in an interrupted run)."""

    def end_step(self) -> None:
        """Called after every classifier step, when the gradients of this step's loss are in ``networks``."""

    def begin_epoch(self, epoch: int) -> None:
        """Called at the start of every training epoch (0, 1, ...; a resumed run starts at its next epoch)."""

    def training_state(self) -> dict | None:
        """What continues the attack's own training after an interruption (its optimiser's state), or None."""
        return None

    def with_networks(self, x: torch.Tensor, make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``make(batch)`` for one image (C, H, W) or a batch, computed on the ``networks``' device in eval mode
        without gradients (their modes are restored after): how a trigger made by networks is applied."""
        single = x.dim() == 3
        device = next(self.networks.parameters()).device
        modes = [m.training for m in self.networks.modules()]
        self.networks.eval()
        try:
            with torch.no_grad():
                out = make((x[None] if single else x).to(device)).to(x.device, x.dtype)
        finally:
            for m, mode in zip(self.networks.modules(), modes):
                m.training = mode
        return out[0] if single else out

    def trigger_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors that rebuild the trigger exactly (saved as ``trigger.safetensors``): by default the
        weights and buffers of ``networks``, as ``networks.<name>``."""
        if self.networks is None:
            return {}
        return {f"networks.{k}": v.detach().cpu().contiguous() for k, v in self.networks.state_dict().items()}

    def trigger_info(self) -> dict:
        """What fitting the trigger found, for the run's record (a surrogate's hash, its accuracy, ...):
        the ``info`` a fitted attack's ``fit`` sets."""
        return self.info

    def fit_tensors(self) -> dict[str, torch.Tensor]:
        """What :meth:`fit` made that the poisoned training set needs beyond the trigger (CLB's perturbed images),
        named by ``fit_tensor_names``: kept beside ``resume.ckpt`` so that an interrupted run continues on the same
        training set without fitting again. Test-time triggering never needs them."""
        return {name: getattr(self, name).detach().cpu().contiguous() for name in self.fit_tensor_names}

    def load_fit_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Sets what :meth:`fit_tensors` returned in the interrupted run; another set of names is refused."""
        if set(tensors) != set(self.fit_tensor_names):
            raise ConfigError(f"the stored fit ({', '.join(sorted(tensors)) or 'none'}) is not one of attack={self.name} "
                              f"({', '.join(sorted(self.fit_tensor_names)) or 'none'})")
        for name, value in tensors.items():
            setattr(self, name, value.clone())

    def load_trigger(self, tensors: dict[str, torch.Tensor]) -> None:
        """Sets the trigger from ``tensors`` (what :meth:`trigger_tensors` returned in the run that trained the
        model), after :meth:`build`; a set of other names or shapes is refused."""
        mine = self.trigger_tensors()
        if set(tensors) != set(mine) or any(tensors[k].shape != mine[k].shape for k in mine):
            raise ConfigError(
                f"the stored trigger ({', '.join(f'{k} {tuple(v.shape)}' for k, v in sorted(tensors.items())) or 'none'}) is not "
                f"one of attack={self.name} for this data set ({', '.join(f'{k} {tuple(v.shape)}' for k, v in sorted(mine.items())) or 'none'})"
            )
        prefix = "networks."
        if self.networks is not None:
            self.networks.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name, value in tensors.items():
            if not name.startswith(prefix):
                setattr(self, name, value.clone())


class PatternTrigger(Attack):
    """A blend-type trigger in image space: ``x' = (1 - mask) * x + mask * pattern``.

    ``pattern`` and ``mask`` have shape (C, H, W) with values in [0, 1].
    """

    pattern: torch.Tensor
    mask: torch.Tensor

    @staticmethod
    def checked_alpha(alpha: float) -> float:
        """The blending weight of the trigger, which must lie in (0, 1]."""
        if not 0.0 < float(alpha) <= 1.0:
            raise ConfigError(f"attack.alpha must lie in (0, 1], got {alpha}")
        return float(alpha)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask.to(x.device, x.dtype)
        return (1 - mask) * x + mask * self.pattern.to(x.device, x.dtype)

    def trigger_tensors(self) -> dict[str, torch.Tensor]:
        return {"pattern": self.pattern.contiguous(), "mask": self.mask.contiguous()}
