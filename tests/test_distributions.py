import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynprune as dp

SHAPES = {"conv1": (5, 5, 1, 20), "conv2": (5, 5, 20, 50), "fc1": (800, 500), "fc2": (500, 10)}


def scored():
    return {name: {"kernel": jnp.zeros(shape)} for name, shape in SHAPES.items()}


def numpy_erk(shapes, sparsity):
    """Evci et al.'s algorithm in float64: clip dense layers one at a time, largest first."""
    names = list(shapes)
    n = {k: np.prod(shapes[k]) for k in names}
    raw = {k: np.sum(shapes[k]) / np.prod(shapes[k]) for k in names}
    dense = set()
    while True:
        budget = (1 - sparsity) * sum(n.values()) - sum(n[k] for k in dense)
        eps = budget / sum(raw[k] * n[k] for k in names if k not in dense)
        over = [k for k in names if k not in dense and eps * raw[k] > 1]
        if not over:
            return {k: 0.0 if k in dense else 1 - eps * raw[k] for k in names}
        dense.add(max(over, key=lambda k: raw[k]))


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_erk_matches_reference_and_hits_the_total(sparsity):
    got = dp.distributions.erk(scored(), sparsity)
    expected = numpy_erk(SHAPES, sparsity)
    for name in SHAPES:
        np.testing.assert_allclose(float(got[name]["kernel"]), expected[name], atol=1e-5)
    total = sum(np.prod(s) for s in SHAPES.values())
    kept = sum((1 - float(got[k]["kernel"])) * np.prod(s) for k, s in SHAPES.items())
    assert kept == pytest.approx((1 - sparsity) * total, rel=1e-5)


def test_erk_gives_small_layers_lower_sparsity():
    got = {k: float(v["kernel"]) for k, v in dp.distributions.erk(scored(), 0.99).items()}
    # raw density Σdims/Πdims: fc2 0.102 > conv1 0.062 > fc1 0.00325 > conv2 0.0032
    assert got["fc2"] < got["conv1"] < got["fc1"] < got["conv2"]


def test_erk_makes_a_layer_dense_when_needed():
    got = dp.distributions.erk(scored(), 0.5)
    assert float(got["conv1"]["kernel"]) == pytest.approx(0.0, abs=1e-6)


def test_erk_traced_sparsity():
    f = jax.jit(lambda s: dp.distributions.erk(scored(), s))
    a, b = f(0.8), f(0.95)
    assert float(b["fc1"]["kernel"]) > float(a["fc1"]["kernel"])
    assert f._cache_size() == 1


def test_uniform_and_override():
    u = dp.distributions.uniform(scored(), 0.8)
    assert all(float(u[k]["kernel"]) == pytest.approx(0.8) for k in SHAPES)
    o = dp.distributions.override(u, {"conv1": 0.0, "fc": 0.5})
    assert float(o["conv1"]["kernel"]) == 0.0
    assert float(o["conv2"]["kernel"]) == pytest.approx(0.8)
    assert float(o["fc2"]["kernel"]) == 0.5
