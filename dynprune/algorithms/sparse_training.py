"""Dynamic sparse training at constant sparsity: SET (Mocanu et al. 2018), RigL (Evci et al. 2020).

Masks start random with per-layer sparsity from Erdős–Rényi(-Kernel) (or uniform). Every
ΔT steps until T_end, each layer drops the k = round(f_t · n_active) active weights of
smallest |w| and regrows k previously inactive ones — at random (SET) or those with the
largest dense-gradient magnitude |∂L/∂w| (RigL) — with the cosine-decayed drop fraction

    f_t = α/2 · (1 + cos(π t / T_end)).

The sparsity of every layer stays exactly at its share of the target (a target changed
in the optimizer state by ``dp.set_hyperparams`` is reached at the next update). Regrown
weights start at 0 and, in hard mode, their optimizer moments are 0 for any optax
optimizer (the transform zeroes every param-shaped subtree of the inner state where a
weight is pruned, and masks the gradients it sees), so a regrown connection starts afresh.

SET and RigL differ only in the grow score: both are :func:`dynamic_sparse`, which takes
it as an argument.

References:
  Mocanu et al., "Scalable training of artificial neural networks with adaptive sparse
  connectivity inspired by network science", Nature Communications 2018.
  Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp

from dynprune import checks, distributions, masks, schedules, scores, select
from dynprune import tree as tree_lib
from dynprune.pruner import Context, Hyperparams, Pruner, PyTree, ScoreFn

__all__ = ["drop_and_grow", "drop_fraction", "dynamic_sparse", "rigl", "sparse_evolutionary"]

Distribution = Literal["erk", "uniform"]


def drop_fraction(step: jax.Array, alpha: jax.Array, end: jax.Array) -> jax.Array:
    """f_t = α/2 · (1 + cos(π t / T_end)), 0 after T_end."""
    f = alpha / 2.0 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(step / end, 1.0)))
    return jnp.where(step < end, f, 0.0)


def drop_and_grow(
    m: jax.Array,
    w: jax.Array,
    grow: jax.Array,
    fraction: jax.Array,
    keep: jax.Array | None = None,
) -> jax.Array:
    """Drop the smallest |w| among active entries and regrow the largest ``grow`` among
    the entries that were inactive before, leaving ``keep`` entries active (default: as
    many as before). Besides the change in count, k = round(fraction · n_active) entries
    turn over (fewer if the array is too small to drop and regrow k). A connection dropped
    now is not regrown in the same update, so every regrown weight starts from 0."""
    active = jnp.sum(m)
    keep = active if keep is None else keep
    k = jnp.round(fraction * active).astype(jnp.int32)
    k = jnp.minimum(k, jnp.minimum(m.size - jnp.maximum(active, keep), jnp.minimum(active, keep)))
    dropped = k + jnp.maximum(active - keep, 0)
    grown = k + jnp.maximum(keep - active, 0)
    [survives] = select.drop_lowest([jnp.where(m, jnp.abs(w), jnp.inf)], dropped)
    [regrown] = select.drop_lowest([jnp.where(m, -jnp.inf, grow)], m.size - grown)
    return (m & survives) | regrown


def _grow_score(grow: str | ScoreFn, filter: tree_lib.Filter | None) -> ScoreFn:
    if callable(grow):
        return grow
    if grow == "random":
        return lambda ctx: scores.random(ctx.params, ctx.key, filter=filter)
    if grow == "gradient":
        return lambda ctx: scores.magnitude(ctx.grads, filter=filter)
    raise ValueError(f"grow must be 'random', 'gradient' or a score function, got {grow!r}")


def dynamic_sparse(
    target: float,
    *,
    grow: Literal["random", "gradient"] | ScoreFn,
    every: int = 100,
    end: int,
    alpha: float = 0.3,
    distribution: Distribution = "erk",
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Dynamic sparse training at constant sparsity ``target``, regrowing by ``grow``.

    Args:
      target: the sparsity of the selected weights, split across leaves by
        ``distribution``: exact from initialisation on (a target changed in the state
        is reached at the next update).
      grow: which inactive connections to regrow: ``"random"`` (SET), ``"gradient"``
        (largest |∂L/∂w|, RigL), or a score function ``Context -> scores`` (higher is
        regrown first) with a score on every leaf the pruner masks.
      every: ΔT, steps between drop-and-grow updates (the first is at step ``every``).
      end: T_end; no update at or after it.
      alpha: α, the initial drop fraction.
      distribution: ``"erk"`` (Erdős–Rényi-Kernel) or ``"uniform"`` per-layer sparsity.
      filter: which leaves to prune (default: kernels).

    Returns:
      The :class:`dynprune.pruner.Pruner`, with hyperparameters ``target`` and ``alpha``.

    Raises:
      TypeError: if ``every`` or ``end`` is not an integer, or a hyperparameter is not
        a number.
      ValueError: if ``every`` or ``end`` is below 1, ``target`` or ``alpha`` is not in
        [0, 1], or ``grow`` or ``distribution`` is not one of the above.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.ones((8, 4)), "bias": jnp.zeros(4)}}
      >>> by_saliency = lambda ctx: dp.scores.saliency(ctx.params, ctx.grads)
      >>> pruner = dp.algorithms.dynamic_sparse(0.75, grow=by_saliency, end=1000)
      >>> masks = dp.masks_of(dp.prune(optax.sgd(0.1), pruner).init(params))
      >>> (~masks["fc"]["kernel"]).sum().item()
      24
    """
    every = checks.steps("every", every, minimum=1)
    end = checks.steps("end", end, minimum=1)
    hyperparams = {"target": target, "alpha": alpha}
    checks.hyperparams(hyperparams)
    if distribution not in ("erk", "uniform"):
        raise ValueError(f"distribution must be 'erk' or 'uniform', got {distribution!r}")
    grow_score = _grow_score(grow, filter)
    per_leaf = distributions.erk if distribution == "erk" else distributions.uniform

    def init(params: PyTree, hp: Hyperparams, key: jax.Array) -> tuple[PyTree, Any]:
        selected = tree_lib.select(params, filter)
        return masks.sparsity(scores.random(selected, key), per_leaf(selected, hp["target"])), ()

    def update(ctx: Context) -> tuple[PyTree, Any]:
        f = drop_fraction(ctx.step.astype(jnp.float32), ctx.hyperparams["alpha"], end)

        # The count follows the target in the state, so a target set after init (a sweep
        # through set_hyperparams) takes effect at the next update.
        def leaf(path: str, m: jax.Array, w: jax.Array, g: jax.Array, s: jax.Array) -> jax.Array:
            keep = m.size - masks.count_to_drop(s, m.size)
            return drop_and_grow(m, w, g, f, keep)

        sparsities = per_leaf(ctx.masks, ctx.hyperparams["target"])
        return tree_lib.map_scored(
            leaf, ctx.masks, ctx.params, grow_score(ctx), sparsities
        ), ctx.aux

    return Pruner(
        init=init,
        should_update=lambda ctx: schedules.every(every, begin=every, end=end - 1)(ctx.step),
        update=update,
        hyperparams=hyperparams,
    )


