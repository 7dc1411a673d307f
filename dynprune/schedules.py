"""Sparsity schedules (``step -> sparsity``) and update cadences (``step -> bool``).

Both are plain functions of the step count, like optax schedules, and accept traced
hyperparameters, so they run inside ``jit`` and sweeps over them compile once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jax.Array], jax.Array]
Cadence = Callable[[jax.Array], jax.Array]

__all__ = [
    "Cadence",
    "Schedule",
    "constant",
    "every",
    "iterative",
    "one_shot",
    "polynomial",
]


def constant(sparsity: Any) -> Schedule:
    """s_t = s for every t (TF-MOT ``ConstantSparsity``)."""
    return lambda step: jnp.asarray(sparsity, jnp.float32) + jnp.zeros_like(step, jnp.float32)


def one_shot(sparsity: Any, at: Any = 0) -> Schedule:
    """s_t = 0 for t < ``at``, s afterwards: prune once, then fine-tune."""
    return lambda step: jnp.where(step >= at, jnp.asarray(sparsity, jnp.float32), 0.0)


def polynomial(final: Any, begin: int, end: int, *, initial: Any = 0.0, power: int = 3) -> Schedule:
    """Gradual pruning (Zhu & Gupta 2017), s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))^3.

    t0 = ``begin``, t0 + nΔt = ``end``; s_t = s_i before ``begin`` and s_f after ``end``.
    This is ``optax.polynomial_schedule`` (TF-MOT ``PolynomialDecay(power=3)``); ``final``
    and ``initial`` may be traced, ``begin`` and ``end`` are Python ints.

    References:
      Zhu & Gupta, "To prune, or not to prune", arXiv:1710.01878, 2017.
    """
    if end <= begin:
        raise ValueError(f"polynomial schedule needs end > begin, got begin={begin}, end={end}")
    ramp = optax.polynomial_schedule(
        init_value=initial,
        end_value=final,
        power=power,
        transition_steps=end - begin,
        transition_begin=begin,
    )
    return lambda step: jnp.asarray(ramp(step), jnp.float32)


def iterative(final: Any, rounds: int, begin: Any, period: Any) -> Schedule:
    """Iterative pruning in ``rounds`` equal-ratio rounds (Han et al. 2015; Frankle & Carbin 2019).

    Round r (r = 1..R) happens at t = begin + (r − 1)·period and prunes the same
    fraction p of the remaining weights, so s_r = 1 − (1 − s_f)^(r/R) and s_R = s_f.
    """
    if rounds < 1:
        raise ValueError(f"iterative schedule needs rounds >= 1, got {rounds!r}")

    def schedule(step: jax.Array) -> jax.Array:
        done = jnp.clip(jnp.floor((step - begin) / period) + 1, 0, rounds)
        return jnp.asarray(1.0 - (1.0 - final) ** (done / rounds), jnp.float32)

    return schedule


def every(period: Any, begin: Any = 0, end: Any = None) -> Cadence:
    """Update cadence: True when begin <= t <= end and (t − begin) is a multiple of ``period``.

    ``end=None`` never stops (TF-MOT ``frequency``; Zhu & Gupta's Δt).
    """

    def cadence(step: jax.Array) -> jax.Array:
        on = (step >= begin) & ((step - begin) % period == 0)
        return on if end is None else on & (step <= end)

    return cadence
