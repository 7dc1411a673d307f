"""Dynamic Network Surgery (Guo, Yao & Chen 2016): prune and splice, with recoverable masks.

Dense weights W are kept; the forward pass uses W ⊙ T and the straight-through gradient
∂L/∂(W ⊙ T) updates all of W, so a pruned weight can grow back. Per layer, with μ and σ
the mean and standard deviation of |W| over its nonzero, finite entries (taken once, at
the start), and c the layer's rate:

    a = 0.9 · max(μ + cσ, 0),   b = 1.1 · max(μ + cσ, 0)
    T ← 0 where |W| < a   (prune),   T ← 1 where |W| > b   (splice),   unchanged between.

A weight that is NaN or ±inf is pruned (our addition: the paper assumes finite weights),
so the forward pass sees 0 there (:func:`dynprune.masked_params`).

The masks are updated at step t with probability (1 + γt)^(−power), and never after
``iter_stop``. With ``warmup`` = R > 0 (our addition, not in the paper) both thresholds
grow from 0 along the Zhu & Gupta cubic, a_t = a · (1 − (1 − min(t/R, 1))³) and likewise
b_t, so the surgery prunes gradually instead of removing most weights at its first step.
Each update counts its prunes (1 → 0) and splices (0 → 1): they are in ``aux``
(:class:`DNSState`) for the mask-dynamics plots.

References:
  Guo, Yao & Chen, "Dynamic Network Surgery for Efficient DNNs", NeurIPS 2016; the
  authors' Caffe code (compress_inner_product_layer / compress_conv_layer).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dynprune import checks
from dynprune import tree as tree_lib
from dynprune.pruner import Context, Pruner, PyTree


class DNSState(NamedTuple):
    """DNS's own state: per-leaf thresholds and the mask dynamics.

    Attributes:
      lower: a per leaf (prune below). upper: b per leaf (splice above).
      prunes, splices: per-leaf counts of the last mask update.
      total_prunes, total_splices: int32 totals over all updates.
      updates: number of mask updates so far.
    """

    lower: PyTree
    upper: PyTree
    prunes: PyTree
    splices: PyTree
    total_prunes: jax.Array
    total_splices: jax.Array
    updates: jax.Array


def layer_thresholds(w: jax.Array, c: Any) -> tuple[jax.Array, jax.Array]:
    """(a, b) = (0.9, 1.1) · max(μ + cσ, 0) of |w| over its nonzero, finite entries.

    NaN and ±inf entries are left out of μ and σ, so one broken weight does not make the
    layer's thresholds NaN (which would never prune it).
    """
    magnitude = jnp.abs(jnp.ravel(w))
    counted = (magnitude > 0) & jnp.isfinite(magnitude)
    n = jnp.maximum(jnp.sum(counted), 1)
    mean = jnp.sum(jnp.where(counted, magnitude, 0.0)) / n
    std = jnp.sqrt(jnp.sum(jnp.where(counted, jnp.square(magnitude - mean), 0.0)) / n)
    t = jnp.maximum(mean + c * std, 0.0)
    return 0.9 * t, 1.1 * t


def _layer_of(path: str) -> str:
    return path.rpartition("/")[0]


def _with_biases(params: PyTree, filter: tree_lib.Filter | None) -> PyTree:
    """The selected kernels plus the ``bias`` leaves beside them."""
    kernels = {p for p, _ in tree_lib.scored_leaves(tree_lib.select(params, filter))}
    layers = {_layer_of(p) for p in kernels}

    def pick(path: str, leaf: Any) -> Any:
        if path in kernels or (path.rpartition("/")[2] == "bias" and _layer_of(path) in layers):
            return leaf
        return None

    return tree_lib.map_with_path(pick, params)


def update_probability(step: jax.Array, gamma: jax.Array, power: jax.Array) -> jax.Array:
    """(1 + γ t)^(−power)."""
    return (1.0 + gamma * step) ** (-power)


def threshold_scale(step: jax.Array, warmup: int) -> jax.Array:
    """1 − (1 − min(t/R, 1))³ for ``warmup`` R > 0; 1 when R = 0."""
    if warmup == 0:
        return jnp.ones([], jnp.float32)
    done = jnp.minimum(step.astype(jnp.float32) / warmup, 1.0)
    return 1.0 - (1.0 - done) ** 3


def dns(
    c: float | dict[str, float] = 1.0,
    *,
    gamma: float = 1e-4,
    power: float = 1.0,
    iter_stop: int = 2**30,
    warmup: int = 0,
    prune_biases: bool = False,
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Dynamic Network Surgery with rate ``c`` (a float, a per-leaf tree, or {regex: c}).

    Larger c prunes more. With ``prune_biases`` (as in the authors' Caffe code), a layer's
    bias is masked too and μ, σ are taken over its weights and bias together; off by
    default: with the rates that reach high compression it removes most biases of a model
    trained with weight decay, which costs accuracy (LeNet-300-100, c = 4.5/3.2/1.5, same
    run otherwise: 6.66% test error with biases pruned, 1.89% without). Train from a
    (pre)trained model, with the forward pass through :func:`dynprune.masked_params`.
    ``warmup`` (steps, 0 = off) ramps the thresholds up from 0, as in the module docstring.

    Raises:
      TypeError: if ``iter_stop`` or ``warmup`` is not an integer, or a rate or
        hyperparameter is not a number.
      ValueError: if ``gamma`` or ``power`` is negative, ``iter_stop`` or ``warmup`` is
        negative, or any value is NaN or infinite.
    """
    warmup = checks.steps("warmup", warmup)
    hyperparams = {"gamma": gamma, "power": power, "iter_stop": iter_stop}
    checks.hyperparams(hyperparams)
    for rate in jax.tree.leaves(c):
        checks.real("DNS rate c", rate)

    def init(params: PyTree, hp: Any, key: jax.Array) -> tuple[PyTree, DNSState]:
        del hp, key
        selected = _with_biases(params, filter) if prune_biases else tree_lib.select(params, filter)
        rates = tree_lib.resolve(c, selected, name="DNS rate c")
        layers: dict[str, list[jax.Array]] = {}
        for path, w in tree_lib.scored_leaves(selected):
            layers.setdefault(_layer_of(path), []).append(jnp.ravel(w))
        joint = {k: jnp.concatenate(v) for k, v in layers.items()}
        bound = lambda i: lambda p, w, r: layer_thresholds(joint[_layer_of(p)], r)[i]
        zeros = lambda: tree_lib.map_scored(lambda p, w: jnp.zeros([], jnp.int32), selected)
        state = DNSState(
            lower=tree_lib.map_scored(bound(0), selected, rates),
            upper=tree_lib.map_scored(bound(1), selected, rates),
            prunes=zeros(),
            splices=zeros(),
            total_prunes=jnp.zeros([], jnp.int32),
            total_splices=jnp.zeros([], jnp.int32),
            updates=jnp.zeros([], jnp.int32),
        )
        masks = tree_lib.map_scored(lambda p, w: jnp.ones(jnp.shape(w), bool), selected)
        return masks, state

    def should_update(ctx: Context) -> jax.Array:
        hp = ctx.hyperparams
        draw = jax.random.uniform(jax.random.fold_in(ctx.key, 0))
        p = update_probability(ctx.step.astype(jnp.float32), hp["gamma"], hp["power"])
        return (ctx.step < hp["iter_stop"]) & (draw < p)

    def update(ctx: Context) -> tuple[PyTree, DNSState]:
        aux: DNSState = ctx.aux
        scale = threshold_scale(ctx.step, warmup)

        def leaf(path: str, m: jax.Array, w: jax.Array, a: Any, b: Any) -> jax.Array:
            magnitude = jnp.abs(w)
            prune = (magnitude < scale * a) | ~jnp.isfinite(magnitude)
            return jnp.where(prune, False, jnp.where(magnitude > scale * b, True, m))

        new = tree_lib.map_scored(leaf, ctx.masks, ctx.params, aux.lower, aux.upper)
        count = lambda p, x, y: jnp.sum(x & ~y).astype(jnp.int32)
        prunes = tree_lib.map_scored(count, ctx.masks, new)
        splices = tree_lib.map_scored(count, new, ctx.masks)
        total = lambda t: sum(x for _, x in tree_lib.scored_leaves(t))
        return new, aux._replace(
            prunes=prunes,
            splices=splices,
            total_prunes=aux.total_prunes + total(prunes),
            total_splices=aux.total_splices + total(splices),
            updates=aux.updates + 1,
        )

    return Pruner(
        init=init,
        should_update=should_update,
        update=update,
        hyperparams=hyperparams,
        soft=True,
        update_pruned=True,
    )
