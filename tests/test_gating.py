"""Per-input gating: exact top-k, traced density, the width-bucket path, accounting, errors."""

import functools
import itertools
import math
from fractions import Fraction

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dynprune as dp
from dynprune import gating

# RBG keys: Flax inits compile in a quarter of threefry's time, which dominates this file
KEY = jax.random.key(0, impl="rbg")
RNG = np.random.default_rng(0)
X_CONV = jnp.asarray(RNG.normal(size=(3, 6, 6, 4)), jnp.float32)
X_CNN = jnp.asarray(RNG.uniform(size=(16, 8, 8, 1)) * np.linspace(0, 2, 16)[:, None, None, None])
X_CNN = X_CNN.astype(jnp.float32)


@functools.cache
def conv_layer(mode="topk", buckets=None):
    layer = gating.GatedConv(8, (3, 3), mode=mode, buckets=buckets)
    params = jax.jit(layer.init)(KEY, X_CONV)["params"]
    return layer, params


@functools.cache
def conv_apply(mode="topk"):
    """jit(apply) of :func:`conv_layer`'s layer, density and threshold as arguments."""
    layer, _ = conv_layer(mode)
    return jax.jit(lambda p, x, d, t=0.0: layer.apply({"params": p}, x, d, t))


@functools.cache
def nnx_conv_layer():
    """An NNX GatedConv (top-k) that tests only read."""
    return gating.nnx.GatedConv(4, 8, (3, 3), rngs=nnx.Rngs(KEY))


@functools.cache
def gated_cnn():
    """A prefix-mode GatedCNN whose saliencies fall along the channels, the steeper the
    brighter the input: the inputs of one batch land in different width buckets."""
    model = gating.GatedCNN(features=(4, 8, 8), classes=3)
    params = jax.jit(model.init)(KEY, X_CNN)["params"]
    for i in range(2):
        up = params[f"gated_{i}"]["predictor"]["up"]
        g, c = up["kernel"].shape
        up["kernel"] = -3.0 * jnp.ones((g, 1)) * (jnp.arange(c) / c)[None, :]
        up["bias"] = jnp.ones(c)
    masked = jax.jit(lambda p, x, d: model.apply({"params": p}, x, d))
    return model, params, gating.BucketRunner(model, params), masked


def reference_topk(s, k):
    """NumPy: the k largest per row, ties by lower index."""
    kept = np.zeros(s.shape, bool)
    for b, row in enumerate(s):
        order = sorted(range(len(row)), key=lambda c: (-row[c], c))
        kept[b, order[:k]] = True
    return kept


# exactly ⌈d·C⌉ channels per example


@pytest.mark.parametrize("channels", [1, 3, 7, 10, 16, 64])
def test_kept_count_is_the_exact_ceiling(channels):
    for d in ["0.01", "0.1", "0.25", "0.3", "0.33", "0.5", "0.7", "0.9", "1"]:
        expected = max(1, math.ceil(Fraction(d) * channels))
        assert int(gating.kept_count(float(d), channels)) == expected, (d, channels)


@pytest.mark.parametrize("channels", [5, 10, 32])
def test_topk_keeps_exactly_ceil_dc_per_example_with_ties_by_index(channels):
    # quantised saliencies: many ties, many zeros (ReLU)
    s = np.maximum(np.round(np.random.default_rng(channels).normal(size=(20, channels))), 0)
    s = s.astype(np.float32)
    for d in (0.1, 0.3, 0.5, 0.75, 1.0):
        k = max(1, math.ceil(Fraction(str(d)) * channels))
        kept = np.asarray(gating.topk_gate(jnp.asarray(s), d))
        assert (kept.sum(axis=1) == k).all()
        np.testing.assert_array_equal(kept, reference_topk(s, k))


