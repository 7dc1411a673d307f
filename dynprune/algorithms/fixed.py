"""Fixed masks: train with a given mask that never changes (hard mode).

For retraining a ticket, or training a mask found once before training (e.g. SNIP via
``dp.prune_now``): pruned weights stay exactly 0.0 and get no optimizer state.
"""

from __future__ import annotations

from typing import Any

import jax

from dynprune.pruner import Pruner


def fixed(masks: Any) -> Pruner:
    """A pruner that keeps the given ``masks`` for the whole run (hard mode).

    The masks are installed by ``tx.init`` and never recomputed: pruned weights are
    exactly 0.0 after every step and get no optimizer state (their moments stay 0).

    Args:
      masks: a bool tree with the structure of the params (True = kept), ``None`` on
        leaves that are not pruned; a mask may be any shape that broadcasts to its leaf
        (e.g. neuron-shaped). Typically from :func:`dynprune.prune_now`,
        :func:`dynprune.algorithms.snip_masks` or ``dp.masks_of(state)`` of an earlier
        run (a ticket).

    Returns:
      A hard-mode :class:`dynprune.pruner.Pruner` with no hyperparameters.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "bias": jnp.zeros(2)}}
      >>> masks = {"fc": {"kernel": jnp.array([[True, False], [False, True]]), "bias": None}}
      >>> tx = dp.prune(optax.sgd(0.5), dp.algorithms.fixed(masks))
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
      >>> dp.apply_updates(params, updates, state)["fc"]["kernel"].tolist()
      [[0.5, 0.0], [0.0, 3.5]]
    """

    def init(params: Any, hp: Any, key: jax.Array) -> tuple[Any, Any]:
        del params, hp, key
        return masks, ()

    return Pruner(
        init=init,
        should_update=lambda ctx: jax.numpy.zeros([], bool),
        update=lambda ctx: (ctx.masks, ctx.aux),
    )
