"""The optax wrapper: masks live in the optimizer state and are updated inside the jitted step.

``dp.prune(inner, pruner)`` is an ``optax.GradientTransformationExtraArgs``. Each update,
given gradients g taken at parameters w:

1. if ``pruner.should_update``: new masks m from ``pruner.update`` (which sees w and g),
   under ``lax.cond`` inside the jitted step;
2. hard mode: every param-shaped subtree of the inner optimizer's state (Adam's moments,
   momentum traces, … for any optax optimizer) is zeroed where m prunes, and g is masked
   before ``inner`` sees it, so a pruned weight has no optimizer history and a weight
   regrown later starts afresh. Soft mode passes the dense straight-through gradient
   (or masks it, when the pruner freezes pruned weights);
3. ``inner`` computes its updates u;
4. hard mode: u is replaced by −w on pruned entries, so ``optax.apply_updates`` leaves
   them at exactly 0.0 — there is no post-update call to forget;
5. a pruner with ``rewind`` (lottery tickets) resets the weights when masks change.

NaN and ±inf: no additive update can zero a weight that holds NaN or ±inf (NaN + u and
inf − inf are NaN), so :func:`apply_updates` (use it in place of ``optax.apply_updates``)
selects 0.0 at pruned positions in hard mode: a pruned weight is then exactly 0.0 in the
stored parameters whatever it held. Everything that reads weights through the masks is
exact in both modes: :func:`masked_params` and :func:`dynprune.apply_masks` select with
``where``, never multiply, so the forward pass, :func:`dynprune.summary` and the moments
the transform resets see exactly 0.0.

Hyperparameters: concrete values are checked by name (:mod:`dynprune.checks`) when the
state is created and by :func:`set_hyperparams`; a value traced inside ``jit`` cannot
raise, so every update ORs into the state's ``invalid`` flag whether a hyperparameter is
out of range (:func:`invalid_hyperparams`).

Steps 2 and 4 are elementwise and fuse into the optimizer's own update, so a step that
does not update the masks costs little more than the inner optimizer's step.

``prune`` must be the last transform applied to the updates (wrap the rest:
``dp.prune(optax.chain(clip, adam), pruner)``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dynprune import checks
from dynprune import masks as masks_lib
from dynprune import tree as tree_lib
from dynprune.pruner import Context, Pruner, PyTree, full_masks

__all__ = [
    "PruneState",
    "apply_updates",
    "cadence_fires",
    "find_state",
    "hyperparams_of",
    "invalid_hyperparams",
    "masked_params",
    "masks_of",
    "prune",
    "set_hyperparams",
    "update_schedule",
]


class PruneState(NamedTuple):
    """Optimizer state of :func:`prune`: plain arrays, so it checkpoints, shards and vmaps.

    Attributes:
      count: steps taken (int32).
      masks: bool masks, full leaf shapes (``None`` on unpruned leaves).
      inner_state: the wrapped optimizer's state.
      aux: the pruner's own state.
      hyperparams: the pruner's numeric hyperparameters (float32).
      key: the PRNG key the per-step keys are folded from.
      invalid: bool; True once a hyperparameter held here was out of its range or NaN
        (see :func:`invalid_hyperparams`).
      hard: bool; True in hard mode (pruned weights are exactly 0.0 in storage, see
        :func:`apply_updates`), False in soft mode (dense weights kept).

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"w": jnp.array([[1.0, -3.0], [2.0, 0.5]]), "b": jnp.zeros(2)}
      >>> state = dp.prune(optax.adam(1e-3), dp.algorithms.one_shot(target=0.5)).init(params)
      >>> type(state).__name__, int(state.count), bool(state.hard), state.masks["b"]
      ('PruneState', 0, True, None)
      >>> sorted(state.hyperparams), float(state.hyperparams["target"])
      (['target'], 0.5)
    """

    count: jax.Array
    masks: PyTree
    inner_state: optax.OptState
    aux: Any
    hyperparams: dict[str, jax.Array]
    key: jax.Array
    invalid: jax.Array
    hard: jax.Array


def _param_like(node: Any, params_def: Any, shapes: list[tuple[int, ...]]) -> bool:
    if node is None or isinstance(node, PruneState):
        return False
    leaves, treedef = jax.tree.flatten(node)
    return treedef == params_def and [jnp.shape(x) for x in leaves] == shapes


def reset_pruned_moments(inner_state: PyTree, mask_tree: PyTree, params: PyTree) -> PyTree:
    """Zero every param-shaped subtree of an optimizer state where ``mask_tree`` is False.

    A subtree is param-shaped when it has the tree structure and leaf shapes of ``params``
    (Adam's ``mu`` and ``nu``, a momentum trace, … of any optax optimizer); on each such
    subtree s, s ← s ⊙ m. Everything else (step counts, schedules' state) is left as is.
    The transform calls this in hard mode so that a pruned weight keeps no optimizer
    history.

    Args:
      inner_state: an optax optimizer state.
      mask_tree: bool masks at full leaf shapes (``None`` on unpruned leaves).
      params: the parameters, which define what is param-shaped.

    Returns:
      ``inner_state`` with the masked entries of its param-shaped subtrees set to 0.

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"w": jnp.ones(3)}
      >>> tx = optax.sgd(0.1, momentum=0.9)
      >>> _, state = tx.update(params, tx.init(params), params)
      >>> masks = {"w": jnp.array([True, False, True])}
      >>> dp.transform.reset_pruned_moments(state, masks, params)[0].trace["w"].tolist()
      [1.0, 0.0, 1.0]
    """
    leaves, params_def = jax.tree.flatten(params)
    shapes = [jnp.shape(x) for x in leaves]

    def reset(node: Any) -> Any:
        if not _param_like(node, params_def, shapes):
            return node
        return masks_lib.apply_masks(node, mask_tree)

    return jax.tree.map(reset, inner_state, is_leaf=lambda n: _param_like(n, params_def, shapes))


def prune(
    inner: optax.GradientTransformation,
    pruner: Pruner,
    *,
    seed: int = 0,
    update_masks: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Wrap ``inner`` so that ``pruner``'s masks are maintained and applied at every step.

    Two programs, one state. With ``update_masks=True`` each update asks the pruner's
    cadence and recomputes the masks under ``lax.cond``: one jitted step serves every
    step. With ``update_masks=False`` the masks are applied but never recomputed, and no
    branch is compiled: XLA:CPU pays for an untaken branch by its size (up to 7% of a
    LeNet-300-100 step and 9–33% of a 4M-weight MLP's, ``experiments/bench.py``), so a host
    loop that knows the cadence (:func:`dynprune.update_schedule`) runs this one on the
    steps where it does not fire and the first on the others. Both build the same
    :class:`PruneState`.

    Args:
      inner: any optax transformation (e.g. ``optax.adam(1e-3)``, a chain, or an
        ``inject_hyperparams`` one).
      pruner: the algorithm, e.g. ``dp.algorithms.gmp(target=0.9, begin=0, end=5000)``.
      seed: seeds the PRNG key kept in the state (random pruning, SET regrowth, DNS).
      update_masks: False: keep the state's masks on every step (the pruner's ``observe``
        still runs).

    Returns:
      A transformation whose state is a :class:`PruneState`.

    Raises:
      TypeError, ValueError: from ``init``, if a concrete hyperparameter of ``pruner`` is
        not a number or is out of its range (:data:`dynprune.checks.RANGES`).

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.arange(1.0, 9.0).reshape(4, 2), "bias": jnp.zeros(2)}}
      >>> tx = dp.prune(optax.sgd(0.0), dp.algorithms.one_shot(target=0.5))
      >>> state = tx.init(params)
      >>> updates, state = tx.update(params, state, params)
      >>> optax.apply_updates(params, updates)["fc"]["kernel"].tolist()
      [[0.0, 0.0], [0.0, 0.0], [5.0, 6.0], [7.0, 8.0]]
    """
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: PyTree) -> PruneState:
        checks.hyperparams(pruner.hyperparams)
        hp = {k: jnp.asarray(v, jnp.float32) for k, v in pruner.hyperparams.items()}
        key, init_key = jax.random.split(jax.random.PRNGKey(seed))  # key: fold_in per step
        mask_tree, aux = pruner.init(params, hp, init_key)
        tree_lib.check_same_structure(params, mask_tree, what="pruner.init masks")
        return PruneState(
            count=jnp.zeros([], jnp.int32),
            masks=full_masks(mask_tree, params),
            inner_state=inner.init(params),
            aux=aux,
            hyperparams=hp,
            key=key,
            invalid=checks.invalid(hp),
            hard=jnp.asarray(not pruner.soft),
        )

    def update_fn(
        updates: PyTree, state: PruneState, params: PyTree | None = None, **extra_args: Any
    ) -> tuple[PyTree, PruneState]:
        if params is None:
            raise ValueError("dynprune.prune needs params: call tx.update(grads, state, params)")
        grads = updates
        ctx = Context(
            params=params,
            grads=grads,
            masks=state.masks,
            aux=state.aux,
            step=state.count,
            hyperparams=state.hyperparams,
            # derived, not split: a pruner that draws no randomness costs nothing here
            key=_step_key(state.key, state.count),
        )
        if pruner.observe is not None:
            ctx = ctx._replace(aux=pruner.observe(ctx))

        # The branch sees only arrays that exist anyway (params, grads, masks), so the
        # step that does not update materialises nothing extra for it.
        def recompute(ctx: Context) -> tuple[PyTree, Any, PyTree]:
            new_masks, aux = pruner.update(ctx)
            new_masks = full_masks(new_masks, ctx.params)
            if pruner.rewind is None:
                return new_masks, aux, ctx.params
            return new_masks, aux, pruner.rewind(ctx._replace(masks=new_masks, aux=aux))

        def keep(ctx: Context) -> tuple[PyTree, Any, PyTree]:
            return ctx.masks, ctx.aux, ctx.params

        if update_masks:
            updating = pruner.should_update(ctx)
            new_masks, aux, target = lax.cond(updating, recompute, keep, ctx)
        else:
            new_masks, aux, target = keep(ctx)

        inner_state = state.inner_state
        if not pruner.soft:
            inner_state = reset_pruned_moments(inner_state, new_masks, params)
        masked_grads = not (pruner.soft and pruner.update_pruned)
        inner_grads = masks_lib.apply_masks(grads, new_masks) if masked_grads else grads
        inner_updates, inner_state = inner.update(inner_grads, inner_state, params, **extra_args)
        if pruner.rewind is not None and update_masks:  # a rewind discards gradient and history
            inner_state = _zero_where(updating, inner_state, params)
            inner_updates = jax.tree.map(
                lambda u, t, w: jnp.where(updating, t - w, u), inner_updates, target, params
            )
        if not pruner.soft:
            inner_updates = _where_kept(inner_updates, new_masks, lambda u, w: -w, params)
        elif not pruner.update_pruned:
            inner_updates = _where_kept(
                inner_updates, new_masks, lambda u, w: jnp.zeros_like(u), params
            )
        new_state = PruneState(
            count=optax.safe_increment(state.count),
            masks=new_masks,
            inner_state=inner_state,
            aux=aux,
            hyperparams=state.hyperparams,
            key=state.key,
            invalid=state.invalid | checks.invalid(state.hyperparams),
            hard=state.hard,
        )
        return inner_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _zero_where(pred: jax.Array, inner_state: PyTree, params: PyTree) -> PyTree:
    """Zero every param-shaped subtree of an optimizer state when ``pred`` holds."""
    nothing = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), bool), params)
    zeroed = reset_pruned_moments(inner_state, nothing, params)
    return jax.tree.map(lambda z, x: jnp.where(pred, z, x), zeroed, inner_state)


