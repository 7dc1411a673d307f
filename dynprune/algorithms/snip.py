"""SNIP: single-shot pruning at initialisation by connection sensitivity (Lee et al. 2019).

Rule: from one mini-batch at step ``at`` (default: the very first), score
s_j = |w_j · ∂L/∂w_j| (the normalisation by Σ_k s_k does not change the ranking), keep the
top (1 − s) globally, and train the survivors from there.

:func:`snip` does this inside the train step, on that step's batch. :func:`snip_masks` does
it before training, from B batches at the same initial weights w₀:
s_j = Σ_b |w₀_j · ∂L_b/∂w_j(w₀)|; train the survivors with :func:`dynprune.algorithms.fixed`.

References:
  Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection
  Sensitivity", ICLR 2019.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax

from dynprune import checks, masks, schedules, scores
from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import scheduled
from dynprune.pruner import Pruner, PyTree, Scope


def snip(
    target: float, at: int = 0, *, scope: Scope = "global", filter: tree_lib.Filter | None = None
) -> Pruner:
    """Keep the top (1 − ``target``) connections by |w · g| at step ``at``."""
    at = checks.steps("at", at)
    return scheduled(
        lambda ctx: scores.saliency(ctx.params, ctx.grads, filter=filter),
        lambda hp: schedules.constant(hp["target"]),
        schedules.every(1, begin=at, end=at),
        hyperparams={"target": target},
        filter=filter,
        scope=scope,
    )


def snip_masks(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    batches: Iterable[tuple[Any, ...]],
    target: float,
    *,
    scope: Scope = "global",
    filter: tree_lib.Filter | None = None,
) -> PyTree:
    """Masks keeping the top (1 − ``target``) of s = Σ_b |w · ∂L_b/∂w| at fixed ``params``.

    Args:
      loss_fn: ``loss_fn(params, *batch) -> scalar``.
      params: the initial weights w₀; they do not move between batches.
      batches: one or more argument tuples for ``loss_fn`` (e.g. ``(images, labels)``).
      target: fraction of the selected weights to drop (exact, see
        :func:`dynprune.masks.sparsity`).
      scope: ``"global"`` (SNIP's single ranking) or ``"layer"``.
      filter: which leaves to prune (default: kernels).

    Returns:
      A mask tree (bool, full leaf shapes; ``None`` on unpruned leaves) for
      :func:`dynprune.algorithms.fixed`.
    """
    grad = jax.jit(jax.grad(loss_fn))
    total = None
    for batch in batches:
        s = scores.saliency(params, grad(params, *batch), filter=filter)
        total = s if total is None else tree_lib.map_scored(lambda p, a, b: a + b, total, s)
    if total is None:
        raise ValueError("snip_masks needs at least one batch, got none")
    return jax.jit(lambda t: masks.sparsity(t, target, scope=scope))(total)
