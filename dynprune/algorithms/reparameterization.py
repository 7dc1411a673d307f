"""The local reparameterisation trick for Flax Linen ``nn.Dense`` and ``nn.Conv`` layers.

With independent Gaussian weights w = θ + σ ⊙ ε (ε ~ N(0, 1)), a layer's pre-activation is
Gaussian too, so it is sampled directly instead of the weights (Kingma, Salimans & Welling
2015): for a Dense layer with input x (one row per example)

    b = x·θ + bias + sqrt(x² · σ² + 10⁻⁸) ⊙ ε,   ε ~ N(0, 1) per example and output unit,

and for a convolution, conv(x, θ) + bias + sqrt(conv(x², σ²) + 10⁻⁸) ⊙ ε, with ε drawn per
example, output position and channel. The 10⁻⁸ (as in the authors' code) keeps the square
root's gradient finite where every input is 0. The variance term is computed by the layer
itself — a clone with kernel σ², no bias, applied to x² — so padding, strides, dilation and
feature groups are the layer's own.

The layers are reached through :func:`flax.linen.intercept_methods`: any Linen model's
``apply`` works unchanged. Flax NNX models are refused (their layers cannot be intercepted
from outside): :func:`local_reparameterization` raises rather than silently running a
deterministic forward pass.

References:
  Kingma, Salimans & Welling, "Variational Dropout and the Local Reparameterization Trick",
  NeurIPS 2015; Molchanov, Ashukha & Vetrov, "Variational Dropout Sparsifies Deep Neural
  Networks", ICML 2017.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from dynprune import tree as tree_lib

__all__ = ["VARIANCE_EPS", "local_reparameterization"]

PyTree = Any
VARIANCE_EPS = 1e-8
"""Added to each pre-activation's variance before its square root (the authors' value)."""
LAYERS = (nn.Dense, nn.Conv)


def local_reparameterization(
    apply_fn: Callable[[PyTree, jax.Array], jax.Array],
) -> Callable[[PyTree, PyTree, jax.Array, jax.Array], jax.Array]:
    """A stochastic forward pass that samples each layer's pre-activations, not its weights.

    Every ``nn.Dense`` or ``nn.Conv`` call whose kernel has a log σ² leaf returns
    x·θ + bias + sqrt(x²·σ² + 10⁻⁸) ⊙ ε (conv: conv(x, θ) + bias + sqrt(conv(x², σ²) +
    10⁻⁸) ⊙ ε), ε ~ N(0, 1) per example and output unit (and position, for a convolution),
    drawn from ``key`` folded with the layer's index; other layers run as usual. The
    output's mean over ε is the deterministic layer's, its variance x²·σ².

    Args:
      apply_fn: a Flax Linen model's pure ``apply_fn(params, images) -> logits``, e.g.
        ``lambda p, x: model.apply({"params": p}, x)``.

    Returns:
      ``noisy(theta, log_sigma2, images, key) -> logits``: ``theta`` the model's parameters
      (the means), ``log_sigma2`` a tree with their structure holding log σ² on the sampled
      kernels (``None`` elsewhere), ``key`` a PRNG key. Pure: ``jit``, ``vmap`` and ``grad``
      pass through (the gradient reaches θ and log σ²).

    Raises:
      ValueError: (when called) ``theta`` is a Flax NNX ``nnx.State``; a log σ² leaf whose
        layer no ``nn.Dense`` / ``nn.Conv`` call used (an NNX model, another layer type, or
        a path the model does not have) — the message names the leaf path; or a log σ²
        leaf whose shape is not its kernel's.

    Examples:
      With σ² ≈ 0 the pass is the deterministic one; the noise has the variance x²·σ²:

      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> model = nn.Dense(2)
      >>> theta = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
      >>> noisy = local_reparameterization(lambda p, x: model.apply({"params": p}, x))
      >>> x = jnp.array([[1.0, 2.0, 2.0]])
      >>> quiet = {"kernel": jnp.full((3, 2), -40.0), "bias": None}
      >>> noisy(theta, quiet, x, jax.random.key(0)).round(2).tolist()
      [[5.0, 5.0]]
      >>> log_sigma2 = {"kernel": jnp.zeros((3, 2)), "bias": None}  # σ² = 1: variance 9
      >>> keys = jax.random.split(jax.random.key(0), 20000)
      >>> out = jax.vmap(lambda k: noisy(theta, log_sigma2, x, k))(keys)
      >>> round(float(out.mean()), 1), round(float(out.var()), 0)
      (5.0, 9.0)

    References:
      Kingma, Salimans & Welling, "Variational Dropout and the Local Reparameterization
      Trick", NeurIPS 2015.
    """

    def noisy(theta: PyTree, log_sigma2: PyTree, images: jax.Array, key: jax.Array) -> jax.Array:
        if isinstance(theta, nnx.State):
            raise ValueError(
                "local_reparameterization intercepts Flax Linen nn.Dense / nn.Conv calls; "
                "a Flax NNX model's layers cannot be intercepted: use a Linen model"
            )
        tree_lib.check_same_structure(theta, log_sigma2, what="log_sigma2")
        kernels = dict(tree_lib.scored_leaves(theta))
        variances = dict(tree_lib.scored_leaves(log_sigma2))
        for path, ls2 in variances.items():
            if jnp.shape(ls2) != jnp.shape(kernels[path]):
                raise ValueError(
                    f"log_sigma2 for leaf {path!r} has shape {jnp.shape(ls2)}, its kernel "
                    f"{jnp.shape(kernels[path])}"
                )
        order = {path: i for i, path in enumerate(variances)}
        calls: dict[str, int] = {}
        inside: list[bool] = []  # the variance pass runs the layer again: do not recurse

        def interceptor(next_fun, args, kwargs, context):
            module = context.module
            if inside or context.method_name != "__call__" or not isinstance(module, LAYERS):
                return next_fun(*args, **kwargs)
            path = "/".join((*module.path, "kernel"))
            if path not in variances:
                return next_fun(*args, **kwargs)
            mean = next_fun(*args, **kwargs)
            inputs = args[0] if args else kwargs["inputs"]
            sigma2 = jnp.exp(variances[path])
            inside.append(True)
            try:
                variance = module.clone(parent=None, use_bias=False).apply(
                    {"params": {"kernel": sigma2}}, jnp.square(inputs)
                )
            finally:
                inside.pop()
            n = calls.get(path, 0)
            calls[path] = n + 1
            layer_key = jax.random.fold_in(jax.random.fold_in(key, order[path]), n)
            eps = jax.random.normal(layer_key, jnp.shape(mean), jnp.result_type(mean))
            return mean + jnp.sqrt(variance + VARIANCE_EPS) * eps

        with nn.intercept_methods(interceptor):
            logits = apply_fn(theta, images)
        unused = [path for path in variances if path not in calls]
        if unused:
            raise ValueError(
                f"local_reparameterization: no flax.linen Dense or Conv call used the kernel "
                f"{unused[0]!r}, which has a log_sigma2 leaf; it intercepts Linen nn.Dense / "
                "nn.Conv only (Flax NNX models, other layer types and paths the model does "
                "not have are not supported)"
            )
        return logits

    return noisy
