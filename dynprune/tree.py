"""Pytree paths and leaf filters shared by every transform in dynprune.

A *leaf path* is a readable string such as ``"fc1/kernel"``. It is computed from
`jax.tree_util` key paths, so it works the same on Flax Linen ``params`` dicts and on
Flax NNX ``nnx.State`` (whose key paths end in ``.value``; that suffix is dropped).

A *filter* (:data:`Filter`) decides, statically, which leaves are pruned:
``filter(path, leaf) -> bool``. :func:`kernels` (the default), :func:`named`,
:func:`exclude`, :func:`all_of` and :func:`exclude_first_last` build the usual ones.

Score and mask trees carry ``None`` on leaves that are not pruned; every function in
dynprune maps over such trees with :func:`map_scored`. JAX treats ``None`` as an empty
subtree, not as a leaf, so ``jax.tree.leaves(masks)`` is *shorter* than
``jax.tree.leaves(params)`` and zipping the two pairs masks with the wrong parameters.
Pass ``is_leaf=tree.is_none`` (equivalently ``is_leaf=lambda x: x is None``), or use
:func:`map_scored`, :func:`map_with_path` and :func:`scored_leaves`, which do.

Examples:
  A filter is any ``(path, leaf) -> bool``; :func:`select` applies one:

  >>> import jax, jax.numpy as jnp
  >>> from dynprune import tree
  >>> params = {"fc": {"bias": jnp.zeros(2), "kernel": jnp.ones((3, 2))}}
  >>> only_kernels: tree.Filter = lambda path, leaf: path.endswith("kernel")
  >>> selected = tree.select(params, only_kernels)
  >>> selected["fc"]["bias"] is None
  True
  >>> len(jax.tree.leaves(params)), len(jax.tree.leaves(selected))
  (2, 1)
  >>> len(jax.tree.leaves(selected, is_leaf=tree.is_none))
  2
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Filter = Callable[[str, Any], bool]
"""A static leaf filter: ``filter(path, leaf) -> bool``, True where the leaf is pruned.

