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

    Round r (r = 1..R) happens at step r·period, after r·period optimizer steps: the
    trained weights are ranked by |w| and pruned to

        s_r = 1 − (1 − s_f)^(r/R),

    i.e. each round drops the same fraction p = 1 − (1 − s_f)^(1/R) of the surviving
    weights; then the survivors are rewound to their values at step ``rewind_step``
    (that step's gradient is discarded and the optimizer's param-shaped state zeroed),
    and the next phase trains from the rewound ticket. After round R the final ticket
    trains on with its mask fixed. Hard mode: pruned weights are exactly 0.

    Args:
      target: s_f in [0, 1], the sparsity after the last round (per leaf, or over all
        pruned leaves with ``scope="global"``). A hyperparameter.
      rounds: R, the number of prune-and-rewind rounds (an integer >= 1).
      period: P, training steps per round (an integer >= 1).
      rewind_step: k, the step whose weights the survivors are reset to (an integer,
        0 <= k < ``period``; default 0: the weights given to ``tx.init``, the original
        initialisation; k > 0: "late rewinding", the weights after k optimizer steps).
      scope: ``"layer"`` (default; every leaf at s_r) or ``"global"`` (one ranking
        over all pruned leaves).
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: floating
        leaves with ndim >= 2 (Dense and conv kernels; not biases or norm scales).

    Returns:
      A hard-mode :class:`dynprune.pruner.Pruner` with a ``rewind``, hyperparameter
      ``target``; its state holds the rewind-point weights.

    Raises:
      TypeError: if ``rounds``, ``period`` or ``rewind_step`` is not an integer, or
        ``target`` is not a number.
      ValueError: if ``rounds`` or ``period`` is below 1, ``rewind_step`` is negative
        or not below ``period``, ``target`` is not in [0, 1], or ``scope`` is unknown.

    Examples:
      Two rounds to 75%: half the weights go at step 2, half of the rest at step 4,
      and each time the survivors return to their initial values.

      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.arange(1.0, 9.0).reshape(4, 2)}}
      >>> pruner = dp.algorithms.lottery(0.75, rounds=2, period=2)
      >>> tx = dp.prune(optax.sgd(0.5), pruner)
      >>> state = jax.jit(tx.init)(params)
      >>> dp.update_schedule(pruner, state, 6).nonzero()[0].tolist()
      [2, 4]
      >>> update, grads = jax.jit(tx.update), {"fc": {"kernel": jnp.ones((4, 2))}}
      >>> for step in range(5):
      ...     updates, state = update(grads, state, params)
      ...     params = dp.apply_updates(params, updates, state)
      ...     if step in (2, 4):
      ...         print(step, params["fc"]["kernel"].tolist())
      2 [[0.0, 0.0], [0.0, 0.0], [5.0, 6.0], [7.0, 8.0]]
      4 [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [7.0, 8.0]]

    References:
      Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable
      Neural Networks", ICLR 2019.
      Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery
      Ticket Hypothesis", ICML 2020 (rewinding to step k).
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
