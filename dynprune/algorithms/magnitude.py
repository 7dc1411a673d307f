"""One-shot and iterative magnitude pruning with retraining (Han et al. 2015).

One-shot: at step t0 drop the s smallest |w| per layer (or globally), then keep training
the survivors (hard masks: pruned weights stay exactly 0).
Iterative: R rounds, period P apart; round r prunes to s_r = 1 − (1 − s_f)^(r/R), i.e. the
same fraction of the remaining weights each round, retraining in between.

References:
  Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient Neural
  Networks", NeurIPS 2015.
"""

from __future__ import annotations

from dynprune import checks, schedules, scores
from dynprune import tree as tree_lib
from dynprune.algorithms.scheduled import scheduled
from dynprune.pruner import Pruner, Scope


def one_shot(
    target: float,
    at: int = 0,
    *,
    scope: Scope = "layer",
    distribution: str = "uniform",
    overrides: dict[str, float] | None = None,
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """Prune to ``target`` sparsity by magnitude once, at step ``at``; fine-tune afterwards.

    Rule: at step ``at`` keep the (1 − s) largest |w| of each pruned leaf (exactly
    round(s · n) entries go; or over all pruned leaves with ``scope="global"``); the
    mask never changes afterwards. Hard mode: pruned weights stay exactly 0 while the
    survivors train on (Han et al.'s retraining; ``torch.nn.utils.prune.l1_unstructured``
    on a trained model).

    Args:
      target: s in [0, 1], the fraction of weights to prune. A hyperparameter.
      at: the step of the single mask update (an integer >= 0; default 0: the first
        step, on the weights the run starts from, e.g. a trained model's).
      scope: ``"layer"`` (default): each leaf ranked on its own, at the sparsity
        ``distribution`` gives it; ``"global"``: one ranking over all pruned leaves, so
        leaves end at different sparsities (takes no ``distribution`` or ``overrides``).
      distribution: ``"uniform"`` (default): every leaf at the same sparsity; ``"erk"``:
        Erdős–Rényi-Kernel per-leaf sparsities with the same model-level sparsity,
        which prunes small leaves less, leaves dense those whose density would exceed
        1, and prunes the rest more to make up (:func:`dynprune.distributions.erk`).
      overrides: ``{regex: sparsity}``: a leaf whose path matches (first match, e.g.
        ``{"conv1": 0.0}`` keeps the first conv dense) gets that fixed sparsity at
        every update instead; the other leaves do not make up for it. Default ``None``.
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: floating
        leaves with ndim >= 2 (Dense and conv kernels; not biases or norm scales).

    Returns:
      A hard-mode :class:`dynprune.pruner.Pruner` with hyperparameter ``target``.

    Raises:
      TypeError: if ``at`` is not an integer, or ``target`` or an override is not a
        number.
      ValueError: if ``at`` is negative, ``target`` or an override is not in [0, 1],
        ``scope`` or ``distribution`` is unknown, or ``scope="global"`` comes with a
        distribution or overrides.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.arange(1.0, 9.0).reshape(4, 2), "bias": jnp.zeros(2)}}
      >>> pruner = dp.algorithms.one_shot(0.5, at=1)
      >>> tx = dp.prune(optax.sgd(0.0), pruner)
      >>> state = tx.init(params)
      >>> dp.update_schedule(pruner, state, 4).nonzero()[0].tolist()
      [1]
      >>> update = jax.jit(tx.update)
      >>> for step in range(2):
      ...     updates, state = update(params, state, params)
      >>> dp.apply_updates(params, updates, state)["fc"]["kernel"].tolist()
      [[0.0, 0.0], [0.0, 0.0], [5.0, 6.0], [7.0, 8.0]]

    References:
      Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient
      Neural Networks", NeurIPS 2015.
    """
    at = checks.steps("at", at)
    return scheduled(
        lambda ctx: scores.magnitude(ctx.params, filter=filter),
        lambda hp: schedules.constant(hp["target"]),
        schedules.every(1, begin=at, end=at),
        hyperparams={"target": target},
        filter=filter,
        scope=scope,
        distribution=distribution,
        overrides=overrides,
    )


def iterative(
    target: float,
    rounds: int,
    begin: int,
    period: int,
    *,
    scope: Scope = "layer",
    distribution: str = "uniform",
    overrides: dict[str, float] | None = None,
    filter: tree_lib.Filter | None = None,
) -> Pruner:
    """``rounds`` magnitude-pruning rounds, ``period`` steps apart, reaching sparsity ``target``.

    Round r (r = 1..R) happens at step ``begin + (r − 1)·period`` and keeps the largest
    |w|, pruning to

        s_r = 1 − (1 − s_f)^(r/R),

    the same fraction p = 1 − (1 − s_f)^(1/R) of the surviving weights each round
    (:func:`dynprune.schedules.iterative`). Between rounds and after the last the
    survivors retrain; hard mode: pruned weights stay exactly 0, so they rank lowest and
    stay pruned. Unlike :func:`dynprune.algorithms.lottery` nothing is rewound.

    Args:
      target: s_f in [0, 1], the sparsity after the last round. A hyperparameter.
      rounds: R, the number of rounds (an integer >= 1).
      begin: the step of round 1 (an integer >= 0).
      period: steps between rounds (an integer >= 1).
      scope: ``"layer"`` (default): each leaf ranked on its own, at the sparsity
        ``distribution`` gives it; ``"global"``: one ranking over all pruned leaves, so
        leaves end at different sparsities (takes no ``distribution`` or ``overrides``).
      distribution: ``"uniform"`` (default): every leaf at the same sparsity; ``"erk"``:
        Erdős–Rényi-Kernel per-leaf sparsities with the same model-level sparsity,
        which prunes small leaves less, leaves dense those whose density would exceed
        1, and prunes the rest more to make up (:func:`dynprune.distributions.erk`).
      overrides: ``{regex: sparsity}``: a leaf whose path matches (first match, e.g.
        ``{"conv1": 0.0}`` keeps the first conv dense) gets that fixed sparsity at
        every update instead; the other leaves do not make up for it. Default ``None``.
      filter: which leaves to prune; default :func:`dynprune.tree.kernels`: floating
        leaves with ndim >= 2 (Dense and conv kernels; not biases or norm scales).

    Returns:
      A hard-mode :class:`dynprune.pruner.Pruner` with hyperparameter ``target``.

    Raises:
      TypeError: if a step argument is not an integer, or ``target`` or an override is
        not a number.
      ValueError: if ``rounds`` or ``period`` is below 1, ``begin`` is negative,
        ``target`` or an override is not in [0, 1], ``scope`` or ``distribution`` is
        unknown, or ``scope="global"`` comes with a distribution or overrides.

    Examples:
      Two rounds to 75%, at steps 1 and 3: half the weights, then half of the rest.

      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.arange(1.0, 9.0).reshape(4, 2)}}
      >>> pruner = dp.algorithms.iterative(0.75, rounds=2, begin=1, period=2)
      >>> tx = dp.prune(optax.sgd(0.0), pruner)
      >>> state, update, kept = tx.init(params), jax.jit(tx.update), []
      >>> for step in range(5):
      ...     _, state = update(params, state, params)
      ...     kept.append(dp.masks_of(state)["fc"]["kernel"].sum().item())
      >>> kept
      [8, 4, 4, 2, 2]

    References:
      Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient
      Neural Networks", NeurIPS 2015.
    """
    rounds = checks.steps("rounds", rounds, minimum=1)
    begin = checks.steps("begin", begin)
    period = checks.steps("period", period, minimum=1)
    return scheduled(
        lambda ctx: scores.magnitude(ctx.params, filter=filter),
        lambda hp: schedules.iterative(hp["target"], rounds, begin, period),
        schedules.every(period, begin=begin, end=begin + (rounds - 1) * period),
        hyperparams={"target": target},
        filter=filter,
        scope=scope,
        distribution=distribution,
        overrides=overrides,
    )
