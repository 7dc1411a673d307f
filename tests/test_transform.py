import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import dynprune as dp
from dynprune.harness import train
from tests import reference


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32, name="fc1")(x))
        return nn.Dense(10, name="fc2")(x)


MODEL = MLP()
X = jax.random.normal(jax.random.key(1), (64, 20))
Y = jnp.arange(64) % 10


def init_params(seed=0):
    return MODEL.init(jax.random.key(seed), X[:1])["params"]


def loss_fn(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(
        MODEL.apply({"params": params}, x), y
    ).mean()


def make_step(tx, forward=None):
    def step(params, state):
        fwd = (lambda p: forward(p, state)) if forward else (lambda p: p)
        grads = jax.grad(lambda p: loss_fn(fwd(p), X, Y))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step)


def run(tx, steps, params=None, forward=None):
    params = init_params() if params is None else params
    state = tx.init(params)
    step = make_step(tx, forward)
    for _ in range(steps):
        params, state = step(params, state)
    return params, state, step


def kernel_zeros(params, name):
    return int((np.asarray(params[name]["kernel"]) == 0.0).sum())


def test_pruned_weights_stay_exactly_zero_over_many_adam_steps():
    tx = dp.prune(optax.adam(1e-2), dp.algorithms.gmp(0.8, begin=0, end=40, every=10))
    params = init_params()
    state = tx.init(params)
    step = make_step(tx)
    for t in range(120):
        params, state = step(params, state)
        masks = dp.masks_of(state)
        for name in ["fc1", "fc2"]:
            w = np.asarray(params[name]["kernel"])
            assert (w[~np.asarray(masks[name]["kernel"])] == 0.0).all(), (t, name)
    assert kernel_zeros(params, "fc1") == reference.count_to_drop(0.8, 20 * 32)
    assert kernel_zeros(params, "fc2") == reference.count_to_drop(0.8, 32 * 10)
    assert step._cache_size() == 1


def test_pruned_nan_and_inf_weights_are_exactly_zero_where_weights_are_read():
    params = init_params()
    kernel = params["fc1"]["kernel"]
    params["fc1"]["kernel"] = kernel.at[0, 0].set(jnp.nan).at[0, 1].set(jnp.inf)
    masks = jax.tree.map(lambda _: None, params)
    masks["fc1"]["kernel"] = jnp.ones(kernel.shape, bool).at[0, :2].set(False)
    tx = dp.prune(optax.adam(1e-2), dp.algorithms.fixed(masks))
    params, state, _ = run(tx, 3, params=params, forward=dp.masked_params)
    seen = dp.masked_params(params, state)
    assert np.asarray(seen["fc1"]["kernel"])[0, :2].tolist() == [0.0, 0.0]
    assert np.isfinite(float(loss_fn(seen, X, Y)))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(seen))


@pytest.mark.parametrize("soft", [False, True])
def test_a_pruned_nan_weight_is_stored_as_zero_in_hard_mode_and_kept_in_soft_mode(soft):
    """Through the harness's train step (dp.apply_updates): hard mode stores exactly 0.0 where
    NaN/inf was (p + u cannot), soft mode keeps the dense weight and the forward pass sees 0."""
    params = init_params()
    kernel = params["fc1"]["kernel"]
    params["fc1"]["kernel"] = kernel.at[0, 0].set(jnp.nan).at[0, 1].set(-jnp.inf)
    masks = jax.tree.map(lambda _: None, params)
    masks["fc1"]["kernel"] = jnp.ones(kernel.shape, bool).at[0, :2].set(False)
    pruner = dp.algorithms.fixed(masks)
    tx = dp.prune(optax.adam(1e-2), dp.algorithms.straight_through(pruner) if soft else pruner)
    apply_fn = lambda p, x: x.reshape(len(x), -1)[:, :20] @ p["fc1"]["kernel"]
    step = train.make_train_step(apply_fn, tx, forward_params=dp.masked_params)
    state = train.init_state(params, tx)
    images, labels = jnp.ones((4, 28, 28, 1)), jnp.zeros(4, jnp.int32)
    for _ in range(3):
        state, metrics = step(state, images, labels)
    stored = np.asarray(state.params["fc1"]["kernel"])[0, :2]
    if soft:
        assert np.isnan(stored[0]) and np.isneginf(stored[1])
    else:
        assert stored.tolist() == [0.0, 0.0]
    seen = dp.masked_params(state.params, state.opt_state)
    assert np.asarray(seen["fc1"]["kernel"])[0, :2].tolist() == [0.0, 0.0]
    assert np.isfinite(float(metrics["loss"]))


