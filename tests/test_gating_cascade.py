"""The confidence cascade over a slimmable network's widths: each example stops at the first
level confident enough, the runner that skips the other levels' work computes the same,
and every visited level is paid for."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynprune import gating

# RBG keys: Flax inits compile in a quarter of threefry's time
KEY = jax.random.key(7, impl="rbg")
MODEL = gating.GatedCNN(features=(4, 8, 8), classes=3)  # buckets 0..3: widths 2, 4, 6, 8
X = jnp.asarray(np.random.default_rng(0).normal(scale=3.0, size=(16, 8, 8, 1)), jnp.float32)


@functools.cache
def setup():
    """The tiny network's parameters and stem features of X."""
    params = jax.jit(MODEL.init)(KEY, X)["params"]
    h = MODEL.apply({"params": params}, X, method=gating.GatedCNN.features_of)
    return params, h


@jax.jit
def bucket_logits(params, h):
    """Logits with every example at each bucket, [J, B, classes], written out per bucket."""
    variables = {"params": params}
    gates = [gating.width_gates(MODEL, jnp.full(h.shape[0], j)) for j in range(len(MODEL.buckets))]
    return jnp.stack([MODEL.apply(variables, h, g, method=gating.GatedCNN.trunk) for g in gates])


# the masked reference, compiled once per levels (the threshold is traced)
CASCADE = jax.jit(gating.cascade, static_argnums=(0, 4))


def confidence(logits):
    return np.asarray(jax.nn.softmax(logits, axis=-1).max(axis=-1))


