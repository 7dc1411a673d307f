"""Compute accounting: dense and effective (sparse) FLOPs per layer, read off the jaxpr.

For every ``dot_general`` / ``conv_general_dilated`` whose weight operand is a parameter
leaf, MACs = (output elements) × (contraction length) for one example, and
FLOPs = 2 · MACs. The *effective* FLOPs of a pruned layer are its dense FLOPs times its
density (nonzeros / size): the count Han et al. (2015) and Guo et al. (2016) report, i.e.
what an ideal sparse kernel would do. Measured speed is a different question
(``experiments/bench.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from dynprune import masks as masks_lib
from dynprune import tree as tree_lib
from dynprune.pruner import PyTree

__all__ = ["flops"]


def _layer_macs(apply_fn: Callable[[PyTree, jax.Array], Any], params: PyTree, example: Any) -> dict:
    """{leaf path: MACs for one example} for every weight used by a matmul or convolution."""
    flat = jax.tree_util.tree_leaves_with_path(params)
    leaves = [x for _, x in flat]
    treedef = jax.tree.structure(params)
    closed = jax.make_jaxpr(lambda ls, x: apply_fn(jax.tree.unflatten(treedef, ls), x))(
        leaves, example
    )
    jaxpr = closed.jaxpr
    owner = {v: tree_lib.leaf_path(kp) for v, (kp, _) in zip(jaxpr.invars, flat, strict=False)}
    macs: dict[str, int] = {}

    def visit(jaxpr: Any, owner: dict) -> None:
        for eqn in jaxpr.eqns:
            inner = eqn.params.get("jaxpr")
            if inner is not None:
                inner = getattr(inner, "jaxpr", inner)
                visit(
                    inner,
                    {
                        iv: owner[v]
                        for v, iv in zip(eqn.invars, inner.invars, strict=False)
                        if not isinstance(v, jax.core.Literal) and v in owner
                    },
                )
                continue
            if eqn.primitive.name not in ("dot_general", "conv_general_dilated"):
                continue
            weight = next((v for v in eqn.invars[1:] if v in owner), None)
            if weight is None:
                continue
            out = math.prod(eqn.outvars[0].aval.shape)
            w_shape = weight.aval.shape
            if eqn.primitive.name == "dot_general":
                (_, rhs_contract), _ = eqn.params["dimension_numbers"]
                contraction = math.prod(w_shape[d] for d in rhs_contract)
            else:
                out_axis = eqn.params["dimension_numbers"].rhs_spec[0]
                contraction = math.prod(w_shape) // w_shape[out_axis]
            macs[owner[weight]] = macs.get(owner[weight], 0) + out * contraction

    visit(jaxpr, owner)
    return macs


def flops(
    apply_fn: Callable[[PyTree, jax.Array], Any],
    params: PyTree,
    example: Any,
    masks: PyTree | None = None,
) -> dict[str, Any]:
    """Dense and effective FLOPs of one forward pass on one example.

    Args:
      apply_fn: pure ``apply_fn(params, x)``.
      params: parameter tree.
      example: one input with a batch axis of 1, e.g. ``jnp.zeros((1, 28, 28, 1))``.
      masks: optional masks; nonzeros are counted on w ⊙ m.

    Returns:
      ``{"dense": F, "effective": F_eff, "layers": {path: {"dense", "effective", "density"}}}``.
    """
    if np.shape(example)[:1] != (1,):
        raise ValueError(f"example must have a batch axis of size 1, got shape {np.shape(example)}")
    macs = _layer_macs(apply_fn, params, example)
    effective = params if masks is None else masks_lib.apply_masks(params, masks)
    weights = dict(tree_lib.scored_leaves(effective))
    layers = {}
    for path, m in macs.items():
        w = np.asarray(weights[path])
        density = np.count_nonzero(w) / w.size
        layers[path] = {"dense": 2 * m, "effective": 2 * m * density, "density": density}
    return {
        "dense": sum(v["dense"] for v in layers.values()),
        "effective": sum(v["effective"] for v in layers.values()),
        "layers": layers,
    }
