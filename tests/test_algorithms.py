import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynprune as dp
from dynprune.harness import data, models, train
from tests import reference
from tests.test_transform import init_params, make_step


def masks_after(pruner, steps, tx=None):
    tx = tx or dp.prune(optax.adam(1e-2), pruner)
    params = init_params()
    state = tx.init(params)
    step = make_step(tx)
    history = []
    for _ in range(steps):
        params, state = step(params, state)
        m = dp.masks_of(state)
        history.append(int((~np.asarray(m["fc1"]["kernel"])).sum()))
    return params, state, history


def test_gmp_follows_the_cubic_schedule_at_each_update():
    _, _, dropped = masks_after(dp.algorithms.gmp(0.8, begin=10, end=50, every=10), 60)
    for t in range(60):
        update = max(u for u in [-1, 10, 20, 30, 40, 50] if u <= t)
        frac = 0.0 if update < 0 else min((update - 10) / 40, 1.0)
        s = 0.8 * (1 - (1 - frac) ** 3) if update >= 0 else 0.0
        assert dropped[t] == reference.count_to_drop(s, 640), t


def test_one_shot_prunes_once_at_the_given_step():
    _, _, dropped = masks_after(dp.algorithms.one_shot(0.5, at=7), 12)
    assert dropped[:7] == [0] * 7
    assert dropped[7:] == [320] * 5


def test_iterative_rounds_follow_equal_ratio_schedule():
    _, _, dropped = masks_after(dp.algorithms.iterative(0.75, rounds=2, begin=3, period=5), 12)
    assert dropped[2] == 0 and dropped[3] == 320 and dropped[8] == 480 and dropped[11] == 480


def test_global_gmp_ranks_layers_jointly():
    params, _, _ = masks_after(dp.algorithms.gmp(0.9, 0, 10, every=5, scope="global"), 12)
    zeros = sum(int((np.asarray(params[n]["kernel"]) == 0).sum()) for n in ["fc1", "fc2"])
    assert zeros == reference.count_to_drop(0.9, 640 + 320)


def test_absolute_threshold_drops_small_weights_dynamically():
    pruner = dp.algorithms.threshold(0.1, every=5)
    params, state, dropped = masks_after(pruner, 11)
    assert dropped[0] > 0 and dropped[10] >= dropped[5] >= dropped[0]
    kept = np.asarray(dp.masks_of(state)["fc1"]["kernel"])
    w = np.asarray(params["fc1"]["kernel"])
    assert (w[~kept] == 0).all()


def test_relative_threshold_is_han_quality_times_std():
    params = init_params()
    tx = dp.prune(optax.sgd(0.0), dp.algorithms.threshold(0.5, relative=True))
    state = tx.init(params)
    _, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    w = np.asarray(params["fc1"]["kernel"])
    expected = np.abs(w) > 0.5 * w.std()
    np.testing.assert_array_equal(dp.masks_of(state)["fc1"]["kernel"], expected)


def test_relative_threshold_ignores_nan_and_inf_weights_and_prunes_nan():
    params = init_params()
    w = np.asarray(params["fc1"]["kernel"]).copy()
    w[0, 0], w[1, 1] = np.nan, np.inf
    params["fc1"]["kernel"] = jnp.asarray(w)
    tx = dp.prune(optax.sgd(0.0), dp.algorithms.threshold(0.5, relative=True))
    _, state = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    expected = np.abs(w) > 0.5 * w[np.isfinite(w)].std()
    kept = np.asarray(dp.masks_of(state)["fc1"]["kernel"])
    assert not kept[0, 0] and 0 < (~kept).sum() < kept.size
    np.testing.assert_array_equal(kept, expected)


