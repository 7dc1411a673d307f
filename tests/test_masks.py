from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import dynprune as dp
from tests import reference


def tree_of(*shapes, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    out = {}
    for i, shape in enumerate(shapes):
        w = rng.integers(-3, 4, size=shape) if ties else rng.normal(size=shape)
        out[f"l{i}"] = {"kernel": jnp.asarray(w, jnp.float32), "bias": jnp.zeros(shape[-1])}
    return out


sparsity_jit = jax.jit(dp.masks.sparsity, static_argnames="scope")


def exact_count(s, n):
    """round(s · n) of the exact value of s, half to even."""
    return round(Fraction(float(s)) * n)


BIG = 25_557_032  # round(0.9 · BIG) = 23,001,329; float32 arithmetic gives one less


@pytest.mark.parametrize("ties", [False, True])
def test_layer_sparsity_equals_numpy_reference(ties):
    params = tree_of((30, 20), (20, 10), ties=ties)
    scores = dp.scores.magnitude(params)
    masks = sparsity_jit(scores, 0.7)
    for name in ["l0", "l1"]:
        s = np.asarray(scores[name]["kernel"])
        k = reference.count_to_drop(0.7, s.size)
        np.testing.assert_array_equal(masks[name]["kernel"], reference.drop_lowest([s], k)[0])
        assert masks[name]["bias"] is None


@pytest.mark.parametrize("ties", [False, True])
def test_global_sparsity_equals_numpy_reference(ties):
    params = tree_of((30, 20), (20, 10), ties=ties)
    scores = dp.scores.magnitude(params)
    masks = sparsity_jit(scores, 0.55, scope="global")
    s0, s1 = np.asarray(scores["l0"]["kernel"]), np.asarray(scores["l1"]["kernel"])
    k = reference.count_to_drop(0.55, s0.size + s1.size)
    e0, e1 = reference.drop_lowest([s0, s1], k)
    np.testing.assert_array_equal(masks["l0"]["kernel"], e0)
    np.testing.assert_array_equal(masks["l1"]["kernel"], e1)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.sampled_from([(13, 7), (64, 48), (3, 3, 4, 8)]),
    s=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_exact_count_for_random_shapes_and_sparsities(shape, s, seed):
    scores = dp.scores.magnitude(tree_of(shape, seed=seed, ties=seed % 2 == 0))
    mask = np.asarray(sparsity_jit(scores, s)["l0"]["kernel"])
    assert (~mask).sum() == exact_count(np.float32(s), mask.size)  # s is traced: float32


def test_traced_sparsity_under_jit_and_vmap():
    scores = dp.scores.magnitude(tree_of((40, 25), (25, 10)))
    targets = jnp.array([0.0, 0.25, 0.5, 0.9, 1.0])
    dropped = jax.jit(
        jax.vmap(lambda s: jax.tree.map(lambda m: jnp.sum(~m), dp.masks.sparsity(scores, s)))
    )(targets)
    for i, s in enumerate([0.0, 0.25, 0.5, 0.9, 1.0]):
        assert int(dropped["l0"]["kernel"][i]) == reference.count_to_drop(s, 1000)
        assert int(dropped["l1"]["kernel"][i]) == reference.count_to_drop(s, 250)


def test_per_leaf_sparsity_overrides():
    scores = dp.scores.magnitude(tree_of((10, 10), (10, 10)))
    masks = dp.masks.sparsity(scores, {"l1": 0.2, "default": 0.6})
    assert int((~masks["l0"]["kernel"]).sum()) == 60
    assert int((~masks["l1"]["kernel"]).sum()) == 20


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_sparsity_names_the_leaf_and_value(bad):
    scores = dp.scores.magnitude(tree_of((4, 4)))
    with pytest.raises(ValueError, match=r"'l0/kernel'.*" + str(bad).replace(".", r"\.")):
        dp.masks.sparsity(scores, bad)
    with pytest.raises(ValueError, match="global"):
        dp.masks.sparsity(scores, bad, scope="global")


def test_integer_scores_are_rejected_with_path():
    with pytest.raises(ValueError, match=r"'a/kernel'.*int32"):
        dp.masks.sparsity({"a": {"kernel": jnp.ones((3, 3), jnp.int32)}}, 0.5)


def test_bad_scope():
    with pytest.raises(ValueError, match="scope"):
        dp.masks.sparsity(dp.scores.magnitude(tree_of((4, 4))), 0.5, scope="layerwise")


def test_nan_scores_rank_lowest_and_do_not_change_the_count():
    s = np.random.default_rng(0).random((10, 10)).astype(np.float32)
    s[0, :7] = np.nan
    mask = np.asarray(dp.masks.sparsity({"k": jnp.asarray(s)}, 0.3)["k"])
    assert (~mask).sum() == 30
    assert not mask[0, :7].any()
    all_nan = dp.masks.sparsity({"k": jnp.full((5, 4), jnp.nan)}, 0.5)["k"]
    assert int((~all_nan).sum()) == 10


def test_threshold_keeps_strictly_greater_and_never_nan():
    scores = {"k": jnp.array([[0.1, 0.2], [jnp.nan, 0.3]]), "b": None}
    mask = dp.masks.threshold(scores, 0.2)
    np.testing.assert_array_equal(mask["k"], [[False, False], [False, True]])
    assert mask["b"] is None
    traced = jax.jit(dp.masks.threshold)(scores, 0.05)
    np.testing.assert_array_equal(traced["k"], [[True, True], [False, True]])


def numpy_n_of_m(w, n, m):
    w = np.moveaxis(np.asarray(w), -2, -1)
    groups = w.reshape(*w.shape[:-1], -1, m)
    keep = np.zeros(groups.shape, bool)
    for idx in np.ndindex(groups.shape[:-1]):
        g = groups[idx]
        order = np.lexsort((-np.arange(m), -g))  # larger first; ties: later index first
        keep[idx][order[:n]] = True
    return np.moveaxis(keep.reshape(w.shape), -1, -2)


@pytest.mark.parametrize("shape", [(8, 3), (3, 3, 8, 2)])
@pytest.mark.parametrize("ties", [False, True])
def test_n_of_m_equals_numpy_reference(shape, ties):
    scores = dp.scores.magnitude(tree_of(shape, ties=ties))
    mask = np.asarray(dp.masks.n_of_m(scores, 2, 4)["l0"]["kernel"])
    np.testing.assert_array_equal(mask, numpy_n_of_m(scores["l0"]["kernel"], 2, 4))
    per_group = np.moveaxis(mask, -2, -1).reshape(-1, 4).sum(-1)
    assert (per_group == 2).all()


def test_n_of_m_errors_name_the_leaf():
    scores = dp.scores.magnitude(tree_of((6, 4)))
    with pytest.raises(ValueError, match=r"'l0/kernel'.*size 6.*m=4"):
        dp.masks.n_of_m(scores, 2, 4)
    with pytest.raises(ValueError, match="n <= m"):
        dp.masks.n_of_m(scores, 3, 2)


def test_structured_removes_whole_neurons_and_their_biases():
    params = tree_of((12, 10), (3, 3, 2, 8))
    scores = dp.scores.magnitude(params)
    masks = dp.masks.structured(scores, 0.3)
    m0, m1 = np.asarray(masks["l0"]["kernel"]), np.asarray(masks["l1"]["kernel"])
    assert m0.shape == (1, 10) and (~m0).sum() == 3
    assert m1.shape == (1, 1, 1, 8) and (~m1).sum() == reference.count_to_drop(0.3, 8)
    col_l1 = np.abs(np.asarray(params["l0"]["kernel"])).sum(0)
    np.testing.assert_array_equal(m0[0], reference.drop_lowest([col_l1], 3)[0])
    with_bias = dp.masks.with_bias(masks, params)
    np.testing.assert_array_equal(with_bias["l0"]["bias"], m0[0])
    pruned = dp.apply_masks(params, with_bias)
    dead = ~m0[0]
    assert (np.asarray(pruned["l0"]["kernel"])[:, dead] == 0).all()
    assert (np.asarray(pruned["l0"]["bias"])[dead] == 0).all()


def test_apply_masks_zeroes_exactly_and_passes_none_through():
    params = tree_of((6, 5))
    masks = dp.masks.sparsity(dp.scores.magnitude(params), 0.5)
    pruned = dp.apply_masks(params, masks)
    k = np.asarray(pruned["l0"]["kernel"])
    assert ((k == 0.0) == ~np.asarray(masks["l0"]["kernel"])).all()
    assert pruned["l0"]["bias"] is params["l0"]["bias"]


def test_straight_through_gradient_is_dense_and_plain_gradient_is_masked():
    params = tree_of((6, 5))
    masks = dp.masks.sparsity(dp.scores.magnitude(params), 0.5)

    def loss(p, st):
        return jnp.sum(dp.apply_masks(p, masks, straight_through=st)["l0"]["kernel"] * 3.0)

    plain = np.asarray(jax.grad(loss)(params, False)["l0"]["kernel"])
    ste = np.asarray(jax.grad(loss)(params, True)["l0"]["kernel"])
    np.testing.assert_array_equal(plain, 3.0 * np.asarray(masks["l0"]["kernel"]))
    np.testing.assert_array_equal(ste, np.full((6, 5), 3.0))
    np.testing.assert_array_equal(
        dp.apply_masks(params, masks, straight_through=True)["l0"]["kernel"],
        dp.apply_masks(params, masks)["l0"]["kernel"],
    )


def test_apply_masks_rejects_mismatched_trees_and_shapes():
    params = tree_of((6, 5))
    with pytest.raises(ValueError, match="l0/bias"):
        dp.apply_masks(params, {"l0": {"kernel": jnp.ones((6, 5), bool)}})
    with pytest.raises(ValueError, match=r"'l0/kernel'.*\(5, 6\)"):
        dp.apply_masks(params, {"l0": {"kernel": jnp.ones((5, 6), bool), "bias": None}})


def test_masks_on_nnx_state():
    model = nnx.Linear(8, 6, rngs=nnx.Rngs(0))
    _, state = nnx.split(model, nnx.Param)
    masks = dp.masks.sparsity(dp.scores.magnitude(state), 0.5)
    pruned = dp.apply_masks(state, masks)
    assert isinstance(pruned, nnx.State)
    kernel = np.asarray(dp.tree.scored_leaves(dp.tree.select(pruned))[0][1])
    assert (kernel == 0).sum() == 24
    nnx.update(model, pruned)
    assert (np.asarray(model.kernel[...]) == 0).sum() == 24


def test_count_to_drop_is_exact_for_concrete_fractions_of_any_leaf_size():
    assert int(dp.masks.count_to_drop(0.9, BIG)) == exact_count(0.9, BIG) == 23_001_329
    rng = np.random.default_rng(0)
    for n in [BIG, 2**24 + 1, 2**31 - 1, 1_234_567_891]:
        for s in [*rng.random(20).tolist(), 0.0, 1.0, 0.5, 0.1, 1 / 3]:
            assert int(dp.masks.count_to_drop(s, n)) == exact_count(s, n), (s, n)
    # a Fraction is used exactly, and a half rounds to even
    assert int(dp.masks.count_to_drop(Fraction(1, 2), 2**31 - 1)) == 2**30
    assert int(dp.masks.count_to_drop(Fraction(5, 2 * 25), 25)) == 2
    assert int(dp.masks.count_to_drop(np.float32(0.9), BIG)) == exact_count(np.float32(0.9), BIG)


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), "0.5", True])
def test_count_to_drop_refuses_a_bad_concrete_fraction(bad):
    with pytest.raises((ValueError, TypeError), match="fraction"):
        dp.masks.count_to_drop(bad, 10)
    with pytest.raises(ValueError, match="n=-1"):
        dp.masks.count_to_drop(0.5, -1)


