"""Gradual magnitude pruning (Zhu & Gupta 2017).

Rule: every Δt steps from t0 to t0 + nΔt, keep the (1 − s_t) largest |w| of each layer
(or globally), with s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³. Pruned weights stay 0.

References:
  Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
  compression", arXiv:1710.01878, 2017.
"""

from __future__ import annotations

from dynprune import scores
from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import scheduled, target_ramp
from dynprune.pruner import Pruner, Scope


def gmp(
    target: float,
    begin: int,
    end: int,
    every: int = 100,
    *,
    initial: float = 0.0,
    scope: Scope = "layer",
    distribution: str = "uniform",
    overrides: dict[str, float] | None = None,
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Gradual magnitude pruning to sparsity ``target`` between steps ``begin`` and ``end``.

    Examples:
      >>> import optax, dynprune as dp
      >>> tx = dp.prune(optax.adam(1e-3), dp.algorithms.gmp(0.9, begin=0, end=5000, every=100))
    """
    schedule, cadence = target_ramp(begin, end, every)
    return scheduled(
        lambda ctx: scores.magnitude(ctx.params, filter=filter),
        schedule,
        cadence,
        hyperparams={"target": target, "initial": initial},
        filter=filter,
        scope=scope,
        distribution=distribution,
        overrides=overrides,
    )
