"""Dynamic Network Surgery (Guo, Yao & Chen 2016): prune and splice, with recoverable masks.

Dense weights W are kept; the forward pass uses W ⊙ T and the straight-through gradient
∂L/∂(W ⊙ T) updates all of W, so a pruned weight can grow back. Per layer, with μ and σ
the mean and standard deviation of |W| over its nonzero, finite entries (taken once, at
the start), and c the layer's rate:

    a = 0.9 · max(μ + cσ, 0),   b = 1.1 · max(μ + cσ, 0)
    T ← 0 where |W| < a   (prune),   T ← 1 where |W| > b   (splice),   unchanged between.

A weight that is NaN or ±inf is pruned (our addition: the paper assumes finite weights),
so the forward pass sees 0 there (:func:`dynprune.masked_params`).

The masks are updated at step t with probability (1 + γt)^(−power), and never at or
after ``iter_stop``. With ``warmup`` = R > 0 (our addition, not in the paper) both thresholds
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
    """DNS's own state (the pruner's ``aux``): per-leaf thresholds and the mask dynamics.

    The per-leaf trees carry a scalar on every pruned leaf and ``None`` elsewhere.

    Attributes:
      lower: a per leaf, the prune threshold (float32), fixed at init; with ``warmup``
        the update uses it scaled by :func:`threshold_scale`.
      upper: b per leaf, the splice threshold (float32), fixed at init.
      prunes: per leaf, how many entries the last mask update pruned (1 → 0; int32).
      splices: per leaf, how many entries the last mask update spliced back (0 → 1; int32).
      total_prunes: prunes summed over all leaves and all updates so far (int32).
      total_splices: splices summed over all leaves and all updates so far (int32).
      updates: the number of mask updates so far (int32).

    Examples:
      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]])}}
      >>> tx = dp.prune(optax.sgd(0.0), dp.algorithms.dns(c=0.0))
      >>> _, state = jax.jit(tx.update)(params, tx.init(params), params)
      >>> aux = dp.find_state(state).aux
      >>> round(aux.lower["fc"]["kernel"].item(), 4), round(aux.upper["fc"]["kernel"].item(), 4)
      (2.25, 2.75)
      >>> aux.prunes["fc"]["kernel"].item(), aux.total_splices.item(), aux.updates.item()
      (2, 0, 1)
    """

    lower: PyTree
    upper: PyTree
    prunes: PyTree
    splices: PyTree
    total_prunes: jax.Array
    total_splices: jax.Array
    updates: jax.Array


def layer_thresholds(w: jax.Array, c: Any) -> tuple[jax.Array, jax.Array]:
    """DNS's prune and splice thresholds of a layer: (a, b) = (0.9, 1.1) · max(μ + cσ, 0).

    μ and σ are the mean and (population) standard deviation of |w| over its nonzero,
    finite entries. Zeros are left out (weights pruned before do not drag μ down), and
    so are NaN and ±inf, so one broken weight does not make the layer's thresholds NaN
    (which would never prune it). The fraction of ``w`` that DNS's first update prunes
    is ``mean(|w| < a)``: use it to choose c for a trained layer (see :func:`dns`).

    Args:
      w: the layer's weights, any shape (flattened).
      c: the rate c, any finite real; larger c gives higher thresholds.

    Returns:
      ``(a, b)``, two float32 scalars.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune.algorithms.network_surgery import layer_thresholds
      >>> w = jnp.array([0.0, -1.0, 2.0, 3.0, -4.0])  # μ = 2.5, σ = 1.118 (the 0 left out)
      >>> [round(float(x), 4) for x in layer_thresholds(w, 0.0)]
      [2.25, 2.75]
      >>> [float(x) for x in layer_thresholds(w, -3.0)]  # μ + cσ < 0: nothing is pruned
      [0.0, 0.0]
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
    """DNS's probability of a mask update at step t: p_t = (1 + γt)^(−power).

    p_0 = 1, p_t = 2^(−power) at t = 1/γ, and p_t → 0 as t grows; ``gamma = 0`` or
    ``power = 0`` gives p_t = 1 (update every step).

    Args:
      step: t, the step count (float; any shape).
      gamma: γ >= 0.
      power: the exponent, >= 0.

    Returns:
      p_t, with the shape of ``step``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune.algorithms.network_surgery import update_probability
      >>> p = update_probability(jnp.array([0.0, 1e4, 1e5]), gamma=1e-4, power=1.0)
      >>> [round(float(x), 4) for x in p]
      [1.0, 0.5, 0.0909]
    """
    return (1.0 + gamma * step) ** (-power)