def sparse_evolutionary(
    target: float,
    *,
    every: int = 100,
    end: int,
    alpha: float = 0.3,
    distribution: Distribution = "erk",
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """SET: drop the smallest-magnitude fraction f_t, regrow as many at random.

    :func:`dynamic_sparse` with ``grow="random"``; the arguments are the same.

    References:
      Mocanu et al., "Scalable training of artificial neural networks with adaptive
      sparse connectivity inspired by network science", Nature Communications 2018.

    Examples:
      >>> import optax, dynprune as dp
      >>> tx = dp.prune(optax.sgd(0.1), dp.algorithms.sparse_evolutionary(0.9, end=5000))
    """
    return dynamic_sparse(
        target,
        grow="random",
        every=every,
        end=end,
        alpha=alpha,
        distribution=distribution,
        filter=filter,
    )


def rigl(
    target: float,
    *,
    every: int = 100,
    end: int,
    alpha: float = 0.3,
    distribution: Distribution = "erk",
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """RigL: drop the smallest-magnitude fraction f_t, regrow where |∂L/∂w| is largest.

    :func:`dynamic_sparse` with ``grow="gradient"``; the arguments are the same.

    References:
      Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.

    Examples:
      >>> import optax, dynprune as dp
      >>> tx = dp.prune(optax.sgd(0.1), dp.algorithms.rigl(0.9, end=5000))
    """
    return dynamic_sparse(
        target,
        grow="gradient",
        every=every,
        end=end,
        alpha=alpha,
        distribution=distribution,
        filter=filter,
    )