def _where_kept(updates: PyTree, mask_tree: PyTree, pruned: Any, params: PyTree) -> PyTree:
    """u where the mask keeps, ``pruned(u, w)`` where it prunes; unmasked leaves unchanged."""
    return tree_lib.map_with_path(
        lambda path, u, m, w: u if m is None else jnp.where(m, u, pruned(u, w)),
        updates,
        mask_tree,
        params,
    )


def _first_state(opt_state: Any) -> PruneState | None:
    found: list[PruneState] = []

    def visit(node: Any) -> Any:
        if isinstance(node, PruneState) and not found:
            found.append(node)
        return node

    jax.tree.map(visit, opt_state, is_leaf=lambda n: isinstance(n, PruneState))
    return found[0] if found else None


def find_state(opt_state: Any) -> PruneState:
    """The first :class:`PruneState` inside a (possibly chained/wrapped) optimizer state.

    Args:
      opt_state: any optimizer state, e.g. of ``optax.chain(..., dp.prune(...))`` or of a
        ``dp.prune`` wrapped in ``optax.MultiSteps``.

    Returns:
      The :class:`PruneState` (first in flattening order).

    Raises:
      ValueError: if there is none (the state was not built by :func:`prune`).

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> pruned = dp.prune(optax.sgd(0.1), dp.algorithms.one_shot(target=0.5))
      >>> state = optax.chain(optax.clip(1.0), pruned).init({"w": jnp.ones(4)})
      >>> int(dp.find_state(state).count)
      0
    """
    state = _first_state(opt_state)
    if state is None:
        raise ValueError(
            "no dynprune PruneState in this optimizer state; was it built by dp.prune?"
        )
    return state


