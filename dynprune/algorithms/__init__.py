"""Pruning algorithms: each a :class:`dynprune.pruner.Pruner` recipe citing its paper.

:func:`get` builds one by name from configuration data (see :func:`names`).
"""

from dynprune.algorithms.fixed import fixed
from dynprune.algorithms.gmp import gmp
from dynprune.algorithms.lottery import lottery
from dynprune.algorithms.magnitude import iterative, one_shot
from dynprune.algorithms.movement import movement
from dynprune.algorithms.network_surgery import DNSState, dns
from dynprune.algorithms.random import random
from dynprune.algorithms.registry import STEP_ARGUMENTS, arguments, get, names
from dynprune.algorithms.reparameterization import local_reparameterization
from dynprune.algorithms.scheduled import scheduled
from dynprune.algorithms.sensitivity import sensitivity
from dynprune.algorithms.snip import snip, snip_masks
from dynprune.algorithms.sparse_training import dynamic_sparse, rigl, sparse_evolutionary
from dynprune.algorithms.straight_through import straight_through
from dynprune.algorithms.structured_gmp import structured_gmp
from dynprune.algorithms.threshold import threshold
from dynprune.algorithms.variational_dropout import (
    VariationalParams,
    keep_masks,
    kl_divergence,
    log_alpha,
    sgvb,
    sparse_vd,
    sparsify,
    variational_params,
)

__all__ = [
    "STEP_ARGUMENTS",
    "DNSState",
    "VariationalParams",
    "arguments",
    "dns",
    "dynamic_sparse",
    "fixed",
    "get",
    "gmp",
    "iterative",
    "keep_masks",
    "kl_divergence",
    "local_reparameterization",
    "log_alpha",
    "lottery",
    "movement",
    "names",
    "one_shot",
    "random",
    "rigl",
    "scheduled",
    "sensitivity",
    "sgvb",
    "snip",
    "snip_masks",
    "sparse_evolutionary",
    "sparse_vd",
    "sparsify",
    "straight_through",
    "structured_gmp",
    "threshold",
    "variational_params",
]
