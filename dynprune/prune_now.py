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

    With scores s (default |w|), per leaf of n entries (``scope="layer"``) or over all
    selected leaves (``scope="global"``):

        sparsity: drop the round(sparsity · n) lowest-scored entries (ties in position order);
        threshold: m = [s > threshold], i.e. prune s <= threshold.

    ``structured=True`` ranks whole output neurons (conv channels) by their summed scores
    instead and extends the masks to the biases. Like ``torch.nn.utils.prune``'s
    ``l1_unstructured`` / ``global_unstructured`` / ``ln_structured`` followed by
    ``prune.remove``.

    Args:
      params: Linen params dict or NNX ``nnx.State``.
      sparsity: fraction to drop, in [0, 1]: a scalar, a per-leaf tree, or
        ``{regex: s, "default": s}`` (one scalar for ``scope="global"``); see
        :func:`dynprune.masks.sparsity`. Default ``None``: use ``threshold``.
      threshold: keep score > threshold, a finite scalar (or per-leaf tree / ``{regex: t,
        "default": t}``); see :func:`dynprune.masks.threshold`. Default ``None``: use
        ``sparsity``.
      score: a score function ``f(params, filter=...)`` (default
        :func:`dynprune.scores.magnitude`, |w|) or an already computed score tree (``None``
        on leaves not to prune; ``filter`` is then unused).
      scope: ``"layer"`` (default) or ``"global"`` ranking (sparsity only).
      structured: remove whole output neurons and their biases (sparsity only; default
        False).
      filter: which leaves to prune (default: kernels, floating leaves with ndim >= 2).

    Returns:
      ``(pruned_params, masks)``; pruned entries are exactly 0.0, ``masks`` has ``None`` on
      leaves that were not pruned.

    Raises:
      ValueError: if neither or both of ``sparsity`` and ``threshold`` are given, if
        ``threshold`` comes with a non-default ``scope`` or ``structured``, or a concrete
        sparsity is outside [0, 1] or a threshold is not finite (naming the leaf).
      TypeError: if a concrete sparsity or threshold is not a number.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.array([[0.1, -2.0], [3.0, -0.4]]), "bias": jnp.ones(2)}}
      >>> pruned, masks = dp.prune_now(params, sparsity=0.5)
      >>> pruned["fc"]["kernel"].tolist(), masks["fc"]["bias"]
      ([[0.0, -2.0], [3.0, 0.0]], None)
      >>> dp.prune_now(params, threshold=2.5)[0]["fc"]["kernel"].tolist()
      [[0.0, 0.0], [3.0, 0.0]]

    References:
      Han et al., "Learning both Weights and Connections for Efficient Neural Networks",
      NeurIPS 2015 (magnitude pruning).
    """
    if (sparsity is None) == (threshold is None):
        raise ValueError("prune_now needs exactly one of sparsity= or threshold=")
    if threshold is not None and (scope != "layer" or structured):
        raise ValueError(
            "prune_now: scope= and structured= apply to sparsity= only, not threshold=; "
            f"got scope={scope!r}, structured={structured!r}"
        )
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