def apply_updates(params: PyTree, updates: PyTree, opt_state: Any) -> PyTree:
    """``optax.apply_updates``, then, in hard mode, w ← 0 where the masks prune.

    The transform's hard-mode update is −w at pruned positions, which leaves them at exactly
    0.0 — unless w is NaN or ±inf, which no addition can zero. This selects 0.0 there, so a
    pruned weight is exactly 0.0 whatever it held. Soft mode (dense weights kept) and an
    optimizer state without a :class:`PruneState` get plain ``optax.apply_updates``.

    Args:
      params: the parameters the updates were computed at.
      updates: from ``tx.update``.
      opt_state: the optimizer state ``tx.update`` returned with them (its masks are the ones
        applied).

    Returns:
      The updated parameters.

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.array([[jnp.nan, 2.0], [3.0, 4.0]])}}
      >>> tx = dp.prune(optax.sgd(0.0), dp.algorithms.one_shot(0.25))
      >>> updates, state = tx.update(params, tx.init(params), params)
      >>> dp.apply_updates(params, updates, state)["fc"]["kernel"].tolist()
      [[0.0, 2.0], [3.0, 4.0]]
    """
    new = optax.apply_updates(params, updates)
    state = _first_state(opt_state)
    if state is None:
        return new
    return tree_lib.map_with_path(
        lambda path, w, m: w if m is None else jnp.where(state.hard & ~m, jnp.zeros_like(w), w),
        new,
        state.masks,
    )


