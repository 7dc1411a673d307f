import inspect
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynprune as dp
from tests import reference

SHAPES = {"fc1": {"kernel": (8, 6), "bias": (6,)}, "fc2": {"kernel": (6, 4), "bias": (4,)}}
BUILT, SET = 0.6, 0.3  # the target a pruner is built with, and the one set in its state

# Each algorithm that prunes to a target, with small schedules, and the steps after which
# its last update has fired.
TARGETED = {
    "gmp": ({"begin": 0, "end": 4, "every": 2}, 5),
    "one_shot": ({"at": 1}, 2),
    "iterative": ({"rounds": 2, "begin": 0, "period": 2}, 3),
    "snip": ({"scope": "layer"}, 1),
    "random": ({"begin": 0}, 1),
    "sensitivity": ({"begin": 0}, 1),
    "set": ({"every": 2, "end": 10, "distribution": "uniform"}, 3),
    "rigl": ({"every": 2, "end": 10, "distribution": "uniform"}, 3),
    "movement": ({"begin": 0, "end": 4, "every": 2}, 5),
    "lottery": ({"rounds": 1, "period": 2}, 3),
}
MINIMAL = {name: {"target": BUILT, **kwargs} for name, (kwargs, _) in TARGETED.items()}
MINIMAL["threshold"] = {"threshold": 0.1}
MINIMAL["dns"] = {}
MINIMAL["structured_gmp"] = {"units": {"fc1": 0.5}, "begin": 0, "end": 2}
MINIMAL["sparse_vd"] = {}
# Pruners over other parameters than the model's: how to build those from the model's.
TRAINED = {"sparse_vd": lambda params: dp.algorithms.variational_params(params)}


def tiny_params(seed=0):
    leaves, treedef = jax.tree.flatten(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([jax.random.normal(k, s) for k, s in zip(keys, leaves, strict=True)])


def run(tx, state, params, steps):
    """``steps`` updates with a different random gradient at each step."""

    @jax.jit
    def step(params, state, key):
        grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for t in range(steps):
        params, state = step(params, state, jax.random.key(100 + t))
    return params, state


@pytest.mark.parametrize("name", sorted(TARGETED))
def test_set_hyperparams_target_reaches_exactly_that_sparsity(name):
    kwargs, steps = TARGETED[name]
    pruner = dp.algorithms.get(name, target=BUILT, **kwargs)
    tx = dp.prune(optax.sgd(0.1), pruner)
    params = tiny_params()
    state = dp.set_hyperparams(tx.init(params), target=SET)
    params, state = run(tx, state, params, steps)
    masks = dp.masks_of(state)
    for layer in ["fc1", "fc2"]:
        kept = np.asarray(masks[layer]["kernel"])
        n_in, n_out = kept.shape
        if name == "sensitivity":
            dead = ~kept.any(axis=0)
            assert dead.sum() == reference.count_to_drop(SET, n_out), layer
            assert (~kept).sum() == dead.sum() * n_in, layer
        else:
            assert (~kept).sum() == reference.count_to_drop(SET, kept.size), layer
        if not pruner.soft:
            w = np.asarray(params[layer]["kernel"])
            assert (w[~kept] == 0).all() and (w[kept] != 0).all(), layer


def test_threshold_is_set_by_its_own_name():
    params = tiny_params()
    tx = dp.prune(optax.sgd(0.0), dp.algorithms.get("threshold", threshold=0.0))
    state = dp.set_hyperparams(tx.init(params), threshold=0.5)
    _, state = run(tx, state, params, 1)
    for layer in ["fc1", "fc2"]:
        expected = np.abs(np.asarray(params[layer]["kernel"])) > 0.5
        np.testing.assert_array_equal(dp.masks_of(state)[layer]["kernel"], expected)


def test_names_are_the_registered_algorithms():
    assert dp.algorithms.names() == sorted(MINIMAL)


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_get_builds_a_working_pruner_from_minimal_arguments(name):
    params = TRAINED.get(name, lambda p: p)(tiny_params())
    tx = dp.prune(optax.sgd(0.1), dp.algorithms.get(name, **MINIMAL[name]))
    params, state = run(tx, tx.init(params), params, 2)
    masks = dp.masks_of(state)
    masks = masks.theta if name in TRAINED else masks
    assert masks["fc1"]["kernel"].shape == (8, 6)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_hyperparameters_are_named_as_the_arguments_that_set_them(name):
    hyperparams = dp.algorithms.get(name, **MINIMAL[name]).hyperparams
    # a per-layer hyperparameter "<argument>:<regex>" is named by its argument
    assert {h.partition(":")[0] for h in hyperparams} <= set(dp.algorithms.arguments(name))


def test_get_takes_arguments_as_json_gives_them():
    config = json.loads('{"c": {"fc1": 5.7, "default": 1.0}, "warmup": 10}')
    tx = dp.prune(optax.sgd(0.1), dp.algorithms.get("dns", **config))
    lower = tx.init(tiny_params()).aux.lower
    assert float(lower["fc1"]["kernel"]) > float(lower["fc2"]["kernel"])


def test_unknown_name_lists_the_valid_names():
    for lookup in [lambda: dp.algorithms.get("magnitude"), lambda: dp.algorithms.arguments("x")]:
        with pytest.raises(ValueError, match="unknown algorithm") as err:
            lookup()
        assert all(name in str(err.value) for name in MINIMAL)


def test_unknown_argument_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match="algorithm 'set' has no argument 'sparsity'") as err:
        dp.algorithms.get("set", sparsity=0.9, end=100)
    assert "its arguments: target, every, end, alpha, distribution, filter" in str(err.value)


