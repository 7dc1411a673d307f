"""Pruning algorithms: each a :class:`dynprune.pruner.Pruner` recipe citing its paper."""

from dynprune.algorithms.gmp import gmp
from dynprune.algorithms.magnitude import iterative, one_shot
from dynprune.algorithms.random import random
from dynprune.algorithms.sensitivity import sensitivity
from dynprune.algorithms.snip import snip
from dynprune.algorithms.threshold import threshold

__all__ = ["gmp", "iterative", "one_shot", "random", "sensitivity", "snip", "threshold"]