def masks_of(opt_state: Any) -> PyTree:
    """The current bool masks held in an optimizer state (True = kept).

    The mask tree has the structure of the parameters, with a bool array at the leaf's
    full shape on every pruned leaf and ``None`` on every leaf that is not pruned (biases,
    by default). JAX treats ``None`` as an empty subtree, not a leaf, so zip masks with
    parameters by making it one: ``jax.tree.map(f, masks, params, is_leaf=lambda x: x is
    None)`` calls ``f(None, w)`` on unpruned leaves (``dp.tree.is_none`` is that
    predicate). Without ``is_leaf``, ``jax.tree.map`` with the masks first raises a
    pytree structure error, and ``jax.tree.leaves(masks)`` silently drops the ``None``
    leaves, so zipping it with ``jax.tree.leaves(params)`` pairs masks with the wrong
    leaves. :func:`dynprune.apply_masks`, :func:`dynprune.summary` and
    ``dp.tree.scored_leaves`` handle ``None`` already. For NNX parameters (an
    ``nnx.State``), an unpruned position holds an ``nnx.Param`` whose value is ``None``:
    ``masks["fc"]["bias"] is None`` is False there, while ``jax.tree.leaves(masks,
    is_leaf=dp.tree.is_none)`` still yields ``None`` for it (the ``Param`` is a pytree
    node around the value).

    These are the masks of the last update; before the first, what the pruner's ``init``
    chose (for the scheduled recipes: everything kept until their first pruning step).

    Args:
      opt_state: an optimizer state holding a :class:`PruneState`.

    Returns:
      The mask tree (bool arrays; ``None`` on unpruned leaves).

    Raises:
      ValueError: if there is no :class:`PruneState` in ``opt_state``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"fc": {"kernel": jnp.array([[1.0, -3.0], [2.0, 0.5]]), "bias": jnp.ones(2)}}
      >>> tx = dp.prune(optax.sgd(0.0), dp.algorithms.one_shot(target=0.5))
      >>> _, state = tx.update(params, tx.init(params), params)  # step 0: masks computed
      >>> masks = dp.masks_of(state)
      >>> masks["fc"]["bias"] is None, masks["fc"]["kernel"].tolist()
      (True, [[False, True], [True, False]])
      >>> kept = jax.tree.map(
      ...     lambda m, w: w.size if m is None else int(m.sum()), masks, params,
      ...     is_leaf=lambda x: x is None)
      >>> kept
      {'fc': {'bias': 2, 'kernel': 2}}
    """
    return find_state(opt_state).masks