def test_traced_count_is_exact_for_the_float32_value():
    rng = np.random.default_rng(1)
    special = [0.0, 1.0, 0.5, 0.9, 0.1, 2.0**-24, 1 - 2.0**-24, 1e-30, 0.3]
    s32 = np.concatenate([rng.random(500), special]).astype(np.float32)
    count = jax.jit(jax.vmap(dp.masks.count_to_drop, in_axes=(0, None)), static_argnums=1)
    for n in [0, 1, 7, 640, 2**24 + 1, BIG, 1_234_567_891, 2**31 - 1]:
        got = np.asarray(count(jnp.asarray(s32), n))
        expected = [exact_count(float(s), n) for s in s32]
        np.testing.assert_array_equal(got, expected, err_msg=f"n={n}")
    # halves round to even: s = (2j + 1) / 2n is exact in float32 for n a power of two
    n = 2**20
    halves = np.array([(2 * j + 1) / (2 * n) for j in range(64)], np.float32)
    np.testing.assert_array_equal(
        np.asarray(count(jnp.asarray(halves), n)), 2 * ((np.arange(64) + 1) // 2)
    )
    # out of [0, 1] is clipped, NaN drops nothing (the transform flags both)
    edge = jnp.array([-0.5, 1.5, jnp.nan, jnp.inf], jnp.float32)
    assert np.asarray(count(edge, 10)).tolist() == [0, 10, 0, 10]


def test_sparsity_on_a_25m_leaf_drops_exactly_round_s_n():
    scores = {"w": jnp.arange(BIG, dtype=jnp.float32)}
    mask = sparsity_jit(scores, 0.9)  # traced: exact for float32(0.9)
    assert int(jnp.sum(~mask["w"])) == exact_count(np.float32(0.9), BIG) == 23_001_328
    mask = jax.jit(lambda s: dp.masks.sparsity(s, 0.9))(scores)  # concrete: exact for 0.9
    assert int(jnp.sum(~mask["w"])) == 23_001_329


@pytest.mark.parametrize("bad", ["0.5", True])
def test_a_sparsity_that_is_not_a_number_names_the_leaf(bad):
    with pytest.raises(TypeError, match=r"'l0/kernel'"):
        dp.masks.sparsity(dp.scores.magnitude(tree_of((4, 4))), bad)


@pytest.mark.parametrize("straight_through", [False, True])
def test_pruned_nan_and_inf_weights_are_exactly_zero(straight_through):
    w = jnp.array([[jnp.nan, jnp.inf, -jnp.inf, 2.0], [jnp.nan, 1.0, -jnp.inf, 3.0]])
    m = jnp.array([[False, False, False, True], [True, True, True, True]])
    out = dp.apply_masks({"w": w}, {"w": m}, straight_through=straight_through)["w"]
    out = np.asarray(out)
    assert (out[~np.asarray(m)] == 0.0).all()
    assert not np.signbit(out[~np.asarray(m)]).any()
    np.testing.assert_array_equal(out[1], np.asarray(w)[1])

    def loss(w):
        masked = dp.apply_masks({"w": w}, {"w": m}, straight_through=straight_through)["w"]
        return jnp.sum(jnp.where(jnp.isfinite(masked), masked, 0.0) * 2.0)

    grad = np.asarray(jax.grad(loss)(w))
    kept_finite = np.asarray(m & jnp.isfinite(w))
    expected = np.where(kept_finite | (straight_through & ~np.asarray(m)), 2.0, 0.0)
    np.testing.assert_array_equal(grad, expected)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.1"])
def test_a_concrete_threshold_must_be_a_finite_number(bad):
    scores = dp.scores.magnitude(tree_of((4, 4)))
    with pytest.raises((ValueError, TypeError), match=r"'l0/kernel'"):
        dp.masks.threshold(scores, bad)
    with pytest.raises((ValueError, TypeError), match=r"'l0/kernel'"):
        dp.prune_now(tree_of((4, 4)), threshold=bad)
