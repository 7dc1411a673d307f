"""Tests for dynprune.surgery: the rebuilt model is smaller and computes the masked model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import dynprune as dp
from dynprune.harness import data, models

TOL = 1e-5


def images(n: int = 3, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (n, 28, 28, 1))


def random_like(shapes, seed: int = 1):
    """Random values for a tree of shapes, drawn by NumPy (init would compile every op):
    kernels ~ N(0, 1/fan_in), variances ~ U(0.5, 2), everything else (biases too) ~ N(0, 0.1)."""
    rng = np.random.default_rng(seed)

    def draw(path, s):
        if path.endswith("var"):
            return jnp.asarray(rng.uniform(0.5, 2.0, s.shape), s.dtype)
        scale = 1 / np.sqrt(np.prod(s.shape[:-1])) if len(s.shape) >= 2 else 0.1
        return jnp.asarray(rng.normal(0.0, scale, s.shape), s.dtype)

    return dp.tree.map_with_path(draw, shapes)


def linen(model: nn.Module, x: jax.Array, seed: int = 1):
    variables = random_like(jax.eval_shape(model.init, jax.random.key(0), x[:1]), seed)
    return variables["params"], lambda p, x: model.apply({"params": p}, x)


def neuron_masks(params, keep: dict[str, list[int]]):
    """Masks keeping only the listed output units of each named layer's kernel and bias."""
    paths = {f"{name}/kernel": units for name, units in keep.items()}

    def mask(path, w):
        if path not in paths:
            return None
        m = np.zeros((1,) * (w.ndim - 1) + (w.shape[-1],), bool)
        m[..., paths[path]] = True
        return jnp.asarray(m)

    return dp.masks.with_bias(dp.tree.map_with_path(mask, params), params)


def assert_same(r, apply_fn, params, masks, x):
    want = jax.jit(apply_fn)(dp.apply_masks(params, masks) if masks is not None else params, x)
    got = r.apply(r.params, x)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.shape == b.shape
        assert float(jnp.max(jnp.abs(a - b))) <= TOL


def test_lenet300_structured_and_pixels():
    x = images()
    params, apply_fn = linen(models.LeNet300100(), x)
    masks = neuron_masks(params, {"fc1": list(range(0, 300, 3)), "fc2": list(range(50))})
    pixels = np.zeros(784, bool)
    pixels[200:600] = True  # pixels outside rows 7..21 are dropped: their fc1 rows are 0
    masks["fc1"]["kernel"] = masks["fc1"]["kernel"] & jnp.asarray(pixels)[:, None]
    r = dp.surgery.reconstruct(apply_fn, params, masks, x)
    assert r.architecture == "400-100-50"
    np.testing.assert_array_equal(r.kept["fc1:in"], np.arange(200, 600))
    np.testing.assert_array_equal(r.kept["fc1"], np.arange(0, 300, 3))
    assert r.params["fc1"]["kernel"].shape == (400, 100)
    assert r.params["fc2"]["kernel"].shape == (100, 50)
    assert r.params["fc3"]["kernel"].shape == (50, 10)
    assert_same(r, apply_fn, params, masks, x)
    assert r.apply(r.params, images(7, seed=3)).shape == (7, 10)  # full images, any batch


def test_lenet300_unstructured_dead_units():
    x = images()
    params, apply_fn = linen(models.LeNet300100(), x)
    masks = {  # keep |w| above each kernel's 97th percentile
        name: {"kernel": np.abs(w["kernel"]) > np.quantile(np.abs(w["kernel"]), 0.97), "bias": None}
        for name, w in params.items()
    }
    r = dp.surgery.reconstruct(apply_fn, params, masks, x)
    pixels, h1, h2 = map(int, r.architecture.split("-"))
    assert pixels < 784 and h1 < 300 and h2 < 100  # dead units cascade to earlier layers
    assert_same(r, apply_fn, params, masks, x)