def hyperparams_of(opt_state: Any) -> dict[str, jax.Array]:
    """The pruner's hyperparameters held in an optimizer state.

    Args:
      opt_state: an optimizer state holding a :class:`PruneState`.

    Returns:
      ``{name: float32 scalar}`` (one value per run for a stacked, vmapped state); change
      them with :func:`set_hyperparams`.

    Raises:
      ValueError: if there is no :class:`PruneState` in ``opt_state``.

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> tx = dp.prune(optax.sgd(0.1), dp.algorithms.gmp(target=0.9, begin=0, end=10))
      >>> hyperparams = dp.hyperparams_of(tx.init({"w": jnp.ones((4, 4))}))
      >>> {name: round(float(value), 2) for name, value in sorted(hyperparams.items())}
      {'initial': 0.0, 'target': 0.9}
    """
    return find_state(opt_state).hyperparams


def set_hyperparams(opt_state: Any, **values: Any) -> Any:
    """A copy of ``opt_state`` with the pruner's hyperparameters replaced (e.g. ``target=0.8``).

    Values become float32 arrays, so the jitted step does not recompile: sweep targets by
    changing the state, not the transformation. Each is checked by the rule for its
    name (:data:`dynprune.checks.RANGES`: ``target``, ``initial`` and ``alpha`` in
    [0, 1], ``threshold``, ``gamma`` and ``power`` >= 0, ``iter_stop`` an integer >= 0;
    every value finite). A value traced inside ``jit`` cannot be checked here: it sets
    the state's flag instead (:func:`invalid_hyperparams`).

    Args:
      opt_state: an optimizer state holding a :class:`PruneState`.
      **values: new values by hyperparameter name (numbers or numeric arrays).

    Returns:
      The state with the values replaced.

    Raises:
      ValueError: if a name is not a hyperparameter of the pruner, or a value is NaN,
        infinite or out of its range; the message names it and the value.
      TypeError: if a value is not a number (e.g. the string ``"0.5"``, a bool), or
        ``iter_stop`` is not an integer.

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> tx = dp.prune(optax.sgd(0.1), dp.algorithms.one_shot(target=0.5))
      >>> state = dp.set_hyperparams(tx.init({"w": jnp.ones((4, 4))}), target=0.75)
      >>> dp.hyperparams_of(state)["target"].item()
      0.75
      >>> dp.set_hyperparams(state, target=1.5)
      Traceback (most recent call last):
      ...
      ValueError: hyperparameter 'target' must be a finite number in [0, 1], got 1.5
    """

    def replace(node: Any) -> Any:
        if not isinstance(node, PruneState):
            return node
        unknown = sorted(set(values) - set(node.hyperparams))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown}; this pruner has {sorted(node.hyperparams)}"
            )
        new = {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
        return node._replace(
            hyperparams={**node.hyperparams, **new},
            invalid=node.invalid | checks.invalid(new),
        )

    find_state(opt_state)
    checks.hyperparams(values)
    return jax.tree.map(replace, opt_state, is_leaf=lambda n: isinstance(n, PruneState))


def invalid_hyperparams(opt_state: Any) -> jax.Array:
    """Whether a hyperparameter in the state has been out of its range: a NaN, an infinity,
    or a value outside its rule (:data:`dynprune.checks.RANGES`), e.g. ``target=1.5``.

    Concrete bad values raise where they are given (the pruner's factory,
    :func:`set_hyperparams`); a value traced inside ``jit`` cannot, so each update ORs
    this flag into the state (it stays True: masks computed from a bad value persist).
    The masks meanwhile use the value clipped to its range (a NaN sparsity drops
    nothing). The harness reads this flag at its next host sync (when it fetches a
    step's metrics) and refuses to write a result row for a run where it is True.

    Args:
      opt_state: an optimizer state holding a :class:`PruneState`.

    Returns:
      A bool array: a scalar, or one flag per run for a stacked (vmapped) state.

    Raises:
      ValueError: if there is no :class:`PruneState` in ``opt_state``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> tx = dp.prune(optax.sgd(0.1), dp.algorithms.one_shot(target=0.5))
      >>> state = tx.init({"w": jnp.ones((4, 4))})
      >>> bad = jax.jit(lambda s, t: dp.set_hyperparams(s, target=t))(state, 1.5)
      >>> bool(dp.invalid_hyperparams(state)), bool(dp.invalid_hyperparams(bad))
      (False, True)
    """
    return find_state(opt_state).invalid


def masked_params(params: PyTree, opt_state: Any) -> PyTree:
    """Parameters as the forward pass should see them: w ⊙ m with a straight-through gradient.

    Needed in soft mode (dense weights are kept); harmless in hard mode (pruned weights
    are already 0). Pruned entries are exactly 0.0 whatever the weight holds, NaN and
    ±inf included (selected, not multiplied: see :func:`dynprune.apply_masks`). The
    gradient with respect to w is dense, which RigL and DNS use.

    Args:
      params: the (dense) parameters.
      opt_state: an optimizer state holding a :class:`PruneState`; its masks are applied.

    Returns:
      ``params`` with pruned entries 0.0 (unpruned leaves unchanged).

    Raises:
      ValueError: if there is no :class:`PruneState` in ``opt_state``.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, dynprune as dp
      >>> params = {"w": jnp.array([[1.0, -3.0], [2.0, 0.5]])}
      >>> tx = dp.prune(optax.sgd(0.0), dp.algorithms.one_shot(target=0.5))
      >>> _, state = tx.update(params, tx.init(params), params)  # step 0: masks computed
      >>> dp.masked_params(params, state)["w"].tolist()
      [[0.0, -3.0], [2.0, 0.0]]
      >>> jax.grad(lambda p: dp.masked_params(p, state)["w"].sum())(params)["w"].tolist()
      [[1.0, 1.0], [1.0, 1.0]]
    """
    return masks_lib.apply_masks(params, masks_of(opt_state), straight_through=True)


class _Unknown:
    """Stands for what a cadence may not read: the step's arrays are not known in advance."""

    def __init__(self, field: str):
        self._field = field

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise _CadenceReadsState(self._field)

    __getattr__ = __getitem__ = __iter__ = __array__ = __jax_array__ = _refuse


class _CadenceReadsState(ValueError):
    pass


def _step_key(key: jax.Array, step: jax.Array) -> jax.Array:
    """The PRNG key a pruner sees at ``step``: derived from the state's key, never split."""
    return jax.random.fold_in(key, step)


def cadence_fires(pruner: Pruner, state: PruneState, step: jax.Array) -> jax.Array:
    """Whether ``pruner``'s cadence recomputes the masks at ``step``, from what is known
    before the step: the step, its key and the hyperparameters in ``state`` (the arrays of
    the step itself are not: a cadence that reads them raises).

    Args:
      pruner: the pruner ``state`` was built with.
      state: its :class:`PruneState` (one point, not a stack).
      step: the step count (int32 scalar, traced or not).

    Returns:
      A bool scalar, what ``pruner.should_update`` says at that step inside :func:`prune`.

    Raises:
      ValueError: (a subclass of it) if the cadence reads the parameters, gradients, masks
        or the pruner's state; :func:`update_schedule` turns it into a readable message.

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> pruner = dp.algorithms.gmp(target=0.9, begin=2, end=8, every=3)
      >>> state = dp.prune(optax.sgd(0.1), pruner).init({"w": jnp.ones((4, 4))})
      >>> [bool(dp.transform.cadence_fires(pruner, state, jnp.int32(t))) for t in (2, 3, 5)]
      [True, False, True]
    """
    ctx = Context(
        **{field: _Unknown(field) for field in ("params", "grads", "masks", "aux")},
        step=step,
        hyperparams=state.hyperparams,
        key=_step_key(state.key, step),
    )
    return jnp.broadcast_to(pruner.should_update(ctx), ())


def update_schedule(pruner: Pruner, opt_state: Any, steps: int | range) -> np.ndarray:
    """Which of ``steps`` the pruner's cadence recomputes the masks on, known in advance.

    Evaluates ``pruner.should_update`` for every step t of ``steps`` (an int n: 0 … n − 1)
    on what the transform would give it at t: the step, the key ``fold_in(key, t)`` and
    the hyperparameters held in ``opt_state``. A host loop runs the
    ``update_masks=False`` step (:func:`prune`) where this is False. A stacked
    (``vmap``-ped) state gives one row per point.

    Args:
      pruner: the pruner the state was built with.
      opt_state: an optimizer state holding its :class:`PruneState`.
      steps: the step counts, as the state's ``count`` will hold them.

    Returns:
      A bool NumPy array: ``[len(steps)]``, or ``[K, len(steps)]`` for K stacked states.

    Raises:
      ValueError: if the cadence reads the parameters, gradients, masks or the pruner's
        state (then only the ``lax.cond`` step can follow it).

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> pruner = dp.algorithms.gmp(target=0.9, begin=2, end=8, every=3)
      >>> state = dp.prune(optax.sgd(0.1), pruner).init({"w": jnp.ones((4, 4))})
      >>> dp.update_schedule(pruner, state, 10).nonzero()[0].tolist()
      [2, 5, 8]
    """
    state = find_state(opt_state)
    steps = range(steps) if isinstance(steps, int) else steps
    t = jnp.asarray(np.arange(steps.start, steps.stop, steps.step, dtype=np.int32))
    due = lambda one: jax.vmap(lambda step: cadence_fires(pruner, one, step))(t)
    try:
        return np.asarray(due(state) if jnp.ndim(state.count) == 0 else jax.vmap(due)(state))
    except _CadenceReadsState as err:
        raise ValueError(
            f"this pruner's cadence reads ctx.{err.args[0]}, so its update steps are not "
            "known in advance: use the update_masks=True step on every step"
        ) from None