def test_sensitivity_removes_whole_neurons_with_their_biases():
    params, state, _ = masks_after(dp.algorithms.sensitivity(0.25, begin=2), 5)
    masks = dp.masks_of(state)
    k = np.asarray(masks["fc1"]["kernel"])
    dead = ~k[0]
    assert dead.sum() == 8 and (k == k[0]).all()
    np.testing.assert_array_equal(np.asarray(masks["fc1"]["bias"]), k[0])
    assert (np.asarray(params["fc1"]["kernel"])[:, dead] == 0).all()
    assert (np.asarray(params["fc1"]["bias"])[dead] == 0).all()


def test_sensitivity_picks_the_lowest_l1_over_l2_neurons():
    params = init_params()
    tx = dp.prune(optax.sgd(0.0), dp.algorithms.sensitivity(0.25, begin=0))
    state = tx.init(params)
    _, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    w = np.asarray(params["fc1"]["kernel"])
    s = np.abs(w).sum(0) / np.sqrt((w**2).sum(0))
    expected = reference.drop_lowest([s], 8)[0]
    np.testing.assert_array_equal(np.asarray(dp.masks_of(state)["fc1"]["kernel"])[0], expected)


def test_snip_uses_abs_weight_times_gradient_of_the_first_batch():
    params = init_params()
    tx = dp.prune(optax.sgd(0.1), dp.algorithms.snip(0.7))
    state = tx.init(params)
    grads = jax.tree.map(lambda w: jnp.sin(17.0 * w), params)
    _, state = tx.update(grads, state, params)
    s = [np.abs(np.asarray(params[n]["kernel"] * grads[n]["kernel"])) for n in ["fc1", "fc2"]]
    e1, e2 = reference.drop_lowest(s, reference.count_to_drop(0.7, 960))
    np.testing.assert_array_equal(dp.masks_of(state)["fc1"]["kernel"], e1)
    np.testing.assert_array_equal(dp.masks_of(state)["fc2"]["kernel"], e2)


def sine_loss(params, c):
    return sum(jnp.sin(c * params[n]["kernel"]).sum() for n in ["fc1", "fc2"])


def test_snip_masks_sum_the_saliency_of_every_batch_at_the_same_weights():
    params = init_params()
    cs = [0.5, 3.0, -7.0]
    m = dp.algorithms.snip_masks(sine_loss, params, [(c,) for c in cs], 0.7)
    w = [np.asarray(params[n]["kernel"], np.float64) for n in ["fc1", "fc2"]]
    s = [sum(np.abs(x * c * np.cos(c * x)) for c in cs) for x in w]
    e1, e2 = reference.drop_lowest(s, reference.count_to_drop(0.7, 960))
    np.testing.assert_array_equal(m["fc1"]["kernel"], e1)
    np.testing.assert_array_equal(m["fc2"]["kernel"], e2)
    assert m["fc1"]["bias"] is None


def test_snip_masks_from_one_batch_equal_the_in_step_snip_pruner():
    params = init_params()
    tx = dp.prune(optax.sgd(0.1), dp.algorithms.snip(0.7))
    _, state = tx.update(jax.grad(sine_loss)(params, 3.0), tx.init(params), params)
    m = dp.algorithms.snip_masks(sine_loss, params, [(3.0,)], 0.7)
    for n in ["fc1", "fc2"]:
        np.testing.assert_array_equal(m[n]["kernel"], dp.masks_of(state)[n]["kernel"])


def test_snip_masks_need_a_batch():
    with pytest.raises(ValueError, match="at least one batch"):
        dp.algorithms.snip_masks(sine_loss, init_params(), [], 0.7)