def test_lenet5_channels_and_flatten():
    x = images()
    params, apply_fn = linen(models.LeNet5(), x)
    keep = {"conv1": [0, 2, 5, 7, 11, 19], "conv2": list(range(1, 50, 2)), "fc1": list(range(64))}
    masks = neuron_masks(params, keep)
    r = dp.surgery.reconstruct(apply_fn, params, masks, x)
    assert r.architecture == "6-25-400-64"
    assert r.params["conv2"]["kernel"].shape == (5, 5, 6, 25)
    assert r.params["fc1"]["kernel"].shape == (400, 64)
    assert_same(r, apply_fn, params, masks, x)


class ConvFlatten(nn.Module):
    channels_first: bool = False  # flatten as PyTorch does (C, H, W)

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2), name="conv")(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.transpose(0, 3, 1, 2) if self.channels_first else x
        return nn.Dense(4, name="fc")(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("channels_first", [False, True])
def test_flatten_keeps_the_rows_of_kept_channels(channels_first):
    x = images()
    params, apply_fn = linen(ConvFlatten(channels_first), x)
    masks = neuron_masks(params, {"conv": [5, 1, 3]})
    r = dp.surgery.reconstruct(apply_fn, params, masks, x)
    np.testing.assert_array_equal(r.kept["conv"], [1, 3, 5])
    # Channels-last: channel c feeds rows r ≡ c (mod 8); channels-first: rows 49c ... 49c + 48.
    channel = np.arange(7 * 7 * 8) // 49 if channels_first else np.arange(7 * 7 * 8) % 8
    rows = np.flatnonzero(np.isin(channel, [1, 3, 5]))
    np.testing.assert_array_equal(r.kept["fc:in"], rows)
    np.testing.assert_array_equal(
        r.params["fc"]["kernel"], np.asarray(params["fc"]["kernel"])[rows]
    )
    np.testing.assert_array_equal(
        r.params["conv"]["bias"], np.asarray(params["conv"]["bias"])[[1, 3, 5]]
    )
    assert_same(r, apply_fn, params, masks, x)


class SliceFlatten(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=(4, 4), name="conv")(x))  # 7 x 7 x 8
        x = jnp.pad(x[:, 1:], ((0, 0), (0, 1), (0, 0), (0, 0)))  # drop row 0, add a zero row
        return nn.Dense(3, name="fc")(x.reshape(x.shape[0], -1))


def test_dead_positions_after_a_flatten_are_gathered_not_sliced_from_the_conv():
    x = images()
    params, apply_fn = linen(SliceFlatten(), x)
    masks = neuron_masks(params, {"conv": [0, 1, 2, 5, 7]})
    rows = np.arange(7 * 7 * 8)
    h, c = rows // (7 * 8), rows % 8  # channels-last (h, w, c)
    masks["fc"]["kernel"] = jnp.asarray((h != 0) & (c != 7))[:, None]
    r = dp.surgery.reconstruct(apply_fn, params, masks, x)
    # Rows h = 0 (pruned) and h = 6 (the zero padding) go by gather; the conv keeps 7 x 7.
    np.testing.assert_array_equal(r.kept["conv"], [0, 1, 2, 5])
    np.testing.assert_array_equal(
        r.kept["fc:in"], np.flatnonzero((h % 6 != 0) & np.isin(c, [0, 1, 2, 5]))
    )
    assert_same(r, apply_fn, params, masks, x)


class BatchNormMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(32, name="fc1")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn1")(x))
        x = nn.Dense(16, name="fc2")(x)
        x = nn.tanh(nn.LayerNorm(name="ln")(x))
        return nn.Dense(10, name="fc3")(x)


def test_batchnorm_mlp_folds_constant_units():
    x = images()
    model = BatchNormMLP()
    variables = random_like(jax.eval_shape(model.init, jax.random.key(0), x[:1]))
    apply_fn = lambda v, x: model.apply(v, x)
    # Prune fc1 columns but not their biases: the BatchNorm turns each into a constant
    # relu(bn(b)) that must be folded into fc2's output.
    col = np.ones((1, 32), bool)
    col[0, ::3] = False
    masks = jax.tree.map(lambda _: None, variables)
    masks["params"]["fc1"]["kernel"] = jnp.asarray(col)
    r = dp.surgery.reconstruct(apply_fn, variables, masks, x)
    kept = np.flatnonzero(col[0])
    assert r.architecture == f"784-{kept.size}-16"
    for leaf in ("mean", "var"):
        np.testing.assert_array_equal(
            r.params["batch_stats"]["bn1"][leaf], variables["batch_stats"]["bn1"][leaf][kept]
        )
    assert r.params["params"]["bn1"]["scale"].shape == (kept.size,)
    assert r.params["params"]["fc2"]["kernel"].shape == (kept.size, 16)
    assert_same(r, apply_fn, variables, masks, x)


def test_batch_statistics_are_refused():
    class TrainBN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(8, name="fc1")(x.reshape(x.shape[0], -1))
            return nn.Dense(2, name="fc2")(nn.BatchNorm(use_running_average=False)(x))

    x = images()
    model = TrainBN()
    variables = random_like(jax.eval_shape(model.init, jax.random.key(0), x[:1]))
    apply_fn = lambda v, x: model.apply(v, x, mutable=["batch_stats"])[0]
    with pytest.raises(ValueError, match="batch axis"):
        dp.surgery.reconstruct(apply_fn, variables, None, x)


class Residual(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(8, (3, 3), name="stem")(x))
        y = nn.relu(nn.Conv(6, (3, 3), name="inner")(h))
        h = nn.relu(h + nn.Conv(8, (3, 3), name="outer")(y))
        h = nn.max_pool(h, (4, 4), strides=(4, 4))
        return nn.Dense(10, name="head")(h.reshape(h.shape[0], -1))


def test_residual_keeps_union_of_both_sides():
    x = images()
    params, apply_fn = linen(Residual(), x)
    masks = neuron_masks(
        params,
        {"stem": [0, 1, 4, 5, 6, 7], "outer": [0, 3, 4, 5, 6, 7], "inner": [0, 1, 2, 3]},
    )
    r = dp.surgery.reconstruct(apply_fn, params, masks, x)
    # channel 2 is pruned on both sides of the add and goes; 1 and 3 live on one side.
    np.testing.assert_array_equal(r.kept["stem"], [0, 1, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(r.kept["inner"], [0, 1, 2, 3])
    assert r.params["outer"]["kernel"].shape == (3, 3, 4, 7)
    assert r.params["head"]["kernel"].shape == (7 * 7 * 7, 10)
    assert_same(r, apply_fn, params, masks, x)


class NNXNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 6, (3, 3), strides=(2, 2), rngs=rngs)
        self.bn = nnx.BatchNorm(6, use_running_average=True, rngs=rngs)
        self.fc1 = nnx.Linear(14 * 14 * 6, 12, rngs=rngs)
        self.fc2 = nnx.Linear(12, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv(x)))
        x = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
        return self.fc2(x)


def test_nnx_model():
    x = images()
    graphdef, state, rest = nnx.split(nnx.eval_shape(lambda: NNXNet(nnx.Rngs(0))), nnx.Param, ...)
    state, rest = random_like(state), random_like(rest, seed=2)
    apply_fn = lambda s, x: nnx.merge(graphdef, s, rest)(x)
    masks = neuron_masks(state, {"conv": [0, 2, 3], "fc1": [1, 2, 5, 7, 8, 11]})
    r = dp.surgery.reconstruct(apply_fn, state, masks, x)
    assert r.architecture == f"3-{14 * 14 * 3}-6"
    assert r.params["bn"]["scale"][...].shape == (3,)
    assert r.params["fc1"]["kernel"][...].shape == (14 * 14 * 3, 6)
    assert_same(r, apply_fn, state, masks, x)


class Mixer(nn.Module):
    op: str

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(16, name="fc1")(x.reshape(x.shape[0], -1)))
        h = jax.nn.softmax(h, axis=-1) if self.op == "softmax" else jnp.sort(h, axis=-1)
        return nn.Dense(4, name="fc2")(h)


