"""Sparsity accounting: per-leaf and total size, nonzeros, sparsity and compression."""

from __future__ import annotations

from typing import Any

import numpy as np

from dynprune import masks as masks_lib
from dynprune import tree as tree_lib
from dynprune.pruner import PyTree

__all__ = ["format_summary", "summary"]


def summary(params: PyTree, masks: PyTree | None = None) -> dict[str, Any]:
    """Count what is left after masking.

    Nonzeros are counted on w ⊙ m (so weights that are 0 for other reasons count as pruned
    too). Every leaf — biases included — enters the totals; compression = total size ÷
    total nonzeros (the convention of Han et al. 2015 and Guo et al. 2016 counts all
    parameters; ``pruned_only`` gives the figures over pruned leaves alone).

    Returns:
      ``{"leaves": {path: {"size", "nonzeros", "sparsity", "pruned"}}, "total": {...},
      "pruned_only": {...}}`` with Python numbers (JSON-ready).
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
    """A fixed-width table of :func:`summary`'s report."""
    header = f"{'leaf':<32} {'size':>10} {'nonzeros':>10} {'sparsity':>9}"
    lines = [header, "-" * len(header)]
    for path, row in report["leaves"].items():
        mark = "" if row["pruned"] else " (not pruned)"
        lines.append(
            f"{path + mark:<32} {row['size']:>10,} {row['nonzeros']:>10,} {row['sparsity']:>9.2%}"
        )
    total = report["total"]
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<32} {total['size']:>10,} {total['nonzeros']:>10,} {total['sparsity']:>9.2%}"
    )
    lines.append(f"compression (all parameters): {total['compression']:.1f}x")
    return "\n".join(lines)