def test_random_pruning_is_exact_and_seeded():
    pruner = dp.algorithms.random(0.6)
    tx = dp.prune(optax.sgd(0.1), pruner, seed=1)
    step = make_step(tx)
    params = init_params()

    def masks_for(seed):
        _, state = step(params, dp.prune(optax.sgd(0.1), pruner, seed=seed).init(params))
        return np.asarray(dp.masks_of(state)["fc1"]["kernel"])

    a, b, c = masks_for(1), masks_for(1), masks_for(2)
    assert (~a).sum() == 384 and (~c).sum() == 384
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_random_ramp_prunes_a_growing_random_subset(scope):
    pruner = dp.algorithms.random(0.9, begin=0, end=40, every=10, scope=scope)

    def kept_per_step(seed):
        tx = dp.prune(optax.adam(1e-2), pruner, seed=seed)
        params, step, kept = init_params(), make_step(tx), []
        state = tx.init(params)
        for _ in range(41):
            params, state = step(params, state)
            kept.append({n: np.asarray(dp.masks_of(state)[n]["kernel"]) for n in ["fc1", "fc2"]})
        return kept

    kept = kept_per_step(1)
    for t in range(1, 41):
        for n in ["fc1", "fc2"]:
            assert not (kept[t][n] & ~kept[t - 1][n]).any(), (t, n)  # no weight comes back
    assert (~kept[20]["fc1"]).sum() > (~kept[10]["fc1"]).sum() > 0
    dropped = {n: int((~m).sum()) for n, m in kept[-1].items()}
    if scope == "layer":
        assert dropped == {n: reference.count_to_drop(0.9, m.size) for n, m in kept[-1].items()}
    else:
        assert sum(dropped.values()) == reference.count_to_drop(0.9, 640 + 320)
    assert not np.array_equal(kept[-1]["fc1"], kept_per_step(2)[-1]["fc1"])


@pytest.mark.parametrize(
    "pruner",
    [
        lambda f: dp.algorithms.sensitivity(0.25, filter=f),
        lambda f: dp.algorithms.scheduled(
            lambda ctx: dp.scores.magnitude(ctx.params, filter=f),
            lambda hp: dp.schedules.constant(hp["target"]),
            dp.schedules.every(1),
            hyperparams={"target": 0.25},
            filter=f,
            structured=True,
        ),
    ],
)
def test_structured_pruning_masks_selected_biases_and_refuses_other_vectors(pruner):
    tx = dp.prune(optax.sgd(0.0), pruner(dp.tree.kernels(min_ndim=1)))
    params = init_params()
    _, state = jax.jit(tx.update)(params, tx.init(params), params)
    masks = dp.masks_of(state)["fc1"]
    assert (~masks["bias"]).sum() == 8
    np.testing.assert_array_equal(masks["bias"], masks["kernel"][0])
    params["norm"] = {"scale": jnp.ones(32)}
    with pytest.raises(ValueError, match=r"selected 'norm/scale' of shape \(32,\)"):
        tx.init(params)


def test_bad_algorithm_arguments():
    with pytest.raises(ValueError, match="end > begin"):
        dp.algorithms.gmp(0.9, begin=10, end=10)
    with pytest.raises(ValueError, match="rounds"):
        dp.algorithms.iterative(0.9, rounds=0, begin=0, period=10)
    with pytest.raises(ValueError, match="global"):
        dp.algorithms.gmp(0.9, 0, 10, scope="global", distribution="erk")


@pytest.mark.data
def test_gmp_on_real_mnist_reaches_target_and_learns(mnist_train, mnist_test):
    subset = data.Dataset(mnist_train.images[:8192], mnist_train.labels[:8192])
    model = models.LeNet300100()
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    apply_fn = lambda p, x: model.apply({"params": p}, x)
    tx = dp.prune(optax.adam(1e-3), dp.algorithms.gmp(0.9, begin=64, end=256, every=32))
    state = train.init_state(params, tx)
    result = train.fit(
        state,
        train.make_train_step(apply_fn, tx),
        subset,
        epochs=5,
        batch_size=128,
        seed=0,
        progress=False,
    )
    accuracy, _ = train.evaluate(train.make_eval_step(apply_fn), result.state, mnist_test, 500)
    report = dp.summary(result.state.params, dp.masks_of(result.state.opt_state))
    for leaf in ["fc1/kernel", "fc2/kernel", "fc3/kernel"]:
        row = report["leaves"][leaf]
        assert row["size"] - row["nonzeros"] == reference.count_to_drop(0.9, row["size"])
    assert accuracy > 0.9


