"""SNIP: single-shot pruning at initialisation by connection sensitivity (Lee et al. 2019).

Rule: from one mini-batch at step ``at`` (default: the very first), score
s_j = |w_j · ∂L/∂w_j| (the normalisation by Σ_k s_k does not change the ranking), keep the
top (1 − s) globally, and train the survivors from there.

:func:`snip` does this inside the train step, on that step's batch. :func:`snip_masks` does
it before training, from B batches at the same initial weights w₀:
s_j = Σ_b |w₀_j · ∂L_b/∂w_j(w₀)|; train the survivors with :func:`dynprune.algorithms.fixed`.

References:
  Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection
  Sensitivity", ICLR 2019.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax

from dynprune import checks, masks, schedules, scores
from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import scheduled
from dynprune.pruner import Pruner, PyTree, Scope


def snip(
    target: float, at: int = 0, *, scope: Scope = "global", filter: tree_lib.Filter | None = None
) -> Pruner:
    """Keep the top (1 − ``target``) connections by |w · g| at step ``at``.

    Rule: at step ``at`` only, with w the weights and g the gradient passed to
    ``tx.update`` (that step's mini-batch), score s_j = |w_j · g_j| and keep the top
    (1 − ``target``) (exactly round(target · n) go), ranked over all pruned leaves by
    default. The mask then stays fixed and the survivors train; hard mode: pruned weights
    are exactly 0. For a mask from several batches before training, see
    :func:`snip_masks`.

    Args:
      target: the fraction of connections to prune, in [0, 1]. A hyperparameter.
      at: the step of the single mask update (an integer >= 0; default 0: the first
        step, at initialisation, as in the paper).
      scope: ``"global"`` (default; SNIP's single ranking over all pruned leaves) or
        ``"layer"`` (each leaf at ``target``).
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: floating
        leaves with ndim >= 2 (Dense and conv kernels; not biases or norm scales).

    Returns:
      A hard-mode :class:`dynprune.pruner.Pruner` with hyperparameter ``target``.

    Raises:
      TypeError: if ``at`` is not an integer or ``target`` not a number.
      ValueError: if ``at`` is negative, ``target`` is not in [0, 1], or ``scope`` is
        unknown.

    Examples:
      |w · g| = [[4, 2], [3, 0.4]]: 4 and 3 are kept.

      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]])}}
      >>> grads = {"fc": {"kernel": jnp.array([[4.0, 1.0], [1.0, 0.1]])}}
      >>> tx = dp.prune(optax.sgd(0.0), dp.algorithms.snip(0.5))
      >>> _, state = jax.jit(tx.update)(grads, tx.init(params), params)
      >>> dp.masks_of(state)["fc"]["kernel"].tolist()
      [[True, False], [True, False]]

    References:
      Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection
      Sensitivity", ICLR 2019.
    """
    at = checks.steps("at", at)
    return scheduled(
        lambda ctx: scores.saliency(ctx.params, ctx.grads, filter=filter),
        lambda hp: schedules.constant(hp["target"]),
        schedules.every(1, begin=at, end=at),
        hyperparams={"target": target},
        filter=filter,
        scope=scope,
    )


def snip_masks(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    batches: Iterable[tuple[Any, ...]],
    target: float,
    *,
    scope: Scope = "global",
    filter: tree_lib.Filter | None = None,
) -> PyTree:
    """Masks keeping the top (1 − ``target``) of s = Σ_b |w · ∂L_b/∂w| at fixed ``params``.

    Args:
      loss_fn: ``loss_fn(params, *batch) -> scalar``.
      params: the initial weights w₀; they do not move between batches.
      batches: one or more argument tuples for ``loss_fn`` (e.g. ``(images, labels)``).
      target: fraction of the selected weights to drop (exact, see
        :func:`dynprune.masks.sparsity`).
      scope: ``"global"`` (SNIP's single ranking) or ``"layer"``.
      filter: which leaves to prune (default: kernels).

    Returns:
      A mask tree (bool, full leaf shapes; ``None`` on unpruned leaves) for
      :func:`dynprune.algorithms.fixed`.

    Raises:
      ValueError: if ``batches`` is empty, or ``scope`` is unknown.
      TypeError, ValueError: if ``target`` is not a number in [0, 1].

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> loss = lambda p, x, y: jnp.mean((x @ p["fc"]["kernel"] - y) ** 2)
      >>> params = {"fc": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "bias": jnp.zeros(2)}}
      >>> batch = (jnp.array([[1.0, 0.0]]), jnp.zeros((1, 2)))  # only row 0 gets a gradient
      >>> masks = dp.algorithms.snip_masks(loss, params, [batch], 0.5)
      >>> masks["fc"]["kernel"].tolist(), masks["fc"]["bias"]
      ([[True, True], [False, False]], None)
      >>> tx = dp.prune(optax.adam(1e-3), dp.algorithms.fixed(masks))  # train the survivors

    References:
      Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection
      Sensitivity", ICLR 2019.
    """
    grad = jax.jit(jax.grad(loss_fn))
    total = None
    for batch in batches:
        s = scores.saliency(params, grad(params, *batch), filter=filter)
        total = s if total is None else tree_lib.map_scored(lambda p, a, b: a + b, total, s)
    if total is None:
        raise ValueError("snip_masks needs at least one batch, got none")
    return jax.jit(lambda t: masks.sparsity(t, target, scope=scope))(total)
