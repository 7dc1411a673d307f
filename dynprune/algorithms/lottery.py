"""Lottery tickets: iterative magnitude pruning with rewinding (Frankle & Carbin 2019).

Train for P steps, drop the smallest-magnitude fraction p of the surviving weights, then
*rewind* the survivors to their values at step k (k = 0: the original initialisation;
k > 0: "late rewinding", Frankle et al. 2020) and train again; after R rounds the
sparsity is s_R = 1 − (1 − p)^R. Rewinding also zeroes the optimizer's param-shaped
state (moments), as retraining from scratch does.

References:
  Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
  Networks", ICLR 2019. Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and
  the Lottery Ticket Hypothesis", ICML 2020 (rewinding to step k).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dynprune import checks, schedules, scores
from dynprune import masks as masks_lib
from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import scheduled
from dynprune.pruner import Context, Pruner, PyTree, Scope


def lottery(
    target: float,
    rounds: int,
    period: int,
    *,
    rewind_step: int = 0,
    scope: Scope = "layer",
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """``rounds`` prune-and-rewind rounds, one every ``period`` steps, reaching sparsity ``target``.

    Round r happens at step r·period, after r·period optimizer steps: the weights are
    scored, pruned and rewound (that step's gradient is discarded), and the next phase
    trains from the rewound ticket.
    """
    rounds = checks.steps("rounds", rounds, minimum=1)
    period = checks.steps("period", period, minimum=1)
    if checks.steps("rewind_step", rewind_step) >= period:
        raise ValueError(
            f"need rewind_step < period; got rewind_step={rewind_step!r}, period={period!r}"
        )
    base = scheduled(
        lambda ctx: scores.magnitude(ctx.params, filter=filter),
        lambda hp: schedules.iterative(hp["target"], rounds, period, period),
        schedules.every(period, begin=period, end=rounds * period),
        hyperparams={"target": target},
        filter=filter,
        scope=scope,
    )

    def init(params: PyTree, hp: Any, key: jax.Array) -> tuple[PyTree, Any]:
        masks, _ = base.init(params, hp, key)
        return masks, jax.tree.map(jnp.copy, params)  # own buffers: params may be donated

    def observe(ctx: Context) -> PyTree:
        at_rewind_point = ctx.step == rewind_step
        return jax.tree.map(lambda s, w: jnp.where(at_rewind_point, w, s), ctx.aux, ctx.params)

    def rewind(ctx: Context) -> PyTree:
        return masks_lib.apply_masks(ctx.aux, ctx.masks)

    return base._replace(init=init, observe=None if rewind_step == 0 else observe, rewind=rewind)
