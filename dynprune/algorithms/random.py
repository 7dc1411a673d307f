"""Random pruning: drop a uniformly random subset of weights — the baseline to beat.

Rule: scores u_ij ~ U[0, 1) drawn from the state's PRNG key, minus 1 where w_ij is already
pruned; drop the round(s · n) lowest, at once or along the cubic ramp, so a ramp prunes a
growing random subset (Liu et al. 2022 study it as a strong baseline at init).

References:
  Liu et al., "The Unreasonable Effectiveness of Random Pruning", ICLR 2022.
"""

from __future__ import annotations

import jax.numpy as jnp

from dynprune import scores
from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import scheduled, target_ramp
from dynprune.pruner import Context, Pruner, PyTree, Scope


def random(
    target: float,
    begin: int = 0,
    end: int | None = None,
    every: int = 100,
    *,
    initial: float = 0.0,
    scope: Scope = "layer",
    distribution: str = "uniform",
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Randomly prune to ``target`` (once at ``begin``, or gradually until ``end``).

    Rule: at each update step t, every entry of a pruned leaf draws u ~ U[0, 1) (fresh
    from the state's PRNG key) and scores

        score = u if the entry is kept, u − 1 if it is already pruned,

    and the round(s_t · n) lowest are pruned, with s_t = ``target`` (``end=None``) or on
    the cubic ramp s_t = s_f + (s_i − s_f)(1 − (t − begin)/(end − begin))³, updated at
    ``begin``, ``begin + every``, … and at ``end``. Hard mode: pruned weights are
    exactly 0.

    Note: pruned entries score below every kept one, so while s_t grows only kept
    entries are ranked: each update prunes a uniformly random set of further kept
    weights and no pruned weight comes back (each mask is a subset of the last), so the
    final mask prunes a uniformly random set of the size ``target`` sets. With
    ``end=None`` there is a single draw.

    Args:
      target: the sparsity in [0, 1] reached at ``begin`` (``end=None``) or at ``end``.
        A hyperparameter.
      begin: the first update step (an integer >= 0; default 0).
      end: ``None`` (default): one update, at ``begin``, straight to ``target``; else the
        step where the cubic ramp from ``initial`` reaches ``target`` (an integer >
        ``begin``).
      every: steps between ramp updates (an integer >= 1; default 100; also checked,
        but unused, when ``end`` is ``None``).
      initial: the sparsity of the ramp's first update, at ``begin``, in [0, 1]
        (default 0.0). A hyperparameter.
      scope: ``"layer"`` (default) or ``"global"`` (one ranking over all pruned leaves;
        takes no ``distribution``).
      distribution: ``"uniform"`` (default) or ``"erk"`` (Erdős–Rényi-Kernel: small
        leaves pruned less, those whose density would exceed 1 left dense, the rest
        pruned more to make up; :func:`dynprune.distributions.erk`). Layer scope only.
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: floating
        leaves with ndim >= 2 (Dense and conv kernels; not biases or norm scales).

    Returns:
      A hard-mode :class:`dynprune.pruner.Pruner` with hyperparameters ``target`` and
      ``initial``.

    Raises:
      TypeError: if a step argument is not an integer, or ``target`` or ``initial`` is
        not a number.
      ValueError: if ``begin < 0``, ``every < 1``, ``end <= begin``, ``target`` or
        ``initial`` is not in [0, 1], ``scope`` or ``distribution`` is unknown, or
        ``scope="global"`` comes with ``distribution="erk"``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.ones((10, 10))}}
      >>> tx = dp.prune(optax.sgd(0.0), dp.algorithms.random(0.3))
      >>> _, state = jax.jit(tx.update)(params, tx.init(params), params)
      >>> (~dp.masks_of(state)["fc"]["kernel"]).sum().item()
      30

    References:
      Liu et al., "The Unreasonable Effectiveness of Random Pruning: Return of the Most
      Naive Baseline for Sparse Training", ICLR 2022.
    """
    schedule, cadence = target_ramp(begin, end, every)

    def score(ctx: Context) -> PyTree:
        drawn = scores.random(ctx.params, ctx.key, filter=filter)
        return tree_lib.map_scored(lambda path, u, m: jnp.where(m, u, u - 1.0), drawn, ctx.masks)

    return scheduled(
        score,
        schedule,
        cadence,
        hyperparams={"target": target, "initial": initial},
        filter=filter,
        scope=scope,
        distribution=distribution,
    )
