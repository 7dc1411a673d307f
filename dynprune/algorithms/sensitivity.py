"""Sensitivity-based neuron pruning (the origin document, §4.1).

Score of output neuron i with incoming weights w_i: s_i = Σ_j |w_ij| / sqrt(Σ_k w_ik²)
(‖w_i‖₁/‖w_i‖₂; see :func:`dynprune.scores.neuron_sensitivity`). The lowest-scoring
round(s · n_out) neurons of each layer are removed whole — kernel column and bias — at
once (``end=None``) or along the cubic ramp. Neurons are then physically removable
(``dynprune.surgery``).
"""

from __future__ import annotations

from dynprune import scores
from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import scheduled, target_ramp
from dynprune.pruner import Pruner, Scope


def sensitivity(
    target: float,
    begin: int = 0,
    end: int | None = None,
    every: int = 100,
    *,
    initial: float = 0.0,
    scope: Scope = "layer",
    overrides: dict[str, float] | None = None,
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Remove the fraction ``target`` of neurons with the lowest ‖w_i‖₁/‖w_i‖₂.

    Rule: output neuron i of a kernel (a Dense column, a conv output channel) scores

        s_i = Σ_j |w_ij| / sqrt(Σ_k w_ik²) = ‖w_i‖₁ / ‖w_i‖₂   (0 for an all-zero neuron),

    which lies in [1, sqrt(fan_in)] and measures how spread the incoming weights are,
    not their scale (:func:`dynprune.scores.neuron_sensitivity`). At each update the
    round(s_t · n_out) lowest-scoring neurons of each kernel (or of all kernels,
    ``scope="global"``) are removed whole: their kernel column and the ``bias`` entry
    beside it. s_t = ``target`` at ``begin`` (``end=None``), or along the cubic ramp
    s_t = s_f + (s_i − s_f)(1 − (t − begin)/(end − begin))³ updated at ``begin``,
    ``begin + every``, … and at ``end``. Hard mode: a removed neuron's weights are 0,
    so it scores 0 and stays removed; removed neurons can be cut out physically
    (:mod:`dynprune.surgery`).

    Args:
      target: the fraction of each kernel's output neurons to remove, in [0, 1]. A
        hyperparameter.
      begin: the first update step (an integer >= 0; default 0).
      end: ``None`` (default): one update, at ``begin``, straight to ``target``; else the
        step where the cubic ramp from ``initial`` reaches ``target`` (an integer >
        ``begin``).
      every: steps between ramp updates (an integer >= 1; default 100; also checked,
        but unused, when ``end`` is ``None``).
      initial: the sparsity of the ramp's first update, at ``begin``, in [0, 1]
        (default 0.0). A hyperparameter.
      scope: ``"layer"`` (default) or ``"global"`` (one neuron ranking over all kernels;
        takes no ``overrides``).
      overrides: ``{regex: fraction}``: a kernel whose path matches (first match) gets
        that fixed fraction at every update instead. Default ``None``.
      filter: which kernels to prune, leaves with ndim >= 2 only; default
        :func:`dynprune.tree.kernels`: every floating leaf with ndim >= 2 (Dense and
        conv kernels). Biases need not be selected: they follow their kernel's neurons.
        Any other leaf it selects (a norm scale) is refused at ``init``.

    Returns:
      A hard-mode :class:`dynprune.pruner.Pruner` with hyperparameters ``target`` and
      ``initial``.

    Raises:
      TypeError: if a step argument is not an integer, or ``target``, ``initial`` or an
        override is not a number.
      ValueError: if ``begin < 0``, ``every < 1``, ``end <= begin``, ``target``,
        ``initial`` or an override is not in [0, 1], ``scope`` is unknown, or
        ``scope="global"`` comes with overrides; at ``init``, if ``filter`` selects a
        leaf that is neither a kernel (ndim >= 2) nor the ``bias`` beside a selected
        one (the message names its path).

    Examples:
      Neuron 0's weights are spread (√3 ≈ 1.73), neuron 1's sit in one input (1.0):

      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> kernel = jnp.array([[1.0, 3.0], [1.0, 0.0], [1.0, 0.0]])
      >>> params = {"fc": {"kernel": kernel, "bias": jnp.array([0.5, 0.5])}}
      >>> tx = dp.prune(optax.sgd(0.0), dp.algorithms.sensitivity(0.5))
      >>> _, state = jax.jit(tx.update)(params, tx.init(params), params)
      >>> masks = dp.masks_of(state)["fc"]
      >>> masks["kernel"].tolist(), masks["bias"].tolist()
      ([[True, False], [True, False], [True, False]], [True, False])
    """
    schedule, cadence = target_ramp(begin, end, every)
    return scheduled(
        lambda ctx: scores.neuron_sensitivity(ctx.params, filter=filter),
        schedule,
        cadence,
        hyperparams={"target": target, "initial": initial},
        filter=filter,
        scope=scope,
        overrides=overrides,
        structured=True,
    )
