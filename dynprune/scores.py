"""Importance scores: pure functions from a parameter pytree to a score pytree.

Every score function returns a tree with the structure of ``params``: an array on each
scored leaf (chosen by ``filter``, default :func:`dynprune.tree.kernels`) and ``None``
elsewhere. Higher score = more important = kept longer. Because of the ``None`` leaves,
``jax.tree.leaves(scores)`` does not line up with ``jax.tree.leaves(params)``; walk them
together with :func:`dynprune.tree.map_scored` (or ``is_leaf=dynprune.tree.is_none``).

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

    The result is ``score(params, *other_trees, filter=None)``: the leaves chosen by
    ``filter`` (:func:`dynprune.tree.select`) get ``leaf_fn(w, *other_leaves)``, the
    others ``None``. ``other_trees`` (e.g. gradients) must have the structure of
    ``params``. The score's docstring is ``leaf_fn``'s, so document the rule there.

    Args:
      leaf_fn: the per-leaf rule: called with a floating parameter array ``w`` and the
        leaves of ``other_trees`` at the same path; returns a float array of ``w``'s
        shape (element scores) or with every axis but the last of size 1 (neuron
        scores).

    Returns:
      ``score(params, *other_trees, filter=None) -> score tree``; ``filter`` is a
      :data:`dynprune.tree.Filter`, default :func:`dynprune.tree.kernels` ``()``. It
      raises ``ValueError`` if ``filter`` selects a non-floating leaf or an other tree's
      structure differs from ``params``'.

    Examples:
      >>> import jax.numpy as jnp
      >>> squared = from_leaf_fn(lambda w: w**2)
      >>> squared({"fc": {"kernel": jnp.array([[-2.0, 1.0]]), "bias": jnp.zeros(2)}})
      {'fc': {'bias': None, 'kernel': Array([[4., 1.]], dtype=float32)}}
    """

    def score(params: PyTree, *others: PyTree, filter: tree_lib.Filter | None = None) -> PyTree:
        selected = tree_lib.select(params, filter)
        # Checked against params first: map_scored takes ``others`` as the reference, and
        # would call a leaf they lack "unexpected".
        for other in others:
            tree_lib.check_same_structure(selected, other, what="tree")
        return tree_lib.map_scored(lambda path, w, *o: leaf_fn(w, *o), selected, *others)

    score.__doc__ = leaf_fn.__doc__
    return score


# Each rule's docstring below documents the public score built from it by from_leaf_fn
# (which copies it), so it describes ``score(params, ..., filter=None)``, not the rule.


def _magnitude(w: jax.Array) -> jax.Array:
    """Magnitude score s = |w| of every scored leaf (an element score).

    The classic pruning criterion (Han et al. 2015; ``torch.nn.utils.prune.l1_unstructured``).

    Args:
      params: the parameter tree (Flax Linen dict or NNX state).
      filter: a :data:`dynprune.tree.Filter` choosing the scored leaves; keyword-only,
        default :func:`dynprune.tree.kernels` ``()`` (floating leaves of rank >= 2).

    Returns:
      A score tree with the structure of ``params``: |w| on scored leaves, ``None``
      elsewhere (so pair it with ``params`` via :func:`dynprune.tree.map_scored`).

    Raises:
      ValueError: if ``filter`` selects a non-floating leaf.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import scores
      >>> params = {"fc": {"bias": jnp.zeros(2), "kernel": jnp.array([[3.0, -1.0], [-4.0, 0.5]])}}
      >>> jax.tree.map(lambda s: s.tolist(), scores.magnitude(params))
      {'fc': {'bias': None, 'kernel': [[3.0, 1.0], [4.0, 0.5]]}}

    References:
      Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient
      Neural Networks", NeurIPS 2015.
    """
    return jnp.abs(w)


