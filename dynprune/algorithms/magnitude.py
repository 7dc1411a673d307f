"""One-shot and iterative magnitude pruning with retraining (Han et al. 2015).

One-shot: at step t0 drop the s smallest |w| per layer (or globally), then keep training
the survivors (hard masks: pruned weights stay exactly 0).
Iterative: R rounds, period P apart; round r prunes to s_r = 1 − (1 − s_f)^(r/R), i.e. the
same fraction of the remaining weights each round, retraining in between.

References:
  Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient Neural
  Networks", NeurIPS 2015.
"""

from __future__ import annotations

from dynprune import checks, schedules, scores
from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import scheduled
from dynprune.pruner import Pruner, Scope


def one_shot(
    target: float,
    at: int = 0,
    *,
    scope: Scope = "layer",
    distribution: str = "uniform",
    overrides: dict[str, float] | None = None,
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Prune to ``target`` sparsity by magnitude once, at step ``at``; fine-tune afterwards."""
    at = checks.steps("at", at)
    return scheduled(
        lambda ctx: scores.magnitude(ctx.params, filter=filter),
        lambda hp: schedules.constant(hp["target"]),
        schedules.every(1, begin=at, end=at),
        hyperparams={"target": target},
        filter=filter,
        scope=scope,
        distribution=distribution,
        overrides=overrides,
    )


def iterative(
    target: float,
    rounds: int,
    begin: int,
    period: int,
    *,
    scope: Scope = "layer",
    distribution: str = "uniform",
    overrides: dict[str, float] | None = None,
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """``rounds`` magnitude-pruning rounds, ``period`` steps apart, reaching sparsity ``target``."""
    rounds = checks.steps("rounds", rounds, minimum=1)
    begin = checks.steps("begin", begin)
    period = checks.steps("period", period, minimum=1)
    return scheduled(
        lambda ctx: scores.magnitude(ctx.params, filter=filter),
        lambda hp: schedules.iterative(hp["target"], rounds, begin, period),
        schedules.every(period, begin=begin, end=begin + (rounds - 1) * period),
        hyperparams={"target": target},
        filter=filter,
        scope=scope,
        distribution=distribution,
        overrides=overrides,
    )
