"""Sparse Variational Dropout (Molchanov, Ashukha & Vetrov 2017): learn a dropout rate per weight.

Every pruned weight is a Gaussian with a trainable mean θ and log-variance log σ²
(additive reparameterisation):

    w = θ + σ ⊙ ε,   ε ~ N(0, 1),   α = σ² / θ²,   log α = log σ² − log(θ² + 10⁻⁸).

Training minimises the SGVB loss, the negative evidence lower bound per training example,

    L = (1/B) Σ_b CE(f(x_b; w), y_b) + β_t · Σ_w KL(q(w | θ, α) ‖ p(w)) / N,

with N the number of training examples, the log-uniform prior p(|w|) ∝ 1/|w|, and the
KL's approximation (the paper's eq. 14)

    −KL ≈ k₁ · sigmoid(k₂ + k₃ · log α) − ½ · log1p(1/α) − k₁,
    k₁ = 0.63576, k₂ = 1.87320, k₃ = 1.48695.

As in the authors' code, log α is clipped to [−8, 8] inside the KL (its gradient is 0
outside) and 10⁻⁸ is added to θ² inside the logarithm; the masks use log α unclipped. β_t
grows linearly from 0 to 1 over the first ``warmup`` steps (β_t = min(t / warmup, 1); 1
throughout with ``warmup=0``). The forward pass during training samples the
pre-activations, not the weights (the local reparameterisation trick,
:mod:`dynprune.algorithms.reparameterization`); evaluation is deterministic, with θ
masked: a weight is kept iff log α < t (t = ``threshold``, 3 in the paper: a dropout rate
α/(1 + α) above 0.95 prunes it), exactly 0.0 otherwise.

Two choices of the authors' code are not taken: its forward pass uses the variance
exp(clip(log α))·θ² where this uses σ² = exp(log σ²) (they differ only where |log α| > 8),
and its LeNet-300-100 script zeroes the pruned weights in the mean term during training
(``train_clip``) where this trains with the dense θ, as the paper describes.

Where the pieces live: θ and log σ² are the trained parameters, a
:class:`VariationalParams` (:func:`variational_params` builds it from a model's parameters,
log σ² on the kernels); :func:`sparse_vd` is the :class:`~dynprune.pruner.Pruner` (soft
mode: the dense θ trains, the state's masks record [log α < t] every ``every`` steps);
:func:`sgvb` gives a train step's stochastic forward pass and KL term; :func:`sparsify`
turns the trained parameters into the sparse model θ ⊙ m. The stochastic forward pass needs
Flax Linen layers; every other function works on Linen dicts and NNX states alike.

References:
  Molchanov, Ashukha & Vetrov, "Variational Dropout Sparsifies Deep Neural Networks",
  ICML 2017; the authors' code (github.com/bayesgroup/variational-dropout-sparsifies-dnn).
  Kingma, Salimans & Welling, "Variational Dropout and the Local Reparameterization Trick",
  NeurIPS 2015.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dynprune import checks
from dynprune import masks as masks_lib
from dynprune import tree as tree_lib
from dynprune.algorithms.reparameterization import local_reparameterization
from dynprune.pruner import Context, Pruner, PyTree
from dynprune.transform import find_state

__all__ = [
    "K1",
    "K2",
    "K3",
    "LOG_ALPHA_CLIP",
    "Objective",
    "VariationalParams",
    "keep_masks",
    "kl_divergence",
    "kl_weight",
    "log_alpha",
    "neg_kl",
    "sgvb",
    "sparse_vd",
    "sparsify",
    "variational_params",
]

K1, K2, K3 = 0.63576, 1.87320, 1.48695
"""The constants of the paper's approximation of −KL (eq. 14)."""
LOG_ALPHA_CLIP = 8.0
"""log α is clipped to [−8, 8] inside the KL, as in the authors' code."""
WEIGHT_EPS = 1e-8
"""Added to θ² inside log α's logarithm, as in the authors' code (θ = 0 stays finite)."""
_NOISE_STREAM = 0x5644  # folded into the step's key: the noise is not the pruner's stream


class VariationalParams(NamedTuple):
    """The parameters Sparse VD trains: the means θ and the log-variances log σ².

    A pytree (a NamedTuple of two trees), so optax optimizers, ``jit``, ``vmap`` and
    checkpoints take it as they take a parameter tree.

    Attributes:
      theta: the model's parameters (a Linen dict or an NNX state): the weights' means θ,
        and the biases and other leaves as they are.
      log_sigma2: a tree with the structure of ``theta``: log σ² (the shape of its leaf)
        on every leaf Sparse VD prunes, ``None`` elsewhere.

    Examples:
      >>> import jax.numpy as jnp
      >>> params = {"fc": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
      >>> vp = variational_params(params, log_sigma2_init=-10.0)
      >>> vp.log_sigma2["fc"]["bias"], vp.log_sigma2["fc"]["kernel"][0].tolist()
      (None, [-10.0, -10.0])
    """

    theta: PyTree
    log_sigma2: PyTree


