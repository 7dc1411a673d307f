"""Random pruning: drop a uniformly random subset of weights — the baseline to beat.

Rule: scores u_ij ~ U[0, 1) drawn from the state's PRNG key; drop the round(s · n) lowest,
at once or along the cubic ramp (Liu et al. 2022 study it as a strong baseline at init).

References:
  Liu et al., "The Unreasonable Effectiveness of Random Pruning", ICLR 2022.
"""

from __future__ import annotations

from dynprune import scores
from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import scheduled, target_ramp
from dynprune.pruner import Pruner, Scope


def random(
    target: float,
    begin: int = 0,
    end: int | None = None,
    every: int = 100,
    *,
    initial: float = 0.0,
    scope: Scope = "layer",
    distribution: str = "uniform",
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Randomly prune to ``target`` (once at ``begin``, or gradually until ``end``)."""
    schedule, cadence = target_ramp(begin, end, every)
    return scheduled(
        lambda ctx: scores.random(ctx.params, ctx.key, filter=filter),
        schedule,
        cadence,
        hyperparams={"target": target, "initial": initial},
        filter=filter,
        scope=scope,
        distribution=distribution,
    )
