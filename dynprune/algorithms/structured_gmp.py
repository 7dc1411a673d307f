"""Gradual structured pruning of units and input features, toward an architecture.

Rule: every Δt steps from t0 to t0 + nΔt, for each matching kernel W (Dense ``(in, out)``
or conv ``(h, w, in, out)``) keep the (1 − u_l · p_t) output units and the (1 − v_l · p_t)
input features of highest score, where

    p_t = 1 − (1 − (t − t0)/(nΔt))³

is Zhu & Gupta's cubic ramp from 0 to 1, and u_l, v_l are the layer's final fractions. The
score of a group G (unit j: the column W[..., :, j]; input i: the row W[..., i, :]) is its
L2 norm ‖W_G‖₂ (``"magnitude"``, Li et al. 2017) or the first-order Taylor estimate of the
loss change when it is removed, summed over the batches b since the last update,
Σ_b (Σ_{w ∈ G} g_b,w · w)² (``"taylor"``, Molchanov et al. 2019), which is 0 for a group
that gets no gradient: an input that carries no signal, such as the rows of a kernel after
a flatten that read a pruned conv channel. A pruned unit takes its bias with it. Units
and input features (the rows of the first kernel: pixels; of a kernel after a flatten:
positions h, w, c) are what :func:`dynprune.surgery.reconstruct` removes, so the run ends in a mask
from which a physically smaller model is built; the papers' architectures
(``"97-71-33"``) count exactly these.

References:
  Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
  compression", arXiv:1710.01878, 2017; Li, Kadav, Durdanovic, Samet & Graf, "Pruning
  Filters for Efficient ConvNets", ICLR 2017; Molchanov, Mallya, Tyree, Frosio & Kautz,
  "Importance Estimation for Neural Network Pruning", CVPR 2019; Louizos, Welling &
  Kingma, "Learning Sparse Neural Networks through L0 Regularization", ICLR 2018 (input
  features counted in the architecture).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp

from dynprune import checks, masks, schedules
from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import target_ramp
from dynprune.pruner import Context, Pruner, PyTree

__all__ = ["structured_gmp"]

_AXES = {"units": -1, "inputs": -2}


def structured_gmp(
    units: Mapping[str, float],
    begin: int,
    end: int,
    every: int = 100,
    *,
    inputs: Mapping[str, float] | None = None,
    score: Literal["magnitude", "taylor"] = "magnitude",
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Gradual pruning of whole output units and input features of the matching kernels.

    Rule: at each update step t, each kernel whose path matches a pattern of ``units``
    (first match, ``re.search``) keeps its (1 − u · p_t) output units of highest score,
    and each kernel matching a pattern of ``inputs`` keeps its (1 − v · p_t) input
    features (rows; input channels of a conv) of highest score, with
    p_t = 1 − (1 − (t − t0)/(nΔt))³ (Zhu & Gupta's ramp, 0 at ``begin``, 1 at ``end``)
    and exactly round(u · p_t · n_out) units and round(v · p_t · n_in) features dropped.
    A group G's score is ‖W_G‖₂ (``score="magnitude"``) or Σ_b (Σ_{w ∈ G} g_b,w · w)²
    over the batches since the last update (``score="taylor"``). Both are taken of
    w ⊙ m, so a pruned unit or feature scores 0 and stays pruned.

    The cadence is :func:`gmp`'s: updates at ``begin``, every ``every`` steps, and at
    ``end``; after ``end`` the masks no longer change. Hard mode: pruned weights are
    exactly 0. A unit's bias (the ``bias`` beside its kernel) is pruned with it.

    Args:
      units: ``{regex: u}``: fraction u in [0, 1] of the output units dropped by ``end``
        in each kernel whose path matches (e.g. ``{"fc1": 0.77, "fc2": 0.7}``). A kernel
        matching no pattern keeps all its units (e.g. the output layer). Each u is the
        hyperparameter ``"units:<regex>"`` (``dp.set_hyperparams`` changes it).
      begin: t0, the first update step (an integer >= 0).
      end: the step where every fraction is reached (an integer > ``begin``).
      every: Δt, steps between updates (an integer >= 1; default 100).
      inputs: ``{regex: v}``: fraction v in [0, 1] of the input features dropped by
        ``end`` in each matching kernel (e.g. ``{"fc1": 0.87}`` drops 87% of the pixels
        a LeNet-300-100 reads). Hyperparameters ``"inputs:<regex>"``. Default: none.
      score: ``"magnitude"`` (default: the group's L2 norm) or ``"taylor"`` (the summed
        squared first-order Taylor estimate; the pruner then keeps one sum per group in
        its state and adds each step's gradient to it).
      filter: which leaves may be pruned; default :func:`dynprune.tree.kernels` (ndim >= 2).

    Returns:
      A hard-mode :class:`dynprune.pruner.Pruner`.

    Raises:
      TypeError: if a step argument is not an integer or a fraction is not a number.
      ValueError: if both tables are empty, a fraction is not in [0, 1], ``score`` is
        unknown, ``begin < 0``,
        ``every < 1`` or ``end <= begin`` (the message names the argument and value); at
        ``init``, if a pattern matches no kernel (the message lists the kernels).

    Examples:
      A 6-4-2 MLP: half of the hidden units and a third of the inputs go by step 1 (the
      ramp is at 0 at step 0):

      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc1": {"kernel": jnp.arange(1.0, 25.0).reshape(6, 4), "bias": jnp.ones(4)},
      ...           "fc2": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)}}
      >>> pruner = dp.algorithms.structured_gmp({"fc1": 0.5}, begin=0, end=1,
      ...                                       inputs={"fc1": 1 / 3})
      >>> tx = dp.prune(optax.sgd(0.0), pruner)
      >>> state = tx.init(params)
      >>> for step in range(2):
      ...     _, state = tx.update(params, state, params)
      >>> m = dp.masks_of(state)["fc1"]
      >>> m["bias"].tolist(), m["kernel"].any(axis=1).tolist()
      ([False, False, True, True], [False, False, True, True, True, True])
    """
    tables = {"units": dict(units), "inputs": dict(inputs or {})}
    if not tables["units"] and not tables["inputs"]:
        raise ValueError("structured_gmp needs a fraction in units or inputs, got neither")
    if score not in ("magnitude", "taylor"):
        raise ValueError(f"score must be 'magnitude' or 'taylor', got {score!r}")
    hyperparams = {}
    for kind, table in tables.items():
        for pattern, fraction in table.items():
            name = f"{kind}:{pattern}"
            hyperparams[name] = checks.real(f"{kind}[{pattern!r}]", fraction, 0.0, 1.0)
    _, cadence = target_ramp(begin, end, every)
    progress = schedules.polynomial(1.0, begin, end)

    rules = {kind: [(re.compile(k), f"{kind}:{k}") for k in t] for kind, t in tables.items()}

    def match(kind: str, path: str) -> str | None:
        """The hyperparameter of the first ``kind`` pattern found in ``path``, if any."""
        return next((name for pattern, name in rules[kind] if pattern.search(path)), None)

    def groups(params: PyTree) -> list[tuple[str, str, int, jax.Array]]:
        """``(hyperparameter, kernel path, axis, kernel)`` of each (kernel, kind) pruned."""
        selected = tree_lib.scored_leaves(tree_lib.select(params, filter))
        return [
            (name, path, axis, w)
            for path, w in selected
            if jnp.ndim(w) >= 2
            for kind, axis in _AXES.items()
            if (name := match(kind, path)) is not None
        ]

    def group_sum(x: jax.Array, axis: int) -> jax.Array:
        """Σ of ``x`` over all axes but ``axis`` (kept, size 1 elsewhere)."""
        return jnp.sum(x, axis=tuple(a for a in range(x.ndim) if a != x.ndim + axis), keepdims=True)

    def masks_at(params: PyTree, scores: tuple, hp: Any, p: jax.Array) -> PyTree:
        """Kernels: kept units ∧ kept inputs (full shape); biases: their kernel's units.
        ``scores``: one group score array per entry of ``groups(params)``, in order."""
        by_path: dict[str, jax.Array] = {}
        for (name, path, axis, w), score_ in zip(groups(params), scores, strict=True):
            ranked = {"g": jnp.moveaxis(score_, axis, -1)}
            keep = jnp.moveaxis(masks.structured(ranked, hp[name] * p)["g"], -1, axis)
            by_path[path] = by_path.get(path, jnp.ones(jnp.shape(w), bool)) & keep
        # A kernel whose units are pruned as neuron-shaped masks, for with_bias to extend
        # to its bias; then every kernel gets its full mask (units ∧ inputs).
        units = tree_lib.map_with_path(
            lambda path, x: (
                jnp.any(by_path[path], axis=tuple(range(jnp.ndim(x) - 1)), keepdims=True)
                if path in by_path and match("units", path) is not None
                else None
            ),
            params,
        )
        return tree_lib.map_with_path(
            lambda path, x, m: by_path.get(path, m), params, masks.with_bias(units, params)
        )

    def zero_sums(params: PyTree) -> tuple:
        return tuple(jnp.zeros_like(group_sum(w, axis)) for _, _, axis, w in groups(params))

    def init(params: PyTree, hp: Any, key: jax.Array) -> tuple[PyTree, Any]:
        del key
        selected = tree_lib.scored_leaves(tree_lib.select(params, filter))
        kernel_paths = [path for path, x in selected if jnp.ndim(x) >= 2]
        for kind, table in tables.items():
            for pattern in table:
                if not any(re.search(pattern, path) for path in kernel_paths):
                    raise ValueError(
                        f"structured_gmp: {kind} pattern {pattern!r} matches no kernel; "
                        f"kernels: {', '.join(kernel_paths)}"
                    )
        sums = zero_sums(params)
        return masks_at(params, sums, hp, jnp.asarray(0.0)), sums if score == "taylor" else ()

    def observe(ctx: Context) -> tuple:
        """Taylor: add this batch's (Σ_group g · w)² to each group's sum."""
        g = dict(tree_lib.scored_leaves(ctx.grads))
        return tuple(
            acc + jnp.square(group_sum(g[path] * w, axis))
            for (_, path, axis, w), acc in zip(groups(ctx.params), ctx.aux, strict=True)
        )

    def update(ctx: Context) -> tuple[PyTree, Any]:
        # Pruned weights are exactly 0 (hard mode), so they score 0 and stay pruned.
        if score == "taylor":
            scores, aux = ctx.aux, zero_sums(ctx.params)
        else:
            scores = tuple(
                jnp.sqrt(group_sum(jnp.square(w), axis)) for _, _, axis, w in groups(ctx.params)
            )
            aux = ctx.aux
        return masks_at(ctx.params, scores, ctx.hyperparams, progress(ctx.step)), aux

    return Pruner(
        init=init,
        should_update=lambda ctx: cadence(ctx.step),
        update=update,
        hyperparams=hyperparams,
        observe=observe if score == "taylor" else None,
    )
