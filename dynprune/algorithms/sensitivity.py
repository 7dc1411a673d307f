"""Sensitivity-based neuron pruning (the origin document, §4.1).

Score of output neuron i with incoming weights w_i: s_i = Σ_j |w_ij| / sqrt(Σ_k w_ik²)
(‖w_i‖₁/‖w_i‖₂; see :func:`dynprune.scores.neuron_sensitivity`). The lowest-scoring
round(s · n_out) neurons of each layer are removed whole — kernel column and bias — at
once (``end=None``) or along the cubic ramp. Neurons are then physically removable
(``dynprune.surgery``).
"""

from __future__ import annotations

from dynprune import scores
from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import scheduled, target_ramp
from dynprune.pruner import Pruner, Scope


def sensitivity(
    target: float,
    begin: int = 0,
    end: int | None = None,
    every: int = 100,
    *,
    initial: float = 0.0,
    scope: Scope = "layer",
    overrides: dict[str, float] | None = None,
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Remove the fraction ``target`` of neurons with the lowest ‖w_i‖₁/‖w_i‖₂."""
    schedule, cadence = target_ramp(begin, end, every)
    return scheduled(
        lambda ctx: scores.neuron_sensitivity(ctx.params, filter=filter),
        schedule,
        cadence,
        hyperparams={"target": target, "initial": initial},
        filter=filter,
        scope=scope,
        overrides=overrides,
        structured=True,
    )
