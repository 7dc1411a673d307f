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
    """The constant schedule s_t = s for every step t (TF-MOT ``ConstantSparsity``).

    Args:
      sparsity: s, the fraction of weights to prune, in [0, 1] (a Python number or a
        traced array; not checked here, :func:`dynprune.masks.sparsity` checks it).

    Returns:
      ``step -> s`` as float32, with the shape of ``step``.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> dp.schedules.constant(0.75)(jnp.arange(3)).tolist()
      [0.75, 0.75, 0.75]
    """
    return lambda step: jnp.asarray(sparsity, jnp.float32) + jnp.zeros_like(step, jnp.float32)


def one_shot(sparsity: Any, at: Any = 0) -> Schedule:
    """Prune once, then fine-tune: s_t = 0 for t < ``at`` and s_t = s for t >= ``at``.

    Args:
      sparsity: s, the fraction of weights to prune from step ``at`` on, in [0, 1]
        (may be traced).
      at: the step where the sparsity jumps from 0 to s (default 0: from the start).

    Returns:
      ``step -> s_t`` as float32.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> dp.schedules.one_shot(0.5, at=2)(jnp.arange(4)).tolist()
      [0.0, 0.0, 0.5, 0.5]
    """
    return lambda step: jnp.where(step >= at, jnp.asarray(sparsity, jnp.float32), 0.0)


def polynomial(final: Any, begin: int, end: int, *, initial: Any = 0.0, power: int = 3) -> Schedule:
    """Gradual pruning (Zhu & Gupta 2017): a polynomial ramp from ``initial`` to ``final``.

    For t0 = ``begin``, t0 + nΔt = ``end`` and p = ``power`` (3 in the paper):

        s_t = s_i                                          for t < t0,
        s_t = s_f + (s_i − s_f) · (1 − (t − t0)/(nΔt))^p    for t0 <= t <= t0 + nΔt,
        s_t = s_f                                          for t > t0 + nΔt.

    The sparsity rises fast at first and levels off as it nears s_f, when fewer
    redundant weights are left. This is ``optax.polynomial_schedule`` (TF-MOT
    ``PolynomialDecay(power=3)``). The schedule gives the value at every step; how often
    the masks follow it (Zhu & Gupta's Δt) is a separate cadence, see :func:`every`.

    Args:
      final: s_f, the sparsity reached at ``end``, in [0, 1] (may be traced).
      begin: t0, the step the ramp starts from (a Python int >= 0; optax treats a
        negative one as 0 without moving ``end`` back with it).
      end: t0 + nΔt, the step where s_f is reached (a Python int > ``begin``).
      initial: s_i, the sparsity at and before ``begin``, in [0, 1] (default 0; may be
        traced).
      power: p, the exponent of the ramp (default 3).

    Returns:
      ``step -> s_t`` as float32.

    Raises:
      ValueError: if ``end <= begin``.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> s = dp.schedules.polynomial(0.9, begin=2, end=12)
      >>> [round(float(s(jnp.asarray(t))), 4) for t in (0, 2, 7, 12, 20)]
      [0.0, 0.0, 0.7875, 0.9, 0.9]

    References:
      Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for
      model compression", arXiv:1710.01878, 2017.
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
    fraction p = 1 − (1 − s_f)^(1/R) of the remaining weights, so after it

        s_t = 1 − (1 − s_f)^(r/R)   for begin + (r − 1)·period <= t < begin + r·period,

    s_t = 0 before ``begin``, and s_t = s_R = s_f from the last round on.

    Args:
      final: s_f, the sparsity after the last round, in [0, 1] (may be traced).
      rounds: R, the number of rounds (>= 1).
      begin: the step of round 1 (>= 0).
      period: steps between rounds (>= 1; not checked here, the algorithms check it).

    Returns:
      ``step -> s_t`` as float32.

    Raises:
      ValueError: if ``rounds < 1``.

    Examples:
      Three rounds to 87.5% each keep half of what is left (p = 0.5):

      >>> import jax.numpy as jnp, dynprune as dp
      >>> s = dp.schedules.iterative(0.875, rounds=3, begin=2, period=4)
      >>> [float(s(jnp.asarray(t))) for t in (0, 2, 6, 10, 99)]
      [0.0, 0.5, 0.75, 0.875, 0.875]

    References:
      Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient
      Neural Networks", NeurIPS 2015.
      Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable
      Neural Networks", ICLR 2019.
    """
    if rounds < 1:
        raise ValueError(f"iterative schedule needs rounds >= 1, got {rounds!r}")

    def schedule(step: jax.Array) -> jax.Array:
        done = jnp.clip(jnp.floor((step - begin) / period) + 1, 0, rounds)
        return jnp.asarray(1.0 - (1.0 - final) ** (done / rounds), jnp.float32)

    return schedule


def every(period: Any, begin: Any = 0, end: Any = None) -> Cadence:
    """Update cadence: True when begin <= t <= end and (t − begin) is a multiple of ``period``.

    The steps where a pruner recomputes its masks: begin, begin + period, begin +
    2·period, … up to ``end`` (TF-MOT ``frequency``; Zhu & Gupta's Δt).

    Args:
      period: steps between updates (>= 1; not checked here, the algorithms check it).
      begin: the first update step (default 0).
      end: the last step that may update (inclusive; it is an update only if
        ``end − begin`` is a multiple of ``period``), or ``None`` (default) never to stop.

    Returns:
      ``step -> bool``, with the shape of ``step``.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> on = dp.schedules.every(3, begin=1, end=7)
      >>> on(jnp.arange(10)).nonzero()[0].tolist()
      [1, 4, 7]
    """

    def cadence(step: jax.Array) -> jax.Array:
        on = (step >= begin) & ((step - begin) % period == 0)
        return on if end is None else on & (step <= end)

    return cadence