def variational_params(
    params: PyTree, log_sigma2_init: float = -10.0, *, filter: tree_lib.Filter | None = None
) -> VariationalParams:
    """θ = ``params`` and log σ² = ``log_sigma2_init`` on the leaves ``filter`` selects.

    Args:
      params: the model's parameters (initial or pre-trained); they become θ.
      log_sigma2_init: the starting log σ², a finite number (default −10, the paper's: α
        starts small, so training starts close to the deterministic network).
      filter: the leaves that get a log σ² (and may be pruned); default
        :func:`dynprune.tree.kernels`: floating leaves with ndim >= 2 (Dense and conv
        kernels; not biases).

    Returns:
      The :class:`VariationalParams`; log σ² has each selected leaf's shape and dtype.

    Raises:
      TypeError: ``log_sigma2_init`` is not a number.
      ValueError: ``log_sigma2_init`` is not finite, ``filter`` selects a non-floating leaf
        (named), or no leaf at all.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> params = {"fc1": {"kernel": jnp.ones((4, 3))}, "fc2": {"kernel": jnp.ones((3, 2))}}
      >>> vp = variational_params(params, -8.0, filter=dp.tree.named("fc2"))
      >>> vp.log_sigma2["fc1"]["kernel"], vp.log_sigma2["fc2"]["kernel"].shape
      (None, (3, 2))
      >>> variational_params(params, float("nan"))
      Traceback (most recent call last):
      ...
      ValueError: log_sigma2_init must be a finite number, got nan
    """
    value = checks.real("log_sigma2_init", log_sigma2_init)
    selected = tree_lib.select(params, filter)
    if not tree_lib.scored_leaves(selected):
        raise ValueError(
            f"variational_params: the filter selects no leaf of {tree_lib.paths(params)}"
        )
    log_sigma2 = tree_lib.map_scored(
        lambda path, w: jnp.full(jnp.shape(w), value, jnp.result_type(w)), selected
    )
    return VariationalParams(params, log_sigma2)


def _checked(params: Any, where: str) -> VariationalParams:
    """``params`` after checking that it is a :class:`VariationalParams` whose log σ² leaves
    match θ's paths, shapes and floating dtypes (errors name ``where`` and the leaf)."""
    if not isinstance(params, VariationalParams):
        raise ValueError(
            f"{where} takes VariationalParams (θ and log σ²), got {type(params).__name__}: "
            "build them with dp.algorithms.variational_params(params, log_sigma2_init)"
        )
    tree_lib.check_same_structure(params.theta, params.log_sigma2, what="log_sigma2")

    def check(path: str, ls2: Any, w: Any) -> None:
        if not jnp.issubdtype(jnp.result_type(w), jnp.floating):
            raise ValueError(
                f"{where}: leaf {path!r} has dtype {jnp.result_type(w)}; only floating "
                "leaves can have a log σ²"
            )
        if jnp.shape(ls2) != jnp.shape(w):
            raise ValueError(
                f"{where}: log_sigma2 for leaf {path!r} has shape {jnp.shape(ls2)}, the leaf "
                f"{jnp.shape(w)}"
            )

    tree_lib.map_scored(check, params.log_sigma2, params.theta)
    return params


def log_alpha(params: VariationalParams) -> PyTree:
    """log α = log σ² − log(θ² + 10⁻⁸) on every leaf with a log σ², unclipped.

    Args:
      params: θ and log σ² (:class:`VariationalParams`).

    Returns:
      A tree with the structure of θ: log α on the leaves with a log σ², ``None`` elsewhere.

    Raises:
      ValueError: ``params`` is not a :class:`VariationalParams`, or its log σ² does not
        match θ (a missing or unexpected leaf path, another shape, a non-floating leaf;
        the message names the leaf).

    Examples:
      >>> import jax.numpy as jnp
      >>> vp = VariationalParams({"w": jnp.array([1.0, 0.1])}, {"w": jnp.array([0.0, 0.0])})
      >>> [round(float(a), 3) for a in log_alpha(vp)["w"]]  # α = 1/θ²
      [0.0, 4.605]
    """
    params = _checked(params, "log_alpha")
    return tree_lib.map_scored(
        lambda path, ls2, w: ls2 - jnp.log(jnp.square(w) + WEIGHT_EPS),
        params.log_sigma2,
        params.theta,
    )


