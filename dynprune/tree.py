"""Pytree paths and leaf filters shared by every transform in dynprune.

A *leaf path* is a readable string such as ``"fc1/kernel"``. It is computed from
`jax.tree_util` key paths, so it works the same on Flax Linen ``params`` dicts and on
Flax NNX ``nnx.State`` (whose key paths end in ``.value``; that suffix is dropped).

A *filter* decides, statically, which leaves are pruned: ``filter(path, leaf) -> bool``.
Score and mask trees carry ``None`` on leaves that are not pruned; every function in
dynprune maps over such trees with :func:`map_scored`.
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
    """``is_leaf`` predicate that makes ``None`` a leaf (unpruned positions in mask trees)."""
    return x is None


def leaf_path(key_path: Sequence[Any]) -> str:
    """Readable ``"a/b/c"`` path of a key path (NNX's trailing ``.value`` is dropped)."""
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

    Raises:
      ValueError: if two leaves have the same path (a key containing ``/``, such as
        ``"a/b"`` beside ``{"a": {"b": ...}}``); the message names it.
    """
    return _unique(
        [leaf_path(kp) for kp, _ in jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_none)]
    )


def map_with_path(fn: Callable[..., Any], tree: PyTree, *rest: PyTree) -> PyTree:
    """``jax.tree.map`` whose ``fn(path, leaf, *rest_leaves)`` also gets the readable leaf path.

    Raises:
      ValueError: if two leaves of ``tree`` have the same path (see :func:`paths`).
    """
    paths(tree)
    return jax.tree_util.tree_map_with_path(
        lambda kp, x, *r: fn(leaf_path(kp), x, *r), tree, *rest, is_leaf=is_none
    )


def check_same_structure(reference: PyTree, other: PyTree, *, what: str = "tree") -> None:
    """Raise ``ValueError`` naming the first differing leaf path if the structures differ.

    ``None`` leaves of ``other`` match any leaf of ``reference`` (unpruned positions).
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

    ``None`` leaves stay ``None``. ``rest`` trees must have the structure of ``scored``
    (with arrays where ``scored`` has ``None``); a mismatch raises ``ValueError``.
    """
    for other in rest:
        check_same_structure(other, scored, what="tree")

    def leaf_fn(path, x, *r):
        return None if x is None else fn(path, x, *r)

    return map_with_path(leaf_fn, scored, *rest)


def scored_leaves(scored: PyTree) -> list[tuple[str, jax.Array]]:
    """``[(path, leaf)]`` for the non-``None`` leaves of ``scored``, in flattening order.

    Raises:
      ValueError: if two leaves have the same path (see :func:`paths`).
    """
    flat = jax.tree_util.tree_leaves_with_path(scored, is_leaf=is_none)
    found = [(leaf_path(kp), x) for kp, x in flat if x is not None]
    _unique([p for p, _ in found])
    return found


def kernels(min_ndim: int = 2) -> Filter:
    """Filter for weight matrices and conv kernels: floating leaves with ``ndim >= min_ndim``.

    Biases, norms' scales and other vectors are excluded by default, as in
    ``torch.nn.utils.prune`` usage and Han et al. (2015), who prune weights, not biases.
    """

    def keep(path: str, leaf: Any) -> bool:
        del path
        return jnp.issubdtype(jnp.result_type(leaf), jnp.floating) and np.ndim(leaf) >= min_ndim

    return keep


def named(pattern: str) -> Filter:
    """Filter for leaves whose path matches the regular expression ``pattern`` (``re.search``)."""
    compiled = re.compile(pattern)
    return lambda path, leaf: compiled.search(path) is not None


def exclude(pattern: str, base: Filter | None = None) -> Filter:
    """``base`` (default :func:`kernels`) minus the leaves whose path matches ``pattern``."""
    base = kernels() if base is None else base
    compiled = re.compile(pattern)
    return lambda path, leaf: base(path, leaf) and compiled.search(path) is None


def all_of(*filters: Filter) -> Filter:
    """Filter that keeps a leaf only if every one of ``filters`` does."""
    return lambda path, leaf: all(f(path, leaf) for f in filters)


def exclude_first_last(
    tree: PyTree, *, first: bool = True, last: bool = True, base: Filter | None = None
) -> Filter:
    """``base`` minus the first and/or last selected leaf of ``tree`` in flattening order.

    Flattening order is sorted dict-key order, which is network order for the built-in
    models (``conv1 < conv2 < fc1 < fc2``); for other naming schemes use :func:`exclude`.
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

    Raises ``ValueError`` naming the leaf path if the filter selects a non-floating leaf
    (integer or boolean parameters cannot be scored or masked), or if two leaves have
    the same path (see :func:`paths`).
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

    ``value`` may be a scalar, a tree with the structure of ``scored``, or a mapping
    ``{regex: value}`` with a ``"default"`` entry (per-leaf overrides, first match wins).
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
        return map_scored(lambda p, x, v: v, scored, value)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _path_leaves(tree: PyTree) -> list[tuple[str, Any]]:
    found = [(leaf_path(kp), x) for kp, x in jax.tree_util.tree_leaves_with_path(tree)]
    _unique([p for p, _ in found])
    return found
