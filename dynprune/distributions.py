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
    """Every scored leaf gets the same sparsity: s_l = s.

    Args:
      scored: a tree with an array on each leaf to prune and ``None`` elsewhere (a
        score or mask tree, or ``dp.tree.select(params)``); only the structure is read.
      sparsity: s, the target sparsity in [0, 1] (may be traced).

    Returns:
      A tree with a float32 scalar s on every scored leaf and ``None`` elsewhere.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> scored = {"a": {"kernel": jnp.ones((4, 4)), "bias": None}}
      >>> dp.distributions.uniform(scored, 0.5)["a"]["kernel"].item()
      0.5
    """
    return tree_lib.map_scored(lambda path, x: jnp.asarray(sparsity, jnp.float32), scored)


def erk(scored: PyTree, sparsity: Any, *, power_scale: float = 1.0) -> PyTree:
    """Erdős–Rényi-Kernel (Evci et al. 2020; Mocanu et al. 2018 for Dense).

    Density of leaf l: d_l = min(1, ε · (Σ_i k_i / Π_i k_i)^power_scale) for a kernel of
    shape (k_1, …, k_r) — (n_in + n_out)/(n_in · n_out) for Dense, (h + w + n_in + n_out)/
    (h · w · n_in · n_out) for conv — with ε chosen so that Σ_l d_l n_l = (1 − s) Σ_l n_l.
    While some density would exceed 1, the leaf with the largest raw density is made dense
    and ε is solved again for the rest, as in the authors' code (a fixed number of passes,
    one per leaf, so a traced ``sparsity`` works).

    Small leaves (few weights per unit of fan-in plus fan-out: a first conv layer on RGB
    input, a classifier head) get low sparsity, large ones high sparsity; leaves whose
    density would exceed 1 are left dense (s_l = 0), which happens more often the lower
    the target, and the remaining leaves are made sparser so that the model-level
    sparsity over the scored leaves is still s.

    Args:
      scored: a tree with an array on each leaf to prune and ``None`` elsewhere; only
        the shapes are read.
      sparsity: s, the model-level target sparsity in [0, 1] (may be traced).
      power_scale: exponent of the raw density (default 1.0, as in the paper; 0 gives
        every leaf the same sparsity s, as :func:`uniform` does).

    Returns:
      A tree with a float32 scalar s_l = 1 − d_l on every scored leaf and ``None``
      elsewhere.

    Examples:
      At 50%, the 4 x 4 leaf would need density 7.6, so it stays dense and the large
      leaf carries the whole budget:

      >>> import jax.numpy as jnp, dynprune as dp
      >>> scored = {"small": jnp.ones((4, 4)), "large": jnp.ones((64, 64)), "bias": None}
      >>> s = dp.distributions.erk(scored, 0.5)
      >>> round(s["small"].item(), 4), round(s["large"].item(), 4)
      (0.0, 0.502)

    References:
      Evci, Gale, Menick, Castro & Elsen, "Rigging the Lottery: Making All Tickets
      Winners", ICML 2020.
      Mocanu et al., "Scalable training of artificial neural networks with adaptive
      sparse connectivity inspired by network science", Nature Communications 2018.
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

    s_l = v for the first ``(pattern, v)`` of ``rules`` whose pattern ``re.search``-es
    leaf l's path (e.g. ``"conv1/kernel"``); other leaves keep their s_l. The other
    leaves do not compensate, so the model-level sparsity changes.

    Args:
      sparsities: a per-leaf sparsity tree (from :func:`uniform` or :func:`erk`).
      rules: ``{regex: sparsity}``, sparsities in [0, 1] (not checked here; the
        algorithms check them), tried in order.

    Returns:
      The tree with the matching leaves' sparsities replaced (as float32).

    Examples:
      Keep the first layer dense:

      >>> import jax.numpy as jnp, dynprune as dp
      >>> scored = {"conv1": {"kernel": jnp.ones((3, 3, 3, 8))}, "fc": {"kernel": jnp.ones((8, 2))}}
      >>> s = dp.distributions.override(dp.distributions.uniform(scored, 0.9), {"conv1": 0.0})
      >>> s["conv1"]["kernel"].item(), round(s["fc"]["kernel"].item(), 2)
      (0.0, 0.9)
    """
    compiled = [(re.compile(k), v) for k, v in rules.items()]

    def pick(path: str, s: Any) -> Any:
        for pattern, v in compiled:
            if pattern.search(path):
                return jnp.asarray(v, jnp.float32)
        return s

    return tree_lib.map_scored(pick, sparsities)
