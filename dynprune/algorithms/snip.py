"""SNIP: single-shot pruning at initialisation by connection sensitivity (Lee et al. 2019).

Rule: from one mini-batch at step ``at`` (default: the very first), score
s_j = |w_j · ∂L/∂w_j| (the normalisation by Σ_k s_k does not change the ranking), keep the
top (1 − s) globally, and train the survivors from there.

References:
  Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection
  Sensitivity", ICLR 2019.
"""

from __future__ import annotations

from dynprune import schedules, scores
from dynprune import tree as tree_lib
from dynprune.pruner import Pruner, Scope, scheduled


def snip(
    sparsity: float, at: int = 0, *, scope: Scope = "global", filter: tree_lib.Filter | None = None
) -> Pruner:
    """Keep the top (1 − ``sparsity``) connections by |w · g| at step ``at``."""
    return scheduled(
        lambda ctx: scores.saliency(ctx.params, ctx.grads, filter=filter),
        lambda hp: schedules.constant(hp["target"]),
        schedules.every(1, begin=at, end=at),
        hyperparams={"target": sparsity},
        filter=filter,
        scope=scope,
    )
