import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynprune import schedules


def test_polynomial_matches_zhu_gupta_formula():
    s_i, s_f, t0, end = 0.1, 0.9, 100, 1100
    sched = schedules.polynomial(s_f, t0, end, initial=s_i)
    for t in [0, 99, 100, 101, 350, 600, 1099, 1100, 5000]:
        frac = min(max((t - t0) / (end - t0), 0.0), 1.0)
        expected = s_f + (s_i - s_f) * (1 - frac) ** 3
        np.testing.assert_allclose(float(sched(jnp.asarray(t))), expected, rtol=1e-6)


def test_polynomial_with_traced_target_compiles_once():
    f = jax.jit(lambda target, t: schedules.polynomial(target, 0, 10)(t))
    assert float(f(0.5, 10)) == pytest.approx(0.5)
    assert float(f(0.8, 10)) == pytest.approx(0.8)
    assert f._cache_size() == 1


def test_polynomial_rejects_empty_ramp():
    with pytest.raises(ValueError, match="end > begin"):
        schedules.polynomial(0.9, 10, 10)


def test_iterative_rounds_prune_equal_fraction_of_remaining():
    sched = schedules.iterative(0.875, rounds=3, begin=10, period=5)
    values = [float(sched(jnp.asarray(t))) for t in [0, 9, 10, 14, 15, 20, 100]]
    np.testing.assert_allclose(values, [0, 0, 0.5, 0.5, 0.75, 0.875, 0.875], rtol=1e-6)


def test_iterative_rejects_zero_rounds():
    with pytest.raises(ValueError, match="rounds"):
        schedules.iterative(0.9, rounds=0, begin=0, period=1)


def test_one_shot_and_constant():
    one = schedules.one_shot(0.7, at=5)
    assert float(one(jnp.asarray(4))) == 0.0
    assert float(one(jnp.asarray(5))) == pytest.approx(0.7)
    assert float(schedules.constant(0.3)(jnp.asarray(123))) == pytest.approx(0.3)


def test_every_cadence():
    cadence = schedules.every(100, begin=200, end=500)
    fired = [t for t in range(0, 800) if bool(cadence(jnp.asarray(t)))]
    assert fired == [200, 300, 400, 500]
    open_ended = schedules.every(3)
    assert [t for t in range(10) if bool(open_ended(jnp.asarray(t)))] == [0, 3, 6, 9]
