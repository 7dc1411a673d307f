"""Scheduled top-k pruning: the recipe most sparsity algorithms share.

At each step the cadence chooses, keep the top (1 − s_t) of a score, with s_t from a
schedule of the pruner's hyperparameters: at once (s_t = target) or along the Zhu & Gupta
cubic ramp from ``initial`` to ``target``. This is the jaxpruner/TF-MOT recipe: GMP,
magnitude, random, sensitivity, SNIP, movement and lottery differ only by the score and
the schedule they pass to :func:`scheduled`.

References:
  Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
  compression", arXiv:1710.01878, 2017.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp

from dynprune import checks, distributions, masks, schedules
from dynprune import tree as tree_lib
from dynprune.pruner import Context, Hyperparams, Pruner, PyTree, Scope, ScoreFn, full_masks

__all__ = ["scheduled", "target_ramp"]


def target_ramp(
    begin: int, end: int | None, every: int
) -> tuple[Callable[[Hyperparams], schedules.Schedule], schedules.Cadence]:
    """How a scheduled pruner reaches ``hyperparams["target"]``: at once, or along a ramp.

    Args:
      begin: the first update step.
      end: ``None`` for one update at ``begin`` to the target; else the step where the
        Zhu & Gupta cubic ramp from ``hyperparams["initial"]`` reaches the target.
      every: steps between ramp updates; ``end`` itself is an update too, so the target
        is reached even when ``end − begin`` is not a multiple of ``every``.

    Returns:
      ``(schedule, cadence)``: ``schedule(hyperparams)`` is the ``step -> sparsity``
      schedule, ``cadence`` is ``step -> bool`` (update now?), as :func:`scheduled` takes.

    Raises:
      TypeError: if a step argument is not an integer.
      ValueError: if ``begin < 0``, ``every < 1``, or ``end <= begin`` for a ramp; the
        message names the argument and the value.

    Examples:
      >>> import jax.numpy as jnp
      >>> schedule, cadence = target_ramp(begin=0, end=10, every=4)
      >>> [int(t) for t in range(12) if cadence(jnp.asarray(t))]
      [0, 4, 8, 10]
      >>> sparsity = schedule({"target": 0.9, "initial": 0.0})
      >>> [round(float(sparsity(jnp.asarray(t))), 4) for t in (0, 5, 10)]
      [0.0, 0.7875, 0.9]
    """
    begin = checks.steps("begin", begin)
    every = checks.steps("every", every, minimum=1)
    if end is None:
        return (
            lambda hp: schedules.constant(hp["target"]),
            schedules.every(1, begin=begin, end=begin),
        )
    if checks.steps("end", end) <= begin:
        raise ValueError(f"need end > begin for a gradual ramp, got begin={begin}, end={end}")
    periodic = schedules.every(every, begin=begin, end=end)
    return (
        lambda hp: schedules.polynomial(hp["target"], begin, end, initial=hp["initial"]),
        lambda step: periodic(step) | (step == end),
    )


def scheduled(
    score: ScoreFn,
    schedule: Callable[[Hyperparams], schedules.Schedule],
    cadence: schedules.Cadence,
    *,
    hyperparams: Mapping[str, float],
    filter: tree_lib.Filter | None = None,
    scope: Scope = "layer",
    distribution: Literal["uniform", "erk"] = "uniform",
    overrides: Mapping[str, float] | None = None,
    structured: bool = False,
    soft: bool = False,
) -> Pruner:
    """A pruner that, at each step chosen by ``cadence``, keeps the top (1 − s_t) of ``score``.

    Args:
      score: ``Context -> scores`` (e.g. ``lambda ctx: dp.scores.magnitude(ctx.params)``);
        only the leaves the pruner masks are ranked.
      schedule: ``hyperparams -> (step -> s_t)``, so the sparsity can be a traced
        hyperparameter (see :func:`target_ramp`).
      cadence: ``step -> bool``: recompute the masks at this step?
      hyperparams: the numeric hyperparameters ``schedule`` reads (e.g. ``{"target": 0.9}``).
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: floating
        leaves with ndim >= 2 (Dense and conv kernels; not biases or norm scales).
        With ``structured``, select kernels (biases follow their neurons, selected or
        not); any other selected leaf (a norm scale) is refused at ``init``.
      scope: ``"layer"`` (default): s_t per leaf, split by ``distribution``;
        ``"global"``: one ranking spans all leaves.
      distribution: ``"uniform"`` (default; every leaf at s_t) or ``"erk"``
        (Erdős–Rényi-Kernel with model-level s_t: small leaves pruned less, those whose
        density would exceed 1 left dense, the rest pruned more to make up;
        :func:`dynprune.distributions.erk`). Layer scope only.
      overrides: ``{regex: sparsity}``: matching leaves (first match) get that fixed
        sparsity at every update instead of their share of s_t (not ramped, and not made
        up by the other leaves). Layer scope only.
      structured: remove whole output neurons (kernel columns and their biases) instead
        of single weights.
      soft: keep dense weights and mask only the forward pass (see :class:`Pruner`).

    Returns:
      The :class:`dynprune.pruner.Pruner`.

    Raises:
      TypeError: if a hyperparameter or an override is not a number.
      ValueError: if a hyperparameter is out of its range (:mod:`dynprune.checks`), an
        override is not in [0, 1], ``scope`` or ``distribution`` is unknown, or
        ``scope="global"`` is combined with a distribution or overrides; at ``init``,
        with ``structured``, if ``filter`` selects a leaf that is neither a kernel
        (ndim >= 2) nor the ``bias`` beside a selected one (the message names its path).

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> pruner = dp.algorithms.scheduled(
      ...     lambda ctx: dp.scores.magnitude(ctx.params),
      ...     lambda hp: dp.schedules.constant(hp["target"]),
      ...     dp.schedules.every(1),
      ...     hyperparams={"target": 0.5},
      ... )
      >>> params = {"fc": {"kernel": jnp.arange(1.0, 9.0).reshape(4, 2), "bias": jnp.zeros(2)}}
      >>> tx = dp.prune(optax.sgd(0.0), pruner)
      >>> _, state = tx.update(params, tx.init(params), params)
      >>> dp.masks_of(state)["fc"]["kernel"].sum().item()
      4
    """
    checks.hyperparams(hyperparams)
    for pattern, s in (overrides or {}).items():
        checks.real(f"overrides[{pattern!r}]", s, 0.0, 1.0)
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    if distribution not in ("uniform", "erk"):
        raise ValueError(f"distribution must be 'uniform' or 'erk', got {distribution!r}")
    if scope == "global" and (overrides or distribution != "uniform"):
        raise ValueError(
            "scope='global' ranks all leaves jointly; it takes no distribution/overrides"
        )

    def init(params: PyTree, hp: Hyperparams, key: jax.Array) -> tuple[PyTree, Any]:
        del hp, key
        selected = tree_lib.select(params, filter)
        if not structured:
            return tree_lib.map_scored(lambda p, x: jnp.ones(jnp.shape(x), bool), selected), ()
        neurons = tree_lib.map_scored(
            lambda p, x: jnp.ones((1,) * (jnp.ndim(x) - 1) + jnp.shape(x)[-1:], bool),
            _kernels_only(selected),
        )
        mask_tree = masks.with_bias(neurons, params)
        _check_neuron_leaves(selected, mask_tree)
        return full_masks(mask_tree, params), ()

    def sparsities(scores: PyTree, s: jax.Array) -> Any:
        if scope == "global":
            return s
        if distribution == "erk":
            per_leaf = distributions.erk(scores, s)
        else:
            per_leaf = distributions.uniform(scores, s)
        return distributions.override(per_leaf, dict(overrides or {}))

    def update(ctx: Context) -> tuple[PyTree, Any]:
        scores = _restrict(score(ctx), ctx.masks)
        s = schedule(ctx.hyperparams)(ctx.step)
        if structured:
            kernel_scores = _kernels_only(scores)
            new = masks.structured(kernel_scores, sparsities(kernel_scores, s), scope=scope)
            new = masks.with_bias(new, ctx.params)
        else:
            new = masks.sparsity(scores, sparsities(scores, s), scope=scope)
        return full_masks(new, ctx.params), ctx.aux

    return Pruner(
        init=init,
        should_update=lambda ctx: cadence(ctx.step),
        update=update,
        hyperparams=dict(hyperparams),
        soft=soft,
    )


def _restrict(scores: PyTree, mask_tree: PyTree) -> PyTree:
    """Scores only where the pruner masks (``None`` wherever the mask tree has ``None``)."""
    return tree_lib.map_with_path(lambda path, m, s: None if m is None else s, mask_tree, scores)


def _kernels_only(scores: PyTree) -> PyTree:
    """Structured pruning ranks neurons by their kernels; the biases follow their columns."""
    return tree_lib.map_scored(lambda p, x: x if jnp.ndim(x) >= 2 else None, scores)


def _check_neuron_leaves(selected: PyTree, mask_tree: PyTree) -> None:
    """Refuse a selected leaf that structured pruning leaves unmasked (``update`` would too)."""
    masked = {path for path, _ in tree_lib.scored_leaves(mask_tree)}
    for path, x in tree_lib.scored_leaves(selected):
        if path not in masked:
            raise ValueError(
                "structured pruning removes output neurons of the selected kernels (ndim >= 2) "
                f"and the 'bias' beside each; the filter selected {path!r} of shape "
                f"{tuple(jnp.shape(x))}, which is neither: leave it out of the filter"
            )
