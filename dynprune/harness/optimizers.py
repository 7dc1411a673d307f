"""The optimizer of a training phase, built from its settings (one builder for every script)."""

from __future__ import annotations

import optax

from dynprune.harness.config import Phase

__all__ = ["make_optimizer"]


def make_optimizer(phase: Phase, steps: int) -> optax.GradientTransformation:
    """The inner optimizer of ``phase`` for a run of ``steps`` steps.

    Learning rate: η_t = η·½(1 + cos(π·min(t, T)/T)) with T = ``steps`` (``schedule="cosine"``,
    ``optax.cosine_decay_schedule``), or η throughout (``"constant"``), η = ``phase.lr``.
    ``"adam"`` is AdamW, w ← w − η_t·(adam(g) + λ·w), decay decoupled from the gradient;
    ``"sgd"`` is heavy-ball momentum on g + λ·w (L2 decay added to the gradient), momentum
    ``phase.momentum``. λ = ``phase.weight_decay`` applies to every leaf, biases included.

    Args:
      phase: The phase's settings (:class:`~dynprune.harness.config.Phase`): ``lr``,
        ``optimizer``, ``schedule``, ``weight_decay`` and ``momentum`` are read.
      steps: The phase's number of steps T, over which the cosine schedule decays to 0
        (values below 1 count as 1; unused with ``schedule="constant"``).

    Returns:
      An ``optax.GradientTransformation``; wrap it in :func:`dynprune.prune` to prune.

    Examples:
      >>> import jax.numpy as jnp
      >>> phase = Phase(epochs=1, lr=0.5, optimizer="sgd", schedule="constant",
      ...               weight_decay=0.5, momentum=0.0)
      >>> tx = make_optimizer(phase, steps=100)
      >>> params = jnp.array([2.0, -4.0])
      >>> updates, state = tx.update(jnp.array([1.0, 1.0]), tx.init(params), params)
      >>> updates.tolist()  # -η·(g + λ·w)
      [-1.0, 0.5]

    References:
      Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", 2017;
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019 (AdamW).
    """
    lr = (
        optax.cosine_decay_schedule(phase.lr, max(steps, 1))
        if phase.schedule == "cosine"
        else phase.lr
    )
    if phase.optimizer == "adam":
        return optax.adamw(lr, weight_decay=phase.weight_decay)
    return optax.chain(
        optax.add_decayed_weights(phase.weight_decay), optax.sgd(lr, momentum=phase.momentum)
    )
