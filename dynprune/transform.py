"""The optax wrapper: masks live in the optimizer state and are updated inside the jitted step.

``dp.prune(inner, pruner)`` is an ``optax.GradientTransformationExtraArgs``. Each update:

1. hard mode: gradients of pruned weights are zeroed before ``inner`` sees them, so its
   moments for them stay 0 (soft mode passes the dense straight-through gradients,
   unless the pruner freezes pruned weights);
2. ``inner`` computes its updates u; the candidate parameters are w' = w + u;
3. if ``pruner.should_update``: new masks from ``pruner.update`` under ``lax.cond``;
   in hard mode the inner optimizer's moments of every pruned weight are reset to 0
   (any optax optimizer: every param-shaped subtree of its state is masked), so a weight
   that is regrown later starts from fresh moments;
4. hard mode: u is replaced by −w on pruned entries, so ``optax.apply_updates`` leaves
   them at exactly 0.0 — there is no post-update call to forget;
5. a pruner with ``rewind`` (lottery tickets) resets the weights when masks change.

``prune`` must be the last transform applied to the updates (wrap the rest:
``dp.prune(optax.chain(clip, adam), pruner)``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from dynprune import masks as masks_lib
from dynprune import tree as tree_lib
from dynprune.pruner import Context, Pruner, full_masks

PyTree = Any

__all__ = [
    "PruneState",
    "find_state",
    "hyperparams_of",
    "masked_params",
    "masks_of",
    "prune",
    "set_hyperparams",
]


class PruneState(NamedTuple):
    """Optimizer state of :func:`prune`: plain arrays, so it checkpoints, shards and vmaps."""

    count: jax.Array
    masks: PyTree
    inner_state: optax.OptState
    aux: Any
    hyperparams: dict[str, jax.Array]
    key: jax.Array


def _param_like(node: Any, params_def: Any, shapes: list[tuple[int, ...]]) -> bool:
    if node is None or isinstance(node, PruneState):
        return False
    leaves, treedef = jax.tree.flatten(node)
    return treedef == params_def and [jnp.shape(x) for x in leaves] == shapes


def reset_pruned_moments(inner_state: PyTree, mask_tree: PyTree, params: PyTree) -> PyTree:
    """Zero every param-shaped subtree of an optimizer state where ``mask_tree`` is False."""
    leaves, params_def = jax.tree.flatten(params)
    shapes = [jnp.shape(x) for x in leaves]

    def reset(node: Any) -> Any:
        if not _param_like(node, params_def, shapes):
            return node
        return masks_lib.apply_masks(node, mask_tree)

    return jax.tree.map(reset, inner_state, is_leaf=lambda n: _param_like(n, params_def, shapes))


def prune(
    inner: optax.GradientTransformation, pruner: Pruner, *, seed: int = 0
) -> optax.GradientTransformationExtraArgs:
    """Wrap ``inner`` so that ``pruner``'s masks are maintained and applied at every step.

    Args:
      inner: any optax transformation (e.g. ``optax.adam(1e-3)``, a chain, or an
        ``inject_hyperparams`` one).
      pruner: the algorithm, e.g. ``dp.algorithms.gmp(target=0.9, begin=0, end=5000)``.
      seed: seeds the PRNG key kept in the state (random pruning, SET regrowth, DNS).

    Returns:
      A transformation whose state is a :class:`PruneState`.

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.arange(1.0, 9.0).reshape(4, 2), "bias": jnp.zeros(2)}}
      >>> tx = dp.prune(optax.sgd(0.0), dp.algorithms.one_shot(sparsity=0.5))
      >>> state = tx.init(params)
      >>> updates, state = tx.update(params, state, params)
      >>> optax.apply_updates(params, updates)["fc"]["kernel"].tolist()
      [[0.0, 0.0], [0.0, 0.0], [5.0, 6.0], [7.0, 8.0]]
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: PyTree) -> PruneState:
        hp = {k: jnp.asarray(v, jnp.float32) for k, v in pruner.hyperparams.items()}
        key, init_key = jax.random.split(jax.random.PRNGKey(seed))
        mask_tree, aux = pruner.init(params, hp, init_key)
        tree_lib.check_same_structure(params, mask_tree, what="pruner.init masks")
        return PruneState(
            count=jnp.zeros([], jnp.int32),
            masks=full_masks(mask_tree, params),
            inner_state=inner.init(params),
            aux=aux,
            hyperparams=hp,
            key=key,
        )

    def update_fn(
        updates: PyTree, state: PruneState, params: PyTree | None = None, **extra_args: Any
    ) -> tuple[PyTree, PruneState]:
        if params is None:
            raise ValueError("dynprune.prune needs params: call tx.update(grads, state, params)")
        grads = updates
        dense_grads = pruner.soft and pruner.update_pruned
        inner_grads = grads if dense_grads else masks_lib.apply_masks(grads, state.masks)
        inner_updates, inner_state = inner.update(
            inner_grads, state.inner_state, params, **extra_args
        )
        key, step_key = jax.random.split(state.key)
        ctx = Context(
            params=optax.apply_updates(params, inner_updates),
            previous=params,
            grads=grads,
            masks=state.masks,
            aux=state.aux,
            step=state.count,
            hyperparams=state.hyperparams,
            key=step_key,
        )
        if pruner.observe is not None:
            ctx = ctx._replace(aux=pruner.observe(ctx))

        def recompute(ctx: Context, inner_state: PyTree) -> tuple[PyTree, Any, PyTree, PyTree]:
            new_masks, aux = pruner.update(ctx)
            new_masks = full_masks(new_masks, ctx.params)
            target = ctx.params
            if pruner.rewind is not None:
                target = pruner.rewind(ctx._replace(masks=new_masks, aux=aux))
                inner_state = reset_pruned_moments(inner_state, _nothing_kept(target), target)
            elif not pruner.soft:
                inner_state = reset_pruned_moments(inner_state, new_masks, ctx.params)
            return new_masks, aux, inner_state, target

        def keep(ctx: Context, inner_state: PyTree) -> tuple[PyTree, Any, PyTree, PyTree]:
            return ctx.masks, ctx.aux, inner_state, ctx.params

        new_masks, aux, inner_state, target = lax.cond(
            pruner.should_update(ctx), recompute, keep, ctx, inner_state
        )
        if pruner.rewind is not None:
            inner_updates = jax.tree.map(jnp.subtract, target, params)
        if not pruner.soft:
            inner_updates = tree_lib.map_with_path(
                lambda path, u, m, w: u if m is None else jnp.where(m, u, -w),
                inner_updates,
                new_masks,
                params,
            )
        new_state = PruneState(
            count=optax.safe_increment(state.count),
            masks=new_masks,
            inner_state=inner_state,
            aux=aux,
            hyperparams=state.hyperparams,
            key=key,
        )
        return inner_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _nothing_kept(params: PyTree) -> PyTree:
    return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), bool), params)


