import functools
import json
import math
import types

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import dynprune as dp
from dynprune.harness import models

EXAMPLE = jnp.zeros((1, 28, 28, 1))


@functools.cache
def linen(name):
    model = models.get_model(name)
    params = model.init(jax.random.key(0), EXAMPLE)["params"]
    return (lambda p, x: model.apply({"params": p}, x)), params


def test_lenet5_dense_flops_per_layer():
    apply_fn, params = linen("lenet5")
    report = dp.stats.flops(apply_fn, params, EXAMPLE)
    # conv1: 24·24 outputs × 20 channels × 25 MACs; conv2: 8·8 × 50 × 500; fc1 800·500; fc2 500·10
    expected = {
        "conv1/kernel": 2 * 24 * 24 * 20 * 25,
        "conv2/kernel": 2 * 8 * 8 * 50 * 500,
        "fc1/kernel": 2 * 800 * 500,
        "fc2/kernel": 2 * 500 * 10,
    }
    assert {k: v["dense"] for k, v in report["layers"].items()} == expected
    assert report["dense"] == report["effective"] == sum(expected.values())


def test_effective_flops_scale_with_density():
    apply_fn, params = linen("lenet300")
    _, masks = dp.prune_now(params, sparsity={"fc1": 0.9, "default": 0.5})
    report = dp.stats.flops(apply_fn, params, EXAMPLE, masks)
    fc1 = report["layers"]["fc1/kernel"]
    assert fc1["density"] == pytest.approx(0.1, abs=1e-5)
    assert fc1["effective"] == pytest.approx(0.1 * 2 * 784 * 300, rel=1e-4)
    assert report["effective"] == pytest.approx(
        0.1 * 2 * 784 * 300 + 0.5 * 2 * 300 * 100 + 0.5 * 2 * 100 * 10, rel=1e-4
    )