def test_gated_layers_keep_exactly_ceil_dc_linen_and_nnx():
    _, params = conv_layer()
    dense = gating.GatedDense(10, predictor_rank=3)
    x = jnp.asarray(RNG.normal(size=(4, 12)), jnp.float32)
    dense_params = jax.jit(dense.init)(KEY, x)["params"]
    dense_apply = jax.jit(lambda p, x, d: dense.apply({"params": p}, x, d)[1].kept.sum(-1))
    nnx_counts = nnx.jit(lambda m, x, d: m(x, d)[1].kept.sum(axis=-1))
    nnx_conv = nnx_conv_layer()
    nnx_dense = gating.nnx.GatedLinear(12, 10, rngs=nnx.Rngs(KEY))
    for d in (0.2, 0.5, 1.0):
        kept = conv_apply()(params, X_CONV, d)[1].kept
        assert kept.sum(axis=-1).tolist() == [math.ceil(d * 8)] * 3
        assert dense_apply(dense_params, x, d).tolist() == [math.ceil(d * 10)] * 4
        assert nnx_counts(nnx_conv, X_CONV, d).tolist() == [math.ceil(d * 8)] * 3
        assert nnx_counts(nnx_dense, x, d).tolist() == [math.ceil(d * 10)] * 4


def test_gated_output_is_the_layer_output_scaled_by_kept_saliencies():
    _, params = conv_layer()
    y, g = conv_apply()(params, X_CONV, 0.5)
    conv = nn.Conv(8, (3, 3)).apply({"params": params["layer"]}, X_CONV)
    expected = np.asarray(conv) * np.asarray(g.saliency * g.kept)[:, None, None, :]
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert (
        np.asarray(y)[~np.broadcast_to(np.asarray(g.kept)[:, None, None, :], y.shape)] == 0
    ).all()


def test_threshold_and_prefix_modes():
    s = jnp.asarray(RNG.uniform(size=(50, 12)), jnp.float32)
    kept = np.asarray(gating.gate(s, "threshold", threshold=0.6))
    np.testing.assert_array_equal(kept, np.asarray(s) > 0.6)
    for d, buckets in itertools.product((0.2, 0.5, 1.0), (None, (0.25, 0.5, 0.75, 1.0))):
        kept = np.asarray(gating.prefix_gate(s, d, buckets))
        cum = np.cumsum(np.asarray(s), axis=1)
        width = np.array([1 + int((row < d * row[-1]).sum()) for row in cum])
        if buckets is not None:
            allowed = np.array(gating.bucket_widths(buckets, 12))
            width = allowed[np.searchsorted(allowed, width)]
        np.testing.assert_array_equal(kept, np.arange(12)[None, :] < width[:, None])


