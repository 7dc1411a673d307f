"""Sparsity accounting: per-leaf and total size, nonzeros, sparsity and compression."""

from __future__ import annotations

from typing import Any

import numpy as np

from dynprune import masks as masks_lib
from dynprune import tree as tree_lib
from dynprune.pruner import PyTree

__all__ = ["format_summary", "summary"]


def summary(params: PyTree, masks: PyTree | None = None) -> dict[str, Any]:
    """Count what is left after masking: size, nonzeros, sparsity and compression.

    Nonzeros are counted on w ⊙ m (so weights that are 0 for other reasons count as pruned
    too). For a leaf of n entries with z nonzeros, and over a set of leaves,

        sparsity = 1 − z / n,   compression = Σ n / Σ z.

    Every leaf — biases included — enters the totals; compression = total size ÷
    total nonzeros (the convention of Han et al. 2015 and Guo et al. 2016 counts all
    parameters; ``pruned_only`` gives the figures over pruned leaves alone). A leaf is
    *pruned* when it has a mask, even one that keeps everything (e.g. a layer ERK makes
    dense: sparsity 0.0, ``"pruned": True``); a leaf whose mask is ``None`` is not pruned
    (``"pruned": False``), and :func:`format_summary` says so.

    Args:
      params: Linen params dict or NNX ``nnx.State`` (arrays, concrete: not under ``jit``).
      masks: a mask tree with the structure of ``params`` (``None`` on unpruned leaves), e.g.
        ``dp.masks_of(opt_state)``; default ``None``: no leaf is pruned and the nonzeros of
        ``params`` themselves are counted.

    Returns:
      ``{"leaves": {path: {"size", "nonzeros", "sparsity", "pruned"}}, "total": {...},
      "pruned_only": {...}}`` with Python numbers (JSON-ready); ``"total"`` and
      ``"pruned_only"`` hold ``"size"``, ``"nonzeros"``, ``"sparsity"`` and
      ``"compression"`` (``inf`` when no nonzero is left). Render it with
      :func:`format_summary`.

    Raises:
      ValueError: if ``masks`` does not match the structure of ``params``, or a mask does
        not broadcast to its leaf.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "bias": jnp.ones(2)}}
      >>> masks = {"fc": {"kernel": jnp.array([[False, True], [False, True]]), "bias": None}}
      >>> report = dp.summary(params, masks)
      >>> report["leaves"]["fc/kernel"]
      {'size': 4, 'nonzeros': 2, 'sparsity': 0.5, 'pruned': True}
      >>> report["leaves"]["fc/bias"]["pruned"], report["total"]["compression"]
      (False, 1.5)

    References:
      Han et al., "Learning both Weights and Connections for Efficient Neural Networks",
      NeurIPS 2015; Guo et al., "Dynamic Network Surgery for Efficient DNNs", NeurIPS 2016.
    """
    effective = params if masks is None else masks_lib.apply_masks(params, masks)
    pruned_paths = set() if masks is None else {p for p, _ in tree_lib.scored_leaves(masks)}
    leaves = {}
    for path, w in tree_lib.scored_leaves(effective):
        size = int(np.size(w))
        nonzeros = int(np.count_nonzero(np.asarray(w)))
        leaves[path] = {
            "size": size,
            "nonzeros": nonzeros,
            "sparsity": 1.0 - nonzeros / size if size else 0.0,
            "pruned": path in pruned_paths,
        }
    return {
        "leaves": leaves,
        "total": _totals(leaves.values()),
        "pruned_only": _totals(v for v in leaves.values() if v["pruned"]),
    }


def _totals(rows: Any) -> dict[str, float]:
    rows = list(rows)
    size = sum(r["size"] for r in rows)
    nonzeros = sum(r["nonzeros"] for r in rows)
    return {
        "size": size,
        "nonzeros": nonzeros,
        "sparsity": 1.0 - nonzeros / size if size else 0.0,
        "compression": size / nonzeros if nonzeros else float("inf"),
    }


def format_summary(report: dict[str, Any]) -> str:
    """A fixed-width table of :func:`summary`'s report, one row per leaf, then the totals.

    The ``mask`` column tells a pruned leaf (it has a mask: ``pruned``, even at 0.00%
    sparsity, e.g. a layer ERK keeps dense) from one that is not pruned (its mask is
    ``None``: ``not pruned``; its sparsity counts only the zeros it holds). The leaf
    column is as wide as the longest path.

    Args:
      report: what :func:`summary` returns.

    Returns:
      The table as one string (lines joined by ``"\\n"``), ending with the compression
      over all parameters.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "bias": jnp.ones(2)}}
      >>> masks = {"fc": {"kernel": jnp.array([[False, True], [False, True]]), "bias": None}}
      >>> print(dp.format_summary(dp.summary(params, masks)))
      leaf            size   nonzeros  sparsity  mask
      -----------------------------------------------------
      fc/bias            2          2     0.00%  not pruned
      fc/kernel          4          2    50.00%  pruned
      -----------------------------------------------------
      total              6          4    33.33%
      compression (all parameters): 1.5x
    """
    width = max([len("total"), *(len(path) for path in report["leaves"])])
    header = f"{'leaf':<{width}} {'size':>10} {'nonzeros':>10} {'sparsity':>9}  mask"
    rule = "-" * (len(header) - len("mask") + len("not pruned"))

    def line(name: str, row: dict[str, Any]) -> str:
        return f"{name:<{width}} {row['size']:>10,} {row['nonzeros']:>10,} {row['sparsity']:>9.2%}"

    lines = [header, rule]
    for path, row in report["leaves"].items():
        lines.append(f"{line(path, row)}  {'pruned' if row['pruned'] else 'not pruned'}")
    lines.extend([rule, line("total", report["total"])])
    lines.append(f"compression (all parameters): {report['total']['compression']:.1f}x")
    return "\n".join(lines)
