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


def test_table_tells_unpruned_leaves_from_pruned_at_zero_sparsity():
    # A layer ERK keeps dense has a mask that keeps everything: pruned, at 0.00%.
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    masks = {"dense": {"kernel": jnp.ones((2, 2), bool), "bias": None}}
    report = dp.summary(params, masks)
    assert report["leaves"]["dense/kernel"]["pruned"] is True
    assert report["leaves"]["dense/kernel"]["sparsity"] == 0.0
    assert report["leaves"]["dense/bias"]["pruned"] is False
    rows = {line.split()[0]: line for line in dp.format_summary(report).splitlines()}
    assert rows["dense/kernel"].endswith("0.00%  pruned")
    assert rows["dense/bias"].endswith("0.00%  not pruned")
    assert "not pruned" not in rows["dense/kernel"]


def test_table_columns_stay_aligned_for_long_paths():
    params = {
        "a_rather_long_module_name_for_a_layer": {"kernel": jnp.ones((2, 2))},
        "b": jnp.ones(3),
    }
    table = dp.format_summary(dp.summary(params))
    rows = [line for line in table.splitlines() if "%" in line]
    assert len({line.index("%") for line in rows}) == 1
    assert all(line.endswith("not pruned") for line in rows if not line.startswith("total"))