def neg_kl(log_alpha: jax.Array) -> jax.Array:
    """The paper's approximation of −KL(q(w | θ, α) ‖ p(w)) per weight, elementwise.

    −KL ≈ k₁ · sigmoid(k₂ + k₃ · log α) − ½ · log1p(1/α) − k₁ with log α clipped to
    [−8, 8] (as the authors' code does); log1p(1/α) is computed as softplus(−log α). It
    rises to 0 as α → ∞ and falls without bound as α → 0.

    Args:
      log_alpha: log α, any shape.

    Returns:
      −KL, with the shape of ``log_alpha``.

    Examples:
      >>> import jax.numpy as jnp
      >>> [round(float(x), 4) for x in neg_kl(jnp.array([-4.0, 0.0, 8.0, 20.0]))]
      [-2.6342, -0.4312, -0.0002, -0.0002]
    """
    clipped = jnp.clip(log_alpha, -LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)
    return K1 * jax.nn.sigmoid(K2 + K3 * clipped) - 0.5 * jax.nn.softplus(-clipped) - K1


def kl_divergence(params: VariationalParams) -> jax.Array:
    """Σ KL over every weight with a log σ²: the loss's regulariser before β and 1/N.

    Args:
      params: θ and log σ² (:class:`VariationalParams`).

    Returns:
      A float32 scalar, Σ −:func:`neg_kl` (log α) over the weights.

    Raises:
      ValueError: as :func:`log_alpha`.

    Examples:
      >>> import jax.numpy as jnp
      >>> vp = VariationalParams({"w": jnp.ones(3), "b": jnp.ones(1)},
      ...                        {"w": jnp.zeros(3), "b": None})  # log α = 0 on w
      >>> round(float(kl_divergence(vp)), 3)  # 3 · 0.4312
      1.294
    """
    terms = [-jnp.sum(neg_kl(a)) for _, a in tree_lib.scored_leaves(log_alpha(params))]
    return sum(terms, jnp.zeros([], jnp.float32))


def keep_masks(params: VariationalParams, threshold: Any) -> PyTree:
    """The kept weights: m = [log α < t] on every leaf with a log σ², ``None`` elsewhere.

    A weight whose θ or log σ² is NaN has a NaN log α and is not kept.

    Args:
      params: θ and log σ² (:class:`VariationalParams`).
      threshold: t, a number or a traced float (the paper: 3).

    Returns:
      Bool masks with the structure of θ (True = kept).

    Raises:
      ValueError: as :func:`log_alpha`.

    Examples:
      >>> import jax.numpy as jnp
      >>> vp = VariationalParams({"w": jnp.array([1.0, 0.1, 0.01])}, {"w": jnp.zeros(3)})
      >>> keep_masks(vp, 3.0)["w"].tolist()  # log α = 0, 4.6, 9.2
      [True, False, False]
    """
    return tree_lib.map_scored(lambda path, a: a < threshold, log_alpha(params))


def sparsify(params: VariationalParams, threshold: Any) -> tuple[PyTree, PyTree]:
    """The sparse model Sparse VD leaves: θ ⊙ m and m, m = [log α < t].

    This is the deterministic network the paper evaluates: pruned weights are exactly 0.0
    (selected, not multiplied), the other leaves of θ are unchanged.

    Args:
      params: θ and log σ² (:class:`VariationalParams`).
      threshold: t, a number or a traced float (the paper: 3).

    Returns:
      ``(params, masks)``: θ with pruned weights 0.0, and the bool masks with θ's
      structure (``None`` on leaves without a log σ²).

    Raises:
      ValueError: as :func:`log_alpha`.

    Examples:
      >>> import jax.numpy as jnp
      >>> vp = VariationalParams({"w": jnp.array([1.0, 0.1]), "b": jnp.ones(1)},
      ...                        {"w": jnp.zeros(2), "b": None})
      >>> theta, masks = sparsify(vp, 3.0)
      >>> theta["w"].tolist(), theta["b"].tolist(), masks["b"]
      ([1.0, 0.0], [1.0], None)
    """
    masks = keep_masks(params, threshold)
    return masks_lib.apply_masks(params.theta, masks), masks


