import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import dynprune as dp
from dynprune.harness import models

EXAMPLE = jnp.zeros((1, 28, 28, 1))


def linen(name):
    model = models.get_model(name)
    params = model.init(jax.random.key(0), EXAMPLE)["params"]
    return (lambda p, x: model.apply({"params": p}, x)), params


def test_lenet5_dense_flops_per_layer():
    apply_fn, params = linen("lenet5")
    report = dp.stats.flops(apply_fn, params, EXAMPLE)
    # conv1: 24·24 outputs × 20 channels × 25 MACs; conv2: 8·8 × 50 × 500; fc1 800·500; fc2 500·10
    expected = {
        "conv1/kernel": 2 * 24 * 24 * 20 * 25,
        "conv2/kernel": 2 * 8 * 8 * 50 * 500,
        "fc1/kernel": 2 * 800 * 500,
        "fc2/kernel": 2 * 500 * 10,
    }
    assert {k: v["dense"] for k, v in report["layers"].items()} == expected
    assert report["dense"] == report["effective"] == sum(expected.values())


def test_effective_flops_scale_with_density():
    apply_fn, params = linen("lenet300")
    _, masks = dp.prune_now(params, sparsity={"fc1": 0.9, "default": 0.5})
    report = dp.stats.flops(apply_fn, params, EXAMPLE, masks)
    fc1 = report["layers"]["fc1/kernel"]
    assert fc1["density"] == pytest.approx(0.1, abs=1e-5)
    assert fc1["effective"] == pytest.approx(0.1 * 2 * 784 * 300, rel=1e-4)
    assert report["effective"] == pytest.approx(
        0.1 * 2 * 784 * 300 + 0.5 * 2 * 300 * 100 + 0.5 * 2 * 100 * 10, rel=1e-4
    )


def test_flops_of_an_nnx_model():
    model = nnx.Linear(784, 10, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    apply_fn = lambda p, x: nnx.merge(graphdef, p)(x.reshape(1, -1))
    assert dp.stats.flops(apply_fn, params, EXAMPLE)["layers"]["kernel"]["dense"] == 2 * 7840


def test_flops_needs_a_single_example():
    apply_fn, params = linen("lenet300")
    with pytest.raises(ValueError, match="batch axis of size 1"):
        dp.stats.flops(apply_fn, params, jnp.zeros((4, 28, 28, 1)))
