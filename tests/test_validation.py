"""Nothing silent: bad hyperparameters and step arguments fail loudly, or flag the state."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynprune as dp
from dynprune import checks

A = dp.algorithms
NAN, INF = float("nan"), float("inf")
PARAMS = {"fc1": {"kernel": jnp.linspace(-1.0, 1.0, 48).reshape(8, 6), "bias": jnp.zeros(6)}}


def error(kind, *words):
    """``(kind, regex)`` matching a message that names every one of ``words``, in order."""
    return kind, ".*".join(re.escape(str(w)) for w in words)


# (build the pruner, expected error); the message names the argument and the bad value
BAD_ARGUMENTS = {
    "gmp target": (lambda: A.gmp(1.5, begin=0, end=10), error(ValueError, "target", 1.5)),
    "one_shot target": (lambda: A.one_shot(1.5), error(ValueError, "target", 1.5)),
    "rigl target": (lambda: A.rigl(1.5, end=100), error(ValueError, "target", 1.5)),
    "set target": (lambda: A.sparse_evolutionary(NAN, end=100), error(ValueError, "target", NAN)),
    "snip target": (lambda: A.snip(2.0), error(ValueError, "target", 2.0)),
    "random target": (lambda: A.random(-0.5), error(ValueError, "target", -0.5)),
    "iterative target": (
        lambda: A.iterative(INF, rounds=2, begin=0, period=5),
        error(ValueError, "target", INF),
    ),
    "lottery target": (
        lambda: A.lottery(1.1, rounds=2, period=5),
        error(ValueError, "target", 1.1),
    ),
    "sensitivity target": (lambda: A.sensitivity(-0.1), error(ValueError, "target", -0.1)),
    "movement target": (
        lambda: A.movement(1.5, begin=0, end=10),
        error(ValueError, "target", 1.5),
    ),
    "string target": (lambda: A.gmp("0.5", begin=0, end=10), error(TypeError, "target", "'0.5'")),
    "bool target": (lambda: A.one_shot(True), error(TypeError, "target", True)),
    "gmp initial": (
        lambda: A.gmp(0.9, begin=0, end=10, initial=NAN),
        error(ValueError, "initial", NAN),
    ),
    "rigl alpha": (lambda: A.rigl(0.9, end=100, alpha=1.5), error(ValueError, "alpha", 1.5)),
    "dns gamma": (lambda: A.dns(gamma=-1e-4), error(ValueError, "gamma", -0.0001)),
    "dns power": (lambda: A.dns(power=NAN), error(ValueError, "power", NAN)),
    "dns iter_stop": (lambda: A.dns(iter_stop=-1), error(ValueError, "iter_stop", -1)),
    "dns float iter_stop": (lambda: A.dns(iter_stop=100.0), error(TypeError, "iter_stop", 100.0)),
    "dns c": (lambda: A.dns(c=INF), error(ValueError, "c", INF)),
    "dns per-layer c": (
        lambda: A.dns(c={"fc1": NAN, "default": 1.0}),
        error(ValueError, "c", NAN),
    ),
    "dns warmup": (lambda: A.dns(warmup=2.5), error(TypeError, "warmup", 2.5)),
    "threshold negative": (lambda: A.threshold(-0.1), error(ValueError, "threshold", -0.1)),
    "threshold inf": (lambda: A.threshold(INF), error(ValueError, "threshold", INF)),
    "gmp every float": (
        lambda: A.gmp(0.9, begin=0, end=10, every=2.5),
        error(TypeError, "every", 2.5),
    ),
    "gmp begin bool": (lambda: A.gmp(0.9, begin=True, end=10), error(TypeError, "begin", True)),
    "gmp end float": (lambda: A.gmp(0.9, begin=0, end=10.0), error(TypeError, "end", 10.0)),
    "random begin": (lambda: A.random(0.9, begin=-1), error(ValueError, "begin", -1)),
    "one_shot at": (lambda: A.one_shot(0.9, at=-1), error(ValueError, "at", -1)),
    "snip at": (lambda: A.snip(0.9, at=0.0), error(TypeError, "at", 0.0)),
    "iterative period": (
        lambda: A.iterative(0.9, rounds=2, begin=0, period=0),
        error(ValueError, "period", 0),
    ),
    "iterative begin": (
        lambda: A.iterative(0.9, rounds=2, begin=-5, period=2),
        error(ValueError, "begin", -5),
    ),
    "lottery rounds": (
        lambda: A.lottery(0.9, rounds=1.0, period=5),
        error(TypeError, "rounds", 1.0),
    ),
    "movement every": (
        lambda: A.movement(0.9, begin=0, end=10, every=0),
        error(ValueError, "every", 0),
    ),
    "rigl end": (lambda: A.rigl(0.9, end=0), error(ValueError, "end", 0)),
    "threshold every": (lambda: A.threshold(0.1, every=0), error(ValueError, "every", 0)),
    "threshold end before begin": (
        lambda: A.threshold(0.1, begin=5, end=2),
        error(ValueError, "begin", 5, "end", 2),
    ),
    "gmp distribution": (
        lambda: A.gmp(0.9, begin=0, end=10, distribution="ERK"),
        error(ValueError, "distribution", "'ERK'"),
    ),
    "rigl distribution": (
        lambda: A.rigl(0.9, end=100, distribution="erdos"),
        error(ValueError, "distribution", "'erdos'"),
    ),
    "gmp overrides": (
        lambda: A.gmp(0.9, begin=0, end=10, overrides={"fc1": 1.2}),
        error(ValueError, "fc1", 1.2),
    ),
    "registry": (
        lambda: A.get("gmp", target=0.9, begin=0, end=10, every=0.5),
        error(TypeError, "every", 0.5),
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_bad_arguments_fail_at_construction_naming_argument_and_value(case):
    build, (kind, pattern) = BAD_ARGUMENTS[case]
    with pytest.raises(kind, match=pattern):
        build()


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"target": 1.5}, error(ValueError, "target", 1.5)),
        ({"target": NAN}, error(ValueError, "target", NAN)),
        ({"target": -INF}, error(ValueError, "target", -INF)),
        ({"target": "0.5"}, error(TypeError, "target", "'0.5'")),
        ({"target": True}, error(TypeError, "target", True)),
        ({"target": None}, error(TypeError, "target", None)),
        ({"target": np.array([0.5, 1.5])}, error(ValueError, "target", "1.5")),
        ({"initial": -0.25}, error(ValueError, "initial", -0.25)),
    ],
)
def test_set_hyperparams_refuses_bad_values(values, expected):
    kind, pattern = expected
    state = dp.prune(optax.sgd(0.1), A.gmp(0.5, begin=0, end=10)).init(PARAMS)
    with pytest.raises(kind, match=pattern):
        dp.set_hyperparams(state, **values)


def test_set_hyperparams_checks_each_hyperparameter_by_its_own_rule():
    state = dp.prune(optax.sgd(0.1), A.dns()).init(PARAMS)
    with pytest.raises(ValueError, match=r"gamma.*-1"):
        dp.set_hyperparams(state, gamma=-1.0)
    with pytest.raises(TypeError, match=r"iter_stop.*1000\.5"):
        dp.set_hyperparams(state, iter_stop=1000.5)
    state = dp.set_hyperparams(state, gamma=1e-3, power=0.5, iter_stop=1000)
    assert float(dp.hyperparams_of(state)["iter_stop"]) == 1000.0
    threshold = dp.prune(optax.sgd(0.1), A.threshold(0.1)).init(PARAMS)
    with pytest.raises(ValueError, match=r"threshold.*-0\.5"):
        dp.set_hyperparams(threshold, threshold=-0.5)
    assert float(dp.hyperparams_of(dp.set_hyperparams(threshold, threshold=3.0))["threshold"]) == 3


def test_a_pruner_built_by_hand_is_checked_when_the_state_is_made():
    pruner = A.scheduled(
        lambda ctx: dp.scores.magnitude(ctx.params),
        lambda hp: dp.schedules.constant(hp["target"]),
        dp.schedules.every(1),
        hyperparams={"target": 0.5},
    )._replace(hyperparams={"target": 1.5})
    with pytest.raises(ValueError, match=r"target.*1\.5"):
        dp.prune(optax.sgd(0.1), pruner).init(PARAMS)


def test_a_name_without_a_rule_must_still_be_finite():
    checks.hyperparams({"temperature": -3.0})
    with pytest.raises(ValueError, match=r"temperature.*nan"):
        checks.hyperparams({"temperature": NAN})
    assert not bool(checks.invalid({"temperature": jnp.float32(-3.0)}))
    assert bool(checks.invalid({"temperature": jnp.float32(jnp.inf)}))


def test_values_that_overflow_float32_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        A.threshold(1e39)


def one_shot_step(tx):
    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        return optax.apply_updates(params, updates), state

    return step


def test_a_traced_bad_target_flags_the_state_and_the_flag_stays():
    tx = dp.prune(optax.sgd(0.0), A.one_shot(0.5))
    state = tx.init(PARAMS)
    set_target = jax.jit(lambda s, t: dp.set_hyperparams(s, target=t))
    assert not bool(dp.invalid_hyperparams(state))
    assert not bool(dp.invalid_hyperparams(set_target(state, 0.75)))
    for bad in [1.5, -0.5, NAN, INF]:
        assert bool(dp.invalid_hyperparams(set_target(state, bad))), bad

    # A bad value that reaches the state some other way is flagged by the next update,
    # and a valid value set afterwards does not clear the flag.
    step = one_shot_step(tx)
    hp = {"target": jnp.float32(NAN)}
    params, bad_state = step(PARAMS, state._replace(hyperparams=hp))
    assert bool(dp.invalid_hyperparams(bad_state))
    _, bad_state = step(params, dp.set_hyperparams(bad_state, target=0.5))
    assert bool(dp.invalid_hyperparams(bad_state))
    _, good = step(PARAMS, state)
    assert not bool(dp.invalid_hyperparams(good))
    assert step._cache_size() == 1  # the flag is state: setting values never recompiles


def test_a_traced_nan_target_drops_nothing():
    tx = dp.prune(optax.sgd(0.0), A.one_shot(0.5))
    state = tx.init(PARAMS)
    _, state = one_shot_step(tx)(PARAMS, state._replace(hyperparams={"target": jnp.float32(NAN)}))
    assert bool(np.asarray(dp.masks_of(state)["fc1"]["kernel"]).all())


def test_the_flag_is_per_run_in_a_vmapped_sweep():
    tx = dp.prune(optax.sgd(0.0), A.one_shot(0.5))
    state = tx.init(PARAMS)
    states = jax.tree.map(lambda x: jnp.stack([x] * 3), state)
    states = states._replace(hyperparams={"target": jnp.array([0.25, 1.5, 0.75], jnp.float32)})
    stacked = jax.tree.map(lambda x: jnp.stack([x] * 3), PARAMS)
    _, states = jax.jit(jax.vmap(one_shot_step(tx)))(stacked, states)
    assert np.asarray(dp.invalid_hyperparams(states)).tolist() == [False, True, False]
    dropped = (~np.asarray(dp.masks_of(states)["fc1"]["kernel"])).sum(axis=(1, 2))
    assert dropped.tolist() == [12, 48, 36]  # the bad run is clipped to 1.0, and flagged


def test_the_flag_covers_every_hyperparameter_rule():
    flags = {
        "target": [(0.0, False), (1.0, False), (1.0001, True), (-1e-6, True)],
        "alpha": [(0.3, False), (NAN, True)],
        "threshold": [(0.0, False), (1e30, False), (-1.0, True), (INF, True)],
        "gamma": [(0.0, False), (-1.0, True)],
        "iter_stop": [(100.0, False), (100.5, True), (-1.0, True)],
    }
    for name, cases in flags.items():
        for value, expected in cases:
            got = jax.jit(checks.invalid)({name: jnp.float32(value)})
            assert bool(got) == expected, (name, value)