@pytest.mark.parametrize("op, primitive", [("softmax", "reduce_max"), ("sort", "sort")])
def test_unsupported_primitive_across_pruned_axis_is_refused(op, primitive):
    x = images()
    params, apply_fn = linen(Mixer(op), x)
    masks = neuron_masks(params, {"fc1": list(range(8))})
    with pytest.raises(ValueError, match=rf"`{primitive}`.*") as err:
        dp.surgery.reconstruct(apply_fn, params, masks, x)
    assert "fc1/kernel axis 1" in str(err.value)
    # Unpruned, the same model reconstructs (to itself).
    r = dp.surgery.reconstruct(apply_fn, params, None, x)
    assert r.architecture == "784-16"


def test_nothing_removed_is_a_no_op():
    x = images()
    params, apply_fn = linen(models.LeNet300100(), x)
    for masks in (None, jax.tree.map(lambda w: jnp.ones(w.shape, bool), params)):
        r = dp.surgery.reconstruct(apply_fn, params, masks, x)
        assert r.architecture == "784-300-100"
        for a, b in zip(jax.tree.leaves(r.params), jax.tree.leaves(params), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(r.apply(r.params, x), apply_fn(params, x))


def test_removing_a_whole_layer_is_refused():
    x = images()
    params, apply_fn = linen(models.LeNet300100(), x)
    masks = neuron_masks(params, {"fc2": []})
    with pytest.raises(ValueError, match=r"every unit of .*fc2/kernel axis 1[^;]*\(100 units\)"):
        dp.surgery.reconstruct(apply_fn, params, masks, x)


def test_reconstructed_model_trains():
    x = images()
    params, apply_fn = linen(models.OriginMLP(), x)
    r = dp.surgery.reconstruct(apply_fn, params, neuron_masks(params, {"fc1": [3, 9]}), x)
    grads = jax.grad(lambda p: jnp.sum(r.apply(p, x) ** 2))(r.params)
    assert grads["fc1"]["kernel"].shape == (784, 2)
    assert bool(jnp.all(jnp.isfinite(grads["fc1"]["kernel"])))


class TinyMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(12, name="fc1")(x.reshape(x.shape[0], -1)))
        x = nn.tanh(nn.Dense(10, name="fc2")(x))
        return nn.Dense(3, name="fc3")(x)


