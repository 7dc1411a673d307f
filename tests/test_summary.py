import jax.numpy as jnp
import pytest

import dynprune as dp


def test_summary_counts_and_compression():
    params = {
        "fc": {"kernel": jnp.array([[1.0, 0.0], [2.0, 3.0]]), "bias": jnp.array([0.0, 1.0])},
    }
    masks = {"fc": {"kernel": jnp.array([[True, True], [False, True]]), "bias": None}}
    report = dp.summary(params, masks)
    assert report["leaves"]["fc/kernel"] == {
        "size": 4,
        "nonzeros": 2,
        "sparsity": 0.5,
        "pruned": True,
    }
    assert report["leaves"]["fc/bias"]["pruned"] is False
    assert report["total"] == {"size": 6, "nonzeros": 3, "sparsity": 0.5, "compression": 2.0}
    assert report["pruned_only"]["compression"] == 2.0
    table = dp.format_summary(report)
    assert "fc/kernel" in table and "50.00%" in table and "2.0x" in table


def test_summary_without_masks_counts_actual_zeros():
    report = dp.summary({"w": jnp.zeros((3, 3)).at[0, 0].set(1.0)})
    assert report["total"]["nonzeros"] == 1
    assert report["total"]["compression"] == pytest.approx(9.0)


def test_all_pruned_gives_infinite_compression():
    report = dp.summary({"w": jnp.ones(2)}, {"w": jnp.zeros(2, bool)})
    assert report["total"]["compression"] == float("inf")