def test_gmp_reaches_its_target_when_the_ramp_is_not_a_multiple_of_the_cadence():
    _, _, dropped = masks_after(dp.algorithms.gmp(0.5, begin=0, end=13, every=5), 15)
    assert dropped[12] < 320 and dropped[13] == 320 and dropped[14] == 320


def _drop_lowest(norms, fraction):
    """NumPy reference: True where kept, the round(f·n) lowest norms dropped."""
    k = reference.count_to_drop(fraction, norms.size)
    keep = np.ones(norms.size, bool)
    keep[np.argsort(norms, kind="stable")[:k]] = False
    return keep


@pytest.mark.parametrize("shape", [(12, 10), (3, 3, 6, 8)])
def test_structured_gmp_drops_lowest_norm_units_and_inputs_like_numpy(shape):
    w = np.asarray(jax.random.normal(jax.random.key(1), shape))
    params = {
        "l1": {"kernel": jnp.asarray(w), "bias": jnp.ones(shape[-1])},
        "l2": {"kernel": jnp.ones((shape[-1], 3)), "bias": jnp.zeros(3)},
    }
    pruner = dp.algorithms.structured_gmp({"l1": 0.4}, begin=0, end=1, inputs={"l1": 0.5})
    tx = dp.prune(optax.sgd(0.0), pruner)
    state = tx.init(params)
    for _ in range(2):  # the ramp reaches 1 at step 1
        _, state = jax.jit(tx.update)(params, state, params)
    masks = dp.masks_of(state)
    axes = tuple(range(w.ndim - 2))
    units = _drop_lowest(np.sqrt((w**2).sum(axis=(*axes, w.ndim - 2))), 0.4)
    inputs = _drop_lowest(np.sqrt((w**2).sum(axis=(*axes, w.ndim - 1))), 0.5)
    expected = inputs[:, None] & units[None, :]
    np.testing.assert_array_equal(masks["l1"]["kernel"], np.broadcast_to(expected, shape))
    np.testing.assert_array_equal(masks["l1"]["bias"], units)
    assert masks["l2"]["kernel"] is None and masks["l2"]["bias"] is None


def test_structured_gmp_ramps_its_fractions_and_changes_them_without_recompiling():
    params = init_params()
    pruner = dp.algorithms.structured_gmp({"fc1": 0.5}, begin=0, end=4, every=2)
    tx = dp.prune(optax.sgd(0.0), pruner)
    update = jax.jit(tx.update)
    n_out = params["fc1"]["kernel"].shape[-1]

    def dropped_units(state, steps):
        for _ in range(steps):
            _, state = update(params, state, params)
        return int((~np.asarray(dp.masks_of(state)["fc1"]["bias"])).sum())

    ramp = 1 - (1 - 2 / 4) ** 3  # p_t at the update of step 2
    assert dropped_units(tx.init(params), 3) == reference.count_to_drop(0.5 * ramp, n_out)
    state = dp.set_hyperparams(tx.init(params), **{"units:fc1": 0.75})
    assert dropped_units(state, 5) == reference.count_to_drop(0.75, n_out)
    assert update._cache_size() == 1