def find_state(opt_state: Any) -> PruneState:
    """The first :class:`PruneState` inside a (possibly chained/wrapped) optimizer state."""
    found: list[PruneState] = []

    def visit(node: Any) -> Any:
        if isinstance(node, PruneState) and not found:
            found.append(node)
        return node

    jax.tree.map(visit, opt_state, is_leaf=lambda n: isinstance(n, PruneState))
    if not found:
        raise ValueError(
            "no dynprune PruneState in this optimizer state; was it built by dp.prune?"
        )
    return found[0]


def masks_of(opt_state: Any) -> PyTree:
    """The current bool masks (``None`` on unpruned leaves) held in an optimizer state."""
    return find_state(opt_state).masks


def hyperparams_of(opt_state: Any) -> dict[str, jax.Array]:
    """The pruner's hyperparameters held in an optimizer state."""
    return find_state(opt_state).hyperparams


def set_hyperparams(opt_state: Any, **values: Any) -> Any:
    """A copy of ``opt_state`` with the pruner's hyperparameters replaced (e.g. ``target=0.8``).

    Values become float32 arrays, so the jitted step does not recompile: sweep targets by
    changing the state, not the transformation.
    """

    def replace(node: Any) -> Any:
        if not isinstance(node, PruneState):
            return node
        unknown = sorted(set(values) - set(node.hyperparams))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown}; this pruner has {sorted(node.hyperparams)}"
            )
        hp = dict(node.hyperparams)
        hp.update({k: jnp.asarray(v, jnp.float32) for k, v in values.items()})
        return node._replace(hyperparams=hp)

    find_state(opt_state)
    return jax.tree.map(replace, opt_state, is_leaf=lambda n: isinstance(n, PruneState))


def masked_params(params: PyTree, opt_state: Any) -> PyTree:
    """Parameters as the forward pass should see them: w ⊙ m with a straight-through gradient.

    Needed in soft mode (dense weights are kept); harmless in hard mode (pruned weights
    are already 0). The gradient with respect to w is dense, which RigL and DNS use.
    """
    return masks_lib.apply_masks(params, masks_of(opt_state), straight_through=True)
