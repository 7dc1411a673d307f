import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynprune as dp
from tests import reference


def params():
    k = jax.random.normal(jax.random.key(0), (16, 8))
    return {"fc": {"kernel": k, "bias": jnp.ones(8)}}


def test_prune_now_by_sparsity_zeroes_exactly_the_lowest():
    p = params()
    pruned, masks = dp.prune_now(p, sparsity=0.75)
    k = np.asarray(p["fc"]["kernel"])
    expected = reference.drop_lowest([np.abs(k)], 96)[0]
    np.testing.assert_array_equal(masks["fc"]["kernel"], expected)
    np.testing.assert_array_equal(np.asarray(pruned["fc"]["kernel"]), np.where(expected, k, 0.0))
    np.testing.assert_array_equal(pruned["fc"]["bias"], p["fc"]["bias"])


def test_prune_now_by_threshold_and_with_custom_scores():
    p = params()
    pruned, _ = dp.prune_now(p, threshold=1.0)
    k = np.asarray(p["fc"]["kernel"])
    np.testing.assert_array_equal(np.asarray(pruned["fc"]["kernel"]) == 0, np.abs(k) <= 1.0)
    _, masks = dp.prune_now(p, sparsity=0.5, score=dp.scores.connection_sensitivity)
    assert int((~masks["fc"]["kernel"]).sum()) == 64


def test_prune_now_structured_removes_neurons_and_biases():
    pruned, masks = dp.prune_now(
        params(), sparsity=0.5, structured=True, score=dp.scores.group_norm
    )
    dead = ~np.asarray(masks["fc"]["bias"])
    assert dead.sum() == 4
    assert (np.asarray(pruned["fc"]["kernel"])[:, dead] == 0).all()
    assert (np.asarray(pruned["fc"]["bias"])[dead] == 0).all()


def test_prune_now_needs_exactly_one_criterion():
    with pytest.raises(ValueError, match="exactly one"):
        dp.prune_now(params())
    with pytest.raises(ValueError, match="exactly one"):
        dp.prune_now(params(), sparsity=0.5, threshold=0.1)


@pytest.mark.parametrize("extra", [{"scope": "global"}, {"structured": True}])
def test_prune_now_refuses_sparsity_options_with_a_threshold(extra):
    with pytest.raises(ValueError, match=r"apply to sparsity= only.*got scope="):
        dp.prune_now(params(), threshold=0.1, **extra)
    dp.prune_now(params(), threshold=0.1, scope="layer", structured=False)  # the defaults
