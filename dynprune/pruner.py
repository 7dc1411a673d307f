"""The pruning-algorithm interface the transform drives, and the types it is written in.

A :class:`Pruner` is a bundle of pure functions (like an ``optax.GradientTransformation``).
The transform (:func:`dynprune.prune`) calls ``should_update`` every step and, under
``lax.cond``, ``update`` only when it says so; ``observe`` (if any) runs every step to
accumulate scores. Algorithms differ only in these functions; their numeric
hyperparameters live in the optimizer state, so sweeps over them compile once.
The recipes themselves live in :mod:`dynprune.algorithms`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from dynprune import tree as tree_lib

PyTree = Any
"""A JAX pytree: a Linen params dict, an NNX ``nnx.State``, a mask or score tree."""
Hyperparams = Mapping[str, jax.Array]
"""A pruner's numeric hyperparameters by name (float32 scalars in the optimizer state)."""
Scope = Literal["layer", "global"]
"""Where a sparsity is ranked: within each leaf (``"layer"``) or across all (``"global"``)."""

__all__ = ["Context", "Hyperparams", "Pruner", "PyTree", "Scope", "ScoreFn", "full_masks"]


class Context(NamedTuple):
    """What an algorithm sees at a step.

    Attributes:
      params: the (dense) parameters at the start of this step, where ``grads`` was taken.
      grads: this step's raw, dense gradients (pruned weights are 0 in the forward pass,
        or masked with a straight-through estimator, so their gradient is still defined).
      masks: current bool masks (full leaf shapes; ``None`` on unpruned leaves).
      aux: the algorithm's own state (score accumulators, statistics, …).
      step: step count before this update (int32 scalar).
      hyperparams: the algorithm's numeric hyperparameters (float32 scalars).
      key: a fresh PRNG key for this step.

    Examples:
      A cadence reads the step; an update reads the parameters (here: keep w > 0):

      >>> import jax, jax.numpy as jnp, dynprune as dp
      >>> ctx = dp.Context(params={"w": jnp.array([-1.0, 2.0])}, grads={"w": jnp.zeros(2)},
      ...                  masks={"w": None}, aux=(), step=jnp.asarray(3, jnp.int32),
      ...                  hyperparams={}, key=jax.random.key(0))
      >>> bool(ctx.step % 3 == 0), (ctx.params["w"] > 0).tolist()
      (True, [False, True])
    """

    params: PyTree
    grads: PyTree
    masks: PyTree
    aux: Any
    step: jax.Array
    hyperparams: Hyperparams
    key: jax.Array


class Pruner(NamedTuple):
    """A pruning algorithm as pure functions.

    Attributes:
      init: ``(params, hyperparams, key) -> (masks, aux)``; decides which leaves are pruned
        (``None`` masks elsewhere) and the starting masks.
      should_update: ``Context -> bool scalar``: recompute masks at this step?
      update: ``Context -> (masks, aux)``; runs under ``lax.cond`` inside jit.
      hyperparams: numeric hyperparameters, stored in the optimizer state as float32;
        each is checked by the rule for its name (:data:`dynprune.checks.RANGES`).
      observe: optional ``Context -> aux``, run every step (e.g. movement-score sums).
      soft: False = hard pruning (pruned weights are exactly 0.0 after every step, the
        optimizer never sees their gradients). True = soft/recoverable (dense weights
        kept, the forward pass must use :func:`dynprune.masked_params`).
      update_pruned: soft mode only. True (straight-through, DNS): the optimizer gets the
        dense gradient ∂L/∂(w ⊙ m), so pruned weights keep learning and can come back.
        False (movement pruning): pruned weights are frozen at their values.
      rewind: optional ``Context -> params``, evaluated when masks are recomputed; the
        weights are reset to what it returns (masked) and the optimizer's param-shaped
        state is zeroed (lottery-ticket rewinding).

    Examples:
      A pruner that keeps the positive weights of every kernel, recomputed every 2 steps
      (the recipes in :mod:`dynprune.algorithms` are built the same way):

      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> def init(params, hyperparams, key):
      ...   return dp.tree.map_scored(lambda path, w: w > 0, dp.tree.select(params)), ()
      >>> positive = dp.Pruner(
      ...     init=init,
      ...     should_update=lambda ctx: ctx.step % 2 == 0,
      ...     update=lambda ctx: (init(ctx.params, ctx.hyperparams, ctx.key)[0], ctx.aux),
      ... )
      >>> params = {"w": jnp.array([[1.0, -2.0], [-3.0, 4.0]]), "b": jnp.ones(2)}
      >>> tx = dp.prune(optax.sgd(0.5), positive)
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> dp.apply_updates(params, updates, state)["w"].tolist()
      [[0.5, 0.0], [0.0, 2.0]]
      >>> dp.masks_of(state)["b"] is None
      True
    """

    init: Callable[[PyTree, Hyperparams, jax.Array], tuple[PyTree, Any]]
    should_update: Callable[[Context], jax.Array]
    update: Callable[[Context], tuple[PyTree, Any]]
    hyperparams: Mapping[str, float] = {}
    observe: Callable[[Context], Any] | None = None
    soft: bool = False
    update_pruned: bool = True
    rewind: Callable[[Context], PyTree] | None = None


ScoreFn = Callable[[Context], PyTree]
"""A score function: ``Context -> score tree`` (``None`` on unpruned leaves; higher = keep)."""


def full_masks(mask_tree: PyTree, params: PyTree) -> PyTree:
    """Broadcast (neuron-shaped) masks to their leaves' full shapes.

    For each pruned leaf w with mask m: ``broadcast_to(m, w.shape)``; ``None`` masks stay
    ``None``. The transform stores masks in this form (:class:`dynprune.PruneState`).

    Args:
      mask_tree: bool masks with the structure of ``params`` (``None`` on unpruned leaves),
        each broadcastable to its leaf, e.g. a neuron-shaped ``(1, out)`` kernel mask.
      params: the parameter tree whose leaf shapes the masks take.

    Returns:
      The masks at their leaves' full shapes.

    Raises:
      ValueError: if the trees do not match, or a mask does not broadcast to its leaf.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> params = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}
      >>> masks = {"kernel": jnp.array([[True, False]]), "bias": None}
      >>> full = dp.pruner.full_masks(masks, params)
      >>> full["kernel"].shape, full["bias"]
      ((3, 2), None)
    """
    return tree_lib.map_scored(
        lambda path, m, p: jnp.broadcast_to(m, jnp.shape(p)), mask_tree, params
    )
