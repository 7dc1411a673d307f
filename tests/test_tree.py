import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import dynprune as dp
from dynprune import tree


def linen_params():
    return {
        "conv1": {"kernel": jnp.ones((5, 5, 1, 4)), "bias": jnp.zeros(4)},
        "fc1": {"kernel": jnp.ones((64, 8)), "bias": jnp.zeros(8)},
        "fc2": {"kernel": jnp.ones((8, 10)), "bias": jnp.zeros(10)},
    }


class TwoLayer(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(6, 4, rngs=rngs)
        self.fc2 = nnx.Linear(4, 2, rngs=rngs)


def nnx_state():
    _, state = nnx.split(TwoLayer(nnx.Rngs(0)), nnx.Param)
    return state


def test_paths_of_linen_dicts_and_nnx_state():
    assert tree.paths(linen_params()) == [
        "conv1/bias",
        "conv1/kernel",
        "fc1/bias",
        "fc1/kernel",
        "fc2/bias",
        "fc2/kernel",
    ]
    assert tree.paths(nnx_state()) == ["fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel"]


def test_default_filter_selects_float_kernels_only():
    selected = tree.select(linen_params())
    assert [p for p, _ in tree.scored_leaves(selected)] == [
        "conv1/kernel",
        "fc1/kernel",
        "fc2/kernel",
    ]
    assert selected["fc1"]["bias"] is None


def test_select_on_nnx_state_keeps_the_state_type():
    selected = tree.select(nnx_state())
    assert isinstance(selected, nnx.State)
    assert [p for p, _ in tree.scored_leaves(selected)] == ["fc1/kernel", "fc2/kernel"]


def test_exclude_first_and_last_layers():
    params = linen_params()
    chosen = tree.select(params, tree.exclude_first_last(params))
    assert [p for p, _ in tree.scored_leaves(chosen)] == ["fc1/kernel"]
    only_last = tree.select(params, tree.exclude_first_last(params, first=False))
    assert [p for p, _ in tree.scored_leaves(only_last)] == ["conv1/kernel", "fc1/kernel"]


def test_named_exclude_and_custom_predicates():
    params = linen_params()
    assert [p for p, _ in tree.scored_leaves(tree.select(params, tree.named("^fc")))] == [
        "fc1/bias",
        "fc1/kernel",
        "fc2/bias",
        "fc2/kernel",
    ]
    no_conv = tree.select(params, tree.exclude("conv"))
    assert [p for p, _ in tree.scored_leaves(no_conv)] == ["fc1/kernel", "fc2/kernel"]
    big = tree.select(params, lambda path, leaf: leaf.size > 100)
    assert [p for p, _ in tree.scored_leaves(big)] == ["fc1/kernel"]


def test_targeting_an_integer_leaf_names_it():
    params = {"layer": {"kernel": jnp.ones((3, 3)), "counts": jnp.ones((3, 3), jnp.int32)}}
    with pytest.raises(ValueError, match=r"'layer/counts'.*int32"):
        tree.select(params, tree.named("layer"))


def test_structure_mismatch_names_the_leaf():
    params = linen_params()
    other = {k: dict(v) for k, v in params.items()}
    del other["fc2"]["bias"]
    with pytest.raises(ValueError, match="fc2/bias"):
        tree.check_same_structure(params, other, what="masks")


def test_a_leaf_missing_from_a_per_leaf_value_tree_is_called_missing():
    scored = {"a": jnp.ones(2), "b": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"^sparsity: .*: missing leaf path 'b'$"):
        tree.resolve({"a": 0.5}, scored, name="sparsity")
    with pytest.raises(ValueError, match=r"^sparsity: .*: unexpected leaf path 'c'$"):
        tree.resolve({"a": 0.5, "b": 0.5, "c": 0.5}, scored, name="sparsity")


def test_map_scored_names_a_leaf_the_masks_lack_missing_from_the_params():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    masks = {"a": jnp.ones(2, bool)}
    with pytest.raises(ValueError, match=r"^tree does not match .*: missing leaf path 'b'$"):
        tree.map_scored(lambda path, m, w: m, masks, params)


def test_resolve_per_leaf_overrides_first_match_wins():
    selected = tree.select(linen_params())
    resolved = tree.resolve({"conv": 0.0, "fc": 0.5, "default": 0.9}, selected, name="sparsity")
    assert resolved["conv1"]["kernel"] == 0.0
    assert resolved["fc2"]["kernel"] == 0.5
    assert resolved["fc1"]["bias"] is None


def colliding():
    return {"a": {"b": jnp.ones((2, 2))}, "a/b": jnp.zeros((2, 2))}


def test_two_leaves_with_one_path_are_refused_with_the_path():
    params = colliding()
    for use in [
        tree.paths,
        tree.select,
        tree.scored_leaves,
        lambda t: tree.map_with_path(lambda p, x: x, t),
        lambda t: tree.check_same_structure(t, t),
        lambda t: tree.exclude_first_last(t),
    ]:
        with pytest.raises(ValueError, match="same path 'a/b'"):
            use(params)


def test_prune_refuses_a_tree_whose_paths_collide():
    with pytest.raises(ValueError, match="same path 'a/b'"):
        dp.prune(optax.sgd(0.1), dp.algorithms.one_shot(0.5)).init(colliding())
    with pytest.raises(ValueError, match="same path 'a/b'"):
        dp.masks.sparsity(colliding(), 0.5)
