"""Masks: pure functions from score pytrees to boolean keep-mask pytrees.

A mask tree has the structure of the parameters: a bool array on pruned leaves (True =
kept), ``None`` on leaves that are not pruned. A mask may be *neuron-shaped* (every axis
but the last of size 1): it broadcasts against its kernel and removes whole neurons.

Sparsities and thresholds may be Python numbers or traced arrays, so a sweep over them
compiles once. Concrete values are validated; traced ones are clipped to [0, 1].
"""

from __future__ import annotations

import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from dynprune import select
from dynprune import tree as tree_lib

PyTree = Any
Scope = Literal["layer", "global"]

__all__ = [
    "apply_masks",
    "count_to_drop",
    "n_of_m",
    "sparsity",
    "structured",
    "threshold",
    "with_bias",
]


def _check_fraction(value: Any, path: str, name: str) -> jax.Array:
    """``value`` as a float32 array; a concrete value outside [0, 1] raises ValueError."""
    if not isinstance(value, jax.core.Tracer):
        v = np.asarray(value, dtype=np.float64)
        if v.shape != () or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} for leaf {path!r} must be a number in [0, 1], got {value!r}")
    return jnp.clip(jnp.asarray(value, jnp.float32), 0.0, 1.0)


def _check_float(path: str, score: Any) -> jax.Array:
    score = jnp.asarray(score)
    if not jnp.issubdtype(score.dtype, jnp.floating):
        raise ValueError(
            f"scores for leaf {path!r} have dtype {score.dtype}; scores must be floats"
        )
    return score


def count_to_drop(fraction: jax.Array, n: int) -> jax.Array:
    """k = round(fraction · n), computed in float32 (round half to even), as int32."""
    return jnp.round(fraction * jnp.float32(n)).astype(jnp.int32)


def threshold(scores: PyTree, t: Any) -> PyTree:
    """Keep entries whose score is strictly greater than ``t``: m = [s > t].

    The origin document's rule (prune |w| <= t). ``t`` is a scalar (traced is fine), a
    tree with one value per scored leaf, or ``{regex: t, "default": t}``. NaN scores are
    never kept.
    """
    per_leaf = tree_lib.resolve(t, scores, name="threshold")
    return tree_lib.map_scored(lambda path, s, tv: _check_float(path, s) > tv, scores, per_leaf)