def test_linen_and_nnx_layers_compute_the_same_gates_and_outputs():
    _, params = conv_layer()
    model = gating.nnx.GatedConv(4, 8, (3, 3), rngs=nnx.Rngs(KEY))
    model.layer.kernel[...] = params["layer"]["kernel"]
    model.layer.bias[...] = params["layer"]["bias"]
    model.predictor.up.kernel[...] = params["predictor"]["up"]["kernel"]
    model.predictor.up.bias[...] = params["predictor"]["up"]["bias"]
    for mode in ("topk", "prefix"):
        model.mode = mode
        y, g = conv_apply(mode)(params, X_CONV, 0.4)
        y_nnx, g_nnx = nnx.jit(lambda m, x: m(x, 0.4))(model, X_CONV)
        np.testing.assert_allclose(y_nnx, y, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(g_nnx.kept, g.kept)


# the density is traced: no recompilation


def test_changing_density_needs_no_recompilation_linen():
    layer, params = conv_layer()
    traces = []

    @jax.jit
    def kept_counts(params, x, density):
        traces.append(density)
        return layer.apply({"params": params}, x, density)[1].kept.sum(axis=-1)

    counts = [kept_counts(params, X_CONV, d).tolist() for d in (0.125, 0.5, 0.8, 1.0)]
    assert counts == [[1] * 3, [4] * 3, [7] * 3, [8] * 3]
    assert len(traces) == 1
    # a sweep of densities is one vmapped program
    sweep = jax.vmap(kept_counts, in_axes=(None, None, 0))(params, X_CONV, jnp.array([0.25, 0.75]))
    assert sweep.tolist() == [[2] * 3, [6] * 3]


def test_changing_density_or_threshold_needs_no_recompilation_nnx():
    traces = []

    @nnx.jit
    def kept_counts(model, x, density, threshold):
        traces.append(1)
        return model(x, density, threshold)[1].kept.sum(axis=-1)

    topk = nnx_conv_layer()
    assert [kept_counts(topk, X_CONV, d, 0.0).tolist() for d in (0.25, 0.5)] == [[2] * 3, [4] * 3]
    assert len(traces) == 1
    thresh = gating.nnx.GatedConv(4, 8, (3, 3), mode="threshold", rngs=nnx.Rngs(KEY))
    counts = [kept_counts(thresh, X_CONV, 1.0, t) for t in (-1.0, 1e9)]
    assert counts[0].tolist() == [8] * 3 and counts[1].tolist() == [0] * 3
    assert len(traces) == 2  # one more trace for the second model, none per threshold


def test_traced_density_out_of_range_is_clipped_not_raised():
    _, params = conv_layer()
    for d, k in [(0.0, 1), (jnp.nan, 1), (7.0, 8)]:
        assert conv_apply()(params, X_CONV, d)[1].kept.sum(axis=-1).tolist() == [k] * 3


# the skipping path equals the masked path


def test_width_bucket_path_equals_masked_path():
    _, params, runner, masked_fn = gated_cnn()
    out, bucket = runner(X_CNN, 0.8)
    masked, gates = masked_fn(params, X_CNN, 0.8)
    np.testing.assert_allclose(out, masked, atol=1e-5, rtol=1e-5)
    assert len({tuple(row) for row in bucket.tolist()}) >= 3  # several groups ran
    for g, runs in zip(gates, runner.bucket_masks(bucket), strict=True):
        np.testing.assert_array_equal(runs, g.kept)  # each example runs exactly its widths
    for i in (0, 15):  # batch 1: the narrowest and the widest input
        out, bucket = runner(X_CNN[i : i + 1], 0.8)
        masked, _ = masked_fn(params, X_CNN[i : i + 1], 0.8)
        np.testing.assert_allclose(out, masked, atol=1e-5, rtol=1e-5)
        out, widest = runner.compact(X_CNN[i : i + 1], 0.8)
        np.testing.assert_allclose(out, masked, atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(widest, bucket[0])
    # the compact path runs a batch at its widest kept widths, chosen on the device
    out, widest = runner.compact(X_CNN, 0.8)
    np.testing.assert_allclose(out, masked_fn(params, X_CNN, 0.8)[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(widest, runner.gates(X_CNN, 0.8)[2].max(axis=0))


def test_measure_skipping_reports_latency_and_macs():
    model, params, runner, _ = gated_cnn()
    r = gating.measure_skipping(model, params, X_CNN, 0.8, reps=2, warmup=1, runner=runner)
    assert r.batch == 16 and r.groups >= 3 and len(r.kept_fraction) == 2
    assert r.max_abs_diff <= 1e-5
    assert r.masked_s > 0 and r.skipping_s > 0
    assert r.macs_effective <= r.macs_skipping <= r.macs_masked  # padding rows add work
    assert r.macs_effective <= r.macs_compact <= r.macs_masked and r.compact_s > 0
    assert r.macs_masked > r.macs_dense
    assert "speedup" in gating.format_skipping([r])


def test_bucket_runner_needs_prefix_mode():
    model = gating.GatedCNN(features=(4, 8), classes=3, mode="topk")
    with pytest.raises(ValueError, match="mode='prefix'"):
        gating.BucketRunner(model, params=None)  # refused before the parameters are read


# gradients reach the predictor


def test_gradients_reach_the_predictor_linen_and_nnx():
    layer, params = conv_layer()

    def loss(params, lam):
        y, g = layer.apply({"params": params}, X_CONV, 0.5)
        return jnp.mean(y**2) + lam * gating.l1_penalty(g)

    for lam in (0.0, 1e-2):  # through s ⊙ m alone, and with the L1 penalty
        grads = jax.grad(loss)(params, lam)["predictor"]["up"]
        assert np.isfinite(grads["kernel"]).all()
        assert np.abs(grads["kernel"]).max() > 0 and np.abs(grads["bias"]).max() > 0
    l1_only = jax.grad(lambda p: loss(p, 1.0) - loss(p, 0.0))(params)["predictor"]["up"]["bias"]
    np.testing.assert_allclose(l1_only, 1.0, rtol=1e-5)  # ∂ mean_b Σ_c s / ∂ b_p with all s > 0

    model = gating.nnx.GatedConv(4, 8, (3, 3), mode="prefix", rngs=nnx.Rngs(KEY))
    grads = nnx.grad(lambda m: jnp.mean(m(X_CONV, 0.5)[0] ** 2))(model)
    assert np.abs(np.asarray(grads.predictor.up.kernel[...])).max() > 0


# effective-MAC accounting


def test_effective_macs_of_a_tiny_layer_by_hand():
    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x, density=1.0, threshold=0.0):
            y, g = gating.GatedDense(6, mode="threshold", name="gated")(x, density, threshold)
            return nn.Dense(2, name="out")(nn.relu(y)), g

    model, x = Tiny(), jnp.asarray(RNG.normal(size=(5, 4)), jnp.float32)
    params = jax.jit(model.init)(KEY, x)["params"]
    report = dp.stats.cost(lambda p, x: model.apply({"params": p}, x)[0], params, x[:1])
    macs = {path: row["macs_dense"] for path, row in report["layers"].items()}
    assert macs == {"gated/layer/kernel": 24, "gated/predictor/up/kernel": 24, "out/kernel": 12}
    _, g = model.apply({"params": params}, x, threshold=1.0)
    kept = np.asarray(g.kept)
    layers = [
        gating.LayerMACs(24, kept_out=kept),
        gating.LayerMACs(24, predictor=True),
        gating.LayerMACs(12, kept_in=kept),
    ]
    n = kept.sum(axis=1)  # layer: 4 MACs per kept output; out: 2 MACs per kept input
    np.testing.assert_allclose(gating.effective_macs(layers), 4 * n + 24 + 2 * n)
    assert gating.dense_macs(layers) == 36
    assert len(set(n.tolist())) > 1  # examples differ


def test_cnn_layer_macs_by_hand():
    model, x = gating.GatedCNN(features=(2, 4), classes=3), jnp.ones((2, 4, 4, 1))
    params = jax.jit(model.init)(KEY, x)["params"]
    kept = [np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)]
    layers = gating.layer_macs(model, params, kept, x[:1])
    # stem 16·2·9 = 288; gated 16·4·18 = 1152; head (2·2·4)·3 = 48; predictor 2·4 = 8
    np.testing.assert_allclose(
        gating.effective_macs(layers),
        [288 + 1152 / 2 + 48 / 2 + 8, 288 + 1152 + 48 + 8],
    )
    assert gating.dense_macs(layers) == 288 + 1152 + 48


def test_stem_pool_bucket_path_equals_masked_path_and_dense_is_the_ungated_network():
    model = gating.GatedCNN(features=(4, 8, 8), classes=3, stem_pool=True)
    x = jnp.tile(X_CNN, (1, 2, 2, 1))  # 16 x 16: pools to 8 x 8 before the gates
    params = jax.jit(model.init)(KEY, x)["params"]
    runner = gating.BucketRunner(model, params)
    masked, gates = model.apply({"params": params}, x, 0.6)
    np.testing.assert_allclose(runner(x, 0.6)[0], masked, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(runner.compact(x[:1], 0.6)[0], masked[:1], atol=1e-5, rtol=1e-5)
    # dense: every channel at scale 1, no predictor read (they are absent from its params)
    layers = {
        k: ({"layer": v["layer"]} if k.startswith("gated_") else v) for k, v in params.items()
    }
    dense = model.apply({"params": layers}, x, method=gating.GatedCNN.dense)
    h = model.apply({"params": params}, x, method=gating.GatedCNN.features_of)
    ones = [gating.Gates(jnp.ones_like(g.saliency), jnp.ones_like(g.kept)) for g in gates]
    reference = model.apply({"params": params}, h, ones, method=gating.GatedCNN.trunk)
    np.testing.assert_allclose(dense, reference, atol=1e-6)
    assert h.shape == (16, 8, 8, 4)


def test_layer_macs_of_the_ungated_network_count_no_predictor():
    model, x = gating.GatedCNN(features=(2, 4), classes=3), jnp.ones((2, 4, 4, 1))
    params = jax.jit(model.init)(KEY, x)["params"]
    params["gated_0"] = {"layer": params["gated_0"]["layer"]}
    layers = gating.layer_macs(model, params, [np.array([[1, 0, 0, 0]], bool)], x[:1])
    assert not any(layer.predictor for layer in layers)
    np.testing.assert_allclose(gating.effective_macs(layers), [288 + 1152 / 4 + 48 / 4])


def test_mac_summary_jaccard_and_density_per_class_against_reference():
    s = gating.summarize_macs(np.arange(1.0, 101.0), dense=202.0)
    assert (s.mean, s.p50, s.p95, s.reduction) == (50.5, 50.5, pytest.approx(95.05), 4.0)
    rng = np.random.default_rng(0)
    kept = rng.random((30, 7)) < 0.4
    kept[3] = False  # an empty set
    kept[4] = False
    labels = rng.integers(0, 3, 30)

    def jac(a, b):
        union = (a | b).sum()
        return (a & b).sum() / union if union else 1.0

    pairs = [(i, j) for i in range(30) for j in range(30) if i != j]
    assert gating.mean_pairwise_jaccard(kept) == pytest.approx(
        np.mean([jac(kept[i], kept[j]) for i, j in pairs])
    )
    matrix = gating.class_jaccard([kept[:, :3], kept[:, 3:]], labels)
    for a, b in itertools.product(range(3), repeat=2):
        ref = np.mean([jac(kept[i], kept[j]) for i, j in pairs if (labels[i], labels[j]) == (a, b)])
        assert matrix[a, b] == pytest.approx(ref)
    density = gating.density_per_class(kept, labels, num_classes=4)
    for c in range(3):
        assert density[c] == pytest.approx(kept[labels == c].mean())
    assert np.isnan(density[3])


# errors


@pytest.mark.parametrize("density", [0.0, -0.5, 1.5, float("nan"), float("inf")])
def test_density_outside_0_1_is_a_clear_error(density):
    layer, params = conv_layer()
    message = rf"density must be a finite number in \(0, 1\], got {density!r}"
    with pytest.raises(ValueError, match=message):
        layer.apply({"params": params}, X_CONV, density)
    with pytest.raises(ValueError, match=message):
        gating.nnx.GatedLinear(4, 3, rngs=nnx.Rngs(KEY))(jnp.ones((1, 4)), density)
    with pytest.raises(ValueError, match=message):
        gating.gate(jnp.ones((1, 4)), "prefix", density)
    _, _, runner, _ = gated_cnn()
    with pytest.raises(ValueError, match=message):
        runner(X_CNN, density)


def test_bad_mode_buckets_and_density_type_are_clear_errors():
    with pytest.raises(TypeError, match="density"):
        gating.check_density("half")
    with pytest.raises(ValueError, match="mode must be one of 'topk', 'threshold', 'prefix'"):
        gating.gate(jnp.ones((1, 4)), "top-k")
    with pytest.raises(ValueError, match="buckets must be increasing"):
        gating.nnx.GatedLinear(4, 3, mode="prefix", buckets=(0.5, 0.25, 1.0), rngs=nnx.Rngs(KEY))
    with pytest.raises(ValueError, match="buckets apply to mode='prefix' only"):
        gating.gate(jnp.ones((1, 4)), "topk", 0.5, buckets=(0.5, 1.0))
    with pytest.raises(ValueError, match="finite number"):
        gating.gate(jnp.ones((1, 4)), "threshold", threshold=float("nan"))
