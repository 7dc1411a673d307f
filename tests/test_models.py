"""Tests for dynprune.harness.models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynprune.harness import models


def _init(name: str):
    model = models.get_model(name)
    return model, model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]


@pytest.mark.parametrize(
    ("name", "count"),
    [("lenet300", 266_610), ("lenet5", 431_080), ("origin_mlp", 101_770), ("fashion_cnn", 421_642)],
)
def test_parameter_count_and_output_shape(name, count):
    model, params = _init(name)
    assert sum(leaf.size for leaf in jax.tree.leaves(params)) == count
    logits = model.apply({"params": params}, jnp.ones((3, 28, 28, 1), jnp.float32))
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32


@pytest.mark.parametrize(
    ("name", "shapes"),
    [
        ("lenet300", {"fc1": (784, 300), "fc2": (300, 100), "fc3": (100, 10)}),
        ("lenet5", {"conv1": (5, 5, 1, 20), "conv2": (5, 5, 20, 50), "fc1": (800, 500)}),
        ("origin_mlp", {"fc1": (784, 128), "fc2": (128, 10)}),
        ("fashion_cnn", {"conv1": (3, 3, 1, 32), "conv2": (3, 3, 32, 64), "fc1": (3136, 128)}),
    ],
)
def test_named_layers_with_outputs_on_the_last_axis(name, shapes):
    _, params = _init(name)
    for layer, shape in shapes.items():
        assert params[layer]["kernel"].shape == shape
        assert params[layer]["bias"].shape == shape[-1:]


def test_lenet5_has_no_relu_after_convolutions():
    # Caffe's LeNet: conv → pool → conv → pool → fc1 → ReLU. With conv2's bias very negative,
    # a ReLU after conv2 would zero fc1's input, making the logits independent of the image.
    model, params = _init("lenet5")
    params = {**params, "conv2": {**params["conv2"], "bias": jnp.full((50,), -1e3)}}
    x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
    logits = model.apply({"params": params}, x)
    assert not np.allclose(logits[0], logits[1])


def test_unknown_model_lists_names():
    with pytest.raises(ValueError, match="lenet300, lenet5, origin_mlp, fashion_cnn"):
        models.get_model("resnet")