def test_flops_of_an_nnx_model():
    model = nnx.Linear(784, 10, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    apply_fn = lambda p, x: nnx.merge(graphdef, p)(x.reshape(1, -1))
    assert dp.stats.flops(apply_fn, params, EXAMPLE)["layers"]["kernel"]["dense"] == 2 * 7840


def test_flops_needs_a_single_example():
    apply_fn, params = linen("lenet300")
    with pytest.raises(ValueError, match="batch axis of size 1"):
        dp.stats.flops(apply_fn, params, jnp.zeros((4, 28, 28, 1)))


LENET300_MACS = {"fc1/kernel": 784 * 300, "fc2/kernel": 300 * 100, "fc3/kernel": 100 * 10}


def test_lenet300_macs_by_hand():
    apply_fn, params = linen("lenet300")
    report = dp.stats.cost(apply_fn, params, EXAMPLE)
    assert {k: v["macs_dense"] for k, v in report["layers"].items()} == LENET300_MACS
    assert report["total"]["macs_dense"] == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    # every parameter is counted once: 266,200 weights in layers, 300 + 100 + 10 biases in "other"
    assert report["other"]["params"] == 410
    assert report["total"]["params"] == 266_610
    assert report["other"]["macs_dense"] == 0


def test_lenet5_macs_by_hand():
    # models.LeNet5: conv 5x5 VALID stride 1 on 28x28x1 -> 24x24x20 (28 - 5 + 1 = 24);
    # max-pool 2/2 -> 12x12x20; conv 5x5 VALID -> 8x8x50 (12 - 5 + 1 = 8); max-pool -> 4x4x50
    # = 800 features; fc 800 -> 500 -> 10. A conv output element costs kh·kw·c_in MACs.
    apply_fn, params = linen("lenet5")
    report = dp.stats.cost(apply_fn, params, EXAMPLE)
    expected = {
        "conv1/kernel": (24 * 24 * 20) * (5 * 5 * 1),  # 288,000
        "conv2/kernel": (8 * 8 * 50) * (5 * 5 * 20),  # 1,600,000
        "fc1/kernel": 800 * 500,  # 400,000
        "fc2/kernel": 500 * 10,  # 5,000
    }
    assert expected == {
        "conv1/kernel": 288_000,
        "conv2/kernel": 1_600_000,
        "fc1/kernel": 400_000,
        "fc2/kernel": 5_000,
    }
    assert {k: v["macs_dense"] for k, v in report["layers"].items()} == expected
    assert report["total"]["macs_dense"] == 2_293_000
    assert report["total"]["params"] == 431_080
    # flops() counts the same layers, two FLOPs per MAC
    assert dp.stats.flops(apply_fn, params, EXAMPLE)["dense"] == 2 * 2_293_000


def test_effective_macs_and_nonzeros_follow_the_masks():
    apply_fn, params = linen("lenet300")
    _, masks = dp.prune_now(params, sparsity={"fc1": 0.9, "default": 0.5})
    report = dp.stats.cost(apply_fn, params, EXAMPLE, masks)
    fc1, fc2 = report["layers"]["fc1/kernel"], report["layers"]["fc2/kernel"]
    assert (fc1["params"], fc1["nonzeros"]) == (235_200, 23_520)  # round(0.1 · 235,200)
    assert fc1["macs_effective"] == pytest.approx(23_520)  # dense MACs · 23,520 / 235,200
    assert (fc2["nonzeros"], fc2["macs_effective"]) == (15_000, pytest.approx(15_000))
    assert report["total"]["macs_effective"] == pytest.approx(23_520 + 15_000 + 500)


def test_bytes_of_a_tiny_dense_kernel_by_hand():
    # w is 3x4 (in=3, out=4); the mask keeps 5 of its 12 entries.
    params = {"w": jnp.arange(1.0, 13.0).reshape(3, 4), "b": jnp.ones(4)}
    mask = jnp.zeros(12, bool).at[jnp.array([0, 3, 5, 6, 11])].set(True).reshape(3, 4)
    report = dp.stats.cost(
        lambda p, x: x @ p["w"] + p["b"][None], params, jnp.ones((1, 3)), {"w": mask, "b": None}
    )
    w = report["layers"]["w"]
    assert w == {
        "params": 12,
        "nonzeros": 5,
        "macs_dense": 12,
        "macs_effective": 5.0,  # 12 · 5/12
        "bytes_dense": 48,  # 4 · 12
        "bytes_bitmask": 22,  # ceil(12/8) = 2 bytes of bits + 4 · 5 values
        "bytes_csr": 56,  # 4 · 5 values + 4 · 5 column indices + 4 · (3 + 1) row pointers
        "bytes_bcoo": 60,  # 4 · 5 values + 4 · 2 · 5 (row, col) indices
    }
    other = report["other"]  # the bias, dense in every format
    assert other["params"] == 4 and other["bytes_csr"] == other["bytes_bcoo"] == 16
    assert report["total"]["bytes_csr"] == 56 + 16
    json.dumps(report)  # plain Python numbers


def test_bytes_of_a_tiny_conv_kernel_by_hand():
    # kernel (h, w, in, out) = (2, 2, 1, 3): 2-D view (2·2·1, 3) = 4 rows; 4 nonzeros kept.
    kernel = jnp.zeros((2, 2, 1, 3)).at[0, 0, 0, :].set(1.0).at[1, 1, 0, 2].set(2.0)

    def apply_fn(p, x):
        return jax.lax.conv_general_dilated(
            x, p["k"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    row = dp.stats.cost(apply_fn, {"k": kernel}, jnp.ones((1, 5, 5, 1)))["layers"]["k"]
    # output 4x4x3 elements, each 2·2·1 MACs
    assert (row["macs_dense"], row["macs_effective"]) == (4 * 4 * 3 * 4, 4 * 4 * 3 * 4 * 4 / 12)
    assert row["bytes_dense"] == 48
    assert row["bytes_bitmask"] == 2 + 16
    assert row["bytes_csr"] == 16 + 16 + 4 * (4 + 1)
    assert row["bytes_bcoo"] == 16 + 4 * 4 * 4  # four int32 coordinates per nonzero


def test_flops_of_zero_size_kernels_are_zero_plain_floats():
    """A layer whose every unit was removed (e.g. by surgery) has an empty kernel."""

    def apply_fn(p, x):
        y = jax.lax.conv_general_dilated(
            x, p["conv"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return y.reshape(1, -1) @ p["fc"]

    params = {"conv": jnp.ones((2, 2, 1, 0)), "fc": jnp.ones((0, 3))}
    report = dp.stats.flops(apply_fn, params, jnp.ones((1, 5, 5, 1)))
    assert report["dense"] == 0 and report["effective"] == 0.0
    for layer in report["layers"].values():
        assert layer == {"dense": 0, "effective": 0.0, "density": 0.0}
    dense = dp.stats.flops(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 4))}, jnp.ones((1, 3)))
    values = [dense["effective"], *dense["layers"]["w"].values()]
    assert [type(v) for v in values] == [float, int, float, float]


def test_matmul_inside_a_nested_jit_is_counted():
    inner = jax.jit(lambda w, x: x @ w)
    report = dp.stats.cost(lambda p, x: inner(p["w"], x), {"w": jnp.ones((3, 4))}, jnp.ones((1, 3)))
    assert report["layers"]["w"]["macs_dense"] == 12


def test_format_cost_lists_layers_and_totals():
    apply_fn, params = linen("lenet300")
    _, masks = dp.prune_now(params, sparsity=0.9)
    text = dp.stats.format_cost(dp.stats.cost(apply_fn, params, EXAMPLE, masks))
    for name in ["fc1/kernel", "fc3/kernel", "other (dense)", "total", "266,200", "compression"]:
        assert name in text


def test_cost_needs_a_single_example():
    apply_fn, params = linen("lenet300")
    with pytest.raises(ValueError, match="batch axis of size 1"):
        dp.stats.cost(apply_fn, params, jnp.zeros((2, 28, 28, 1)))


def test_latency_is_positive_and_finite():
    x = jnp.ones((32, 32))
    seconds = dp.stats.latency(lambda a: a @ a, x, reps=3, warmup=1)
    assert math.isfinite(seconds) and seconds > 0


def test_compare_latency_medians_and_speedups():
    x = jnp.ones((32, 32))
    result = dp.stats.compare_latency(
        {"matmul": (jnp.dot, (x, x)), "add": (jnp.add, (x, x))}, reps=4, warmup=0, baseline="add"
    )
    assert result.baseline == "add" and result.speedups["add"] == 1.0
    assert all(math.isfinite(m) and m > 0 for m in result.medians.values())
    assert result.speedups["matmul"] == result.medians["add"] / result.medians["matmul"]


def test_per_image_medians_sums_each_images_median(monkeypatch):
    # A fake clock: a call on image x takes x seconds for "a" and 10x for "b", except its
    # first timed call on the first image, an outlier the median must drop.
    now = [0.0]
    calls = []
    monkeypatch.setattr(dp.stats, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def timed(scale):
        def fn(x):
            calls.append((scale, x.shape))
            outlier = 100.0 if sum(1 for c in calls if c == (scale, x.shape)) == 2 else 0.0
            now[0] += scale * float(x[0, 0]) + outlier
            return x

        return fn

    images = jnp.arange(1.0, 4.0)[:, None] * jnp.ones((3, 2))
    totals = dp.stats.per_image_medians({"a": timed(1), "b": timed(10)}, images, reps=3)
    assert totals == pytest.approx({"a": 1 + 2 + 3, "b": 10 * (1 + 2 + 3)})
    assert {shape for _, shape in calls} == {(1, 2)}
    assert len(calls) == 2 * 3 * (3 + 1)  # calls × images × (reps + one warmup)


def test_compare_latency_rejects_bad_arguments():
    call = {"f": (jnp.sin, (jnp.ones(3),))}
    with pytest.raises(ValueError, match="baseline"):
        dp.stats.compare_latency(call, baseline="g")
    with pytest.raises(ValueError, match="at least one"):
        dp.stats.compare_latency({})
    with pytest.raises(ValueError, match="reps"):
        dp.stats.compare_latency(call, reps=0)
