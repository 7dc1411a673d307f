"""Masks: pure functions from score pytrees to boolean keep-mask pytrees.

A mask tree has the structure of the parameters: a bool array on pruned leaves (True =
kept), ``None`` on leaves that are not pruned. A mask may be *neuron-shaped* (every axis
but the last of size 1): it broadcasts against its kernel and removes whole neurons.
The masks a pruner keeps (:func:`dynprune.masks_of`) have the same form.

``None`` is not a leaf to JAX, so ``jax.tree.leaves(masks)`` skips the unpruned leaves
and zipping it with ``jax.tree.leaves(params)`` pairs masks with the wrong parameters.
Flatten with ``is_leaf=lambda x: x is None`` (:func:`dynprune.tree.is_none`), or walk
the trees together with :func:`dynprune.tree.map_scored` /
:func:`dynprune.tree.scored_leaves`.

Sparsities and thresholds may be Python numbers or traced arrays, so a sweep over them
compiles once. Concrete values are validated (a sparsity in [0, 1], a finite threshold;
else an error naming the leaf); traced sparsities are clipped to [0, 1], and a traced NaN
sparsity drops nothing (a traced NaN threshold keeps nothing: no score is > NaN).

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from dynprune import masks, scores
  >>> params = {"fc": {"bias": jnp.zeros(2), "kernel": jnp.array([[0.5, -2.0], [3.0, 0.0]])}}
  >>> m = masks.threshold(scores.magnitude(params), 0.5)
  >>> len(jax.tree.leaves(params)), len(jax.tree.leaves(m))  # misaligned
  (2, 1)
  >>> [None if x is None else x.tolist() for x in jax.tree.leaves(m, is_leaf=lambda x: x is None)]
  [None, [[False, True], [True, False]]]
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dynprune import checks, select
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


def _check_fraction(value: Any, path: str, name: str) -> Any:
    """A concrete ``value`` checked to be a number in [0, 1] (ValueError/TypeError naming
    the leaf otherwise) and returned as it is; a traced one as a float32 array."""
    if isinstance(value, jax.core.Tracer):
        return jnp.asarray(value, jnp.float32)
    checks.real(f"{name} for leaf {path!r}", value, 0.0, 1.0)
    return value


def _check_float(path: str, score: Any) -> jax.Array:
    score = jnp.asarray(score)
    if not jnp.issubdtype(score.dtype, jnp.floating):
        raise ValueError(
            f"scores for leaf {path!r} have dtype {score.dtype}; scores must be floats"
        )
    return score


def count_to_drop(fraction: Any, n: int) -> jax.Array:
    """k = round(fraction · n), rounding half to even, exactly, as an int32 scalar.

    A concrete ``fraction`` (a Python, NumPy or ``fractions.Fraction`` number, or a
    concrete array) is used at its exact (binary) value, in integer arithmetic: k = round(s · n)
    for every n. A traced one (inside ``jit``, where the transform's hyperparameters
    are) is the float32 s₃₂ it holds; k = round(s₃₂ · n) is still computed exactly (the
    product of s₃₂'s 24-bit significand and n in 32-bit integer limbs), so the only
    difference from round(s · n) is s's own float32 rounding: |s − s₃₂| · n ≤ 2⁻²⁵ · n,
    which changes k only when s · n lies that close to a half-integer. A traced value
    outside [0, 1] is clipped and a traced NaN drops nothing; the transform flags both
    in its state (:func:`dynprune.invalid_hyperparams`).

    Args:
      fraction: the fraction s to drop, in [0, 1].
      n: the number of entries, 0 <= n < 2³¹.

    Returns:
      k as an int32 scalar array.

    Raises:
      ValueError: if ``n`` is out of range, or a concrete ``fraction`` is not a finite
        number in [0, 1].

    Examples:
      round(0.9 · 25,557,032) = round(23,001,328.8); float32(0.9) is 0.9 − 2.4·10⁻⁸, and
      round(float32(0.9) · 25,557,032) = round(23,001,328.19):

      >>> import jax, dynprune as dp
      >>> int(dp.masks.count_to_drop(0.9, 25_557_032))
      23001329
      >>> int(jax.jit(dp.masks.count_to_drop, static_argnums=1)(0.9, 25_557_032))
      23001328
    """
    if not (isinstance(n, int | np.integer) and 0 <= n < 2**31):
        raise ValueError(f"count_to_drop needs an integer 0 <= n < 2**31, got n={n!r}")
    if not isinstance(fraction, jax.core.Tracer):
        checks.real("fraction", fraction, 0.0, 1.0)
        exact = fraction if isinstance(fraction, Fraction) else Fraction(float(fraction))
        return jnp.asarray(round(exact * int(n)), jnp.int32)
    s = jnp.clip(jnp.asarray(fraction, jnp.float32), 0.0, 1.0)
    return jnp.where(jnp.isnan(s), 0, _round_product(s, int(n)))


def _round_product(s: jax.Array, n: int) -> jax.Array:
    """round(s · n), half to even, exactly, for float32 s in [0, 1] and 0 <= n < 2³¹.

    s = m · 2⁻ᵗ with an integer significand m < 2²⁴ and t >= 23, so s · n = P / 2ᵗ with
    P = m · n < 2⁵⁵: P is formed in two uint32 words from 16-bit limbs, shifted right by
    t, and rounded by its guard bit (bit t − 1) and the sticky OR of the bits below it.
    """
    u32 = jnp.uint32
    bits = lax.bitcast_convert_type(s, u32)
    exponent = (bits >> 23) & u32(0xFF)
    stored = bits & u32(0x7FFFFF)
    m = jnp.where(exponent == 0, stored, stored | u32(0x800000))
    t = jnp.where(exponent == 0, 149, 150 - exponent.astype(jnp.int32))
    t = jnp.minimum(t, 57)  # P < 2^55: for t >= 57 the guard bit and the quotient are 0
    m0, m1 = m & u32(0xFFFF), m >> 16
    n0, n1 = u32(n & 0xFFFF), u32(n >> 16)
    low_product = m0 * n0
    middle = m0 * n1 + m1 * n0  # < 2^31 + 2^24: no overflow
    lo = low_product + (middle << 16)
    hi = m1 * n1 + (middle >> 16) + (lo < low_product).astype(u32)  # carry out of lo

    def shift_right(j: jax.Array) -> jax.Array:
        """floor(P / 2^j) mod 2^32, for 22 <= j <= 57."""
        j = j.astype(u32)
        below = (lo >> jnp.minimum(j, 31)) | (hi << jnp.clip(32 - j, 0, 31))
        return jnp.where(j < 32, below, hi >> jnp.clip(j - 32, 0, 31))

    def low_bits_nonzero(j: jax.Array) -> jax.Array:
        """Whether P mod 2^j != 0, for 22 <= j <= 57."""
        j = j.astype(u32)
        lo_mask = jnp.where(j >= 32, u32(0xFFFFFFFF), (u32(1) << jnp.minimum(j, 31)) - 1)
        hi_mask = jnp.where(j > 32, (u32(1) << jnp.clip(j - 32, 0, 31)) - 1, u32(0))
        return ((lo & lo_mask) != 0) | ((hi & hi_mask) != 0)

    quotient = shift_right(t)
    guard = (shift_right(t - 1) & u32(1)) == 1
    sticky = low_bits_nonzero(t - 1)
    up = guard & (sticky | ((quotient & u32(1)) == 1))
    return (quotient + up.astype(u32)).astype(jnp.int32)


def threshold(scores: PyTree, t: Any) -> PyTree:
    """Keep entries whose score is strictly greater than ``t``: m = [s > t].

    The origin document's rule (prune |w| <= t); with magnitude scores, Han et al.'s
    (2015). NaN scores are never kept. Unlike :func:`sparsity`, the number dropped
    depends on the scores.

    Args:
      scores: score tree (``None`` = not pruned), e.g. :func:`dynprune.scores.magnitude`.
      t: the threshold: a scalar (traced is fine), a tree with one value per scored
        leaf, or ``{regex: t, "default": t}`` (see :func:`dynprune.tree.resolve`).
        Concrete values must be finite; a traced NaN keeps nothing.

    Returns:
      Bool mask tree with the structure of ``scores``: True = kept, ``None`` on
      unpruned leaves (pair it with ``params`` by path, via
      :func:`dynprune.tree.map_scored`, not by zipping ``jax.tree.leaves``).

    Raises:
      ValueError: if a concrete ``t`` is NaN or infinite (which would drop or keep every
        entry), naming the leaf; if a per-leaf tree ``t`` does not match ``scores``; or
        if scores are not floating.
      TypeError: if a concrete ``t`` is not a number.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import masks, scores
      >>> params = {"fc": {"bias": jnp.zeros(2), "kernel": jnp.array([[0.5, -2.0], [3.0, 0.0]])}}
      >>> m = masks.threshold(scores.magnitude(params), 0.5)
      >>> jax.tree.map(lambda x: x.tolist(), m)
      {'fc': {'bias': None, 'kernel': [[False, True], [True, False]]}}
      >>> len(jax.tree.leaves(m)), len(jax.tree.leaves(m, is_leaf=lambda x: x is None))
      (1, 2)

    References:
      Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient
      Neural Networks", NeurIPS 2015.
    """
    per_leaf = tree_lib.resolve(t, scores, name="threshold")

    def keep(path: str, s: Any, tv: Any) -> jax.Array:
        if not isinstance(tv, jax.core.Tracer):
            checks.real(f"threshold for leaf {path!r}", tv)
        return _check_float(path, s) > tv

    return tree_lib.map_scored(keep, scores, per_leaf)


def sparsity(scores: PyTree, s: Any, *, scope: Scope = "layer") -> PyTree:
    """Drop exactly round(s · n) lowest-scored entries (``torch``: ``l1_unstructured``).

    Args:
      scores: score tree (``None`` = not pruned).
      s: target sparsity in [0, 1]. With ``scope="layer"``: a scalar, a per-leaf tree, or
        ``{regex: s, "default": s}``; each leaf loses round(s_l · n_l) entries.
        With ``scope="global"``: one scalar; round(s · Σ n_l) entries are dropped across
        all scored leaves, ranked jointly (``global_unstructured``).
      scope: ``"layer"`` (default) or ``"global"``.

    Returns:
      Bool mask tree with the structure of ``scores``: True = kept, ``None`` on
      unpruned leaves (pair it with ``params`` by path, via
      :func:`dynprune.tree.map_scored` or ``is_leaf=lambda x: x is None``, not by
      zipping ``jax.tree.leaves``). Selection is exact and O(n)
      (:func:`dynprune.select.drop_lowest`); ties are dropped in position order; NaN
      scores rank lowest.

    Raises:
      ValueError: if ``scope`` is not ``"layer"`` or ``"global"``; if a concrete ``s``
        is NaN, infinite or outside [0, 1] (naming the leaf, or ``'<global>'``); if a
        per-leaf tree ``s`` does not match ``scores``; or if scores are not floating.
      TypeError: if a concrete ``s`` is not a number (with ``scope="global"``, also a
        tree or dict ``s``).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import masks
      >>> s = {"a": jnp.array([4.0, 1.0, 3.0, 2.0]), "b": jnp.array([5.0, 6.0]), "c": None}
      >>> jax.tree.map(lambda x: x.tolist(), masks.sparsity(s, 0.5))
      {'a': [True, False, True, False], 'b': [False, True], 'c': None}
      >>> jax.tree.map(lambda x: x.tolist(), masks.sparsity(s, 0.5, scope="global"))
      {'a': [True, False, False, False], 'b': [True, True], 'c': None}
      >>> masks.sparsity(s, 1.5)
      Traceback (most recent call last):
      ...
      ValueError: sparsity for leaf 'a' must be a finite number in [0, 1], got 1.5
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
    2021; TF-MOT ``sparsity_m_by_n``). Within a group, an entry is kept when fewer than
    ``n`` entries rank above it. Ties keep the later input; NaN ranks lowest.

    Args:
      scores: score tree (``None`` = not pruned) with element scores of rank >= 2.
      n: entries kept per group, 0 <= n <= m.
      m: group size, >= 1; must divide every scored leaf's input axis.

    Returns:
      Bool mask tree with the structure of ``scores``: True = kept (exactly ``n`` per
      group), ``None`` on unpruned leaves (pair it with ``params`` by path, via
      :func:`dynprune.tree.map_scored`, not by zipping ``jax.tree.leaves``).

    Raises:
      ValueError: if ``n`` and ``m`` are not integers with 0 <= n <= m, m >= 1; or,
        naming the leaf, if a scored leaf has rank < 2, an input axis not divisible by
        ``m``, or non-floating scores.

    Examples:
      One output, four inputs: 2:4 keeps the two largest; with all scores tied, the
      later two:

      >>> import jax.numpy as jnp
      >>> from dynprune import masks
      >>> s = {"kernel": jnp.array([[1.0, 1.0], [4.0, 1.0], [3.0, 1.0], [2.0, 1.0]])}
      >>> masks.n_of_m(s, 2, 4)["kernel"].T.tolist()
      [[False, True, True, False], [False, False, True, True]]

    References:
      Mishra, Latorre, Pool, Stosic, Stosic, Venkatesh, Yu & Micikevicius,
      "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378, 2021.
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

    Args:
      scores: score tree (``None`` = not pruned), element- or neuron-shaped. A leaf
        whose axes but the last all have size 1 (a vector, or a kernel with one input)
        is used as it is.
      s: fraction of neurons to drop, in [0, 1], as in :func:`sparsity` (per leaf: a
        scalar, a tree or ``{regex: s, "default": s}``; global: one scalar).
      scope: ``"layer"`` (default) or ``"global"``. Global ranking compares reduced
        scores across leaves, whose scale may grow with fan-in (``"sum"``, ``"l2"``).
      reduce: ``"sum"`` (default), ``"l2"`` or ``"max"``: how element scores become one
        score per neuron.

    Returns:
      Neuron-shaped bool mask tree (``(1, ..., 1, out)`` per leaf; True = kept),
      ``None`` on unpruned leaves (pair it with ``params`` by path, via
      :func:`dynprune.tree.map_scored`, not by zipping ``jax.tree.leaves``).

    Raises:
      ValueError: if ``reduce`` or ``scope`` is unknown, a scored leaf is a scalar, or
        as :func:`sparsity` does for ``s``.
      TypeError: as :func:`sparsity` does for a non-number ``s``.

    Examples:
      Neuron sums 2, 5 and 0.75: a third of the neurons (one) goes, the last:

      >>> import jax, jax.numpy as jnp
      >>> from dynprune import masks, scores
      >>> kernel = jnp.array([[1.0, -2.0, 0.5], [1.0, 3.0, 0.25]])
      >>> params = {"fc": {"bias": jnp.array([1.0, 2.0, 3.0]), "kernel": kernel}}
      >>> m = masks.structured(scores.magnitude(params), 1 / 3)
      >>> jax.tree.map(lambda x: x.tolist(), m)
      {'fc': {'bias': None, 'kernel': [[True, True, False]]}}

    References:
      Li, Kadav, Durdanovic, Samet & Graf, "Pruning Filters for Efficient ConvNets",
      ICLR 2017. Fang, Ma, Song, Mi & Wang, "DepGraph: Towards Any Structural
      Pruning", CVPR 2023 (Torch-Pruning).
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

    A leaf named ``bias`` whose mask is ``None`` gets the mask of the ``kernel`` beside
    it (same parent path) when that mask is neuron-shaped, ``(1, ..., 1, out)`` with
    ``out`` the bias's length, reshaped to the bias's shape. Every other mask (element
    masks, biases already masked, leaves with no sibling kernel) is kept as it is.

    Args:
      masks: mask tree with the structure of ``params`` (``None`` = not pruned), e.g.
        from :func:`structured`.
      params: the parameter tree, for the biases' shapes.

    Returns:
      A mask tree with the structure of ``params``; still ``None`` on the leaves left
      unpruned (pair it with ``params`` by path, not by zipping ``jax.tree.leaves``).

    Raises:
      ValueError: if ``masks`` does not have the leaf paths of ``params``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import masks
      >>> params = {"fc": {"bias": jnp.array([1.0, 2.0, 3.0]), "kernel": jnp.ones((2, 3))}}
      >>> m = {"fc": {"bias": None, "kernel": jnp.array([[True, True, False]])}}
      >>> jax.tree.map(lambda x: x.tolist(), masks.with_bias(m, params))
      {'fc': {'bias': [True, True, False], 'kernel': [[True, True, False]]}}
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

    Pruned entries are selected away (``where(m, w, 0)``), not multiplied, so they are
    exactly 0.0 even where w holds NaN or ±inf (NaN · 0 would be NaN).

    With ``straight_through=True`` the forward value is the same but the gradient with
    respect to w is the identity: the straight-through estimator that lets pruned
    weights keep learning and come back (Guo et al. 2016; Bengio et al. 2013).

    Args:
      params: the parameter tree.
      masks: mask tree with the structure of ``params``: ``None`` leaves leave the
        parameter as it is; a bool array must broadcast to its leaf (neuron-shaped
        masks do).
      straight_through: if True, gradients pass through the mask unchanged; default
        False (pruned entries get zero gradient).

    Returns:
      A tree with the structure of ``params``: w where the mask is True, 0.0 (in w's
      dtype) where it is False, w itself where the mask is ``None``.

    Raises:
      ValueError: if the trees do not match or a mask does not broadcast to its leaf.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import masks
      >>> params = {"fc": {"bias": jnp.array([1.0, 2.0]), "kernel": jnp.array([[1.0, 2.0]])}}
      >>> m = {"fc": {"bias": None, "kernel": jnp.array([[True, False]])}}
      >>> jax.tree.map(lambda x: x.tolist(), masks.apply_masks(params, m))
      {'fc': {'bias': [1.0, 2.0], 'kernel': [[1.0, 0.0]]}}
      >>> loss = lambda p, st: masks.apply_masks(p, m, straight_through=st)["fc"]["kernel"].sum()
      >>> jax.grad(loss)(params, False)["fc"]["kernel"].tolist()
      [[1.0, 0.0]]
      >>> jax.grad(loss)(params, True)["fc"]["kernel"].tolist()
      [[1.0, 1.0]]

    References:
      Guo, Yao & Chen, "Dynamic Network Surgery for Efficient DNNs", NeurIPS 2016.
      Bengio, Léonard & Courville, "Estimating or Propagating Gradients Through
      Stochastic Neurons for Conditional Computation", arXiv:1308.3432, 2013.
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
        if straight_through:
            return _straight_through(p, m)
        return _select(p, m)

    return tree_lib.map_with_path(apply, params, masks)


def _select(p: jax.Array, m: jax.Array) -> jax.Array:
    return jnp.where(m, p, jnp.zeros((), jnp.result_type(p)))


@jax.custom_jvp
def _straight_through(p: jax.Array, m: jax.Array) -> jax.Array:
    """``where(m, p, 0)`` whose derivative with respect to p is the identity.

    A custom rule rather than p + stop_gradient(where(m, p, 0) − p), whose forward value
    is NaN wherever p is NaN or ±inf.
    """
    return _select(p, m)


@_straight_through.defjvp
def _straight_through_jvp(primals: tuple[Any, Any], tangents: tuple[Any, Any]) -> Any:
    p, m = primals
    p_dot, _ = tangents
    return _select(p, m), p_dot


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    return len(shape) <= len(target) and all(
        a in (1, b) for a, b in zip(shape[::-1], target[::-1], strict=False)
    )
