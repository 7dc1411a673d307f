"""The optimizer of a training phase, built from its settings (one builder for every script)."""

from __future__ import annotations

import optax

from dynprune.harness.config import Phase

__all__ = ["make_optimizer"]


def make_optimizer(phase: Phase, steps: int) -> optax.GradientTransformation:
    """The inner optimizer of ``phase`` for a run of ``steps`` steps.

    Learning rate: η_t = η·½(1 + cos(π t/T)) (``schedule="cosine"``, T = ``steps``) or η.
    ``"adam"`` is AdamW (decoupled weight decay λ); ``"sgd"`` is heavy-ball momentum with L2
    decay λ·w added to the gradient.

    Examples:
      >>> tx = make_optimizer(Phase(epochs=1, lr=0.1, optimizer="sgd", weight_decay=5e-4), 100)
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