@settings(max_examples=6, deadline=None)
@given(
    st.lists(st.booleans(), min_size=12, max_size=12).filter(any),
    st.lists(st.booleans(), min_size=10, max_size=10).filter(any),
    st.booleans(),
)
def test_random_neuron_masks_property(keep1, keep2, biases):
    x = jax.random.uniform(jax.random.key(0), (4, 6, 6, 1))
    params, apply_fn = linen(TinyMLP(), x)
    masks = neuron_masks(params, {"fc1": np.flatnonzero(keep1), "fc2": np.flatnonzero(keep2)})
    if not biases:  # pruned kernel columns only: constant units are folded
        masks = {k: {"kernel": v["kernel"], "bias": None} for k, v in masks.items()}
    r = dp.surgery.reconstruct(apply_fn, params, masks, x)
    assert r.architecture == f"36-{sum(keep1)}-{sum(keep2)}"
    assert_same(r, apply_fn, params, masks, x)


@pytest.mark.data
@pytest.mark.parametrize(
    "name, keep",
    [
        ("lenet300", {"fc1": list(range(0, 300, 4)), "fc2": list(range(0, 100, 3))}),
        ("lenet5", {"conv1": [1, 4, 9, 16], "conv2": list(range(0, 50, 5)), "fc1": [3, 8, 60]}),
    ],
)
def test_reconstructed_outputs_equal_the_masked_model_on_real_mnist(mnist_test, name, keep):
    """On 256 real test images, with the weights a run starts from (the model's init), the
    smaller model's logits equal the masked model's to 1e-5, and so do its predictions."""
    model = models.get_model(name)
    x = jnp.asarray(data.preprocess(mnist_test.images[:256]))  # as the harness feeds them
    params = model.init(jax.random.key(0), x[:1])["params"]
    apply_fn = lambda p, x: model.apply({"params": p}, x)
    masks = neuron_masks(params, keep)
    r = dp.surgery.reconstruct(apply_fn, params, masks, x[:1])
    assert_same(r, apply_fn, params, masks, x)
    masked = jax.jit(apply_fn)(dp.apply_masks(params, masks), x)
    np.testing.assert_array_equal(r.apply(r.params, x).argmax(-1), masked.argmax(-1))
    assert sum(w.size for w in jax.tree.leaves(r.params)) < sum(
        w.size for w in jax.tree.leaves(params)
    )
