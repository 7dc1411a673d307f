"""dynprune: dynamic pruning of neural networks in JAX/Flax.

Pure pruning transforms over Flax parameter pytrees (Linen dicts and NNX state) that
compute scores and masks inside jitted train steps.

Examples:
  >>> import optax, dynprune as dp
  >>> tx = dp.prune(optax.adam(1e-3), dp.algorithms.gmp(target=0.9, begin=0, end=5000))
"""

from dynprune import (
    algorithms,
    checks,
    distributions,
    gating,
    masks,
    schedules,
    scores,
    select,
    sparse,
    stats,
    surgery,
    tree,
)
from dynprune.masks import apply_masks
from dynprune.prune_now import prune_now
from dynprune.pruner import Context, Pruner
from dynprune.summary import format_summary, summary
from dynprune.transform import (
    PruneState,
    apply_updates,
    find_state,
    hyperparams_of,
    invalid_hyperparams,
    masked_params,
    masks_of,
    prune,
    set_hyperparams,
    update_schedule,
)

__all__ = [
    "Context",
    "PruneState",
    "Pruner",
    "algorithms",
    "apply_masks",
    "apply_updates",
    "checks",
    "distributions",
    "find_state",
    "format_summary",
    "gating",
    "hyperparams_of",
    "invalid_hyperparams",
    "masked_params",
    "masks",
    "masks_of",
    "prune",
    "prune_now",
    "schedules",
    "scores",
    "select",
    "set_hyperparams",
    "sparse",
    "stats",
    "summary",
    "surgery",
    "tree",
    "update_schedule",
]
