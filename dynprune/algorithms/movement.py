"""Movement pruning, hard top-k variant with straight-through scores (Sanh et al. 2020).

Each weight has an importance score S that learns how far the weight moves *away from*
zero: with the forward pass on W ⊙ M, M = Top_v(S), and the straight-through estimator
∂L/∂S = ∂L/∂(W ⊙ M) · W, gradient descent on S gives (up to the score learning rate,
which does not change the ranking)

    S_t = −Σ_{τ ≤ t} ∂L/∂(W ⊙ M)_τ ⊙ W_τ.

The mask keeps the top (1 − s_t) of S per layer, with s_t the cubic schedule. Pruned
weights are frozen (their gradient is masked) but kept, and come back if their score
rises: this is soft mode with ``update_pruned=False``.

References:
  Sanh, Wolf & Rush, "Movement Pruning: Adaptive Sparsity by Fine-Tuning", NeurIPS 2020.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import scheduled, target_ramp
from dynprune.pruner import Context, Pruner, Scope


def movement(
    target: float,
    begin: int,
    end: int,
    every: int = 10,
    *,
    initial: float = 0.0,
    scope: Scope = "layer",
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Keep the top (1 − s_t) weights by accumulated movement score S = −Σ g ⊙ w."""
    schedule, cadence = target_ramp(begin, end, every)

    def observe(ctx: Context) -> Any:
        return tree_lib.map_scored(lambda path, s, g, w: s - g * w, ctx.aux, ctx.grads, ctx.params)

    base = scheduled(
        lambda ctx: ctx.aux,
        schedule,
        cadence,
        hyperparams={"target": target, "initial": initial},
        filter=filter,
        scope=scope,
    )

    def init(params: Any, hp: Any, key: Any) -> tuple[Any, Any]:
        masks, _ = base.init(params, hp, key)
        return masks, tree_lib.map_scored(lambda p, m: jnp.zeros(m.shape, jnp.float32), masks)

    return base._replace(init=init, observe=observe, soft=True, update_pruned=False)