def threshold_scale(step: jax.Array, warmup: int) -> jax.Array:
    """The factor DNS's thresholds are scaled by at step t: 1 − (1 − min(t/R, 1))³.

    The Zhu & Gupta cubic: 0 at t = 0, 1 from t = R on (``warmup`` R > 0); 1 at every
    step when R = 0.

    Args:
      step: t, an integer step count (a scalar or an array).
      warmup: R, a Python int >= 0, the steps the ramp takes.

    Returns:
      The factor as float32 (a scalar when R = 0, else with the shape of ``step``).

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune.algorithms.network_surgery import threshold_scale
      >>> threshold_scale(jnp.arange(6), 4).tolist()
      [0.0, 0.578125, 0.875, 0.984375, 1.0, 1.0]
    """
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
    """Dynamic Network Surgery: prune below a threshold a, splice back above b > a.

    Rule. Per layer (the pruned leaves sharing a parent path: ``fc1/kernel``, and with
    ``prune_biases`` also ``fc1/bias``), with μ and σ the mean and standard deviation of
    |W| over its nonzero, finite entries, taken once from the parameters given to
    ``tx.init``, and c the layer's rate:

        a = 0.9 · max(μ + cσ, 0),   b = 1.1 · max(μ + cσ, 0)      (:func:`layer_thresholds`)
        at each mask update:  T ← 0 where |W| < a,  T ← 1 where |W| > b,  else unchanged.

    NaN and ±inf weights are pruned too. Dense weights are kept (soft mode): the forward
    pass uses W ⊙ T (:func:`dynprune.masked_params`) and the straight-through gradient
    ∂L/∂(W ⊙ T) updates every weight, so a pruned weight that grows past b is spliced
    back and a kept one that shrinks below a is pruned.

    How c maps to sparsity. a and b are fixed numbers, so the sparsity is whatever share
    of the weights falls below them. Right after an update it lies between F(a) and
    F(b), F(x) being the fraction of the layer's weights (at that step) with |w| < x:
    entries between a and b keep their previous mask. The first update (step 0, every
    weight still kept) prunes exactly F(a) of the initial weights. So the mapping
    depends on the weights' distribution; a and b grow with c, and at the same weights
    a larger c prunes at least as much. For Gaussian weights w ~ N(0, s²), |w| is
    half-normal with μ = s·√(2/π) ≈ 0.798s and σ = s·√(1 − 2/π) ≈ 0.603s, so
    a = 0.9·(0.798 + 0.603c)·s and F(a) = erf(a / (s√2)):

        c       −1     0      1      2      3
        F(a)    0.14   0.53   0.79   0.93   0.98   (sparsity after the first update)
        F(b)    0.17   0.62   0.88   0.97   0.996

    and c <= −μ/σ ≈ −1.32 prunes nothing. Trained weights need not be Gaussian, so
    calibrate c on your own model: ``mean(|w| < layer_thresholds(w, c)[0])`` is the
    first update's sparsity of layer weights ``w``.

    Schedule, step by step. At step t (the count before this update) the masks are
    recomputed if t < ``iter_stop`` and a uniform draw u ~ U[0, 1) from the state's
    PRNG key is below p_t = (1 + γt)^(−power) (:func:`update_probability`). p_0 = 1, so
    step 0 always updates; later updates get rarer (p_t = 2^(−power) at t = 1/γ). With
    power = 1, on average about ln(1 + γT)/γ of the first T steps update: 6,932 of the
    first 10,000 at the default γ = 1e-4. Between updates the masks stay fixed while all
    weights keep training. With ``warmup`` R > 0 (our addition, not in the paper) an
    update at step t uses s_t·a and s_t·b, s_t = 1 − (1 − min(t/R, 1))³
    (:func:`threshold_scale`): the step-0 update prunes nothing and the thresholds
    reach a and b at step R.

    Train from a (pre)trained model, with the forward pass through
    :func:`dynprune.masked_params`.

    Args:
      c: the rate c, any finite real (default 1.0): one float for every leaf, a tree
        with one value per pruned leaf, or ``{regex: c, ..., "default": c}`` (the first
        regex that ``re.search``-es the leaf path, e.g. ``"fc1/kernel"``, wins; the
        ``"default"`` entry is required). Fixed when the state is created: not a
        hyperparameter in the state.
      gamma: γ >= 0, how fast the update probability decays (default 1e-4; 0: update
        at every step). A hyperparameter (``dp.set_hyperparams`` changes it).
      power: the decay's exponent, >= 0 (default 1.0; 0: update at every step). A
        hyperparameter.
      iter_stop: no mask update at or after this step (an integer >= 0; default 2**30,
        in effect never). A hyperparameter.
      warmup: R, the steps over which the thresholds ramp up from 0 (an integer >= 0;
        default 0: off).
      prune_biases: also mask the ``bias`` leaf beside each pruned kernel, with μ and σ
        taken over the kernel and bias together, as in the authors' Caffe code. Off by
        default: with the rates that reach high compression it removes most biases of a
        model trained with weight decay, which costs accuracy (LeNet-300-100, c =
        4.5/3.2/1.5, same run otherwise: 6.66% test error with biases pruned, 1.89%
        without).
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: every
        floating leaf with ndim >= 2 (Dense and conv kernels; not biases, not norm
        scales).

    Returns:
      A soft-mode :class:`dynprune.pruner.Pruner` (dense weights kept, straight-through
      updates), with hyperparameters ``gamma``, ``power`` and ``iter_stop`` and state
      :class:`DNSState`.

    Raises:
      TypeError: if ``iter_stop`` or ``warmup`` is not an integer, or a rate or
        hyperparameter is not a number.
      ValueError: if ``gamma`` or ``power`` is negative, ``iter_stop`` or ``warmup`` is
        negative, or any value is NaN or infinite; and from ``tx.init``, if a tree of
        rates does not match the pruned leaves (e.g. a ``{regex: c}`` dict without
        ``"default"``).

    Examples:
      On Gaussian weights c = 1 prunes 79% at the first update, as the table says:

      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> from dynprune.algorithms.network_surgery import layer_thresholds
      >>> w = jax.random.normal(jax.random.PRNGKey(0), (100, 100))
      >>> a, b = layer_thresholds(w, 1.0)
      >>> round(float(jnp.mean(jnp.abs(w) < a)), 2)
      0.79
      >>> params = {"fc": {"kernel": w, "bias": jnp.zeros(100)}}
      >>> tx = dp.prune(optax.sgd(0.1), dp.algorithms.dns(c=1.0))
      >>> grads = jax.tree.map(jnp.zeros_like, params)
      >>> _, state = jax.jit(tx.update)(grads, tx.init(params), params)  # step 0: p_0 = 1
      >>> masks = dp.masks_of(state)
      >>> round(1 - masks["fc"]["kernel"].mean().item(), 2), masks["fc"]["bias"]
      (0.79, None)

      Per-layer rates (the first matching regex wins, else the default):

      >>> pruner = dp.algorithms.dns({"fc1": 4.5, "fc2": 3.2, "default": 1.5})

    References:
      Guo, Yao & Chen, "Dynamic Network Surgery for Efficient DNNs", NeurIPS 2016; the
      authors' Caffe code (compress_inner_product_layer / compress_conv_layer).
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
