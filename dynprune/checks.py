"""Validation of pruning arguments: a bad value fails loudly, naming the argument and the value.

Concrete values (Python or NumPy numbers, concrete arrays) are checked when a pruner is
built and when :func:`dynprune.set_hyperparams` stores them, and raise. A value traced
inside ``jit`` cannot raise: :func:`invalid` computes, as a bool array, whether any
hyperparameter is out of its range, and the transform keeps that flag in its state
(:func:`dynprune.invalid_hyperparams`).

A numeric hyperparameter's range is fixed by its name (:data:`RANGES`), one name for one
concept across all algorithms, so the state alone (a dict of float32 arrays) says how to
check it; a name not listed must be a finite number.

Examples:
  >>> from dynprune import checks
  >>> checks.RANGES["target"]
  Range(low=0.0, high=1.0, integer=False)
  >>> sorted(checks.RANGES)
  ['alpha', 'gamma', 'initial', 'inputs', 'iter_stop', 'power', 'target', 'threshold', 'units']
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["RANGES", "Range", "hyperparams", "invalid", "real", "steps"]


class Range(NamedTuple):
    """The valid values of a hyperparameter: finite as a float32, ``low <= x <= high``.

    A value x is valid when |x| <= float32 max and ``low <= x <= high`` (and, with
    ``integer``, x is a whole number). The default ``Range()`` accepts any finite number.

    Attributes:
      low: the smallest valid value; default ``-inf`` (unbounded below, but finite).
      high: the largest valid value; default ``inf`` (unbounded above, but finite).
      integer: the value counts steps and must be an integer; default False.

    Examples:
      >>> from dynprune import checks
      >>> checks.Range(0.0, 1.0)
      Range(low=0.0, high=1.0, integer=False)
      >>> checks.hyperparams({"gamma": -1.0})
      Traceback (most recent call last):
      ...
      ValueError: hyperparameter 'gamma' must be a finite number >= 0, got -1.0
    """

    low: float = -math.inf
    high: float = math.inf
    integer: bool = False


RANGES: Mapping[str, Range] = {
    "target": Range(0.0, 1.0),
    "initial": Range(0.0, 1.0),
    "alpha": Range(0.0, 1.0),
    "threshold": Range(0.0),
    "gamma": Range(0.0),
    "power": Range(0.0),
    "iter_stop": Range(0.0, integer=True),
    "units": Range(0.0, 1.0),
    "inputs": Range(0.0, 1.0),
}
"""Range of each named hyperparameter (:class:`Range`); any other name: a finite number.

One name, one concept across all algorithms: ``target``, ``initial`` and ``alpha`` in
[0, 1]; ``threshold``, ``gamma`` and ``power`` >= 0; ``iter_stop`` an integer >= 0;
``units`` and ``inputs`` (the fractions of units and of input features
:func:`dynprune.algorithms.structured_gmp` drops) in [0, 1]. A per-layer hyperparameter
``"<name>:<regex>"`` (e.g. ``"units:fc1"``) has the range of ``<name>``.
A plain dict has no docstring of its own; the module's example shows it in use.
"""


def _range_of(name: str) -> Range:
    """The range of hyperparameter ``name``; ``"units:fc1"`` has the range of ``units``."""
    return RANGES.get(name.partition(":")[0], Range())


def _range_text(r: Range) -> str:
    kind = "an integer" if r.integer else "a finite number"
    if r.low == -math.inf and r.high == math.inf:
        return kind
    if r.high == math.inf:
        return f"{kind} >= {r.low:g}"
    return f"{kind} in [{r.low:g}, {r.high:g}]"


def real(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a float after checking it is a finite real number in [``low``, ``high``].

    Args:
      name: what the value is, for the message (e.g. ``"target"``).
      value: a Python or NumPy real number, or a 0-d numeric array (not a bool).
      low: the smallest valid value; default ``-inf`` (no bound).
      high: the largest valid value; default ``inf`` (no bound; the value must still
        be finite).

    Returns:
      ``float(value)``.

    Raises:
      TypeError: if ``value`` is not a real number (a string, a bool, ``None``, an array
        with more than one element, …).
      ValueError: if it is NaN, infinite, or outside [``low``, ``high``].

    Examples:
      >>> from dynprune import checks
      >>> checks.real("target", 0.5, 0.0, 1.0)
      0.5
      >>> checks.real("target", 1.5, 0.0, 1.0)
      Traceback (most recent call last):
      ...
      ValueError: target must be a finite number in [0, 1], got 1.5
    """
    what = f"{name} must be {_range_text(Range(low, high))}, got {value!r}"
    if isinstance(value, bool | np.bool_) or not _is_real(value):
        raise TypeError(what)
    x = float(np.asarray(value))
    if not (_finite(x) and low <= x <= high):
        raise ValueError(what)
    return x


