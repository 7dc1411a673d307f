"""Importance scores: pure functions from a parameter pytree to a score pytree.

Every score function returns a tree with the structure of ``params``: an array on each
scored leaf (chosen by ``filter``, default :func:`dynprune.tree.kernels`) and ``None``
elsewhere. Higher score = more important = kept longer.

Element scores have the leaf's shape. *Neuron* scores (one per output neuron of a Dense
kernel ``(in, out)``, or output channel of a conv kernel ``(h, w, in, out)``) keep the
leaf's rank with every axis but the last reduced to 1, so they broadcast against it:
a mask built from them removes whole neurons.

Any function of this form is a score; use :func:`from_leaf_fn` to lift a per-leaf rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from dynprune import tree as tree_lib

PyTree = Any

__all__ = [
    "connection_sensitivity",
    "from_leaf_fn",
    "group_norm",
    "magnitude",
    "neuron_sensitivity",
    "random",
    "saliency",
]


def _neuron_axes(x: jax.Array) -> tuple[int, ...]:
    return tuple(range(x.ndim - 1))


def from_leaf_fn(
    leaf_fn: Callable[..., jax.Array],
) -> Callable[..., PyTree]:
    """Lift ``leaf_fn(w, *others) -> score`` to a score function over pytrees.

    The result is ``score(params, *other_trees, filter=None)``; ``other_trees`` (e.g.
    gradients) must have the structure of ``params``.

    Examples:
      >>> import jax.numpy as jnp
      >>> squared = from_leaf_fn(lambda w: w**2)
      >>> squared({"fc": {"kernel": jnp.array([[-2.0, 1.0]]), "bias": jnp.zeros(2)}})
      {'fc': {'bias': None, 'kernel': Array([[4., 1.]], dtype=float32)}}
    """

    def score(params: PyTree, *others: PyTree, filter: tree_lib.Filter | None = None) -> PyTree:
        selected = tree_lib.select(params, filter)
        return tree_lib.map_scored(lambda path, w, *o: leaf_fn(w, *o), selected, *others)

    score.__doc__ = leaf_fn.__doc__
    return score


def _magnitude(w: jax.Array) -> jax.Array:
    """|w| (Han et al. 2015; ``torch.nn.utils.prune.l1_unstructured``)."""
    return jnp.abs(w)


def _saliency(w: jax.Array, g: jax.Array) -> jax.Array:
    """|w ⊙ g|: first-order Taylor estimate of the loss change from removing w.

    At initialisation this is SNIP's connection sensitivity (Lee et al. 2019).
    """
    return jnp.abs(w * g)


def _neuron_sensitivity(w: jax.Array) -> jax.Array:
    """Origin document §4.1: s_i = Σ_j |w_ij| / sqrt(Σ_k w_ik²) = ‖w_i‖₁ / ‖w_i‖₂.

    w_i is neuron i's incoming weight vector (a Dense kernel column; a conv output
    channel over its spatial and input axes). The ratio lies in [1, sqrt(fan_in)]: it
    measures how *spread* the neuron's weights are, and is scale-free. An all-zero
    neuron scores 0. The document's worked example (§4.3) does not match this formula
    (its numbers cannot be reproduced from it); dynprune implements the formula.
    """
    axes = _neuron_axes(w)
    l1 = jnp.sum(jnp.abs(w), axis=axes, keepdims=True)
    l2 = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
    return jnp.where(l2 > 0, l1 / jnp.where(l2 > 0, l2, 1), 0)


def _connection_sensitivity(w: jax.Array) -> jax.Array:
    """Origin document §4.2: s_ij = |w_ij| / ‖w_i‖₂, the weight's share of its neuron's norm."""
    l2 = jnp.sqrt(jnp.sum(jnp.square(w), axis=_neuron_axes(w), keepdims=True))
    return jnp.abs(w) / jnp.where(l2 > 0, l2, 1)


magnitude = from_leaf_fn(_magnitude)
saliency = from_leaf_fn(_saliency)
neuron_sensitivity = from_leaf_fn(_neuron_sensitivity)
connection_sensitivity = from_leaf_fn(_connection_sensitivity)


def group_norm(params: PyTree, *, ord: int = 2, filter: tree_lib.Filter | None = None) -> PyTree:
    """Per-neuron L1 (``ord=1``) or L2 (``ord=2``) norm of the incoming weights.

    ‖w_i‖_p over all axes but the last (``torch.nn.utils.prune.ln_structured``; Li et
    al. 2017, "Pruning Filters for Efficient ConvNets", use L1).
    """
    if ord not in (1, 2):
        raise ValueError(f"group_norm supports ord=1 or ord=2, got ord={ord!r}")

    def norm(w: jax.Array) -> jax.Array:
        axes = _neuron_axes(w)
        if ord == 1:
            return jnp.sum(jnp.abs(w), axis=axes, keepdims=True)
        return jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))

    return from_leaf_fn(norm)(params, filter=filter)


def random(params: PyTree, key: jax.Array, *, filter: tree_lib.Filter | None = None) -> PyTree:
    """Uniform random scores in [0, 1): random pruning, the baseline every method must beat."""
    selected = tree_lib.select(params, filter)
    leaves = tree_lib.scored_leaves(selected)
    split = jax.random.split(key, max(len(leaves), 1))[: len(leaves)]
    keys = dict(zip((p for p, _ in leaves), split, strict=True))
    return tree_lib.map_scored(
        lambda path, w: jax.random.uniform(keys[path], w.shape, jnp.float32), selected
    )
