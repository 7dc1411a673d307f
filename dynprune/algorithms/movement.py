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
    """Keep the top (1 − s_t) weights by accumulated movement score S = −Σ g ⊙ w.

    Rule: at every step t (from step 0, before ``begin`` too) each weight's score gains
    −g_t ⊙ w_t, g_t being the gradient passed to ``tx.update``:

        S_t = −Σ_{τ <= t} g_τ ⊙ w_τ,

    large when the weight moves away from zero. At each update step the masks keep the
    (1 − s_t) highest S of each leaf (or of all leaves, ``scope="global"``), with s_t
    on the cubic ramp s_t = s_f + (s_i − s_f)(1 − (t − begin)/(end − begin))³.

    Schedule, step by step: nothing is pruned before ``begin``; the masks are
    recomputed at ``begin``, ``begin + every``, … and at ``end``, then stay fixed.
    Soft mode with frozen pruned weights: dense weights are kept, a pruned weight gets
    no update (its value is frozen) but its score keeps accumulating, so it comes back
    if the score rises into the top (1 − s_t) at a later update. Run the forward pass
    through :func:`dynprune.masked_params`, so that g = ∂L/∂(W ⊙ M).

    Args:
      target: s_f in [0, 1], the sparsity reached at ``end``. A hyperparameter.
      begin: the first update step (an integer >= 0).
      end: the step where the sparsity reaches ``target`` (an integer > ``begin``).
      every: steps between updates (an integer >= 1; default 10).
      initial: s_i in [0, 1], the sparsity of the first update (default 0.0). A
        hyperparameter.
      scope: ``"layer"`` (default; every leaf at s_t) or ``"global"`` (one ranking over
        all pruned leaves).
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: floating
        leaves with ndim >= 2 (Dense and conv kernels; not biases or norm scales).

    Returns:
      A soft-mode :class:`dynprune.pruner.Pruner` (``update_pruned=False``) with
      hyperparameters ``target`` and ``initial``; its state holds S.

    Raises:
      TypeError: if a step argument is not an integer, or ``target`` or ``initial`` is
        not a number.
      ValueError: if ``begin < 0``, ``every < 1``, ``end <= begin``, ``target`` or
        ``initial`` is not in [0, 1], or ``scope`` is unknown.

    Examples:
      Magnitude would keep 3 and 4; movement keeps the weights the gradient pushes away
      from zero:

      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]])}}
      >>> grads = {"fc": {"kernel": jnp.array([[1.0, -1.0], [-1.0, 1.0]])}}
      >>> tx = dp.prune(optax.sgd(0.0), dp.algorithms.movement(0.5, begin=0, end=1, every=1))
      >>> state, update = tx.init(params), jax.jit(tx.update)
      >>> for step in range(2):
      ...     _, state = update(grads, state, params)
      >>> dp.find_state(state).aux["fc"]["kernel"].tolist()  # S after two steps
      [[-2.0, 4.0], [6.0, -8.0]]
      >>> dp.masks_of(state)["fc"]["kernel"].tolist()
      [[False, True], [True, False]]

    References:
      Sanh, Wolf & Rush, "Movement Pruning: Adaptive Sparsity by Fine-Tuning", NeurIPS
      2020.
    """
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