def sparsity(scores: PyTree, s: Any, *, scope: Scope = "layer") -> PyTree:
    """Drop exactly round(s · n) lowest-scored entries (``torch``: ``l1_unstructured``).

    Args:
      scores: score tree (``None`` = not pruned).
      s: target sparsity in [0, 1]. With ``scope="layer"``: a scalar, a per-leaf tree, or
        ``{regex: s, "default": s}``; each leaf loses round(s_l · n_l) entries.
        With ``scope="global"``: one scalar; round(s · Σ n_l) entries are dropped across
        all scored leaves, ranked jointly (``global_unstructured``).
      scope: ``"layer"`` or ``"global"``.

    Returns:
      Bool mask tree. Selection is exact and O(n) (:func:`dynprune.select.drop_lowest`);
      ties are dropped in position order; NaN scores rank lowest.
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    leaves = [(p, _check_float(p, x)) for p, x in tree_lib.scored_leaves(scores)]
    arrays = [x for _, x in leaves]
    if scope == "global":
        frac = _check_fraction(s, "<global>", "sparsity")
        kept = select.drop_lowest(arrays, count_to_drop(frac, sum(x.size for x in arrays)))
    else:
        per_leaf = dict(tree_lib.scored_leaves(tree_lib.resolve(s, scores, name="sparsity")))
        ks = [count_to_drop(_check_fraction(per_leaf[p], p, "sparsity"), x.size) for p, x in leaves]
        kept = select.drop_lowest_each(arrays, ks)
    by_path = dict(zip((p for p, _ in leaves), kept, strict=True))
    return tree_lib.map_scored(lambda path, x: by_path[path], scores)


def n_of_m(scores: PyTree, n: int, m: int) -> PyTree:
    """N:M sparsity: in every group of ``m`` consecutive inputs of each output, keep ``n``.

    Groups run along the input axis (-2: ``in`` of a Dense ``(in, out)`` or conv
    ``(h, w, in, out)`` kernel), as NVIDIA's 2:4 sparse tensor cores need (Mishra et al.
    2021; TF-MOT ``sparsity_m_by_n``). Ties keep the later input; NaN ranks lowest.
    """
    if not (isinstance(n, int) and isinstance(m, int) and 0 <= n <= m and m >= 1):
        raise ValueError(f"n_of_m needs integers 0 <= n <= m, m >= 1; got n={n!r}, m={m!r}")

    def leaf_mask(path: str, x: Any) -> jax.Array:
        x = _check_float(path, x)
        if x.ndim < 2:
            raise ValueError(f"n_of_m needs an input axis; leaf {path!r} has shape {x.shape}")
        fan_in = x.shape[-2]
        if fan_in % m:
            raise ValueError(
                f"n_of_m: input axis of leaf {path!r} has size {fan_in}, not divisible by m={m}"
            )
        keys = jnp.moveaxis(select.order_keys(x), -2, -1)
        groups = keys.reshape((*keys.shape[:-1], fan_in // m, m))
        idx = jnp.arange(m)
        later = jnp.expand_dims(idx[None, :] > idx[:, None], tuple(range(groups.ndim - 1)))
        a, b = groups[..., :, None], groups[..., None, :]
        better = (b > a) | ((b == a) & later)
        keep = jnp.sum(better, axis=-1) < n
        return jnp.moveaxis(keep.reshape(keys.shape), -1, -2)

    return tree_lib.map_scored(leaf_mask, scores)


def structured(
    scores: PyTree,
    s: Any,
    *,
    scope: Scope = "layer",
    reduce: Literal["sum", "l2", "max"] = "sum",
) -> PyTree:
    """Drop exactly round(s · n_out) whole output neurons / conv channels per leaf.

    Element scores are reduced per neuron over every axis but the last (``reduce``: sum,
    L2 or max); neuron-shaped scores (e.g. :func:`dynprune.scores.neuron_sensitivity`)
    are used as they are. ``scope="global"`` ranks neurons of all leaves jointly.
    The masks are neuron-shaped; :func:`with_bias` extends them to the biases.
    (``torch.nn.utils.prune.ln_structured``; Torch-Pruning's ``pruning_ratio``.)
    """
    reducers = {
        "sum": lambda x, ax: jnp.sum(x, axis=ax, keepdims=True),
        "l2": lambda x, ax: jnp.sqrt(jnp.sum(jnp.square(x), axis=ax, keepdims=True)),
        "max": lambda x, ax: jnp.max(x, axis=ax, keepdims=True),
    }
    if reduce not in reducers:
        raise ValueError(f"reduce must be one of {sorted(reducers)}, got {reduce!r}")

    def per_neuron(path: str, x: Any) -> jax.Array:
        x = _check_float(path, x)
        if x.ndim == 0:
            raise ValueError(f"structured pruning needs an output axis; leaf {path!r} is a scalar")
        if math.prod(x.shape[:-1]) == 1:
            return x
        return reducers[reduce](x, tuple(range(x.ndim - 1)))

    return sparsity(tree_lib.map_scored(per_neuron, scores), s, scope=scope)


def with_bias(masks: PyTree, params: PyTree) -> PyTree:
    """Extend neuron-shaped kernel masks to the sibling ``bias`` leaves, so a pruned
    neuron is removed entirely (its bias no longer feeds the next layer).

    Returns a mask tree with the structure of ``params``.
    """
    tree_lib.check_same_structure(params, masks, what="masks")
    by_path = {p: m for p, m in tree_lib.scored_leaves(masks)}

    def bias_mask(path: str, p: Any, m: Any) -> Any:
        head, _, name = path.rpartition("/")
        kernel = by_path.get(f"{head}/kernel" if head else "kernel")
        if m is None and name == "bias" and kernel is not None:
            if math.prod(kernel.shape[:-1]) == 1 and kernel.shape[-1:] == np.shape(p):
                return kernel.reshape(np.shape(p))
        return m

    return tree_lib.map_with_path(bias_mask, params, masks)


def apply_masks(params: PyTree, masks: PyTree, *, straight_through: bool = False) -> PyTree:
    """Pruned parameters: w ⊙ m, with pruned entries exactly 0.0; ``None`` masks pass through.

    With ``straight_through=True`` the forward value is the same but the gradient with
    respect to w is the identity (w + stop_gradient(w ⊙ m − w)): the straight-through
    estimator that lets pruned weights keep learning and come back (Guo et al. 2016;
    Bengio et al. 2013).

    Raises:
      ValueError: if the trees do not match or a mask does not broadcast to its leaf.
    """
    tree_lib.check_same_structure(params, masks, what="masks")

    def apply(path: str, p: Any, m: Any) -> Any:
        if m is None:
            return p
        if not _broadcasts_to(np.shape(m), np.shape(p)):
            raise ValueError(
                f"mask for leaf {path!r} has shape {np.shape(m)}, "
                f"which does not broadcast to the leaf's shape {np.shape(p)}"
            )
        pruned = jnp.where(m, p, jnp.zeros((), jnp.result_type(p)))
        if straight_through:
            return p + jax.lax.stop_gradient(pruned - p)
        return pruned

    return tree_lib.map_with_path(apply, params, masks)


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    return len(shape) <= len(target) and all(
        a in (1, b) for a, b in zip(shape[::-1], target[::-1], strict=False)
    )
