"""One-shot, post-training pruning of a parameter tree (no optimizer involved)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from dynprune import masks as masks_lib
from dynprune import scores as scores_lib
from dynprune import tree as tree_lib
from dynprune.pruner import PyTree, Scope

__all__ = ["prune_now"]


def prune_now(
    params: PyTree,
    *,
    sparsity: Any = None,
    threshold: Any = None,
    score: Callable[..., PyTree] | PyTree = scores_lib.magnitude,
    scope: Scope = "layer",
    structured: bool = False,
    filter: tree_lib.Filter | None = None,
) -> tuple[PyTree, PyTree]:
    """Prune ``params`` once: by exact ``sparsity`` or by score ``threshold`` (one of the two).

    Args:
      params: Linen params dict or NNX ``nnx.State``.
      sparsity: fraction to drop (see :func:`dynprune.masks.sparsity`).
      threshold: keep score > threshold (see :func:`dynprune.masks.threshold`).
      score: a score function ``f(params, filter=...)`` or an already computed score tree.
      scope: ``"layer"`` or ``"global"`` ranking (sparsity only).
      structured: remove whole output neurons and their biases (sparsity only).
      filter: which leaves to prune (default: kernels).

    Returns:
      ``(pruned_params, masks)``; pruned entries are exactly 0.0. Like
      ``torch.nn.utils.prune`` followed by ``prune.remove``.
    """
    if (sparsity is None) == (threshold is None):
        raise ValueError("prune_now needs exactly one of sparsity= or threshold=")
    scores = score(params, filter=filter) if callable(score) else score
    if threshold is not None:
        mask_tree = masks_lib.threshold(scores, threshold)
    else:
        mask_fn = masks_lib.structured if structured else masks_lib.sparsity
        # One compiled program instead of op-by-op dispatch; a concrete sparsity is still
        # validated while tracing, so errors name the leaf.
        mask_tree = jax.jit(lambda s: mask_fn(s, sparsity, scope=scope))(scores)
        if structured:
            mask_tree = masks_lib.with_bias(mask_tree, params)
    return masks_lib.apply_masks(params, mask_tree), mask_tree