def between(values):
    """A threshold halfway between the two middle values: some below it, some above, and
    none within rounding of it."""
    lo, hi = np.sort(values)[len(values) // 2 - 1 : len(values) // 2 + 1]
    assert hi - lo > 1e-4
    return float((lo + hi) / 2)


def test_the_runner_equals_the_masked_cascade_at_batch_b_and_batch_1():
    params, h = setup()
    threshold = between(confidence(bucket_logits(params, h)[0]))
    masked, level = CASCADE(MODEL, params, h, threshold)
    level = np.asarray(level)
    assert set(level.tolist()) == {0, 1}  # some stopped at the narrow width, some escalated
    runner = gating.CascadeRunner(MODEL, params)
    logits, runner_level = runner.run(h, threshold)
    np.testing.assert_allclose(logits, masked, atol=1e-5)
    np.testing.assert_array_equal(runner_level, level)
    full = bucket_logits(params, h)
    np.testing.assert_allclose(masked, np.where(level[:, None], full[3], full[0]), atol=1e-6)
    for i in (int(np.argmin(level)), int(np.argmax(level))):  # one of each, alone
        one, one_level = runner.run(h[i : i + 1], threshold)
        np.testing.assert_allclose(one, masked[i : i + 1], atol=1e-5)
        assert one_level.tolist() == [level[i]]
        # the one-dispatch path, from the image: the same logits, stopped or escalated
        np.testing.assert_allclose(runner.compact(X[i : i + 1], threshold), one, atol=1e-5)
    # at batch B the compact path runs the full width for the batch, keeping each stop
    np.testing.assert_allclose(runner.compact(X, threshold), masked, atol=1e-5)


def test_threshold_0_stops_every_example_at_once_and_1_escalates_every_one():
    params, h = setup()
    runner = gating.CascadeRunner(MODEL, params)
    macs = gating.bucket_macs(MODEL, params, X[:1])
    for threshold, expected in ((0.0, 0), (1.0, 1)):
        masked, level = CASCADE(MODEL, params, h, threshold)
        assert np.asarray(level).tolist() == [expected] * len(X)
        logits, runner_level = runner.run(h, threshold)
        assert runner_level.tolist() == [expected] * len(X)
        np.testing.assert_allclose(logits, masked, atol=1e-5)
    np.testing.assert_array_equal(
        gating.cascade_macs(MODEL, params, np.zeros(len(X), int), example=X[:1]), macs[0]
    )


def test_three_levels_are_visited_in_order():
    params, h = setup()
    levels = (0, 1, 3)
    full = bucket_logits(params, h)
    seen = confidence(full[np.array(levels)])  # [3, B]
    # expected: the first level at or above t, else the last
    for threshold in np.linspace(0.34, 0.99, 66):
        expected = np.where(seen[0] >= threshold, 0, np.where(seen[1] >= threshold, 1, 2))
        margin = np.abs(seen - threshold).min()
        if set(expected.tolist()) == {0, 1, 2} and margin > 1e-4:
            break
    else:
        pytest.fail("no threshold stops examples at all three levels")
    masked, level = CASCADE(MODEL, params, h, threshold, levels)
    np.testing.assert_array_equal(level, expected)
    np.testing.assert_allclose(masked, full[np.array(levels)[expected], np.arange(len(X))])
    runner = gating.CascadeRunner(MODEL, params, levels)
    logits, runner_level = runner.run(h, threshold)
    np.testing.assert_array_equal(runner_level, expected)
    np.testing.assert_allclose(logits, masked, atol=1e-5)
    np.testing.assert_allclose(runner.compact(X, threshold), masked, atol=1e-5)
    for i in (int(np.argmin(expected)), int(np.argmax(expected))):  # stops at 0, goes to 3
        np.testing.assert_allclose(
            runner.compact(X[i : i + 1], threshold), masked[i : i + 1], atol=1e-5
        )


def test_cascade_macs_pay_every_visited_level_and_the_stem_once():
    model, x = gating.GatedCNN(features=(2, 4), classes=2), jnp.ones((1, 4, 4, 1))
    params = jax.jit(model.init)(KEY, x)["params"]
    # 4×4×1 input; gated layer widths w = 1, 2, 3, 4 at buckets 0..3
    # stem: 16 positions · 9 · 1 in · 2 out = 288
    # gated_0 at width w: 16 · 9 · 2 · w = 288w; head: 2×2 pooled · w · 2 classes = 8w
    # M_0 = 288 + 288 + 8 = 584, M_1 = 288 + 576 + 16 = 880, M_3 = 288 + 1152 + 32 = 1472
    # stopping at level 1 of (0, 3): 288 + (584 − 288) + (1472 − 288) = 1768
    # stopping at level 2 of (0, 1, 3): 288 + 296 + 592 + 1184 = 2360
    np.testing.assert_array_equal(gating.bucket_macs(model, params, x), [584, 880, 1176, 1472])
    macs = gating.cascade_macs(model, params, [0, 1, 1], example=x)
    np.testing.assert_array_equal(macs, [584, 1768, 1768])
    macs = gating.cascade_macs(model, params, [2, 0, 1], (0, 1, 3), example=x)
    np.testing.assert_array_equal(macs, [2360, 584, 1176])
    with pytest.raises(ValueError, match=r"level must be \[B\] indices in \[0, 2\), got \[2\]"):
        gating.cascade_macs(model, params, [2], example=x)


def test_bad_thresholds_and_levels_fail_naming_the_value():
    params, h = setup()
    for threshold in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=rf"threshold must be .* \[0, 1\], got {threshold}"):
            gating.cascade(MODEL, params, h, threshold)
        with pytest.raises(ValueError, match=rf"threshold must be .*, got {threshold}"):
            gating.CascadeRunner(MODEL, params).run(h, threshold)
        with pytest.raises(ValueError, match=rf"threshold must be .*, got {threshold}"):
            gating.CascadeRunner(MODEL, params).compact(X, threshold)
    for levels in ((3, 1), (0,), (0, 9)):
        with pytest.raises(
            ValueError, match=rf"levels must be .* in \[0, 4\), got {re.escape(str(levels))}"
        ):
            gating.CascadeRunner(MODEL, params, levels)
    with pytest.raises(ValueError, match="needs mode='prefix'"):
        gating.cascade_levels(gating.GatedCNN(features=(4, 8), mode="topk"))


def test_the_threshold_is_traced_one_program_serves_every_threshold():
    params, h = setup()
    run = jax.jit(lambda p, h, t: gating.cascade(MODEL, p, h, t))
    at_0 = np.asarray(run(params, h, 0.0)[1])
    at_1 = np.asarray(run(params, h, 1.0)[1])
    assert run._cache_size() == 1
    assert (at_0 == 0).all() and (at_1 == 1).all()
    runner = gating.CascadeRunner(MODEL, params)
    bucket = bucket_logits(params, h)
    np.testing.assert_allclose(runner.compact(X, 0.0), bucket[0], atol=1e-5)
    np.testing.assert_allclose(runner.compact(X, 1.0), bucket[3], atol=1e-5)
    assert runner._compact._cache_size() == 1
