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
Hyperparams = Mapping[str, jax.Array]
Scope = Literal["layer", "global"]

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


def full_masks(mask_tree: PyTree, params: PyTree) -> PyTree:
    """Broadcast (neuron-shaped) masks to their leaves' full shapes."""
    return tree_lib.map_scored(
        lambda path, m, p: jnp.broadcast_to(m, jnp.shape(p)), mask_tree, params
    )
