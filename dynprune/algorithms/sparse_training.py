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
    """The cosine-decayed drop fraction of RigL: f_t = α/2 · (1 + cos(π t / T_end)).

    f_0 = α, f_t = α/2 at t = T_end/2, and f_t = 0 at and after T_end.

    Args:
      step: t, the step count (float; any shape).
      alpha: α in [0, 1], the initial drop fraction.
      end: T_end > 0, the step where the fraction reaches 0.

    Returns:
      f_t, with the shape of ``step``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune.algorithms.sparse_training import drop_fraction
      >>> f = drop_fraction(jnp.array([0.0, 50.0, 100.0, 150.0]), alpha=0.3, end=100.0)
      >>> [round(float(x), 4) for x in f]
      [0.3, 0.15, 0.0, 0.0]

    References:
      Evci, Gale, Menick, Castro & Elsen, "Rigging the Lottery: Making All Tickets
      Winners", ICML 2020 (eq. 1).
    """
    f = alpha / 2.0 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(step / end, 1.0)))
    return jnp.where(step < end, f, 0.0)


def drop_and_grow(
    m: jax.Array,
    w: jax.Array,
    grow: jax.Array,
    fraction: jax.Array,
    keep: jax.Array | None = None,
) -> jax.Array:
    """One drop-and-grow step on one leaf: drop the smallest |w|, regrow the largest ``grow``.

    Drops the smallest |w| among active entries and regrows the largest ``grow`` among
    the entries that were inactive before, leaving ``keep`` entries active (default: as
    many as before). Besides the change in count, k = round(fraction · n_active) entries
    turn over (fewer if the array is too small to drop and regrow k): with n_active = a,

        k' = min(k, n − max(a, keep), min(a, keep)),
        dropped = k' + max(a − keep, 0),   regrown = k' + max(keep − a, 0).

    A connection dropped now is not regrown in the same update, so every regrown weight
    starts from 0. Ties go in position order; a NaN |w| is dropped first and a NaN
    ``grow`` score is regrown last.

    Args:
      m: the leaf's bool mask (True = active), any shape.
      w: the leaf's weights, the shape of ``m``.
      grow: the regrowth score, the shape of ``m``: higher is regrown first (|∂L/∂w|
        for RigL, uniform random for SET).
      fraction: the drop fraction f in [0, 1] (may be traced).
      keep: the number of active entries after the step (an int scalar, 0 <= keep <= n;
        default ``None``: as many as before).

    Returns:
      The new bool mask, the shape of ``m``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune.algorithms.sparse_training import drop_and_grow
      >>> drop_and_grow = jax.jit(drop_and_grow)
      >>> m = jnp.array([True, True, True, False, False, False])
      >>> w = jnp.array([0.1, 0.5, 0.9, 0.0, 0.0, 0.0])
      >>> grow = jnp.array([0.0, 0.0, 0.0, 0.3, 0.1, 0.2])
      >>> drop_and_grow(m, w, grow, 1 / 3).tolist()  # k = 1: 0.1 out, the 0.3 slot in
      [False, True, True, True, False, False]
      >>> drop_and_grow(m, w, grow, 1 / 3, keep=2).tolist()  # one more dropped
      [False, False, True, True, False, False]
    """
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

    Schedule, step by step:

    1. ``tx.init``: each pruned leaf l gets a uniformly random mask with exactly
       round(s_l · n_l) entries off, s_l from ``distribution`` at the model-level
       ``target`` (ERK leaves some small leaves dense, see below).
    2. At t = ΔT, 2ΔT, 3ΔT, … while t < T_end (``every``, ``end``; no update at all if
       ``every >= end``), each leaf drops the k = round(f_t · n_active) active weights
       of smallest |w| and regrows k entries that were inactive, those with the highest
       ``grow`` score, where f_t = α/2 · (1 + cos(π t / T_end)) decays from α to 0
       (:func:`drop_fraction`, :func:`drop_and_grow`). Regrown weights start at 0 with
       zeroed optimizer moments (hard mode).
    3. From T_end on the masks stay fixed and training goes on with that topology.

    Args:
      target: the sparsity of the selected weights in [0, 1], split across leaves by
        ``distribution``: exact from initialisation on (a target changed in the state
        with ``dp.set_hyperparams`` is reached at the next update). A hyperparameter.
      grow: which inactive connections to regrow: ``"random"`` (SET), ``"gradient"``
        (largest |∂L/∂w| of this step's dense gradient, RigL), or a score function
        ``Context -> scores`` (higher is regrown first) with a score on every leaf the
        pruner masks.
      every: ΔT, steps between drop-and-grow updates (an integer >= 1; default 100; the
        first update is at step ``every``).
      end: T_end, an integer >= 1: no update at or after it, and f_t reaches 0 there
        (the RigL paper's experiments stop at 75% of training).
      alpha: α in [0, 1], the drop fraction at t = 0 (default 0.3). A hyperparameter.
      distribution: the per-leaf sparsities. ``"erk"`` (default): Erdős–Rényi-Kernel,
        s_l = 1 − ε · (Σ_i k_i / Π_i k_i) for a leaf of shape (k_1, …, k_r), ε set so the
        pruned leaves hold (1 − target) of their weights: small leaves (few weights for
        their fan-in plus fan-out, such as a first conv or a classifier head) are pruned
        less, a leaf whose density would exceed 1 is left dense (s_l = 0), and the other
        leaves are pruned more to make up (:func:`dynprune.distributions.erk`).
        ``"uniform"``: s_l = target for every leaf.
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: floating
        leaves with ndim >= 2 (Dense and conv kernels; not biases or norm scales).

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
      >>> masks = dp.masks_of(jax.jit(dp.prune(optax.sgd(0.1), pruner).init)(params))
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

    :func:`dynamic_sparse` with ``grow="random"``. Masks start uniformly random with
    per-leaf sparsity from ``distribution``; at t = ΔT, 2ΔT, … < T_end each leaf drops
    the k = round(f_t · n_active) active weights of smallest |w|, with
    f_t = α/2 · (1 + cos(π t / T_end)), and regrows k previously inactive entries chosen
    uniformly at random (a fresh draw from the state's PRNG key), at 0. (The paper
    removes a fixed fraction ζ of the smallest positive and the largest negative
    weights after each epoch; here the drop fraction follows RigL's cosine f_t.)

    Args:
      target: the sparsity of the pruned leaves in [0, 1], kept constant throughout. A
        hyperparameter.
      every: ΔT, steps between updates (an integer >= 1; default 100; the first update
        is at step ``every``).
      end: T_end, an integer >= 1: no update at or after it.
      alpha: α in [0, 1], the drop fraction at t = 0 (default 0.3). A hyperparameter.
      distribution: ``"erk"`` (default; Erdős–Rényi-Kernel: small leaves are pruned
        less, those whose density would exceed 1 stay dense, the rest are pruned more
        to make up) or ``"uniform"`` (every leaf at ``target``).
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: floating
        leaves with ndim >= 2 (Dense and conv kernels; not biases or norm scales).

    Returns:
      A hard-mode :class:`dynprune.pruner.Pruner` with hyperparameters ``target`` and
      ``alpha``.

    Raises:
      TypeError: if ``every`` or ``end`` is not an integer, or a hyperparameter is not
        a number.
      ValueError: if ``every`` or ``end`` is below 1, ``target`` or ``alpha`` is not in
        [0, 1], or ``distribution`` is not ``"erk"`` or ``"uniform"``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jax.random.normal(jax.random.PRNGKey(0), (16, 16))}}
      >>> tx = dp.prune(optax.sgd(0.1), dp.algorithms.sparse_evolutionary(0.5, every=1, end=10))
      >>> update = jax.jit(tx.update)
      >>> _, state = update(params, jax.jit(tx.init)(params), params)  # step 0: no update
      >>> before = dp.masks_of(state)["fc"]["kernel"]
      >>> _, state = update(params, state, params)  # step 1: f_1 = 0.29, k = round(0.29 · 128)
      >>> after = dp.masks_of(state)["fc"]["kernel"]
      >>> after.sum().item(), (before & ~after).sum().item()
      (128, 37)

    References:
      Mocanu, Mocanu, Stone, Nguyen, Gibescu & Liotta, "Scalable training of artificial
      neural networks with adaptive sparse connectivity inspired by network science",
      Nature Communications 2018.
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

    :func:`dynamic_sparse` with ``grow="gradient"``. Rule, step by step:

    1. ``tx.init``: each pruned leaf l gets a uniformly random mask with exactly
       round(s_l · n_l) entries off, s_l from ``distribution`` at model-level ``target``.
    2. At t = ΔT, 2ΔT, … while t < T_end, each leaf drops the k = round(f_t · n_active)
       active weights of smallest |w|, with f_t = α/2 · (1 + cos(π t / T_end)), and
       regrows the k previously inactive entries with the largest |∂L/∂w| of this
       step's gradient as passed to ``tx.update`` (dense: a pruned weight is stored as
       0, and the loss still has a gradient there). Regrown weights start at 0 with
       zeroed optimizer moments.
    3. From T_end on the masks stay fixed; the sparsity is ``target`` throughout.

    Args:
      target: the sparsity of the pruned leaves in [0, 1], kept constant throughout. A
        hyperparameter.
      every: ΔT, steps between updates (an integer >= 1; default 100; the first update
        is at step ``every``).
      end: T_end, an integer >= 1: no update at or after it (the paper's experiments
        stop at 75% of training).
      alpha: α in [0, 1], the drop fraction at t = 0 (default 0.3, as in the paper). A
        hyperparameter.
      distribution: ``"erk"`` (default): Erdős–Rényi-Kernel per-leaf sparsities,
        s_l = 1 − ε · (Σ_i k_i / Π_i k_i) for a leaf of shape (k_1, …, k_r): small leaves
        are pruned less, a leaf whose density would exceed 1 is left dense, and the
        others are pruned more so that the pruned leaves hold (1 − ``target``) of their
        weights (:func:`dynprune.distributions.erk`). ``"uniform"``: every leaf at
        ``target``.
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: floating
        leaves with ndim >= 2 (Dense and conv kernels; not biases or norm scales).

    Returns:
      A hard-mode :class:`dynprune.pruner.Pruner` with hyperparameters ``target`` and
      ``alpha``.

    Raises:
      TypeError: if ``every`` or ``end`` is not an integer, or a hyperparameter is not
        a number.
      ValueError: if ``every`` or ``end`` is below 1, ``target`` or ``alpha`` is not in
        [0, 1], or ``distribution`` is not ``"erk"`` or ``"uniform"``.

    Examples:
      ERK leaves the 4 x 4 leaf dense at 50% and prunes the 64 x 64 one a little more:

      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> k1, k2 = jax.random.split(jax.random.PRNGKey(0))
      >>> params = {"small": {"kernel": jnp.ones((4, 4))},
      ...           "large": {"kernel": jax.random.normal(k1, (64, 64))}}
      >>> pruner = dp.algorithms.rigl(0.5, every=1, end=10)
      >>> tx = dp.prune(optax.sgd(0.1), pruner)
      >>> state = jax.jit(tx.init)(params)
      >>> before = dp.masks_of(state)
      >>> before["small"]["kernel"].mean().item(), round(before["large"]["kernel"].mean().item(), 3)
      (1.0, 0.498)
      >>> dp.update_schedule(pruner, state, 12).nonzero()[0].tolist()
      [1, 2, 3, 4, 5, 6, 7, 8, 9]

      At step 1, f_1 = 0.29: 597 of the 2,040 active weights turn over, and the regrown
      ones have the largest |g| among those that were inactive:

      >>> grads = {"small": {"kernel": jnp.ones((4, 4))},
      ...          "large": {"kernel": jax.random.normal(k2, (64, 64))}}
      >>> update = jax.jit(tx.update)
      >>> _, state = update(grads, state, params)  # step 0: no update
      >>> _, state = update(grads, state, params)  # step 1: drop and grow
      >>> m0, m1 = before["large"]["kernel"], dp.masks_of(state)["large"]["kernel"]
      >>> m1.sum().item(), (m0 & ~m1).sum().item()
      (2040, 597)
      >>> g = jnp.abs(grads["large"]["kernel"])
      >>> bool(g[m1 & ~m0].min() >= g[~m0 & ~m1].max())
      True

    References:
      Evci, Gale, Menick, Castro & Elsen, "Rigging the Lottery: Making All Tickets
      Winners", ICML 2020.
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
