"""Fixed masks: train with a given mask that never changes (hard mode).

For retraining a ticket, or training a mask found once before training (e.g. SNIP via
``dp.prune_now``): pruned weights stay exactly 0.0 and get no optimizer state.
"""

from __future__ import annotations

from typing import Any

import jax

from dynprune.pruner import Pruner


def fixed(masks: Any) -> Pruner:
    """Keep ``masks`` (a bool tree with the structure of the params, ``None`` = unpruned)."""

    def init(params: Any, hp: Any, key: jax.Array) -> tuple[Any, Any]:
        del params, hp, key
        return masks, ()

    return Pruner(
        init=init,
        should_update=lambda ctx: jax.numpy.zeros([], bool),
        update=lambda ctx: (ctx.masks, ctx.aux),
    )