def test_inner_adam_moments_of_pruned_weights_are_zero():
    tx = dp.prune(optax.adam(1e-2), dp.algorithms.gmp(0.7, begin=5, end=25, every=5))
    _, state, _ = run(tx, 40)
    adam = state.inner_state[0]
    for name in ["fc1", "fc2"]:
        pruned = ~np.asarray(dp.masks_of(state)[name]["kernel"])
        assert pruned.sum() > 0
        assert (np.asarray(adam.mu[name]["kernel"])[pruned] == 0).all()
        assert (np.asarray(adam.nu[name]["kernel"])[pruned] == 0).all()
        assert (np.asarray(adam.mu[name]["kernel"])[~pruned] != 0).any()


def test_sgd_momentum_trace_is_reset_too():
    tx = dp.prune(optax.sgd(0.1, momentum=0.9), dp.algorithms.one_shot(0.5, at=10))
    _, state, _ = run(tx, 15)
    trace = state.inner_state[0].trace["fc1"]["kernel"]
    pruned = ~np.asarray(dp.masks_of(state)["fc1"]["kernel"])
    assert (np.asarray(trace)[pruned] == 0).all()


def test_sweep_of_targets_compiles_the_step_once():
    tx = dp.prune(optax.adam(1e-2), dp.algorithms.gmp(0.5, begin=0, end=20, every=5))
    params0 = init_params()
    step = make_step(tx)
    for target in [0.1, 0.3, 0.5, 0.7, 0.9]:
        params = params0
        state = dp.set_hyperparams(tx.init(params0), target=target)
        for _ in range(25):
            params, state = step(params, state)
        assert kernel_zeros(params, "fc1") == reference.count_to_drop(target, 640)
    assert step._cache_size() == 1


def test_vmapped_sweep_reaches_each_target():
    tx = dp.prune(optax.adam(1e-2), dp.algorithms.gmp(0.5, begin=0, end=20, every=5))
    targets = jnp.array([0.2, 0.5, 0.95])
    params0 = init_params()
    states = jax.vmap(lambda s: dp.set_hyperparams(tx.init(params0), target=s))(targets)
    params = jax.tree.map(lambda x: jnp.stack([x] * 3), params0)
    step = jax.jit(jax.vmap(make_step(tx)))
    for _ in range(25):
        params, states = step(params, states)
    zeros = (np.asarray(params["fc1"]["kernel"]) == 0).sum(axis=(1, 2))
    assert zeros.tolist() == [reference.count_to_drop(float(t), 640) for t in targets]
    assert step._cache_size() == 1


def test_prune_wrapping_a_chain_and_inside_a_chain():
    pruner = dp.algorithms.one_shot(0.6, at=0)
    wrapped = dp.prune(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)), pruner)
    params, _, _ = run(wrapped, 10)
    assert kernel_zeros(params, "fc1") == reference.count_to_drop(0.6, 640)
    outer = optax.chain(dp.prune(optax.adam(1e-2), pruner))
    params, state, _ = run(outer, 10)
    assert kernel_zeros(params, "fc1") == reference.count_to_drop(0.6, 640)
    assert dp.masks_of(state)["fc1"]["bias"] is None


def test_inner_inject_hyperparams_learning_rate_can_change():
    inner = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
    tx = dp.prune(inner, dp.algorithms.one_shot(0.5, at=0))
    params, state, step = run(tx, 3)
    state = state._replace(
        inner_state=state.inner_state._replace(
            hyperparams={**state.inner_state.hyperparams, "learning_rate": jnp.asarray(0.0)}
        )
    )
    after, _ = step(params, state)
    np.testing.assert_array_equal(after["fc1"]["kernel"], params["fc1"]["kernel"])


def test_soft_mode_keeps_dense_weights_and_masks_the_forward_pass():
    pruner = dp.algorithms.one_shot(0.5, at=0)._replace(soft=True)
    tx = dp.prune(optax.sgd(0.1), pruner)
    params, state, _ = run(tx, 5, forward=dp.masked_params)
    masks = dp.masks_of(state)
    assert kernel_zeros(params, "fc1") == 0
    seen = dp.masked_params(params, state)
    assert kernel_zeros(seen, "fc1") == 320
    grads = jax.grad(lambda p: loss_fn(dp.masked_params(p, state), X, Y))(params)
    assert (np.asarray(grads["fc1"]["kernel"])[~np.asarray(masks["fc1"]["kernel"])] != 0).any()


class NNXMLP(nnx.Module):
    def __init__(self, rngs):
        self.fc1 = nnx.Linear(20, 32, rngs=rngs)
        self.fc2 = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.relu(self.fc1(x)))


