"""Straight-through (soft) mode for any pruner.

Dense weights are kept; the forward pass sees w ⊙ m (:func:`dynprune.masked_params`);
the gradient ∂L/∂(w ⊙ m) passes straight through the mask to every weight, so pruned
weights keep learning and return when their score recovers.

References:
  Bengio, Léonard & Courville, "Estimating or Propagating Gradients Through Stochastic
  Neurons", arXiv:1308.3432, 2013. Zhou et al., "Learning N:M Fine-grained Structured
  Sparse Neural Networks From Scratch", ICLR 2021 (SR-STE).
"""

from __future__ import annotations

from dynprune.pruner import Pruner


def straight_through(pruner: Pruner) -> Pruner:
    """``pruner`` in soft mode: masks in the forward pass, dense straight-through updates.

    The same scores, schedule and masks as ``pruner``, but dense weights are kept: the
    forward pass uses w ⊙ m (run it through :func:`dynprune.masked_params`) and the
    optimizer gets the dense gradient ∂L/∂(w ⊙ m) for every weight, pruned or not
    (``soft=True, update_pruned=True``), so a pruned weight keeps learning and returns
    when a later update's scores rank it back in.

    Args:
      pruner: any :class:`dynprune.pruner.Pruner`, e.g. from
        :func:`dynprune.algorithms.gmp`.

    Returns:
      The pruner with ``soft=True`` and ``update_pruned=True``.

    Examples:
      The pruned 1 and 2 still get their update; the forward pass sees them as 0.

      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]])}}
      >>> pruner = dp.algorithms.straight_through(dp.algorithms.one_shot(0.5))
      >>> tx = dp.prune(optax.sgd(1.0), pruner)
      >>> grads = {"fc": {"kernel": -jnp.ones((2, 2))}}
      >>> updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
      >>> params = dp.apply_updates(params, updates, state)
      >>> params["fc"]["kernel"].tolist()
      [[2.0, 3.0], [4.0, 5.0]]
      >>> dp.masked_params(params, state)["fc"]["kernel"].tolist()
      [[0.0, 0.0], [4.0, 5.0]]
    """
    return pruner._replace(soft=True, update_pruned=True)
