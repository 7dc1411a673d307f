import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dynprune as dp

W = jnp.array([[3.0, 0.0, -1.0], [4.0, 1.0, 1.0]])  # Dense kernel (in=2, out=3)


def params():
    return {"fc": {"kernel": W, "bias": jnp.ones(3)}}


def test_magnitude_and_unscored_leaves():
    s = dp.scores.magnitude(params())
    np.testing.assert_array_equal(s["fc"]["kernel"], np.abs(np.asarray(W)))
    assert s["fc"]["bias"] is None


def test_neuron_sensitivity_hand_checked():
    # column 0: (3, 4): L1 7, L2 5 -> 1.4; column 1: (0, 1) -> 1; column 2: (-1, 1) -> 2/sqrt 2
    s = dp.scores.neuron_sensitivity(params())["fc"]["kernel"]
    assert s.shape == (1, 3)
    np.testing.assert_allclose(s[0], [1.4, 1.0, np.sqrt(2.0)], rtol=1e-6)


def test_neuron_sensitivity_of_a_dead_neuron_is_zero():
    s = dp.scores.neuron_sensitivity({"k": jnp.zeros((4, 2)).at[:, 1].set(1.0)})["k"]
    np.testing.assert_allclose(s[0], [0.0, 2.0])


def test_connection_sensitivity_hand_checked():
    s = dp.scores.connection_sensitivity(params())["fc"]["kernel"]
    expected = [[0.6, 0.0, 1 / np.sqrt(2)], [0.8, 1.0, 1 / np.sqrt(2)]]
    np.testing.assert_allclose(s, expected, rtol=1e-6)


def test_conv_neuron_scores_reduce_spatial_and_input_axes():
    k = jax.random.normal(jax.random.key(0), (3, 3, 2, 4))
    s = dp.scores.neuron_sensitivity({"conv": {"kernel": k}})["conv"]["kernel"]
    flat = np.asarray(k).reshape(-1, 4)
    expected = np.abs(flat).sum(0) / np.sqrt((flat**2).sum(0))
    assert s.shape == (1, 1, 1, 4)
    np.testing.assert_allclose(s.ravel(), expected, rtol=1e-5)
    c = dp.scores.connection_sensitivity({"conv": {"kernel": k}})["conv"]["kernel"]
    np.testing.assert_allclose(
        np.asarray(c).reshape(-1, 4), np.abs(flat) / np.sqrt((flat**2).sum(0)), rtol=1e-5
    )


def test_saliency_is_abs_w_times_g():
    g = {"fc": {"kernel": jnp.full((2, 3), -2.0), "bias": jnp.ones(3)}}
    s = dp.scores.saliency(params(), g)["fc"]["kernel"]
    np.testing.assert_array_equal(s, 2 * np.abs(np.asarray(W)))


def test_group_norms():
    l1 = dp.scores.group_norm(params(), ord=1)["fc"]["kernel"]
    l2 = dp.scores.group_norm(params(), ord=2)["fc"]["kernel"]
    np.testing.assert_allclose(l1[0], [7.0, 1.0, 2.0])
    np.testing.assert_allclose(l2[0], [5.0, 1.0, np.sqrt(2.0)], rtol=1e-6)
    with pytest.raises(ValueError, match="ord"):
        dp.scores.group_norm(params(), ord=3)


def test_random_scores_are_seeded_and_uniform():
    big = {"a": {"kernel": jnp.zeros((100, 100))}, "b": {"kernel": jnp.zeros((10, 10))}}
    s1 = dp.scores.random(big, jax.random.key(1))
    s2 = dp.scores.random(big, jax.random.key(1))
    s3 = dp.scores.random(big, jax.random.key(2))
    np.testing.assert_array_equal(s1["a"]["kernel"], s2["a"]["kernel"])
    assert not np.array_equal(s1["a"]["kernel"], s3["a"]["kernel"])
    assert not np.array_equal(s1["a"]["kernel"][:10, :10], s1["b"]["kernel"])
    a = np.asarray(s1["a"]["kernel"])
    assert a.min() >= 0 and a.max() < 1 and abs(a.mean() - 0.5) < 0.02


def test_custom_leaf_score_and_filter():
    cube = dp.scores.from_leaf_fn(lambda w: w**3)
    s = cube(params(), filter=dp.tree.named("bias"))
    assert s["fc"]["kernel"] is None
    np.testing.assert_array_equal(s["fc"]["bias"], np.ones(3))


def test_scores_on_nnx_state():
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    _, state = nnx.split(model, nnx.Param)
    s = dp.scores.neuron_sensitivity(state)
    assert isinstance(s, nnx.State)
    leaves = dp.tree.scored_leaves(s)
    assert [p for p, _ in leaves] == ["kernel"] and leaves[0][1].shape == (1, 3)


def test_gradients_missing_a_leaf_are_named_as_missing():
    grads = {"fc": {"kernel": jnp.ones_like(W)}}  # no "bias"
    with pytest.raises(ValueError, match=r"missing leaf path 'fc/bias'$"):
        dp.scores.saliency(params(), grads)


def test_scores_pass_through_jit_and_grad():
    f = jax.jit(lambda p: jnp.sum(dp.scores.neuron_sensitivity(p)["fc"]["kernel"]))
    g = jax.grad(f)(params())
    assert np.isfinite(np.asarray(g["fc"]["kernel"])).all()
