"""Curvature of a classifier's loss on fixed data, as a symmetric linear operator over its
parameters (flattened into one vector): the Hessian, the generalised Gauss-Newton matrix and the
empirical Fisher of the mean cross-entropy over all samples.

    H = d^2 L / d theta^2,          L = (1/N) sum_i CE(f(x_i), y_i)
    G = (1/N) sum_i J_i^T (diag(p_i) - p_i p_i^T) J_i        J_i = d f(x_i) / d theta (logits)
    F = (1/N) sum_i g_i g_i^T,      g_i = d log p(y_i | x_i) / d theta

Products are exact (double backward, no finite differences). Every batch's forward graph is built
once and reused by every product (``cache_graph``), which is what a power iteration or a Lanczos
run needs; set it off when the graphs do not fit in memory. Under ``torch.distributed`` each
process passes its own shard of the samples and every product is all-reduced, so every process
holds the same product of the whole data and runs the same iteration. The model is put in eval
mode (BatchNorm uses its running statistics) unless ``train_mode`` is asked for. Plain PyTorch:
no Lightning, no Hydra.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from backdoorlab.curvature.fisher import running_stats_frozen
from backdoorlab.tasks.base import Task
from backdoorlab.tasks.classification import CLASSIFICATION, Classification

CURVATURES = ("hessian", "ggn", "fisher")


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all processes (itself outside ``torch.distributed``)."""
    if distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class CurvatureOperator:
    """``H``, ``G`` or ``F`` (``curvature``) of ``model``'s mean loss under ``task`` (classification: cross-entropy) over
    ``batches`` (``(x, y)`` pairs, moved to the parameters' device), restricted to ``params`` (default: every
    parameter that requires a gradient). ``op @ v`` or ``op.matvec(v)`` for a flat ``v``. The GGN is the softmax
    cross-entropy's, so classification only."""

    def __init__(
        self,
        model: nn.Module,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
        curvature: str = "hessian",
        params: Sequence[torch.Tensor] | None = None,
        cache_graph: bool = True,
        train_mode: bool = False,
        task: Task = CLASSIFICATION,
    ):
        if curvature not in CURVATURES:
            raise ValueError(f"curvature must be one of {', '.join(CURVATURES)}, got {curvature!r}")
        if curvature == "ggn" and not isinstance(task, Classification):
            raise ValueError(f"the GGN here is the softmax cross-entropy's: a {task.name} task needs hessian or fisher")
        self.task = task
        self.model, self.curvature, self.cache_graph, self.train_mode = model, curvature, bool(cache_graph), bool(train_mode)
        self.params = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
        if not self.params:
            raise ValueError("the model has no parameters that require a gradient")
        device = self.params[0].device
        self.batches = [(x.to(device), y.to(device)) for x, y in batches]
        local = sum(len(y) for _, y in self.batches)
        self.samples = int(all_reduce_sum(torch.tensor(float(local), device=device)).item())
        if self.samples == 0:
            raise ValueError("the curvature needs at least one sample")
        self.dim = sum(p.numel() for p in self.params)
        self.dtype, self.device = self.params[0].dtype, device
        self._graphs: list[tuple[torch.Tensor, ...]] | None = None
        self.products = 0

    # -- the graphs ---------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the products of one batch differentiate: the batch's summed loss gradient (Hessian),
        its logits (GGN) or its per-sample log-likelihoods (Fisher), built with a graph."""
        was_training = self.model.training
        self.model.train(self.train_mode)
        try:
            with torch.enable_grad(), running_stats_frozen(self.model):
                logits = self.model(x)
                if self.curvature == "hessian":
                    loss = self.task.summed_loss(logits, y) / self.samples
                    return tuple(torch.autograd.grad(loss, self.params, create_graph=True))
                if self.curvature == "ggn":
                    return (logits,)
                return (self.task.log_likelihood(logits, y),)
        finally:
            self.model.train(was_training)

    def _graph_of(self, index: int) -> tuple[torch.Tensor, ...]:
        if not self.cache_graph:
            return self._forward(*self.batches[index])
        if self._graphs is None:
            self._graphs = [self._forward(x, y) for x, y in self.batches]
        return self._graphs[index]

    def release(self) -> None:
        """Frees the cached graphs (the next product builds them again)."""
        self._graphs = None

    # -- products -----------------------------------------------------------------------------
    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        return [chunk.view_as(p) for chunk, p in zip(v.split([p.numel() for p in self.params]), self.params)]

    def _jvp(self, outputs: torch.Tensor, v: list[torch.Tensor]) -> torch.Tensor:
        """``J v`` of ``outputs`` (built with a graph) by the double-vjp trick: ``u -> J^T u`` is linear
        in ``u``, so differentiating it against ``u`` with cotangent ``v`` gives ``J v``."""
        u = torch.zeros_like(outputs, requires_grad=True)
        jtu = torch.autograd.grad(outputs, self.params, grad_outputs=u, create_graph=True, allow_unused=True)
        used = [(g, w) for g, w in zip(jtu, v) if g is not None]
        return torch.autograd.grad([g for g, _ in used], u, grad_outputs=[w for _, w in used], retain_graph=True)[0]

    def _batch_product(self, index: int, v: list[torch.Tensor]) -> list[torch.Tensor | None]:
        graph = self._graph_of(index)
        keep = self.cache_graph
        if self.curvature == "hessian":
            return list(torch.autograd.grad(graph, self.params, grad_outputs=v, retain_graph=keep, allow_unused=True))
        (outputs,) = graph
        jv = self._jvp(outputs, v)
        if self.curvature == "ggn":  # (diag(p) - p p^T) J v, per sample, then J^T, over N
            p = outputs.detach().softmax(dim=1)
            cotangent = (p * jv - p * (p * jv).sum(dim=1, keepdim=True)) / self.samples
        else:  # sum_i g_i (g_i . v) / N
            cotangent = jv / self.samples
        return list(torch.autograd.grad(outputs, self.params, grad_outputs=cotangent, retain_graph=keep, allow_unused=True))

    @torch.no_grad()
    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """The product with the flat vector ``v`` (length ``dim``), summed over batches and processes."""
        if v.shape != (self.dim,):
            raise ValueError(f"expected a vector of {self.dim} values, got shape {tuple(v.shape)}")
        v = v.to(device=self.device, dtype=self.dtype)
        parts = self._split(v)
        total = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        with torch.enable_grad():
            for index in range(len(self.batches)):
                product = self._batch_product(index, parts)
                total += torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                    for g, p in zip(product, self.params)])
        self.products += 1
        return all_reduce_sum(total)

    __matmul__ = matvec

    def dense(self) -> torch.Tensor:
        """The whole ``dim x dim`` matrix, one product per column (for small models and tests)."""
        eye = torch.eye(self.dim, device=self.device, dtype=self.dtype)
        return torch.stack([self.matvec(column) for column in eye], dim=1)