def test_nnx_state_through_the_transform():
    graphdef, params = nnx.split(NNXMLP(nnx.Rngs(0)), nnx.Param)
    tx = dp.prune(optax.adam(1e-2), dp.algorithms.gmp(0.75, begin=0, end=20, every=5))
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        def loss(p):
            logits = nnx.merge(graphdef, p)(X)
            return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(25):
        params, state = step(params, state)
    report = dp.summary(params, dp.masks_of(state))
    assert report["leaves"]["fc1/kernel"]["nonzeros"] == 640 - reference.count_to_drop(0.75, 640)
    assert report["leaves"]["fc2/kernel"]["nonzeros"] == 320 - reference.count_to_drop(0.75, 320)
    assert isinstance(dp.masks_of(state), nnx.State)


def test_update_without_params_is_an_error():
    tx = dp.prune(optax.sgd(0.1), dp.algorithms.one_shot(0.5))
    params = init_params()
    with pytest.raises(ValueError, match="needs params"):
        tx.update(params, tx.init(params))


def test_state_lookup_errors():
    with pytest.raises(ValueError, match="PruneState"):
        dp.masks_of(optax.adam(1e-3).init(init_params()))
    tx = dp.prune(optax.sgd(0.1), dp.algorithms.one_shot(0.5))
    with pytest.raises(ValueError, match=r"unknown hyperparameter.*'target'"):
        dp.set_hyperparams(tx.init(init_params()), sparsity=0.5)


def _dns():
    return dp.algorithms.dns({"fc1": 0.6, "default": 0.3}, gamma=0.05, power=1.0, iter_stop=25)


@pytest.mark.parametrize("stacked", [False, True])
def test_update_schedule_is_the_steps_the_cadence_fires_on(stacked):
    """DNS fires at random (a draw from the step's key against 1/(1 + γt)): the schedule
    computed in advance matches the step where the transform's own count of updates grew,
    for one state and for two stacked ones with other seeds and rates."""
    pruner, params = _dns(), init_params()
    txs = [dp.prune(optax.sgd(0.1), pruner, seed=s) for s in (0, 7)]
    states = [tx.init(params) for tx in txs]
    states[1] = dp.set_hyperparams(states[1], gamma=0.2)
    step = jax.jit(lambda p, s: txs[0].update(jax.tree.map(jnp.ones_like, p), s, p)[1])
    if stacked:
        state = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
        step = jax.jit(jax.vmap(step, in_axes=(None, 0)))
    else:
        state = states[0]
    due = dp.update_schedule(pruner, state, 30)
    counts = []
    for _ in range(30):
        state = step(params, state)
        counts.append(np.asarray(dp.find_state(state).aux.updates))
    fired = np.diff(np.stack([np.zeros_like(counts[0]), *counts]), axis=0).T.astype(bool)
    np.testing.assert_array_equal(due, fired.reshape(due.shape))
    assert due.any() and not due.all()  # the test sees both kinds of step
    assert not due[..., 25:].any()  # iter_stop
    assert dp.update_schedule(pruner, state, range(30, 40)).shape == (*due.shape[:-1], 10)


def test_two_programs_chosen_by_the_schedule_give_the_one_program_run():
    """GMP through the step with the branch on due steps and the update_masks=False step on
    the others: the same masks on every step, exact zeros, and the same weights as the run
    through the one program; the step without the branch never changes the masks."""
    pruner = dp.algorithms.gmp(target=0.8, begin=2, end=14, every=4)
    tx = dp.prune(optax.adam(1e-2), pruner)
    idle = dp.prune(optax.adam(1e-2), pruner, update_masks=False)
    one, one_state, one_step = init_params(), None, make_step(tx)
    two, idle_step = init_params(), make_step(idle)
    one_state, two_state = tx.init(one), tx.init(two)
    due = dp.update_schedule(pruner, two_state, 20)
    assert due.nonzero()[0].tolist() == [2, 6, 10, 14]
    for t in range(20):
        one, one_state = one_step(one, one_state)
        before = dp.masks_of(two_state)
        two, two_state = (one_step if due[t] else idle_step)(two, two_state)
        for (_, a), (_, b) in zip(
            dp.tree.scored_leaves(dp.masks_of(one_state)),
            dp.tree.scored_leaves(dp.masks_of(two_state)),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        if not due[t]:
            assert jax.tree.all(jax.tree.map(jnp.array_equal, before, dp.masks_of(two_state)))
    assert kernel_zeros(two, "fc1") == reference.count_to_drop(0.8, 20 * 32)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_update_schedule_refuses_a_cadence_that_reads_the_step_arrays():
    pruner = dp.Pruner(
        init=lambda p, hp, key: (jax.tree.map(lambda x: jnp.ones(x.shape, bool), p), ()),
        should_update=lambda ctx: jnp.sum(ctx.grads["w"]) > 0,
        update=lambda ctx: (ctx.masks, ctx.aux),
    )
    state = dp.prune(optax.sgd(0.1), pruner).init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"reads ctx\.grads.*update_masks=True"):
        dp.update_schedule(pruner, state, 5)