def test_missing_argument_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match="algorithm 'gmp' needs argument 'begin', 'end'") as err:
        dp.algorithms.get("gmp", target=0.9)
    assert ", ".join(dp.algorithms.arguments("gmp")) in str(err.value)


def test_arguments_are_the_factory_parameters_and_steps_have_step_names():
    for name in dp.algorithms.names():
        factory = getattr(dp.algorithms, {"set": "sparse_evolutionary"}.get(name, name))
        parameters = inspect.signature(factory).parameters
        assert dp.algorithms.arguments(name) == list(parameters)
        for arg, p in parameters.items():
            if "int" in str(p.annotation).split(" | ") and arg != "rounds":
                assert arg in dp.algorithms.STEP_ARGUMENTS, (name, arg)


@pytest.mark.parametrize("grow, named", [("random", "sparse_evolutionary"), ("gradient", "rigl")])
def test_set_and_rigl_are_dynamic_sparse_with_their_grow_score(grow, named):
    params = tiny_params()

    def masks_after(pruner):
        tx = dp.prune(optax.sgd(0.1), pruner)
        return dp.masks_of(run(tx, tx.init(params), params, 3)[1])

    a = masks_after(dp.algorithms.dynamic_sparse(0.5, grow=grow, every=2, end=10))
    b = masks_after(getattr(dp.algorithms, named)(0.5, every=2, end=10))
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_dynamic_sparse_rejects_an_unknown_grow_score():
    with pytest.raises(ValueError, match="grow must be"):
        dp.algorithms.dynamic_sparse(0.5, grow="magnitude", end=10)


def test_dynamic_sparse_grows_by_a_given_score():
    params = tiny_params()

    def first(ctx):  # regrow the inactive weights with the lowest index first
        return jax.tree.map(
            lambda w: -jnp.arange(w.size, dtype=jnp.float32).reshape(w.shape), ctx.params
        )

    pruner = dp.algorithms.dynamic_sparse(0.5, grow=first, every=2, end=10, alpha=1.0)
    tx = dp.prune(optax.sgd(0.0), pruner)
    state = tx.init(params)
    before = np.asarray(dp.masks_of(state)["fc1"]["kernel"]).ravel()
    _, state = run(tx, state, params, 3)
    after = np.asarray(dp.masks_of(state)["fc1"]["kernel"]).ravel()
    grown = np.flatnonzero(after & ~before)
    inactive = np.flatnonzero(~before)
    np.testing.assert_array_equal(grown, inactive[: grown.size])
    assert grown.size > 0 and after.sum() == before.sum()