def _saliency(w: jax.Array, g: jax.Array) -> jax.Array:
    """Saliency s = |w ⊙ g|: first-order Taylor estimate of the loss change from removing w.

    With g = ∂L/∂w, L(w with w_j = 0) − L(w) ≈ −w_j g_j. At initialisation this is
    SNIP's connection sensitivity (Lee et al. 2019, before its normalisation, which
    does not change the ranking); it ranks as the squared Taylor importance (g w)² of
    Molchanov et al. (2019).

    Args:
      params: the parameter tree.
      grads: the gradients of the loss, a tree with the structure of ``params``.
      filter: a :data:`dynprune.tree.Filter` choosing the scored leaves; keyword-only,
        default :func:`dynprune.tree.kernels` ``()``.

    Returns:
      A score tree with the structure of ``params``: |w ⊙ g| on scored leaves, ``None``
      elsewhere.

    Raises:
      ValueError: if ``filter`` selects a non-floating leaf, or ``grads``' structure
        differs from ``params``'.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import scores
      >>> params = {"fc": {"bias": jnp.zeros(2), "kernel": jnp.array([[3.0, -1.0], [-4.0, 0.5]])}}
      >>> grads = {"fc": {"bias": jnp.ones(2), "kernel": jnp.array([[0.5, 2.0], [0.25, 0.0]])}}
      >>> jax.tree.map(lambda s: s.tolist(), scores.saliency(params, grads))
      {'fc': {'bias': None, 'kernel': [[1.5, 2.0], [1.0, 0.0]]}}

    References:
      Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection
      Sensitivity", ICLR 2019. Molchanov, Mallya, Tyree, Frosio & Kautz, "Importance
      Estimation for Neural Network Pruning", CVPR 2019.
    """
    return jnp.abs(w * g)


def _neuron_sensitivity(w: jax.Array) -> jax.Array:
    """Neuron sensitivity s_i = Σ_j |w_ij| / sqrt(Σ_k w_ik²) = ‖w_i‖₁ / ‖w_i‖₂ (a neuron score).

    w_i is neuron i's incoming weight vector (a Dense kernel column; a conv output
    channel over its spatial and input axes). The ratio lies in [1, sqrt(fan_in)]: it
    measures how *spread* the neuron's weights are, and is scale-free. An all-zero
    neuron scores 0. The origin document's worked example (§4.3) does not match this
    formula (its numbers cannot be reproduced from it); dynprune implements the formula.

    Args:
      params: the parameter tree.
      filter: a :data:`dynprune.tree.Filter` choosing the scored leaves; keyword-only,
        default :func:`dynprune.tree.kernels` ``()``.

    Returns:
      A score tree with the structure of ``params``: on a scored leaf of shape
      ``(..., out)``, the neuron scores with shape ``(1, ..., 1, out)``; ``None``
      elsewhere. Feed it to :func:`dynprune.masks.structured` to remove whole neurons.

    Raises:
      ValueError: if ``filter`` selects a non-floating leaf.

    Examples:
      Columns (neurons) spread over 4 equal weights, concentrated in one, all zero:

      >>> import jax, jax.numpy as jnp
      >>> from dynprune import scores
      >>> kernel = jnp.array([[1.0, 2.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
      >>> jax.tree.map(lambda s: s.tolist(), scores.neuron_sensitivity({"fc": {"kernel": kernel}}))
      {'fc': {'kernel': [[2.0, 1.0, 0.0]]}}

    References:
      The origin document, §4.1 (sensitivity-based neuron pruning).
    """
    axes = _neuron_axes(w)
    l1 = jnp.sum(jnp.abs(w), axis=axes, keepdims=True)
    l2 = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
    return jnp.where(l2 > 0, l1 / jnp.where(l2 > 0, l2, 1), 0)


def _connection_sensitivity(w: jax.Array) -> jax.Array:
    """Connection sensitivity s_ij = |w_ij| / ‖w_i‖₂: the weight's share of its neuron's norm.

    ‖w_i‖₂ is the L2 norm of neuron i's incoming weights (over every axis but the last);
    an all-zero neuron's weights score 0. An element score in [0, 1].

    Args:
      params: the parameter tree.
      filter: a :data:`dynprune.tree.Filter` choosing the scored leaves; keyword-only,
        default :func:`dynprune.tree.kernels` ``()``.

    Returns:
      A score tree with the structure of ``params``: |w_ij| / ‖w_i‖₂ on scored leaves,
      ``None`` elsewhere.

    Raises:
      ValueError: if ``filter`` selects a non-floating leaf.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import scores
      >>> kernel = jnp.array([[1.0, 2.0], [1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
      >>> jax.tree.map(lambda s: s.tolist(), scores.connection_sensitivity({"kernel": kernel}))
      {'kernel': [[0.5, 1.0], [0.5, 0.0], [0.5, 0.0], [0.5, 0.0]]}

    References:
      The origin document, §4.2.
    """
    l2 = jnp.sqrt(jnp.sum(jnp.square(w), axis=_neuron_axes(w), keepdims=True))
    return jnp.abs(w) / jnp.where(l2 > 0, l2, 1)