def test_structured_gmp_refuses_bad_arguments_by_name():
    with pytest.raises(ValueError, match="neither"):
        dp.algorithms.structured_gmp({}, begin=0, end=10)
    with pytest.raises(ValueError, match=r"inputs\['fc1'\] must be .* \[0, 1\], got 1.5"):
        dp.algorithms.structured_gmp({}, begin=0, end=10, inputs={"fc1": 1.5})
    tx = dp.prune(optax.sgd(0.1), dp.algorithms.structured_gmp({"conv9": 0.5}, 0, 10))
    with pytest.raises(ValueError, match="units pattern 'conv9' matches no kernel; kernels: fc1"):
        tx.init(init_params())
    tx = dp.prune(optax.sgd(0.1), dp.algorithms.structured_gmp({"fc1": 0.5}, 0, 10))
    with pytest.raises(ValueError, match=r"'units:fc1' must be .* \[0, 1\], got 2"):
        dp.set_hyperparams(tx.init(init_params()), **{"units:fc1": 2})


def test_structured_gmp_taylor_ranks_groups_by_squared_gradient_weight_sums():
    """Molchanov et al. 2019: a group's score is Σ over the batches since the last update
    of (Σ_group g · w)²; a row that gets no gradient (a dead input) scores 0 and goes first."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 5)).astype(np.float32)
    params = {"fc": {"kernel": jnp.asarray(w), "bias": jnp.zeros(5)}}
    pruner = dp.algorithms.structured_gmp(
        {"fc": 0.4}, begin=0, end=2, every=2, inputs={"fc": 0.5}, score="taylor"
    )
    tx = dp.prune(optax.sgd(0.0), pruner)
    state = tx.init(params)
    grads = [rng.normal(size=(6, 5)).astype(np.float32) for _ in range(3)]
    grads[2][0] = grads[1][0] = 0.0  # input 0 gets no gradient after the first update
    for g in grads:
        _, state = tx.update(
            {"fc": {"kernel": jnp.asarray(g), "bias": jnp.zeros(5)}}, state, params
        )
    # the update at step 2 ranks by the sums over steps 1 and 2 (step 0's update reset them)
    units = sum(np.square((g * w).sum(axis=0)) for g in grads[1:])
    inputs = sum(np.square((g * w).sum(axis=1)) for g in grads[1:])
    expected = _drop_lowest(inputs, 0.5)[:, None] & _drop_lowest(units, 0.4)[None, :]
    np.testing.assert_array_equal(dp.masks_of(state)["fc"]["kernel"], expected)
    assert not expected[0].any()


_SHAPE = (7, 9)
_ROWS_AND_COLUMNS = dp.prune(
    optax.sgd(0.0), dp.algorithms.structured_gmp({"fc": 0.0}, 0, 1, inputs={"fc": 0.0})
)
_INIT, _UPDATE = jax.jit(_ROWS_AND_COLUMNS.init), jax.jit(_ROWS_AND_COLUMNS.update)


@settings(max_examples=10, deadline=None)
@given(u=st.floats(0, 1), v=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_structured_gmp_drops_exact_counts_of_whole_rows_and_columns(u, v, seed):
    """Whatever the fractions (set in the state: one compiled update serves them all):
    exactly round(u·n_out) columns and round(v·n_in) rows go, the mask is their outer
    product, and the bias follows the columns."""
    n_in, n_out = _SHAPE
    w = np.random.default_rng(seed).normal(size=_SHAPE).astype(np.float32)
    params = {"fc": {"kernel": w, "bias": np.zeros(n_out, np.float32)}}
    state = dp.set_hyperparams(_INIT(params), **{"units:fc": u, "inputs:fc": v})
    for _ in range(2):
        _, state = _UPDATE(params, state, params)
    m = np.asarray(dp.masks_of(state)["fc"]["kernel"])
    kept_rows, kept_cols = m.any(axis=1), m.any(axis=0)
    if kept_rows.any():
        assert (~kept_cols).sum() == reference.count_to_drop(u, n_out)
    if kept_cols.any():
        assert (~kept_rows).sum() == reference.count_to_drop(v, n_in)
    np.testing.assert_array_equal(m, kept_rows[:, None] & kept_cols[None, :])
    np.testing.assert_array_equal(dp.masks_of(state)["fc"]["bias"], kept_cols)
    assert _UPDATE._cache_size() == 1
