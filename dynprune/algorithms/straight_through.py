"""Straight-through (soft) mode for any pruner.

Dense weights are kept; the forward pass sees w ⊙ m (:func:`dynprune.masked_params`);
the gradient ∂L/∂(w ⊙ m) passes straight through the mask to every weight, so pruned
weights keep learning and return when their score recovers.

References:
  Bengio, Léonard & Courville, "Estimating or Propagating Gradients Through Stochastic
  Neurons", arXiv:1308.3432, 2013. Zhou et al., "Learning N:M Fine-grained Structured
  Sparse Neural Networks From Scratch", ICLR 2021 (SR-STE).
"""

from __future__ import annotations

from dynprune.pruner import Pruner


def straight_through(pruner: Pruner) -> Pruner:
    """``pruner`` in soft mode: masks in the forward pass, dense straight-through updates."""
    return pruner._replace(soft=True, update_pruned=True)
