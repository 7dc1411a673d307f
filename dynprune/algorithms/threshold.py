"""Threshold pruning: the origin document's rule, applied dynamically every k steps.

Rule: m_ij ← m_ij ∧ [|w_ij| > t_l] at every k-th step between ``begin`` and ``end``,
with t_l = t (``relative=False``, the origin document: "prune weights below a threshold")
or t_l = t · σ_l, σ_l the standard deviation of layer l's surviving (finite) weights
(``relative=True``: Han et al. 2015's quality parameter). Unlike the sparsity recipes,
the resulting sparsity is whatever the weights give.

References:
  Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient Neural
  Networks", NeurIPS 2015.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dynprune import checks, masks, schedules
from dynprune import tree as tree_lib
from dynprune.pruner import Context, Pruner


def _std_of_kept(w: jax.Array, m: jax.Array) -> jax.Array:
    """σ of the kept, finite entries (a NaN or ±inf weight would make σ NaN or inf, and
    the layer would lose every weight or none)."""
    counted = m & jnp.isfinite(w)
    n = jnp.maximum(jnp.sum(counted), 1)
    mean = jnp.sum(jnp.where(counted, w, 0.0)) / n
    return jnp.sqrt(jnp.sum(jnp.where(counted, jnp.square(w - mean), 0.0)) / n)


def threshold(
    threshold: float,
    every: int = 1,
    begin: int = 0,
    end: int | None = None,
    *,
    relative: bool = False,
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Drop |w| <= ``threshold`` (or ``threshold``·σ_l) every ``every`` steps in [begin, end].

    Rule: at every update step, m ← m ∧ [|w| > t_l] per leaf, with t_l = t, or
    t_l = t · σ_l (``relative=True``), σ_l the standard deviation of the leaf's kept,
    finite weights at that step; a NaN weight is never kept. Masks only shrink: a
    pruned weight (hard mode: exactly 0) never comes back. The sparsity is not set:
    it is whatever share of the weights falls below the threshold.

    Schedule, step by step: updates at ``begin``, ``begin + every``, … up to ``end``
    (inclusive, if on the grid); each removes the kept weights that have fallen to t_l
    or below since the last one.

    Args:
      threshold: t >= 0, in units of |w| (or of σ_l). A hyperparameter: settable in
        the state.
      every: steps between updates (an integer >= 1; default 1: every step).
      begin: the first update step (an integer >= 0; default 0).
      end: the last step that may update (an integer >= ``begin``), or ``None``
        (default) for no end.
      relative: t · σ_l instead of t (default False). With Gaussian weights t = 1
        prunes about 68% at the first update.
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: floating
        leaves with ndim >= 2 (Dense and conv kernels; not biases or norm scales).

    Returns:
      A hard-mode :class:`dynprune.pruner.Pruner` with hyperparameter ``threshold``.

    Raises:
      TypeError: if a step argument is not an integer or ``threshold`` not a number.
      ValueError: if ``threshold`` is negative or not finite, or a step argument is out
        of range.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.array([[0.5, -2.0], [3.0, -0.1]])}}
      >>> tx = dp.prune(optax.sgd(0.0), dp.algorithms.threshold(0.5))
      >>> _, state = jax.jit(tx.update)(params, tx.init(params), params)
      >>> dp.masks_of(state)["fc"]["kernel"].tolist()  # |w| <= 0.5 goes
      [[False, True], [True, False]]

    References:
      Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient
      Neural Networks", NeurIPS 2015 (``relative=True``).
    """
    checks.hyperparams({"threshold": threshold})
    every = checks.steps("every", every, minimum=1)
    begin = checks.steps("begin", begin)
    if end is not None and checks.steps("end", end) < begin:
        raise ValueError(f"need end >= begin, got begin={begin}, end={end}")

    def init(params: Any, hp: Any, key: jax.Array) -> tuple[Any, Any]:
        del hp, key
        selected = tree_lib.select(params, filter)
        return tree_lib.map_scored(lambda p, x: jnp.ones(jnp.shape(x), bool), selected), ()

    def update(ctx: Context) -> tuple[Any, Any]:
        def leaf(path: str, m: jax.Array, w: jax.Array) -> jax.Array:
            t_l = ctx.hyperparams["threshold"]
            if relative:
                t_l = t_l * _std_of_kept(w, m)
            return m & masks.threshold({"w": jnp.abs(w)}, t_l)["w"]

        return tree_lib.map_scored(leaf, ctx.masks, ctx.params), ctx.aux

    return Pruner(
        init=init,
        should_update=lambda ctx: schedules.every(every, begin=begin, end=end)(ctx.step),
        update=update,
        hyperparams={"threshold": threshold},
    )