def kl_weight(step: jax.Array, warmup: jax.Array) -> jax.Array:
    """β_t, the KL term's weight: min(t / warmup, 1), or 1 with ``warmup`` <= 0.

    Args:
      step: t, the step count (any shape).
      warmup: the steps over which β grows linearly from 0 to 1.

    Returns:
      β_t in [0, 1], float32, with the shape of ``step``.

    Examples:
      >>> import jax.numpy as jnp
      >>> kl_weight(jnp.array([0, 5, 10, 20]), 10.0).tolist()
      [0.0, 0.5, 1.0, 1.0]
      >>> kl_weight(jnp.array(0), 0.0).item()
      1.0
    """
    step = jnp.asarray(step, jnp.float32)
    warmup = jnp.asarray(warmup, jnp.float32)
    return jnp.where(warmup > 0, jnp.clip(step / jnp.maximum(warmup, 1.0), 0.0, 1.0), 1.0)


def sparse_vd(
    threshold: float = 3.0,
    log_sigma2_init: float = -10.0,
    warmup: int = 0,
    every: int = 1,
) -> Pruner:
    """Sparse Variational Dropout's pruner: m = [log α < t], over θ and log σ².

    The optimizer state of ``dp.prune(inner, sparse_vd(...))`` is built over
    :class:`VariationalParams` (``tx.init(variational_params(params, log_sigma2_init))``).
    Soft mode: θ and log σ² train densely on the SGVB loss (:func:`sgvb`) and nothing is
    masked during training; the state's masks, [log α < t] on θ's leaves with a log σ² and
    ``None`` on log σ², are recomputed every ``every`` steps from the parameters at the
    start of the step, to record the sparsity as it develops. The final model is
    :func:`sparsify` of the trained parameters (the harness does that at the end of the
    phase).

    Args:
      threshold: t >= 0 on log α (default 3, the paper's); a weight is kept iff
        log α < t. A hyperparameter: settable in the state.
      log_sigma2_init: log σ²'s starting value, a finite number (default −10, the paper's),
        for :func:`variational_params`; kept in the state as a hyperparameter (changing it
        there later has no effect).
      warmup: steps over which the KL weight β grows linearly from 0 to 1 (an integer
        >= 0; default 0: β = 1 throughout). A hyperparameter, read by :func:`sgvb`'s
        penalty.
      every: steps between recomputations of the state's masks (an integer >= 1; default
        1).

    Returns:
      A soft-mode :class:`dynprune.pruner.Pruner` (``update_pruned=True``) with
      hyperparameters ``threshold``, ``log_sigma2_init`` and ``warmup``.

    Raises:
      TypeError: a number argument is not a number, or a step argument not an integer.
      ValueError: ``threshold`` negative or not finite, ``log_sigma2_init`` not finite, a
        step argument out of range; (from ``tx.init``) parameters that are not a
        :class:`VariationalParams` or whose log σ² does not match θ (the leaf is named).

    Examples:
      A Linen model trained a few steps on the SGVB loss, then sparsified:

      >>> import jax, jax.numpy as jnp, optax, flax.linen as nn, dynprune as dp
      >>> model = nn.Dense(2)
      >>> params = model.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
      >>> pruner = dp.algorithms.sparse_vd(threshold=3.0, warmup=10)
      >>> vparams = dp.algorithms.variational_params(params, -10.0)
      >>> tx = dp.prune(optax.adam(1e-2), pruner)
      >>> state = tx.init(vparams)
      >>> objective = dp.algorithms.sgvb(lambda p, x: model.apply({"params": p}, x), n=8)
      >>> def loss(vp, state, x, y):
      ...     logits = objective.apply_fn(objective.forward_params(vp, state), x)
      ...     ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      ...     return ce + objective.penalty(vp, state)
      >>> @jax.jit
      ... def step(vp, state, x, y):
      ...     grads = jax.grad(loss)(vp, state, x, y)
      ...     updates, state = tx.update(grads, state, vp)
      ...     return dp.apply_updates(vp, updates, state), state
      >>> x, y = jax.random.normal(jax.random.key(1), (8, 4)), jnp.arange(8) % 2
      >>> for _ in range(3):
      ...     vparams, state = step(vparams, state, x, y)
      >>> theta, masks = dp.algorithms.sparsify(vparams, 3.0)
      >>> masks["kernel"].shape, masks["bias"], dp.masks_of(state).log_sigma2["kernel"]
      ((4, 2), None, None)

    References:
      Molchanov, Ashukha & Vetrov, "Variational Dropout Sparsifies Deep Neural Networks",
      ICML 2017.
    """
    checks.hyperparams({"threshold": threshold})
    log_sigma2_init = checks.real("log_sigma2_init", log_sigma2_init)
    warmup = checks.steps("warmup", warmup)
    every = checks.steps("every", every, minimum=1)

    def masks(params: Any, t: jax.Array) -> VariationalParams:
        params = _checked(params, "sparse_vd")
        unpruned = tree_lib.map_with_path(lambda path, x: None, params.log_sigma2)
        return VariationalParams(keep_masks(params, t), unpruned)

    def init(params: Any, hp: Any, key: jax.Array) -> tuple[VariationalParams, Any]:
        del key
        return masks(params, hp["threshold"]), ()

    def update(ctx: Context) -> tuple[VariationalParams, Any]:
        return masks(ctx.params, ctx.hyperparams["threshold"]), ctx.aux

    return Pruner(
        init=init,
        should_update=lambda ctx: ctx.step % every == 0,
        update=update,
        hyperparams={
            "threshold": threshold,
            "log_sigma2_init": log_sigma2_init,
            "warmup": warmup,
        },
        soft=True,
        update_pruned=True,
    )