def steps(name: str, value: Any, minimum: int = 0) -> int:
    """``value`` as an int after checking it is an integer step count >= ``minimum``.

    Args:
      name: the argument, for the message (e.g. ``"every"``).
      value: a Python or NumPy integer (not a bool, not a float).
      minimum: the smallest valid value (0 for a step, 1 for a period or a count);
        default 0.

    Returns:
      ``int(value)``.

    Raises:
      TypeError: if ``value`` is not an integer.
      ValueError: if it is below ``minimum``.

    Examples:
      >>> from dynprune import checks
      >>> checks.steps("every", 100, minimum=1)
      100
      >>> checks.steps("every", 2.5, minimum=1)
      Traceback (most recent call last):
      ...
      TypeError: every must be an integer >= 1, got 2.5
    """
    what = f"{name} must be an integer >= {minimum}, got {value!r}"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(what)
    if value < minimum:
        raise ValueError(what)
    return int(value)


def hyperparams(values: Mapping[str, Any]) -> None:
    """Check concrete hyperparameter values against :data:`RANGES`, by name.

    Values traced inside ``jit`` cannot be checked here and are skipped
    (:func:`invalid` flags them when they reach the state). Arrays are checked
    elementwise, so a stacked state (one value per vmapped run) is checked whole.

    Args:
      values: ``{name: value}``; a value is a real number, a numeric array, or a tracer.

    Raises:
      TypeError: if a value is not a number or a numeric array (e.g. a string, a bool),
        or an integer hyperparameter (``iter_stop``) is given as a float.
      ValueError: if a value is NaN, infinite or outside its name's range; the message
        names the hyperparameter and the value.

    Examples:
      >>> from dynprune import checks
      >>> checks.hyperparams({"target": 0.9, "iter_stop": 1000})
      >>> checks.hyperparams({"target": float("nan")})
      Traceback (most recent call last):
      ...
      ValueError: hyperparameter 'target' must be a finite number in [0, 1], got nan
    """
    for name, value in values.items():
        if isinstance(value, jax.core.Tracer):
            continue
        r = _range_of(name)
        what = f"hyperparameter {name!r} must be {_range_text(r)}, got {value!r}"
        if isinstance(value, bool | np.bool_ | str | bytes) or value is None:
            raise TypeError(what)
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as err:  # e.g. a ragged list
            raise TypeError(what) from err
        if not (_numeric(array.dtype) or (array.dtype == object and _is_real(value))):
            raise TypeError(what)
        if r.integer and not jnp.issubdtype(array.dtype, jnp.integer):
            raise TypeError(what)
        x = array.astype(np.float64)
        if not (_finite(x) & (x >= r.low) & (x <= r.high)).all():
            raise ValueError(what)


def invalid(values: Mapping[str, jax.Array]) -> jax.Array:
    """Whether any hyperparameter is outside its range: the traced counterpart of
    :func:`hyperparams`, as a bool scalar that works under ``jit``, ``vmap`` and ``grad``.

    Args:
      values: ``{name: float array}``, as held in the transform's state.

    Returns:
      A bool scalar: True if some value is NaN, infinite, outside its name's
      :data:`RANGES` entry, or (for an integer hyperparameter) not a whole number.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import checks
      >>> bool(checks.invalid({"target": jnp.float32(0.9), "initial": jnp.float32(0.0)}))
      False
      >>> bool(checks.invalid({"target": jnp.float32(jnp.nan)}))
      True
    """
    bad = jnp.zeros([], bool)
    for name, value in values.items():
        r = _range_of(name)
        x = jnp.asarray(value, jnp.float32)
        out = ~jnp.isfinite(x) | (x < r.low) | (x > r.high)
        if r.integer:
            out = out | (x != jnp.round(x))
        bad = bad | jnp.any(out)
    return bad


def _finite(x: Any) -> Any:
    """Finite and still finite once stored as float32 (the state's dtype)."""
    return np.abs(x) <= np.finfo(np.float32).max


def _numeric(dtype: Any) -> bool:
    """An integer or floating dtype (bfloat16 included), not bool."""
    return bool(jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating))


def _is_real(value: Any) -> bool:
    """A real number: a Python/NumPy real scalar or a one-element int/float array."""
    if isinstance(value, numbers.Real):
        return True
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        return False
    return _numeric(array.dtype) and array.ndim == 0
