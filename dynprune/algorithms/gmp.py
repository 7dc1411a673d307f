"""Gradual magnitude pruning (Zhu & Gupta 2017).

Rule: every Δt steps from t0 to t0 + nΔt, keep the (1 − s_t) largest |w| of each layer
(or globally), with s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³. Pruned weights stay 0.

References:
  Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
  compression", arXiv:1710.01878, 2017.
"""

from __future__ import annotations

from dynprune import scores
from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import scheduled, target_ramp
from dynprune.pruner import Pruner, Scope


def gmp(
    target: float,
    begin: int,
    end: int,
    every: int = 100,
    *,
    initial: float = 0.0,
    scope: Scope = "layer",
    distribution: str = "uniform",
    overrides: dict[str, float] | None = None,
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Gradual magnitude pruning to sparsity ``target`` between steps ``begin`` and ``end``.

    Rule: at each update step t, keep the (1 − s_t) largest |w| of each pruned leaf (or
    of all of them, ranked together, with ``scope="global"``), where

        s_t = s_f + (s_i − s_f) · (1 − (t − t0)/(nΔt))³,

    t0 = ``begin``, t0 + nΔt = ``end``, s_i = ``initial``, s_f = ``target``, Δt = ``every``.

    Schedule, step by step: before ``begin`` nothing is pruned. The masks are recomputed
    at ``begin``, ``begin + every``, ``begin + 2·every``, … and at ``end`` (also when
    ``end − begin`` is not a multiple of ``every``): the update at ``begin`` prunes to
    ``initial`` (nothing, by default) and the one at ``end`` to ``target``. After
    ``end`` the masks no longer change. Hard mode: a pruned weight is exactly 0 from then
    on and has no optimizer state, so it scores lowest at the next update and stays
    pruned while s_t grows.

    Args:
      target: s_f in [0, 1], the sparsity reached at ``end``: of each pruned leaf with
        ``distribution="uniform"``, of all pruned leaves together with ``"erk"`` or
        ``scope="global"``. A hyperparameter (``dp.set_hyperparams`` changes it).
      begin: t0, the first update step (an integer >= 0).
      end: the step where the sparsity reaches ``target`` (an integer > ``begin``).
      every: Δt, steps between updates (an integer >= 1; default 100).
      initial: s_i in [0, 1], the sparsity of the first update (default 0.0). A
        hyperparameter.
      scope: ``"layer"`` (default): s_t per leaf, as ``distribution`` splits it;
        ``"global"``: one magnitude ranking over all pruned leaves, so leaves end at
        different sparsities (takes no ``distribution`` or ``overrides``).
      distribution: ``"uniform"`` (default): every leaf gets s_t; ``"erk"``: per-leaf
        sparsities from Erdős–Rényi-Kernel with model-level s_t, which prunes small
        leaves less, leaves dense those whose ERK density would exceed 1, and prunes
        the rest more to make up (:func:`dynprune.distributions.erk`).
      overrides: ``{regex: sparsity}``: a leaf whose path matches (first match, e.g.
        ``{"conv1": 0.0}`` keeps the first conv dense) gets that sparsity at every
        update from ``begin`` on, not ramped, and the other leaves do not make up for
        it. Default ``None``.
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: floating
        leaves with ndim >= 2 (Dense and conv kernels; not biases or norm scales).

    Returns:
      A hard-mode :class:`dynprune.pruner.Pruner` with hyperparameters ``target`` and
      ``initial``.

    Raises:
      TypeError: if a step argument is not an integer, or ``target``, ``initial`` or an
        override is not a number.
      ValueError: if ``begin < 0``, ``every < 1``, ``end <= begin``, ``target``,
        ``initial`` or an override is not in [0, 1], ``scope`` or ``distribution`` is
        unknown, or ``scope="global"`` comes with a distribution or overrides.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> pruner = dp.algorithms.gmp(0.75, begin=0, end=4, every=2)
      >>> params = {"fc": {"kernel": jnp.arange(1.0, 9.0).reshape(4, 2), "bias": jnp.zeros(2)}}
      >>> tx = dp.prune(optax.sgd(0.0), pruner)
      >>> state = tx.init(params)
      >>> dp.update_schedule(pruner, state, 6).nonzero()[0].tolist()
      [0, 2, 4]
      >>> update, kept = jax.jit(tx.update), []
      >>> for step in range(6):
      ...     _, state = update(params, state, params)
      ...     kept.append(dp.masks_of(state)["fc"]["kernel"].sum().item())
      >>> kept  # s_t = 0, then 0.656 at step 2 (5 of 8 pruned), then 0.75 from step 4 on
      [8, 8, 3, 3, 2, 2]

      A typical run: 90% over 5,000 steps, masks recomputed every 100 steps.

      >>> tx = dp.prune(optax.adam(1e-3), dp.algorithms.gmp(0.9, begin=0, end=5000, every=100))

    References:
      Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for
      model compression", arXiv:1710.01878, 2017.
    """
    schedule, cadence = target_ramp(begin, end, every)
    return scheduled(
        lambda ctx: scores.magnitude(ctx.params, filter=filter),
        schedule,
        cadence,
        hyperparams={"target": target, "initial": initial},
        filter=filter,
        scope=scope,
        distribution=distribution,
        overrides=overrides,
    )