magnitude = from_leaf_fn(_magnitude)
saliency = from_leaf_fn(_saliency)
neuron_sensitivity = from_leaf_fn(_neuron_sensitivity)
connection_sensitivity = from_leaf_fn(_connection_sensitivity)


def group_norm(params: PyTree, *, ord: int = 2, filter: tree_lib.Filter | None = None) -> PyTree:
    """Per-neuron L1 (``ord=1``) or L2 (``ord=2``) norm of the incoming weights.

    s_i = ‖w_i‖_p over all axes but the last (``torch.nn.utils.prune.ln_structured``;
    Li et al. 2017 use L1 to prune conv filters). A neuron score, for
    :func:`dynprune.masks.structured`.

    Args:
      params: the parameter tree.
      ord: the norm, 1 or 2; default 2.
      filter: a :data:`dynprune.tree.Filter` choosing the scored leaves; default
        :func:`dynprune.tree.kernels` ``()``.

    Returns:
      A score tree with the structure of ``params``: on a scored leaf of shape
      ``(..., out)``, the norms with shape ``(1, ..., 1, out)``; ``None`` elsewhere.

    Raises:
      ValueError: if ``ord`` is not 1 or 2, or ``filter`` selects a non-floating leaf.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import scores
      >>> params = {"kernel": jnp.array([[1.0, 2.0], [1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])}
      >>> jax.tree.map(lambda s: s.tolist(), scores.group_norm(params, ord=1))
      {'kernel': [[4.0, 2.0]]}
      >>> jax.tree.map(lambda s: s.tolist(), scores.group_norm(params))
      {'kernel': [[2.0, 2.0]]}

    References:
      Li, Kadav, Durdanovic, Samet & Graf, "Pruning Filters for Efficient ConvNets",
      ICLR 2017.
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
    """Uniform random scores in [0, 1): random pruning, the baseline every method must beat.

    s ~ U[0, 1) independently per entry; each scored leaf draws from its own subkey of
    ``key`` (split in flattening order), so the scores are reproducible from ``key``.

    Args:
      params: the parameter tree.
      key: a ``jax.random`` key.
      filter: a :data:`dynprune.tree.Filter` choosing the scored leaves; default
        :func:`dynprune.tree.kernels` ``()``.

    Returns:
      A score tree with the structure of ``params``: float32 arrays of each scored
      leaf's shape, ``None`` elsewhere.

    Raises:
      ValueError: if ``filter`` selects a non-floating leaf.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import scores
      >>> params = {"fc": {"bias": jnp.zeros(2), "kernel": jnp.ones((3, 2))}}
      >>> s = scores.random(params, jax.random.key(0))
      >>> s["fc"]["bias"] is None, s["fc"]["kernel"].shape
      (True, (3, 2))
      >>> bool(((0 <= s["fc"]["kernel"]) & (s["fc"]["kernel"] < 1)).all())
      True

    References:
      Liu et al., "The Unreasonable Effectiveness of Random Pruning: Return of the Most
      Naive Baseline for Sparse Training", ICLR 2022.
    """
    selected = tree_lib.select(params, filter)
    leaves = tree_lib.scored_leaves(selected)
    split = jax.random.split(key, max(len(leaves), 1))[: len(leaves)]
    keys = dict(zip((p for p, _ in leaves), split, strict=True))
    return tree_lib.map_scored(
        lambda path, w: jax.random.uniform(keys[path], w.shape, jnp.float32), selected
    )
