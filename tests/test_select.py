import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dynprune import select
from tests import reference

SHAPES = [(7,), (33, 17), (2, 3, 4, 5)]
drop_jit = jax.jit(select.drop_lowest)

values = st.sampled_from(
    [-2.0, -0.0, 0.0, 0.5, 1.0, 1.0, 3.0, np.inf, -np.inf, np.nan]
) | st.floats(-10, 10, width=32, allow_subnormal=False)


@st.composite
def arrays_and_k(draw):
    n_arrays = draw(st.integers(1, 2))
    arrays = [
        draw(hnp.arrays(np.float32, draw(st.sampled_from(SHAPES)), elements=values))
        for _ in range(n_arrays)
    ]
    k = draw(st.integers(0, sum(a.size for a in arrays)))
    return arrays, k


@settings(max_examples=60, deadline=None)
@given(arrays_and_k())
def test_drop_lowest_equals_numpy_reference(case):
    arrays, k = case
    got = drop_jit([jnp.asarray(a) for a in arrays], k)
    expected = reference.drop_lowest(arrays, k)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(g), e)
    assert sum(int((~np.asarray(g)).sum()) for g in got) == k


@pytest.mark.parametrize("k", [0, 1, 5_000, 77_777, 99_999, 100_000])
def test_all_equal_scores_drop_exact_count_in_position_order(k):
    scores = jnp.full((250, 400), 0.25)
    [keep] = drop_jit([scores], k)
    flat = np.asarray(keep).ravel()
    assert (~flat).sum() == k
    np.testing.assert_array_equal(flat, np.arange(flat.size) >= k)


def test_ties_spanning_blocks_and_arrays():
    a = np.zeros(100_000, np.float32)
    a[::7] = 1.0
    b = a[:3000].copy()
    for k in [1, 14_000, 90_000, 103_000]:
        got = drop_jit([jnp.asarray(a), jnp.asarray(b)], k)
        for g, e in zip(got, reference.drop_lowest([a, b], k), strict=True):
            np.testing.assert_array_equal(np.asarray(g), e)


def test_traced_k_under_vmap_gives_exact_counts():
    scores = jax.random.normal(jax.random.key(0), (64, 32))
    ks = jnp.array([0, 1, 100, 1024, 2047, 2048])
    keeps = jax.jit(jax.vmap(lambda k: select.drop_lowest([scores], k)[0]))(ks)
    np.testing.assert_array_equal(np.asarray((~keeps).sum(axis=(1, 2))), np.asarray(ks))
    for keep, k in zip(keeps, ks, strict=True):
        np.testing.assert_array_equal(
            np.asarray(keep), reference.drop_lowest([np.asarray(scores)], int(k))[0]
        )


def test_k_is_clipped_to_valid_range():
    scores = jnp.arange(6.0)
    assert bool(drop_jit([scores], -3)[0].all())
    assert not bool(drop_jit([scores], 99)[0].any())


def test_nan_scores_rank_lowest_without_changing_the_count():
    scores = jnp.array([0.3, jnp.nan, 0.1, jnp.nan, 0.2, 0.4])
    [keep] = drop_jit([scores], 3)
    np.testing.assert_array_equal(np.asarray(keep), [True, False, False, False, True, True])


def test_order_keys_are_monotone_with_signed_zero_equal():
    x = jnp.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, np.inf, np.nan], jnp.float32)
    keys = np.asarray(select.order_keys(x)).astype(np.int64)
    assert keys[-1] == 0  # NaN below everything
    finite = keys[:-1]
    assert finite[3] == finite[4]
    assert np.all(np.diff(np.delete(finite, 3)) > 0)


def test_order_keys_rejects_integer_scores():
    with pytest.raises(ValueError, match="floating"):
        select.order_keys(jnp.arange(3))


def test_bfloat16_scores_are_ranked_exactly():
    x = jnp.array([3.0, 1.0, 2.0, 1.0], jnp.bfloat16)
    [keep] = drop_jit([x], 2)
    np.testing.assert_array_equal(np.asarray(keep), [True, False, True, False])


each_jit = jax.jit(select.drop_lowest_each)


@settings(max_examples=40, deadline=None)
@given(arrays_and_k(), st.randoms(use_true_random=False))
def test_drop_lowest_each_equals_per_array_reference(case, rnd):
    arrays, _ = case
    ks = [rnd.randint(0, a.size) for a in arrays]
    got = each_jit([jnp.asarray(a) for a in arrays], ks)
    for g, a, k in zip(got, arrays, ks, strict=True):
        np.testing.assert_array_equal(np.asarray(g), reference.drop_lowest([a], k)[0])


def test_drop_lowest_each_needs_one_count_per_array():
    a, b = jnp.ones(4), jnp.ones(3)
    with pytest.raises(ValueError, match="one count per array: 2 arrays, 1 counts"):
        select.drop_lowest_each([a, b], [1])
    with pytest.raises(ValueError, match="2 arrays, 3 counts"):
        select.drop_lowest_each([a, b], jnp.array([1, 1, 1]))
    with pytest.raises(ValueError, match=r"2 arrays, counts of shape \(\)"):
        select.drop_lowest_each([a, b], jnp.array(1))


def test_drop_lowest_each_under_vmap_of_counts():
    a = jax.random.normal(jax.random.key(1), (40, 30))
    b = jnp.zeros((7, 9))
    ks = jnp.array([[0, 0], [600, 63], [1200, 1], [77, 62]])
    dropped = jax.jit(
        jax.vmap(lambda k: [jnp.sum(~m) for m in select.drop_lowest_each([a, b], k)])
    )(ks)
    np.testing.assert_array_equal(np.stack([np.asarray(d) for d in dropped], 1), np.asarray(ks))
