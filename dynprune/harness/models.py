"""Reference networks for 28x28x1 images, as Flax Linen modules.

Submodules have descriptive names, so parameter paths read `params["fc1"]["kernel"]`. Dense
kernels are (in, out) and conv kernels (h, w, in, out): output neurons and channels are the last
axis, which is what the pruning core's neuron and channel scores assume. Inputs are float32
[B, 28, 28, 1] in [0, 1] (see `dynprune.harness.data.preprocess`); outputs are [B, 10] logits.
"""

from __future__ import annotations

import flax.linen as nn
import jax


class LeNet300100(nn.Module):
    """LeNet-300-100: 784-300-100-10 fully connected, ReLU; 266,610 parameters.

    Attributes:
      parent, name: Linen's own module fields; the network has no settings of its own.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> model = LeNet300100()
      >>> shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> sum(x.size for x in jax.tree.leaves(shapes)), list(shapes["params"])
      (266610, ['fc1', 'fc2', 'fc3'])

    References:
      LeCun et al., "Gradient-based learning applied to document recognition", 1998;
      Han et al., "Learning both Weights and Connections for Efficient Neural Networks", 2015.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(300, name="fc1")(x))
        x = nn.relu(nn.Dense(100, name="fc2")(x))
        return nn.Dense(10, name="fc3")(x)


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe's MNIST example; 431,080 parameters.

    conv 20@5x5 VALID → max-pool 2 → conv 50@5x5 VALID → max-pool 2 → fc 500 ReLU → fc 10. As in
    Caffe there is no nonlinearity after the convolutions, only after `fc1`.

    Attributes:
      parent, name: Linen's own module fields; the network has no settings of its own.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> model = LeNet5()
      >>> shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> sum(x.size for x in jax.tree.leaves(shapes)), list(shapes["params"])
      (431080, ['conv1', 'conv2', 'fc1', 'fc2'])

    References:
      Caffe `examples/mnist/lenet_train_test.prototxt`; Han et al., 2015 (LeNet-5 results).
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(20, (5, 5), padding="VALID", name="conv1")(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.Conv(50, (5, 5), padding="VALID", name="conv2")(x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(500, name="fc1")(x))
        return nn.Dense(10, name="fc2")(x)


class OriginMLP(nn.Module):
    """The origin document's MLP: 784-128-10, ReLU; 101,770 parameters.

    Attributes:
      parent, name: Linen's own module fields; the network has no settings of its own.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> model = OriginMLP()
      >>> shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> sum(x.size for x in jax.tree.leaves(shapes)), list(shapes["params"])
      (101770, ['fc1', 'fc2'])
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(128, name="fc1")(x))
        return nn.Dense(10, name="fc2")(x)


class FashionCNN(nn.Module):
    """A small CNN for Fashion-MNIST; 421,642 parameters.

    conv 32@3x3 SAME ReLU → max-pool 2 → conv 64@3x3 SAME ReLU → max-pool 2 → fc 128 ReLU → fc 10.

    Attributes:
      parent, name: Linen's own module fields; the network has no settings of its own.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> model = FashionCNN()
      >>> shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> sum(x.size for x in jax.tree.leaves(shapes)), list(shapes["params"])
      (421642, ['conv1', 'conv2', 'fc1', 'fc2'])
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(32, (3, 3), padding="SAME", name="conv1")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(64, (3, 3), padding="SAME", name="conv2")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(128, name="fc1")(x))
        return nn.Dense(10, name="fc2")(x)


MODELS: dict[str, type[nn.Module]] = {
    "lenet300": LeNet300100,
    "lenet5": LeNet5,
    "origin_mlp": OriginMLP,
    "fashion_cnn": FashionCNN,
}


def get_model(name: str) -> nn.Module:
    """Returns a new reference model by registry name.

    Args:
      name: A key of `MODELS`: ``"lenet300"``, ``"lenet5"``, ``"origin_mlp"`` or
        ``"fashion_cnn"``.

    Returns:
      An unbound Linen module; inputs float32 [B, 28, 28, 1], outputs [B, 10] logits.

    Raises:
      ValueError: If ``name`` is not in `MODELS` (the message lists the valid names).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> model = get_model("lenet300")
      >>> variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> jax.eval_shape(model.apply, variables, jnp.zeros((2, 28, 28, 1))).shape
      (2, 10)
      >>> get_model("lenet7")
      Traceback (most recent call last):
      ValueError: Unknown model 'lenet7'; valid names: lenet300, lenet5, origin_mlp, fashion_cnn.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(MODELS)}.")
    return MODELS[name]()