``path`` is the leaf's readable path (:func:`leaf_path`, e.g. ``"fc1/kernel"``) and
``leaf`` the parameter array. The answer must depend only on the path, shape and dtype:
inside ``jit`` the leaf is a tracer, and the choice is made once, at trace time. See the
module's example.
"""

__all__ = [
    "Filter",
    "all_of",
    "check_same_structure",
    "exclude",
    "exclude_first_last",
    "is_none",
    "kernels",
    "leaf_path",
    "map_scored",
    "map_with_path",
    "named",
    "paths",
    "resolve",
    "scored_leaves",
    "select",
]


def is_none(x: Any) -> bool:
    """``is_leaf`` predicate that makes ``None`` a leaf (unpruned positions in mask trees).

    JAX treats ``None`` as an empty subtree, so ``jax.tree.leaves`` of a mask or score
    tree skips the unpruned positions and no longer lines up with the parameters'
    leaves; ``jax.tree.leaves(masks, is_leaf=is_none)`` keeps one entry per parameter.

    Args:
      x: a pytree node.

    Returns:
      True if ``x`` is ``None``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import tree
      >>> params = {"bias": jnp.zeros(2), "kernel": jnp.array([[1.0, 2.0]])}
      >>> masks = {"bias": None, "kernel": jnp.array([[True, False]])}
      >>> len(jax.tree.leaves(params)), len(jax.tree.leaves(masks))  # misaligned
      (2, 1)
      >>> aligned = jax.tree.leaves(masks, is_leaf=tree.is_none)
      >>> [(w.shape, m if m is None else m.shape) for w, m in zip(jax.tree.leaves(params), aligned)]
      [((2,), None), ((1, 2), (1, 2))]
    """
    return x is None


def leaf_path(key_path: Sequence[Any]) -> str:
    """Readable ``"a/b/c"`` path of a key path (NNX's trailing ``.value`` is dropped).

    Dict keys, attribute names, sequence indices and flattened indices give one part
    each (other key types their ``str``). A last part ``"value"`` is dropped when there
    is more than one part, whatever its key type, so NNX's ``fc/kernel/.value`` and a
    Linen ``{"fc": {"kernel": ...}}`` both read ``"fc/kernel"``.

    Args:
      key_path: a ``jax.tree_util`` key path, as given by
        ``jax.tree_util.tree_leaves_with_path`` or ``tree_map_with_path``.

    Returns:
      The parts joined with ``"/"`` (``""`` for the empty key path of a bare leaf).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import tree
      >>> [(key_path, _)] = jax.tree_util.tree_leaves_with_path({"fc": {"kernel": jnp.ones(2)}})
      >>> tree.leaf_path(key_path)
      'fc/kernel'
      >>> K = jax.tree_util
      >>> tree.leaf_path((K.DictKey("fc"), K.DictKey("kernel"), K.GetAttrKey("value")))
      'fc/kernel'
      >>> tree.leaf_path((K.DictKey("layers"), K.SequenceKey(0)))
      'layers/0'
    """
    parts = []
    for key in key_path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    if len(parts) > 1 and parts[-1] == "value":
        parts.pop()
    return "/".join(parts)


def _unique(found: list[str]) -> list[str]:
    """``found`` after checking that no two leaves share a path."""
    seen: set[str] = set()
    for path in found:
        if path in seen:
            raise ValueError(
                f"two leaves have the same path {path!r} (as keys {{'a': {{'b': ...}}}} and "
                "'a/b' would), so they would share one score and mask; rename a key"
            )
        seen.add(path)
    return found


def paths(tree: PyTree) -> list[str]:
    """Leaf paths of ``tree`` in flattening order (``None`` leaves included).

    Unlike ``jax.tree.leaves``, ``None`` counts as a leaf here, so the paths of a mask
    tree are those of its parameter tree.

    Args:
      tree: any pytree: parameters, or a score or mask tree with ``None`` leaves.

    Returns:
      One :func:`leaf_path` per leaf, in ``jax.tree_util`` flattening order (sorted
      keys for dicts).

    Raises:
      ValueError: if two leaves have the same path (a key containing ``/``, such as
        ``"a/b"`` beside ``{"a": {"b": ...}}``); the message names it.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import tree
      >>> tree.paths({"fc": {"kernel": jnp.ones((2, 2)), "bias": None}})
      ['fc/bias', 'fc/kernel']
      >>> tree.paths({"a/b": 1.0, "a": {"b": 2.0}})  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: two leaves have the same path 'a/b' ...
    """
    return _unique(
        [leaf_path(kp) for kp, _ in jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_none)]
    )


def map_with_path(fn: Callable[..., Any], tree: PyTree, *rest: PyTree) -> PyTree:
    """``jax.tree.map`` whose ``fn(path, leaf, *rest_leaves)`` also gets the readable leaf path.

    ``None`` is a leaf (``is_leaf=is_none``): ``fn`` is called on the unpruned positions
    of a mask tree too, with ``leaf=None``. To skip them, use :func:`map_scored`.

    Args:
      fn: called as ``fn(path, leaf, *rest_leaves)`` for every leaf of ``tree``, with
        ``path`` the leaf's :func:`leaf_path`.
      tree: the pytree mapped over; its structure is the result's.
      *rest: more trees with the structure of ``tree`` (as in ``jax.tree.map``), whose
        leaves at the same positions are passed to ``fn``.

    Returns:
      A tree with the structure of ``tree`` holding ``fn``'s results.

    Raises:
      ValueError: if two leaves of ``tree`` have the same path (see :func:`paths`), or
        (from ``jax.tree_util``) if a ``rest`` tree does not have ``tree``'s structure.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import tree
      >>> masks = {"fc": {"bias": None, "kernel": jnp.array([True, False, True])}}
      >>> tree.map_with_path(lambda path, m: path if m is None else int(m.sum()), masks)
      {'fc': {'bias': 'fc/bias', 'kernel': 2}}
    """
    paths(tree)
    return jax.tree_util.tree_map_with_path(
        lambda kp, x, *r: fn(leaf_path(kp), x, *r), tree, *rest, is_leaf=is_none
    )


def check_same_structure(reference: PyTree, other: PyTree, *, what: str = "tree") -> None:
    """Raise ``ValueError`` naming the first differing leaf path if the structures differ.

    Only the leaf paths (:func:`paths`, ``None`` counted as a leaf) and their order are
    compared, so a ``None`` leaf of ``other`` matches any leaf of ``reference``
    (unpruned positions): a mask tree matches its parameter tree.

    Args:
      reference: the tree to match, usually the parameters.
      other: the tree checked against it (a mask, score or per-leaf value tree).
      what: what ``other`` is, for the message (default ``"tree"``).

    Returns:
      None.

    Raises:
      ValueError: if the paths differ: the message names the first path of
        ``reference`` missing from ``other``, the first path of ``other`` not in
        ``reference``, or says the order differs; or if either tree has two leaves with
        the same path (see :func:`paths`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import tree
      >>> params = {"fc": {"bias": jnp.zeros(2), "kernel": jnp.ones((2, 2))}}
      >>> tree.check_same_structure(params, {"fc": {"bias": None, "kernel": jnp.ones((2, 2))}})
      >>> tree.check_same_structure(params, {"fc": {"kernel": jnp.ones((2, 2))}}, what="masks")
      Traceback (most recent call last):
      ...
      ValueError: masks does not match the parameter tree: missing leaf path 'fc/bias'
    """
    ref_paths = paths(reference)
    other_paths = paths(other)
    if ref_paths == other_paths:
        return
    missing = [p for p in ref_paths if p not in set(other_paths)]
    extra = [p for p in other_paths if p not in set(ref_paths)]
    detail = []
    if missing:
        detail.append(f"missing leaf path {missing[0]!r}")
    if extra:
        detail.append(f"unexpected leaf path {extra[0]!r}")
    if not detail:
        detail.append("leaves in a different order")
    raise ValueError(f"{what} does not match the parameter tree: {'; '.join(detail)}")


def map_scored(fn: Callable[..., Any], scored: PyTree, *rest: PyTree) -> PyTree:
    """Map ``fn(path, leaf, *rest_leaves)`` over the non-``None`` leaves of ``scored``.

    The way to walk a score or mask tree beside the parameters: ``None`` leaves stay
    ``None`` and ``fn`` is not called there, and each leaf is paired with the ``rest``
    leaves at the same path. (Zipping ``jax.tree.leaves`` of the trees instead
    misaligns them, since ``jax.tree.leaves`` drops ``None``; see :func:`is_none`.)

    Args:
      fn: called as ``fn(path, leaf, *rest_leaves)`` on each non-``None`` leaf of
        ``scored``, with ``path`` its :func:`leaf_path`.
      scored: a score or mask tree (``None`` = not pruned).
      *rest: trees with the structure of ``scored``, such as the parameters or another
        mask tree; they may hold anything (arrays, ``None``) where ``scored`` has
        ``None``, which ``fn`` never sees.

    Returns:
      A tree with the structure of ``scored``: ``fn``'s result on the scored leaves,
      ``None`` elsewhere.

    Raises:
      ValueError: if a ``rest`` tree's leaf paths differ from those of ``scored`` (see
        :func:`check_same_structure`, with the ``rest`` tree as the reference, e.g. the
        parameters: a path ``scored`` lacks is "missing"), or two leaves share a path.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import tree
      >>> params = {"fc": {"bias": jnp.ones(2), "kernel": jnp.array([[1.0, 2.0]])}}
      >>> masks = {"fc": {"bias": None, "kernel": jnp.array([[True, False]])}}
      >>> tree.map_scored(lambda path, m, w: jnp.where(m, w, 0.0).tolist(), masks, params)
      {'fc': {'bias': None, 'kernel': [[1.0, 0.0]]}}
    """
    for other in rest:
        check_same_structure(other, scored, what="tree")

    def leaf_fn(path, x, *r):
        return None if x is None else fn(path, x, *r)

    return map_with_path(leaf_fn, scored, *rest)


def scored_leaves(scored: PyTree) -> list[tuple[str, jax.Array]]:
    """``[(path, leaf)]`` for the non-``None`` leaves of ``scored``, in flattening order.

    Each mask or score comes with its path, so it can be matched to its parameter
    without relying on position (``jax.tree.leaves`` drops the ``None`` leaves, so its
    positions differ from the parameters'; see :func:`is_none`).

    Args:
      scored: a score or mask tree (``None`` = not pruned).

    Returns:
      The ``(leaf_path, leaf)`` pairs of the non-``None`` leaves.

    Raises:
      ValueError: if two leaves have the same path (see :func:`paths`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import tree
      >>> masks = {"fc": {"bias": None, "kernel": jnp.array([[True, False]])}}
      >>> [(path, m.tolist()) for path, m in tree.scored_leaves(masks)]
      [('fc/kernel', [[True, False]])]
    """
    flat = jax.tree_util.tree_leaves_with_path(scored, is_leaf=is_none)
    found = [(leaf_path(kp), x) for kp, x in flat if x is not None]
    _unique([p for p, _ in found])
    return found


def kernels(min_ndim: int = 2) -> Filter:
    """Filter for weight matrices and conv kernels: floating leaves with ``ndim >= min_ndim``.

    Biases, norms' scales and other vectors are excluded by default, as in
    ``torch.nn.utils.prune`` usage and Han et al. (2015), who prune weights, not biases.
    This is the default filter of :func:`select` and of every score.

    Args:
      min_ndim: the smallest rank of a selected leaf; default 2 (a Dense ``(in, out)``
        or conv ``(h, w, in, out)`` kernel). 1 also selects biases and scales.

    Returns:
      A :data:`Filter`, True for floating leaves of rank ``>= min_ndim``, whatever
      their path.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import tree
      >>> keep = tree.kernels()
      >>> keep("fc/kernel", jnp.ones((3, 2))), keep("fc/bias", jnp.ones(2))
      (True, False)
      >>> keep("embed/ids", jnp.ones((3, 2), jnp.int32))
      False

    References:
      Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient
      Neural Networks", NeurIPS 2015.
    """

    def keep(path: str, leaf: Any) -> bool:
        del path
        return jnp.issubdtype(jnp.result_type(leaf), jnp.floating) and np.ndim(leaf) >= min_ndim

    return keep


def named(pattern: str) -> Filter:
    """Filter for leaves whose path matches the regular expression ``pattern`` (``re.search``).

    Neither rank nor dtype is checked: ``named("fc1")`` selects ``fc1/bias`` too
    (combine with :func:`kernels` through :func:`all_of` to keep kernels only), and
    :func:`select` raises if it selects a non-floating leaf.

    Args:
      pattern: a regular expression searched anywhere in the leaf path (anchor it with
        ``^`` / ``$`` to match whole parts).

    Returns:
      A :data:`Filter`, True where ``pattern`` is found in the path.

    Examples:
      >>> from dynprune import tree
      >>> keep = tree.named(r"^fc1/")
      >>> keep("fc1/kernel", None), keep("fc1/bias", None), keep("fc2/kernel", None)
      (True, True, False)
    """
    compiled = re.compile(pattern)
    return lambda path, leaf: compiled.search(path) is not None


def exclude(pattern: str, base: Filter | None = None) -> Filter:
    """``base`` (default :func:`kernels`) minus the leaves whose path matches ``pattern``.

    Args:
      pattern: a regular expression searched (``re.search``) in the leaf path; matching
        leaves are not pruned.
      base: the filter to subtract from; default :func:`kernels` ``()``.

    Returns:
      A :data:`Filter`, True where ``base`` is and ``pattern`` is not found.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import tree
      >>> keep = tree.exclude(r"^head/")
      >>> keep("body/kernel", jnp.ones((4, 4))), keep("head/kernel", jnp.ones((4, 4)))
      (True, False)
    """
    base = kernels() if base is None else base
    compiled = re.compile(pattern)
    return lambda path, leaf: base(path, leaf) and compiled.search(path) is None


def all_of(*filters: Filter) -> Filter:
    """Filter that keeps a leaf only if every one of ``filters`` does.

    Args:
      *filters: the :data:`Filter` s to combine. With none, every leaf is kept (and
        :func:`select` then raises on a non-floating leaf).

    Returns:
      A :data:`Filter`: the logical AND of ``filters``, evaluated left to right.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import tree
      >>> keep = tree.all_of(tree.kernels(), tree.named("conv"))
      >>> keep("conv1/kernel", jnp.ones((3, 3, 1, 8))), keep("conv1/bias", jnp.ones(8))
      (True, False)
    """
    return lambda path, leaf: all(f(path, leaf) for f in filters)


def exclude_first_last(
    tree: PyTree, *, first: bool = True, last: bool = True, base: Filter | None = None
) -> Filter:
    """``base`` minus the first and/or last selected leaf of ``tree`` in flattening order.

    The common choice of leaving the input and output layers dense. Flattening order is
    sorted dict-key order, which is network order for the built-in models
    (``conv1 < conv2 < fc1 < fc2``) but not for every naming scheme (``layer10`` sorts
    before ``layer2``); for those use :func:`exclude`.

    Args:
      tree: the parameters, read once here to find the first and last leaf ``base``
        selects (the filter then compares paths).
      first: leave the first selected leaf unpruned; default True.
      last: leave the last selected leaf unpruned; default True.
      base: the filter to subtract from; default :func:`kernels` ``()``.

    Returns:
      A :data:`Filter`, True where ``base`` is, except on those one or two paths.

    Raises:
      ValueError: if two leaves of ``tree`` have the same path (see :func:`paths`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import tree
      >>> params = {name: {"kernel": jnp.ones((2, 2))} for name in ("fc1", "fc2", "fc3")}
      >>> keep = tree.exclude_first_last(params)
      >>> [path for path, _ in tree.scored_leaves(tree.select(params, keep))]
      ['fc2/kernel']
    """
    base = kernels() if base is None else base
    chosen = [p for p, x in _path_leaves(tree) if base(p, x)]
    dropped = set()
    if chosen and first:
        dropped.add(chosen[0])
    if chosen and last:
        dropped.add(chosen[-1])
    return lambda path, leaf: base(path, leaf) and path not in dropped


def select(tree: PyTree, filter: Filter | None = None) -> PyTree:
    """Static selection: a tree with the leaf itself where ``filter`` is true, ``None`` elsewhere.

    The starting point of every score tree. The result keeps the structure of ``tree``
    with ``None`` on unselected leaves, so ``jax.tree.leaves`` of it is shorter than of
    ``tree``: pair its leaves with the parameters' through :func:`map_scored` or
    ``is_leaf=is_none``, not by zipping ``jax.tree.leaves``.

    Args:
      tree: the parameters (``None`` leaves stay ``None``).
      filter: the :data:`Filter` choosing the pruned leaves; default :func:`kernels` ``()``.

    Returns:
      A tree with the structure of ``tree``: the selected leaves, ``None`` elsewhere.

    Raises:
      ValueError: naming the leaf path, if the filter selects a non-floating leaf
        (integer or boolean parameters cannot be scored or masked), or if two leaves
        have the same path (see :func:`paths`).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import tree
      >>> params = {"fc": {"bias": jnp.zeros(2), "kernel": jnp.ones((3, 2))}}
      >>> selected = tree.select(params)
      >>> selected["fc"]["bias"] is None, selected["fc"]["kernel"].shape
      (True, (3, 2))
      >>> tree.select({"step": jnp.int32(0)}, lambda path, leaf: True)
      Traceback (most recent call last):
      ...
      ValueError: leaf 'step' has dtype int32; only floating leaves can be pruned
    """
    filter = kernels() if filter is None else filter

    def pick(path: str, leaf: Any) -> Any:
        if leaf is None or not filter(path, leaf):
            return None
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"leaf {path!r} has dtype {dtype}; only floating leaves can be pruned")
        return leaf

    return map_with_path(pick, tree)


def resolve(value: Any, scored: PyTree, *, name: str) -> PyTree:
    """Broadcast a scalar (or accept a per-leaf tree) to one value per scored leaf.

    How per-layer hyperparameters (a sparsity, a threshold) are given: one value for
    all leaves, a tree of values, or regular-expression rules on the leaf paths.

    Args:
      value: one of

        - a scalar (a Python number or an array, traced or not): the same for every
          scored leaf;
        - a tree with the leaf paths of ``scored`` (anything, e.g. ``None``, where
          ``scored`` has ``None``);
        - a dict ``{regex: value, ..., "default": value}``: a leaf gets the value of
          the first regex (in dict order) found in its path (``re.search``), else
          ``"default"``. Without a ``"default"`` key the dict is read as a tree.
      scored: the score tree whose non-``None`` leaves get a value.
      name: the argument's name, prefixed to error messages (e.g. ``"sparsity"``).

    Returns:
      A tree with the structure of ``scored``: a value on each scored leaf, ``None``
      elsewhere. Values are not validated here.

    Raises:
      ValueError: prefixed with ``name``, if a tree ``value`` does not have the leaf
        paths of ``scored``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import tree
      >>> scored = {"conv": {"kernel": jnp.ones((3, 3, 1, 2))},
      ...           "fc": {"bias": None, "kernel": jnp.ones((4, 2))}}
      >>> tree.resolve(0.8, scored, name="sparsity")
      {'conv': {'kernel': 0.8}, 'fc': {'bias': None, 'kernel': 0.8}}
      >>> tree.resolve({"^conv": 0.5, "default": 0.9}, scored, name="sparsity")
      {'conv': {'kernel': 0.5}, 'fc': {'bias': None, 'kernel': 0.9}}
    """
    if isinstance(value, dict) and all(isinstance(k, str) for k in value) and "default" in value:
        rules = [(re.compile(k), v) for k, v in value.items() if k != "default"]

        def lookup(path: str, leaf: Any) -> Any:
            del leaf
            for pattern, v in rules:
                if pattern.search(path):
                    return v
            return value["default"]

        return map_scored(lookup, scored)
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(value, is_leaf=is_none)):
        return map_scored(lambda p, x: value, scored)
    try:
        # Checked against ``scored`` first: map_scored takes its ``rest`` trees (usually the
        # parameters) as the reference, and would call a leaf ``value`` lacks "unexpected".
        check_same_structure(scored, value, what="tree")
        return map_scored(lambda p, x, v: v, scored, value)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _path_leaves(tree: PyTree) -> list[tuple[str, Any]]:
    found = [(leaf_path(kp), x) for kp, x in jax.tree_util.tree_leaves_with_path(tree)]
    _unique([p for p, _ in found])
    return found
