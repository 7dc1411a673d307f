"""Dynamic algorithms: DNS, SET, RigL, movement, lottery tickets, fixed and straight-through."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynprune as dp
from dynprune.algorithms import network_surgery as dns_lib
from dynprune.algorithms import sparse_training
from dynprune.harness import data, models, train
from tests import reference
from tests.test_transform import X, Y, init_params, loss_fn, make_step


def test_dns_thresholds_use_nonzero_magnitudes():
    w = jnp.array([[0.0, -1.0], [2.0, 3.0]])
    a, b = dns_lib.layer_thresholds(w, 0.5)
    mags = np.array([1.0, 2.0, 3.0])
    t = mags.mean() + 0.5 * mags.std()
    np.testing.assert_allclose([float(a), float(b)], [0.9 * t, 1.1 * t], rtol=1e-6)


def test_dns_thresholds_leave_out_nan_and_inf():
    w = jnp.array([[0.0, -1.0, jnp.nan], [2.0, 3.0, -jnp.inf]])
    a, b = dns_lib.layer_thresholds(w, 0.5)
    mags = np.array([1.0, 2.0, 3.0])
    t = mags.mean() + 0.5 * mags.std()
    np.testing.assert_allclose([float(a), float(b)], [0.9 * t, 1.1 * t], rtol=1e-6)


def test_dns_prunes_nan_and_inf_weights_and_the_rest_of_their_layer_as_usual():
    # finite |W| nonzero: 0.05, 1, 1, 1 -> mean 0.7625, std 0.4115; c = 0 -> a = 0.686
    w = jnp.array([[0.05, 1.0, jnp.nan], [1.0, 1.0, jnp.inf]])
    params = {"fc": {"kernel": w}}
    tx = dp.prune(optax.sgd(0.0), dp.algorithms.dns(c=0.0, gamma=0.0))
    _, state = tx.update({"fc": {"kernel": jnp.zeros_like(w)}}, tx.init(params), params)
    kept = np.asarray(dp.masks_of(state)["fc"]["kernel"])
    assert kept.tolist() == [[False, True, False], [True, True, False]]
    seen = np.asarray(dp.masked_params(params, state)["fc"]["kernel"])
    assert seen.tolist() == [[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]


def test_dns_pruned_weight_recovers_when_it_grows_past_b():
    params = {"fc": {"kernel": jnp.array([[0.05, 1.0], [1.0, 1.0]])}}
    # |W| nonzero: mean 0.7625, std 0.4115; c = 0 -> a = 0.686, b = 0.839
    tx = dp.prune(optax.sgd(1.0), dp.algorithms.dns(c=0.0, gamma=0.0))
    state = tx.init(params)
    push = {"fc": {"kernel": jnp.array([[-0.3, 0.0], [0.0, 0.0]])}}  # w00 grows 0.3 per step
    history = []
    for _ in range(4):
        updates, state = tx.update(push, state, params)
        params = optax.apply_updates(params, updates)
        history.append(bool(dp.masks_of(state)["fc"]["kernel"][0, 0]))
    # masks are set from the weights a step starts with: 0.05, 0.35, 0.65 < a are pruned,
    # 0.95 > b is spliced back
    assert history == [False, False, False, True]
    aux = dp.find_state(state).aux
    assert int(aux.total_prunes) == 1 and int(aux.total_splices) == 1
    assert float(params["fc"]["kernel"][0, 0]) == pytest.approx(1.25)


def test_dns_warmup_ramps_the_thresholds_along_the_cubic():
    w = jnp.array([[0.05, 0.3], [0.6, 1.0]])
    # |W|: mean 0.4875, std 0.3555; c = 1 -> a = 0.9 * 0.843 = 0.759
    a = 0.9 * (float(jnp.mean(jnp.abs(w))) + float(jnp.std(jnp.abs(w))))
    tx = dp.prune(optax.sgd(0.0), dp.algorithms.dns(c=1.0, gamma=0.0, warmup=10))
    state = tx.init({"fc": {"kernel": w}})
    kept = []
    for t in range(12):
        _, state = tx.update({"fc": {"kernel": jnp.zeros_like(w)}}, state, {"fc": {"kernel": w}})
        kept.append(np.asarray(dp.masks_of(state)["fc"]["kernel"]).ravel().tolist())
        scale = 1 - (1 - min(t / 10, 1)) ** 3
        # a_t only grows and no |w| exceeds b_t (< 1.0 here), so kept = |w| >= a_t
        assert kept[t] == [bool(x >= scale * a) for x in np.abs(np.asarray(w)).ravel()], t
    assert kept[0] == [True] * 4 and kept[-1] == [False, False, False, True]
    with pytest.raises(ValueError, match="warmup"):
        dp.algorithms.dns(warmup=-1)


def test_dns_pruned_weights_are_kept_dense_and_masked_in_forward():
    params = {"fc": {"kernel": jnp.array([[0.05, 1.0], [1.0, 1.0]])}}
    tx = dp.prune(optax.sgd(0.0), dp.algorithms.dns(c=0.0, gamma=0.0))
    state = tx.init(params)
    updates, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    params = optax.apply_updates(params, updates)
    assert float(params["fc"]["kernel"][0, 0]) == pytest.approx(0.05)
    assert float(dp.masked_params(params, state)["fc"]["kernel"][0, 0]) == 0.0


def context(step, hp, key):
    return dp.Context(None, None, None, None, step, hp, key)


def test_dns_update_probability_follows_the_formula():
    gamma, power, steps = 0.01, 1.0, 3000
    pruner = dp.algorithms.dns(gamma=gamma, power=power)
    hp = {"gamma": jnp.float32(gamma), "power": jnp.float32(power), "iter_stop": jnp.float32(1e9)}

    def fires(step, key):
        return pruner.should_update(context(step, hp, key))

    keys = jax.random.split(jax.random.key(0), steps)
    t = jnp.arange(steps)
    fired = np.asarray(jax.jit(jax.vmap(fires))(t, keys))
    p = (1 + gamma * np.arange(steps)) ** -power
    expected, sd = p.sum(), np.sqrt((p * (1 - p)).sum())
    assert abs(fired.sum() - expected) < 4 * sd
    early, late = fired[:300].mean(), fired[-1000:].mean()
    assert abs(early - p[:300].mean()) < 0.1 and abs(late - p[-1000:].mean()) < 0.05


def test_dns_never_updates_after_iter_stop():
    pruner = dp.algorithms.dns(gamma=0.0, iter_stop=5)
    hp = {k: jnp.float32(v) for k, v in pruner.hyperparams.items()}
    fired = [
        bool(pruner.should_update(context(jnp.int32(t), hp, jax.random.key(t)))) for t in range(8)
    ]
    assert fired == [True] * 5 + [False] * 3


def test_drop_fraction_is_cosine_decay():
    for t in [0, 250, 500, 999, 1000, 2000]:
        expected = 0.3 / 2 * (1 + np.cos(np.pi * t / 1000)) if t < 1000 else 0.0
        got = float(sparse_training.drop_fraction(jnp.float32(t), 0.3, 1000))
        assert got == pytest.approx(expected, abs=1e-6)


def test_drop_and_grow_hand_checked():
    m = jnp.array([True, True, True, True, False, False, False, False])
    w = jnp.array([0.5, -0.1, 0.9, 0.2, 0.0, 0.0, 0.0, 0.0])
    grad = jnp.array([9.0, 9.0, 9.0, 9.0, 0.1, 3.0, 0.2, 2.0])
    new = sparse_training.drop_and_grow(m, w, grad, 0.5)
    # drop 2 smallest active (-0.1, 0.2), grow 2 largest-gradient inactive (3.0, 2.0)
    assert new.tolist() == [True, False, True, False, False, True, False, True]


def test_drop_and_grow_moves_to_a_new_count_with_the_turnover_on_top():
    m = jnp.array([True, True, True, True, False, False, False, False])
    w = jnp.array([0.5, -0.1, 0.9, 0.2, 0.0, 0.0, 0.0, 0.0])
    grad = jnp.array([9.0, 9.0, 9.0, 9.0, 0.1, 3.0, 0.2, 2.0])
    # turnover round(0.25 * 4) = 1; keep 2: drop 1 + 2, grow 1; keep 6: drop 1, grow 1 + 2
    sparser = sparse_training.drop_and_grow(m, w, grad, 0.25, keep=2)
    assert sparser.tolist() == [False, False, True, False, False, True, False, False]
    denser = sparse_training.drop_and_grow(m, w, grad, 0.25, keep=6)
    assert denser.tolist() == [True, False, True, True, False, True, True, True]


@pytest.mark.parametrize("algorithm", ["set", "rigl"])
@pytest.mark.parametrize("inner", ["adam", "sgd_momentum"])
def test_sparse_training_keeps_sparsity_and_regrows_from_zero(algorithm, inner):
    make = {"set": dp.algorithms.sparse_evolutionary, "rigl": dp.algorithms.rigl}[algorithm]
    opt = {"adam": optax.adam(1e-2), "sgd_momentum": optax.sgd(0.1, momentum=0.9)}[inner]
    pruner = make(0.8, every=4, end=100, distribution="uniform")
    tx = dp.prune(opt, pruner)
    params = init_params()
    state = tx.init(params)
    params = dp.apply_masks(params, dp.masks_of(state))
    step = make_step(tx)
    changed = 0
    for t in range(13):
        old = np.asarray(dp.masks_of(state)["fc1"]["kernel"])
        before = np.asarray(params["fc1"]["kernel"])
        g = np.asarray(jax.grad(loss_fn)(params, X, Y)["fc1"]["kernel"])
        params, state = step(params, state)
        new = np.asarray(dp.masks_of(state)["fc1"]["kernel"])
        assert (~new).sum() == reference.count_to_drop(0.8, 640), t
        grown = new & ~old
        if grown.any():
            changed += 1
            assert (before[grown] == 0.0).all()
            # a regrown weight's optimizer state holds this step's gradient and nothing older
            opt = state.inner_state[0]
            if inner == "adam":
                fresh = {"mu": 0.1 * g, "nu": 0.001 * g**2}
            else:
                fresh = {"trace": g}
            for name, expected in fresh.items():
                got = np.asarray(getattr(opt, name)["fc1"]["kernel"])[grown]
                np.testing.assert_allclose(got, expected[grown], rtol=1e-4, atol=1e-20)
    assert changed == 3  # updates at steps 4, 8 and 12


def test_rigl_initial_masks_follow_erk_exactly():
    params = init_params()
    tx = dp.prune(optax.sgd(0.1), dp.algorithms.rigl(0.9, end=100))
    masks = dp.masks_of(tx.init(params))
    targets = dp.distributions.erk(dp.tree.select(params), 0.9)
    for name, n in [("fc1", 640), ("fc2", 320)]:
        expected = reference.count_to_drop(float(targets[name]["kernel"]), n)
        assert int((~masks[name]["kernel"]).sum()) == expected


def test_movement_scores_accumulate_and_pruned_weights_are_frozen():
    params = {"fc": {"kernel": jnp.array([[1.0, -1.0], [2.0, 0.5]])}}
    tx = dp.prune(optax.sgd(0.1), dp.algorithms.movement(0.5, begin=0, end=2, every=1))
    state = tx.init(params)
    grads = {"fc": {"kernel": jnp.array([[1.0, 1.0], [-1.0, 0.0]])}}
    expected_scores = np.zeros((2, 2))
    for _ in range(3):
        expected_scores -= np.asarray(grads["fc"]["kernel"] * params["fc"]["kernel"])
        before = np.asarray(params["fc"]["kernel"])
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        after = np.asarray(params["fc"]["kernel"])
        pruned = ~np.asarray(dp.masks_of(state)["fc"]["kernel"])
        np.testing.assert_array_equal(after[pruned], before[pruned])
    np.testing.assert_allclose(state.aux["fc"]["kernel"], expected_scores, rtol=1e-6)
    mask = np.asarray(dp.masks_of(state)["fc"]["kernel"])
    np.testing.assert_array_equal(mask, reference.drop_lowest([expected_scores], 2)[0])
    assert (np.asarray(params["fc"]["kernel"]) != 0).all()


@pytest.mark.parametrize("rewind_step", [0, 3])
def test_lottery_rewinds_survivors_and_resets_moments(rewind_step):
    tx = dp.prune(
        optax.adam(1e-2), dp.algorithms.lottery(0.75, rounds=2, period=10, rewind_step=rewind_step)
    )
    params = init_params()
    state = tx.init(params)
    step = make_step(tx)
    snapshot = params
    for t in range(11):  # round 1 happens at step 10, after 10 steps
        if t == rewind_step:
            snapshot = params
        params, state = step(params, state)
    mask = np.asarray(dp.masks_of(state)["fc1"]["kernel"])
    assert (~mask).sum() == 320  # round 1: 1 - (1 - 0.75) ** (1/2) = 50 %
    w = np.asarray(params["fc1"]["kernel"])
    np.testing.assert_allclose(w[mask], np.asarray(snapshot["fc1"]["kernel"])[mask], rtol=1e-6)
    assert (w[~mask] == 0).all()
    np.testing.assert_allclose(params["fc1"]["bias"], snapshot["fc1"]["bias"], rtol=1e-6)
    assert not np.asarray(state.inner_state[0].mu["fc1"]["kernel"]).any()
    for _ in range(10):
        params, state = step(params, state)
    assert int((~dp.masks_of(state)["fc1"]["kernel"]).sum()) == 480


def test_fixed_masks_never_change():
    params = init_params()
    _, masks = dp.prune_now(params, sparsity=0.6)
    tx = dp.prune(optax.adam(1e-2), dp.algorithms.fixed(masks))
    state = tx.init(params)
    step = make_step(tx)
    for _ in range(5):
        params, state = step(params, state)
    np.testing.assert_array_equal(dp.masks_of(state)["fc1"]["kernel"], masks["fc1"]["kernel"])
    assert (np.asarray(params["fc1"]["kernel"])[~np.asarray(masks["fc1"]["kernel"])] == 0).all()


def test_straight_through_mode_lets_pruned_weights_learn():
    pruner = dp.algorithms.straight_through(dp.algorithms.one_shot(0.5, at=0))
    tx = dp.prune(optax.sgd(0.1), pruner)
    params0 = init_params()
    state = tx.init(params0)
    step = make_step(tx, forward=dp.masked_params)
    params, state = step(params0, state)
    params, state = step(params, state)
    pruned = ~np.asarray(dp.masks_of(state)["fc1"]["kernel"])
    moved = np.asarray(params["fc1"]["kernel"]) != np.asarray(params0["fc1"]["kernel"])
    assert moved[pruned].any()
    assert (np.asarray(params["fc1"]["kernel"])[pruned] != 0).all()


MNIST_RECIPES = {
    "dns": lambda: dp.algorithms.dns(c={"fc3": 0.5, "default": 1.0}, gamma=1e-3),
    "set": lambda: dp.algorithms.sparse_evolutionary(0.9, every=50, end=300),
    "rigl": lambda: dp.algorithms.rigl(0.9, every=50, end=300),
    "movement": lambda: dp.algorithms.movement(0.9, begin=0, end=250, every=10),
    "lottery": lambda: dp.algorithms.lottery(0.9, rounds=2, period=150),
    "snip": lambda: dp.algorithms.snip(0.9),
}
EXPECTED_SPARSITY = {"set": 0.9, "rigl": 0.9, "movement": 0.9, "lottery": 0.9, "snip": 0.9}


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(MNIST_RECIPES))
def test_short_real_mnist_run_reaches_target_and_learns(name, mnist_train, mnist_test):
    subset = data.Dataset(mnist_train.images[:12800], mnist_train.labels[:12800])
    model = models.LeNet300100()
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    apply_fn = lambda p, x: model.apply({"params": p}, x)
    pruner = MNIST_RECIPES[name]()
    tx = dp.prune(optax.adam(1e-3), pruner)
    state = train.init_state(params, tx)
    state = state._replace(params=dp.apply_masks(state.params, dp.masks_of(state.opt_state)))
    step = train.make_train_step(apply_fn, tx, forward_params=dp.masked_params)
    result = train.fit(state, step, subset, epochs=4, batch_size=128, seed=0, progress=False)
    final = result.state
    accuracy, _ = train.evaluate(
        train.make_eval_step(apply_fn, forward_params=dp.masked_params), final, mnist_test, 1000
    )
    report = dp.summary(final.params, dp.masks_of(final.opt_state))
    if name in EXPECTED_SPARSITY:
        assert report["pruned_only"]["sparsity"] == pytest.approx(EXPECTED_SPARSITY[name], abs=2e-3)
    else:
        assert report["pruned_only"]["sparsity"] > 0.5
    assert accuracy > 0.85, accuracy


def test_dns_can_prune_biases_with_joint_layer_statistics():
    params = {
        "fc": {"kernel": jnp.array([[0.05, 1.0], [1.0, 1.0]]), "bias": jnp.array([0.02, 2.0])}
    }
    tx = dp.prune(optax.sgd(0.0), dp.algorithms.dns(c=0.0, gamma=0.0, prune_biases=True))
    state = tx.init(params)
    _, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    joint = np.array([0.05, 1.0, 1.0, 1.0, 0.02, 2.0])
    a = 0.9 * joint.mean()
    masks = dp.masks_of(state)
    np.testing.assert_array_equal(masks["fc"]["bias"], np.abs([0.02, 2.0]) >= a)
    np.testing.assert_array_equal(masks["fc"]["kernel"], [[False, True], [True, True]])
    assert float(dp.find_state(state).aux.lower["fc"]["bias"]) == pytest.approx(a, rel=1e-6)
    without = dp.prune(optax.sgd(0.0), dp.algorithms.dns(c=0.0, gamma=0.0))
    assert dp.masks_of(without.init(params))["fc"]["bias"] is None
