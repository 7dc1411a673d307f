"""Dynamic sparse training at constant sparsity: SET (Mocanu et al. 2018), RigL (Evci et al. 2020).

Masks start random with per-layer sparsity from Erdős–Rényi(-Kernel) (or uniform). Every
ΔT steps until T_end, each layer drops the k = round(f_t · n_active) active weights of
smallest |w| and regrows k previously inactive ones — at random (SET) or those with the
largest dense-gradient magnitude |∂L/∂w| (RigL) — with the cosine-decayed drop fraction

    f_t = α/2 · (1 + cos(π t / T_end)).

The sparsity of every layer stays exactly constant. Regrown weights start at 0 and, in
hard mode, their optimizer moments are 0 for any optax optimizer (the transform zeroes
every param-shaped subtree of the inner state where a weight is pruned, and masks the
gradients it sees), so a regrown connection starts afresh.

References:
  Mocanu et al., "Scalable training of artificial neural networks with adaptive sparse
  connectivity inspired by network science", Nature Communications 2018.
  Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from dynprune import distributions, masks, schedules, scores, select
from dynprune import tree as tree_lib
from dynprune.pruner import Context, Pruner

PyTree = Any
GrowScore = Callable[[Context, str, jax.Array], jax.Array]


def drop_fraction(step: jax.Array, alpha: jax.Array, end: jax.Array) -> jax.Array:
    """f_t = α/2 · (1 + cos(π t / T_end)), 0 after T_end."""
    f = alpha / 2.0 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(step / end, 1.0)))
    return jnp.where(step < end, f, 0.0)


def drop_and_grow(m: jax.Array, w: jax.Array, grow: jax.Array, fraction: jax.Array) -> jax.Array:
    """Drop the k smallest |w| among active entries and regrow the k largest ``grow`` among
    the entries that were inactive before, with k = min(round(fraction · n_active),
    n_inactive). The number of active entries is unchanged, and a connection dropped now
    is not regrown in the same update, so every regrown weight starts from 0."""
    active = jnp.sum(m)
    k = jnp.minimum(jnp.round(fraction * active).astype(jnp.int32), m.size - active)
    [survives] = select.drop_lowest([jnp.where(m, jnp.abs(w), jnp.inf)], k)
    [regrown] = select.drop_lowest([jnp.where(m, -jnp.inf, grow)], m.size - k)
    return (m & survives) | regrown


def _dynamic_sparse(
    grow_score: GrowScore,
    sparsity: float,
    *,
    every: int,
    end: int,
    alpha: float,
    distribution: Literal["erk", "uniform"],
    filter: tree_lib.Filter | None,
) -> Pruner:
    if every < 1 or end < 1:
        raise ValueError(f"need every >= 1 and end >= 1, got every={every!r}, end={end!r}")

    def init(params: PyTree, hp: Any, key: jax.Array) -> tuple[PyTree, Any]:
        selected = tree_lib.select(params, filter)
        if distribution == "erk":
            per_leaf = distributions.erk(selected, hp["sparsity"])
        else:
            per_leaf = distributions.uniform(selected, hp["sparsity"])
        return masks.sparsity(scores.random(selected, key), per_leaf), ()

    def update(ctx: Context) -> tuple[PyTree, Any]:
        f = drop_fraction(ctx.step.astype(jnp.float32), ctx.hyperparams["alpha"], end)
        keys = iter(jax.random.split(ctx.key, max(len(tree_lib.scored_leaves(ctx.masks)), 1)))

        def leaf(path: str, m: jax.Array, w: jax.Array) -> jax.Array:
            return drop_and_grow(m, w, grow_score(ctx, path, next(keys)), f)

        return tree_lib.map_scored(leaf, ctx.masks, ctx.params), ctx.aux

    return Pruner(
        init=init,
        should_update=lambda ctx: schedules.every(every, begin=every, end=end - 1)(ctx.step),
        update=update,
        hyperparams={"sparsity": sparsity, "alpha": alpha},
    )


def sparse_evolutionary(
    sparsity: float,
    *,
    every: int = 100,
    end: int,
    alpha: float = 0.3,
    distribution: Literal["erk", "uniform"] = "erk",
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """SET: drop the smallest-magnitude fraction f_t, regrow as many at random."""

    def grow(ctx: Context, path: str, key: jax.Array) -> jax.Array:
        by_path = dict(tree_lib.scored_leaves(ctx.masks))
        return jax.random.uniform(key, by_path[path].shape)

    return _dynamic_sparse(
        grow, sparsity, every=every, end=end, alpha=alpha, distribution=distribution, filter=filter
    )


def rigl(
    sparsity: float,
    *,
    every: int = 100,
    end: int,
    alpha: float = 0.3,
    distribution: Literal["erk", "uniform"] = "erk",
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """RigL: drop the smallest-magnitude fraction f_t, regrow where |∂L/∂w| is largest."""

    def grow(ctx: Context, path: str, key: jax.Array) -> jax.Array:
        del key
        return jnp.abs(dict(tree_lib.scored_leaves(ctx.grads))[path])

    return _dynamic_sparse(
        grow, sparsity, every=every, end=end, alpha=alpha, distribution=distribution, filter=filter
    )
