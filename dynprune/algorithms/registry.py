"""Algorithms by name, so that a run's pruner is configuration data: a name and JSON values.

``get("gmp", target=0.9, begin=0, end=5000)`` is ``gmp(target=0.9, begin=0, end=5000)``,
with the name and the arguments checked against the factory's signature first, so a typo
in a config fails with the valid choices instead of a bare ``TypeError``. Registered are
the algorithms configured by values alone; ``fixed``, ``straight_through`` and
``snip_masks`` take masks, a pruner or a loss function and are called directly.
``sparse_vd``'s pruner runs over variational parameters (θ and log σ²,
:func:`~dynprune.algorithms.variational_params`) and is trained on its own loss
(:func:`~dynprune.algorithms.sgvb`); the harness does both for a phase that names it.

Every argument counted in steps is named one of :data:`STEP_ARGUMENTS`, so a config
layer can convert epochs to steps without knowing the algorithms.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from dynprune.algorithms.gmp import gmp
from dynprune.algorithms.lottery import lottery
from dynprune.algorithms.magnitude import iterative, one_shot
from dynprune.algorithms.movement import movement
from dynprune.algorithms.network_surgery import dns
from dynprune.algorithms.random import random
from dynprune.algorithms.sensitivity import sensitivity
from dynprune.algorithms.snip import snip
from dynprune.algorithms.sparse_training import rigl, sparse_evolutionary
from dynprune.algorithms.structured_gmp import structured_gmp
from dynprune.algorithms.threshold import threshold
from dynprune.algorithms.variational_dropout import sparse_vd
from dynprune.pruner import Pruner

__all__ = ["STEP_ARGUMENTS", "arguments", "get", "names"]

STEP_ARGUMENTS = ("begin", "end", "every", "at", "iter_stop", "warmup", "period", "rewind_step")

_FACTORIES: dict[str, Callable[..., Pruner]] = {
    "dns": dns,
    "gmp": gmp,
    "iterative": iterative,
    "lottery": lottery,
    "movement": movement,
    "one_shot": one_shot,
    "random": random,
    "rigl": rigl,
    "sensitivity": sensitivity,
    "set": sparse_evolutionary,
    "snip": snip,
    "sparse_vd": sparse_vd,
    "structured_gmp": structured_gmp,
    "threshold": threshold,
}


def names() -> list[str]:
    """The registered algorithm names, sorted.

    Returns:
      The names :func:`get` accepts.

    Examples:
      >>> import dynprune as dp
      >>> dp.algorithms.names()[:3]
      ['dns', 'gmp', 'iterative']
    """
    return sorted(_FACTORIES)


def _parameters(name: str) -> dict[str, inspect.Parameter]:
    if name not in _FACTORIES:
        raise ValueError(f"unknown algorithm {name!r}; valid names: {', '.join(names())}")
    return dict(inspect.signature(_FACTORIES[name]).parameters)


def arguments(name: str) -> list[str]:
    """The argument names of algorithm ``name``, in the factory's order.

    Args:
      name: a registered name (see :func:`names`).

    Returns:
      The keyword arguments :func:`get` accepts for ``name``.

    Raises:
      ValueError: if ``name`` is not registered; the message lists the valid names.

    Examples:
      >>> import dynprune as dp
      >>> dp.algorithms.arguments("one_shot")
      ['target', 'at', 'scope', 'distribution', 'overrides', 'filter']
    """
    return list(_parameters(name))


def get(name: str, /, **kwargs: Any) -> Pruner:
    """The pruner that algorithm ``name`` builds from ``kwargs``.

    Args:
      name: a registered name (see :func:`names`); ``"set"`` is
        :func:`~dynprune.algorithms.sparse_evolutionary`.
      **kwargs: the factory's arguments, by name (values as JSON gives them: a list
        where a tuple is expected, a ``{regex: value, "default": value}`` dict for
        per-layer values such as DNS's ``c``).

    Returns:
      The :class:`dynprune.pruner.Pruner`.

    Raises:
      ValueError: if ``name`` is not registered, an argument is unknown, or a required
        one is missing; the message names the algorithm and lists the valid choices.

    Examples:
      >>> import optax, dynprune as dp
      >>> pruner = dp.algorithms.get("gmp", target=0.9, begin=0, end=5000, every=100)
      >>> tx = dp.prune(optax.adam(1e-3), pruner)
      >>> dp.algorithms.get("gmp", sparsity=0.9, begin=0, end=5000)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: algorithm 'gmp' has no argument 'sparsity'; its arguments: target, begin, ...
    """
    parameters = _parameters(name)
    valid = ", ".join(parameters)
    unknown = [k for k in kwargs if k not in parameters]
    if unknown:
        listed = ", ".join(repr(k) for k in unknown)
        raise ValueError(f"algorithm {name!r} has no argument {listed}; its arguments: {valid}")
    missing = [
        k for k, p in parameters.items() if p.default is inspect.Parameter.empty and k not in kwargs
    ]
    if missing:
        listed = ", ".join(repr(k) for k in missing)
        raise ValueError(f"algorithm {name!r} needs argument {listed}; its arguments: {valid}")
    return _FACTORIES[name](**kwargs)
