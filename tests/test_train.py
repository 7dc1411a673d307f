"""Tests for dynprune.harness.train: real learning, one compilation, determinism, the seam."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dynprune.harness import data, models, train


@pytest.fixture(scope="module")
def small_mnist(mnist_train, mnist_test):
    """2,048 training and 1,000 test images of real MNIST."""
    head = lambda d, n: data.Dataset(d.images[:n], d.labels[:n])
    return head(mnist_train, 2048), head(mnist_test, 1000)


def _lenet300(seed: int = 0):
    model = models.get_model("lenet300")
    params = model.init(jax.random.key(seed), jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]
    return (lambda p, x: model.apply({"params": p}, x)), params


def _fit(apply_fn, params, tx, train_data, *, epochs, seed=0, eval_data=None, **kwargs):
    step = train.make_train_step(apply_fn, tx, **kwargs)
    eval_step = train.make_eval_step(apply_fn, **kwargs)
    result = train.fit(
        train.init_state(params, tx),
        step,
        train_data,
        epochs=epochs,
        batch_size=128,
        seed=seed,
        eval_step=eval_step if eval_data is not None else None,
        eval_data=eval_data,
        progress=False,
    )
    return result, step, eval_step


@pytest.mark.slow
def test_lenet300_learns_real_mnist(small_mnist):
    train_data, test_data = small_mnist
    apply_fn, params = _lenet300()
    result, *_ = _fit(
        apply_fn, params, optax.adam(1e-3), train_data, epochs=12, eval_data=test_data
    )
    history = result.history
    assert int(result.state.step) == 12 * (2048 // 128)
    assert len(history.train_loss) == len(history.eval_accuracy) == len(history.seconds) == 12
    assert history.train_loss[-1] < 0.25 * history.train_loss[0]
    assert history.eval_accuracy[-1] > 0.85  # chance is 0.1
    assert history.eval_loss[-1] < history.eval_loss[0]


def test_multi_epoch_run_compiles_each_step_once(small_mnist):
    train_data, test_data = small_mnist
    apply_fn, params = _lenet300()
    traces = []
    counting = lambda p, x: traces.append(x.shape) or apply_fn(p, x)
    # 1,000 test images at batch 128: the last eval batch is padded, not a new shape.
    result, step, eval_step = _fit(
        counting, params, optax.adam(1e-3), train_data, epochs=2, eval_data=test_data
    )
    assert int(result.state.step) == 2 * 16 and len(result.history.eval_accuracy) == 2
    assert traces == [(128, 28, 28, 1), (128, 28, 28, 1)]  # one train trace, one eval trace
    assert step._cache_size() == 1
    assert eval_step._cache_size() == 1


def test_same_seed_same_params_bitwise(small_mnist):
    train_data, _ = small_mnist
    subset = data.Dataset(train_data.images[:512], train_data.labels[:512])

    def run(seed):
        apply_fn, params = _lenet300(seed)
        result, *_ = _fit(apply_fn, params, optax.adam(1e-3), subset, epochs=2, seed=seed)
        return jax.tree.leaves(jax.device_get(result.state.params))

    first, again, other = run(0), run(0), run(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_evaluate_counts_every_example_once(small_mnist):
    _, test_data = small_mnist
    apply_fn, params = _lenet300()
    state = train.init_state(params, optax.sgd(0.1))
    accuracy, loss = train.evaluate(train.make_eval_step(apply_fn), state, test_data, 128)
    logits = apply_fn(params, data.preprocess(test_data.images))
    expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits, test_data.labels)
    assert accuracy == pytest.approx(float((logits.argmax(-1) == test_data.labels).mean()))
    assert loss == pytest.approx(float(expected_loss.mean()), rel=1e-5)


def test_evaluate_refuses_an_empty_dataset():
    state = train.init_state(jnp.zeros((784, 10)), optax.sgd(0.1))
    eval_step = train.make_eval_step(lambda p, x: x.reshape(len(x), -1) @ p)
    empty = data.Dataset(np.zeros((0, 28, 28, 1), np.uint8), np.zeros(0, np.int32))
    with pytest.raises(ValueError, match="no examples to evaluate"):
        train.evaluate(eval_step, state, empty, batch_size=4)


def _masking_tx(mask):
    """SGD whose state is a fixed 0/1 mask tree, read by the forward pass below."""
    return optax.GradientTransformation(
        lambda params: mask,
        lambda grads, state, params=None: (jax.tree.map(lambda g: -0.1 * g, grads), state),
    )


def test_forward_params_sees_opt_state_and_shapes_gradients():
    apply_fn, params = _lenet300()
    mask = jax.tree.map(jnp.ones_like, params)
    mask["fc1"]["kernel"] = mask["fc1"]["kernel"].at[:, :150].set(0.0)
    forward = lambda p, opt_state: jax.tree.map(jnp.multiply, p, opt_state)
    tx = _masking_tx(mask)
    step = train.make_train_step(apply_fn, tx, forward_params=forward)
    before = jax.device_get(params)
    images = jax.random.uniform(jax.random.key(1), (128, 28, 28, 1))
    labels = jnp.arange(128, dtype=jnp.int32) % 10
    state, _ = step(train.init_state(params, tx), images, labels)
    kernel = np.asarray(state.params["fc1"]["kernel"])
    # Masked columns get no gradient through `w * mask`; the others train.
    np.testing.assert_array_equal(kernel[:, :150], before["fc1"]["kernel"][:, :150])
    assert not np.array_equal(kernel[:, 150:], before["fc1"]["kernel"][:, 150:])


def test_forward_params_reaches_eval():
    apply_fn, params = _lenet300()
    zero_last = lambda p, opt_state: {**p, "fc3": jax.tree.map(jnp.zeros_like, p["fc3"])}
    eval_step = train.make_eval_step(apply_fn, forward_params=zero_last)
    images = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1))
    labels = jnp.arange(16, dtype=jnp.int32) % 10
    weights = jnp.ones(16).at[-4:].set(0.0)
    _, sum_loss, count = eval_step(params, None, images, labels, weights)
    assert float(count) == 12
    assert float(sum_loss) == pytest.approx(12 * math.log(10), rel=1e-6)  # all-zero logits


class _NNXMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(784, 64, rngs=rngs)
        self.fc2 = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        return self.fc2(nnx.relu(self.fc1(x.reshape(x.shape[0], -1))))


@pytest.mark.slow
def test_nnx_model_trains_through_the_same_harness(small_mnist):
    train_data, test_data = small_mnist
    graphdef, params = nnx.split(_NNXMLP(nnx.Rngs(0)), nnx.Param)
    apply_fn = lambda p, x: nnx.merge(graphdef, p)(x)
    result, step, _ = _fit(
        apply_fn, params, optax.adam(1e-3), train_data, epochs=8, eval_data=test_data
    )
    assert isinstance(result.state.params, nnx.State)
    assert result.state.params["fc1"]["kernel"].shape == (784, 64)
    assert result.history.eval_accuracy[-1] > 0.85
    assert step._cache_size() == 1


def test_fit_needs_eval_step_and_data_together(small_mnist):
    train_data, test_data = small_mnist
    apply_fn, params = _lenet300()
    tx = optax.sgd(0.1)
    with pytest.raises(ValueError, match="together"):
        train.fit(
            train.init_state(params, tx),
            train.make_train_step(apply_fn, tx),
            train_data,
            epochs=1,
            batch_size=128,
            seed=0,
            eval_data=test_data,
        )


def test_mean_loss_is_the_loss_the_train_step_reports():
    apply_fn = lambda p, x: x.reshape(len(x), -1) @ p
    params = jax.random.normal(jax.random.key(0), (784, 10)) * 0.01
    images = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
    labels = jnp.arange(8, dtype=jnp.int32)
    expected = train.mean_loss(apply_fn, params, images, labels)  # the step donates params
    step = train.make_train_step(apply_fn, optax.sgd(0.1))
    _, metrics = step(train.init_state(params, optax.sgd(0.1)), images, labels)
    np.testing.assert_allclose(expected, metrics["loss"], rtol=1e-6)


def test_distillation_loss_against_a_numpy_computation():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 4, 5)).astype(np.float32)
    labels = np.array([0, 3, 1, 4])
    alpha, temperature = 0.6, 2.5

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p_t, p_s = softmax(teacher / temperature), softmax(student / temperature)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1)
    ce = -np.log(softmax(student)[np.arange(4), labels])
    expected = (1 - alpha) * ce + alpha * temperature**2 * kl
    loss = train.distillation(lambda x: jnp.asarray(teacher), alpha, temperature)
    np.testing.assert_allclose(loss(jnp.asarray(student), None, labels), expected, rtol=1e-5)