class Objective(NamedTuple):
    """A train step's pieces for the SGVB loss, in the form of
    :func:`dynprune.harness.train.train_step`'s arguments.

    The loss of a batch (x, y) is mean CE(``apply_fn(forward_params(params, opt_state),
    x)``, y) + ``penalty(params, opt_state)``, its gradient taken with respect to
    ``params`` (a :class:`VariationalParams`).

    Attributes:
      apply_fn: ``apply_fn(sample, images) -> logits``: the stochastic forward pass
        (:func:`~dynprune.algorithms.local_reparameterization`).
      forward_params: ``forward_params(params, opt_state) -> sample``: the parameters
        with this step's PRNG key, drawn from the state's key and step count (so a resumed
        run draws the same noise).
      penalty: ``penalty(params, opt_state) -> scalar``: β_t · KL / N, β_t from the step
        count and the pruner's ``warmup`` (:func:`kl_weight`).

    Examples:
      >>> import flax.linen as nn
      >>> objective = sgvb(lambda p, x: nn.Dense(2).apply({"params": p}, x), n=100)
      >>> sorted(objective._fields)
      ['apply_fn', 'forward_params', 'penalty']
    """

    apply_fn: Callable[[Any, jax.Array], jax.Array]
    forward_params: Callable[[Any, Any], Any]
    penalty: Callable[[Any, Any], jax.Array]


def sgvb(apply_fn: Callable[[PyTree, jax.Array], jax.Array], n: int) -> Objective:
    """The SGVB loss's pieces for a Linen model trained with :func:`sparse_vd` on N examples.

    Args:
      apply_fn: the model's pure ``apply_fn(params, images) -> logits`` (Flax Linen: see
        :func:`~dynprune.algorithms.local_reparameterization`).
      n: N, the number of training examples (an integer >= 1): the KL is per example.

    Returns:
      The :class:`Objective`; its functions read the :class:`~dynprune.PruneState` of
      :func:`sparse_vd` in the optimizer state.

    Raises:
      TypeError, ValueError: ``n`` is not an integer >= 1.

    Examples:
      See :func:`sparse_vd` for a train step; the penalty alone, at β = 1:

      >>> import jax.numpy as jnp, optax, flax.linen as nn, dynprune as dp
      >>> vp = dp.algorithms.variational_params({"kernel": jnp.ones((3, 2)),
      ...                                        "bias": jnp.zeros(2)}, log_sigma2_init=0.0)
      >>> state = dp.prune(optax.sgd(0.1), dp.algorithms.sparse_vd()).init(vp)
      >>> objective = sgvb(lambda p, x: nn.Dense(2).apply({"params": p}, x), n=6)
      >>> round(float(objective.penalty(vp, state)), 4)  # 6 weights at log α = 0, over N = 6
      0.4312
    """
    n = checks.steps("n", n, minimum=1)
    noisy = local_reparameterization(apply_fn)

    def forward_params(params: Any, opt_state: Any) -> tuple[Any, jax.Array]:
        state = find_state(opt_state)
        key = jax.random.fold_in(jax.random.fold_in(state.key, state.count), _NOISE_STREAM)
        return params, key

    def apply(sample: tuple[Any, jax.Array], images: jax.Array) -> jax.Array:
        params, key = sample
        params = _checked(params, "sgvb")
        return noisy(params.theta, params.log_sigma2, images, key)

    def penalty(params: Any, opt_state: Any) -> jax.Array:
        state = find_state(opt_state)
        beta = kl_weight(state.count, state.hyperparams["warmup"])
        return beta * kl_divergence(params) / n

    return Objective(apply, forward_params, penalty)
