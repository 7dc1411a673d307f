"""Layer-wise sparsity distributions: how a model-level target is split across leaves.

Each function returns a tree with one sparsity per scored leaf (``None`` elsewhere), to be
passed as ``s`` to :func:`dynprune.masks.sparsity`. The global target may be traced.
For a single global ranking instead, use ``dynprune.masks.sparsity(..., scope="global")``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import jax.numpy as jnp
import numpy as np

from dynprune import tree as tree_lib

PyTree = Any

__all__ = ["erk", "override", "uniform"]


def uniform(scored: PyTree, sparsity: Any) -> PyTree:
    """Every scored leaf gets the same sparsity s_l = s."""
    return tree_lib.map_scored(lambda path, x: jnp.asarray(sparsity, jnp.float32), scored)


def erk(scored: PyTree, sparsity: Any, *, power_scale: float = 1.0) -> PyTree:
    """Erdős–Rényi-Kernel (Evci et al. 2020; Mocanu et al. 2018 for Dense).

    Density of leaf l: d_l = min(1, ε · (Σ_i k_i / Π_i k_i)^power_scale) for a kernel of
    shape (k_1, …, k_r) — (n_in + n_out)/(n_in · n_out) for Dense, (h + w + n_in + n_out)/
    (h · w · n_in · n_out) for conv — with ε chosen so that Σ_l d_l n_l = (1 − s) Σ_l n_l.
    While some density would exceed 1, the leaf with the largest raw density is made dense
    and ε is solved again for the rest, as in the authors' code (a fixed number of passes,
    one per leaf, so a traced ``sparsity`` works).

    References:
      Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
    """
    leaves = tree_lib.scored_leaves(scored)
    if not leaves:
        return scored
    sizes = np.array([math.prod(np.shape(x)) for _, x in leaves], np.float32)
    raw = np.array(
        [(sum(np.shape(x)) / math.prod(np.shape(x))) ** power_scale for _, x in leaves],
        np.float32,
    )
    target_nonzeros = (1.0 - jnp.asarray(sparsity, jnp.float32)) * sizes.sum()

    def solve_eps(dense: jnp.ndarray) -> jnp.ndarray:
        budget = target_nonzeros - jnp.sum(jnp.where(dense, sizes, 0.0))
        return budget / jnp.maximum(jnp.sum(jnp.where(dense, 0.0, raw * sizes)), 1e-12)

    dense = jnp.zeros(len(leaves), bool)
    for _ in leaves:
        over = ~dense & (solve_eps(dense) * raw > 1.0)
        densest = jnp.max(jnp.where(over, raw, -jnp.inf))
        dense = dense | (over & (raw == densest))
    eps = solve_eps(dense)
    density = jnp.where(dense, 1.0, jnp.clip(eps * raw, 0.0, 1.0))
    by_path = {path: 1.0 - density[i] for i, (path, _) in enumerate(leaves)}
    return tree_lib.map_scored(lambda path, x: by_path[path], scored)


def override(sparsities: PyTree, rules: dict[str, Any]) -> PyTree:
    """Replace the sparsity of leaves whose path matches a regex in ``rules`` (first match).

    Examples: keep the first layer dense with ``override(s, {"conv1": 0.0})``.
    """
    compiled = [(re.compile(k), v) for k, v in rules.items()]

    def pick(path: str, s: Any) -> Any:
        for pattern, v in compiled:
            if pattern.search(path):
                return jnp.asarray(v, jnp.float32)
        return s

    return tree_lib.map_scored(pick, sparsities)
