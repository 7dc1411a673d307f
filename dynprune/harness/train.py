"""Jitted train and eval steps for classifiers, and an epoch loop that compiles them once.

A model is any pure `apply_fn(params, images) -> logits`: a Linen module's
`lambda p, x: model.apply({"params": p}, x)`, or an NNX model split with
`graphdef, params = nnx.split(model, nnx.Param)` and `lambda p, x: nnx.merge(graphdef, p)(x)`.

`forward_params(params, opt_state) -> params` is the seam for pruning: it maps the stored
parameters to those the forward pass sees, e.g. `params * mask` with the masks read from the
optimizer state. Gradients flow through it, so a straight-through estimator written there applies.
`penalty(params, opt_state) -> scalar` adds a term on the parameters themselves to the loss (e.g.
Sparse VD's KL, :func:`dynprune.algorithms.sgvb`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from dynprune import transform
from dynprune.harness.data import Dataset, batches, eval_batches

ApplyFn = Callable[[Any, jax.Array], jax.Array]
ForwardParams = Callable[[Any, Any], Any]
LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""``loss(logits, images, labels) -> per-example losses`` (e.g. :func:`distillation`)."""
Penalty = Callable[[Any, Any], jax.Array]
"""``penalty(params, opt_state) -> scalar`` added to the batch's mean loss."""


class TrainState(NamedTuple):
    """Everything a train step updates.

    Attributes:
      params: Stored parameters (a pytree).
      opt_state: State of the `optax` transformation (masks live here when pruning).
      step: int32 scalar, the number of steps taken.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> state = TrainState(jnp.zeros(3), optax.sgd(0.1).init(jnp.zeros(3)), jnp.array(0))
      >>> state.params.shape, int(state.step)
      ((3,), 0)
    """

    params: Any
    opt_state: Any
    step: jax.Array


class History(NamedTuple):
    """Per-epoch measurements of a `fit` run, one entry per epoch.

    Attributes:
      train_loss: Mean training loss over the epoch's steps.
      eval_accuracy: Accuracy on the evaluation data after the epoch (empty without it).
      eval_loss: Mean loss on the evaluation data after the epoch (empty without it).
      seconds: Wall time of the epoch, evaluation included.

    Examples:
      >>> history = History(train_loss=[0.41, 0.22], eval_accuracy=[0.95, 0.97],
      ...                   eval_loss=[0.17, 0.10], seconds=[3.2, 3.0])
      >>> max(history.eval_accuracy)
      0.97
    """

    train_loss: list[float]
    eval_accuracy: list[float]
    eval_loss: list[float]
    seconds: list[float]


class FitResult(NamedTuple):
    """What `fit` returns: the final state, the history and the total wall time in seconds.

    Attributes:
      state: The state after the last step.
      history: The per-epoch measurements.
      seconds: Wall time of the whole run, evaluation included.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> result = FitResult(init_state(jnp.zeros(3), optax.sgd(0.1)), History([], [], [], []), 0.0)
      >>> result.history.train_loss, int(result.state.step)
      ([], 0)
    """

    state: TrainState
    history: History
    seconds: float


def init_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    """Returns the state before the first step: `tx.init(params)` and step 0.

    Args:
      params: Initial parameters (a pytree).
      tx: The optax transformation the steps will use (e.g. a :func:`dynprune.prune` one).

    Returns:
      The state.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> state = init_state({"w": jnp.ones((2, 2))}, optax.adam(1e-3))
      >>> int(state.step), state.opt_state[0].mu["w"].shape
      (0, (2, 2))
    """
    return TrainState(params, tx.init(params), jnp.zeros([], jnp.int32))


def _identity(params: Any, opt_state: Any) -> Any:
    del opt_state
    return params


def _cross_entropy(logits: jax.Array, images: jax.Array, labels: jax.Array) -> jax.Array:
    del images
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _loss_and_logits(
    apply_fn: ApplyFn,
    params: Any,
    images: jax.Array,
    labels: jax.Array,
    loss: LossFn = _cross_entropy,
) -> tuple[jax.Array, jax.Array]:
    """Returns per-example losses (softmax cross-entropy by default) and the logits."""
    logits = apply_fn(params, images)
    return loss(logits, images, labels), logits


def distillation(
    teacher: Callable[[jax.Array], jax.Array], alpha: float, temperature: float
) -> LossFn:
    """Knowledge distillation's per-example loss, for ``train_step``'s ``loss``.

    With student logits z_s, the teacher's z_t = ``teacher(images)`` (no gradient), the label y
    and p^T(z) = softmax(z / T):

        ℓ = (1 − α) · CE(y, z_s) + α · T² · KL(p^T(z_t) ‖ p^T(z_s)).

    The T² keeps the soft term's gradient on the scale of the hard one as T changes.

    Args:
      teacher: ``images -> logits`` of the teacher (e.g. the dense model before pruning).
      alpha: α in [0, 1], the weight of the teacher's softened outputs (0: plain CE).
      temperature: T > 0.

    Returns:
      ``loss(logits, images, labels) -> per-example losses``.

    Examples:
      A student that already matches its teacher pays only (1 − α) of its cross-entropy:

      >>> import jax.numpy as jnp
      >>> logits = jnp.array([[2.0, 0.0, -1.0]])
      >>> loss = distillation(lambda x: logits, alpha=0.5, temperature=4.0)
      >>> ce = _cross_entropy(logits, None, jnp.array([0]))
      >>> bool(jnp.allclose(loss(logits, None, jnp.array([0])), 0.5 * ce))
      True

    References:
      Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015.
    """

    def loss(logits: jax.Array, images: jax.Array, labels: jax.Array) -> jax.Array:
        soft = jax.nn.softmax(jax.lax.stop_gradient(teacher(images)) / temperature)
        student = jax.nn.log_softmax(logits / temperature)
        kl = jnp.sum(soft * (jnp.log(jnp.clip(soft, 1e-30)) - student), axis=-1)
        hard = _cross_entropy(logits, images, labels)
        return (1.0 - alpha) * hard + alpha * temperature**2 * kl

    return loss


def mean_loss(apply_fn: ApplyFn, params: Any, images: jax.Array, labels: jax.Array) -> jax.Array:
    """The loss the train step minimises: mean softmax cross-entropy of `apply_fn(params, x)`.

    L = −(1/B) Σ_i log softmax(apply_fn(params, images))[i, labels[i]].

    Args:
      apply_fn: `apply_fn(params, images) -> logits` [B, classes], pure.
      params: The parameters the logits are computed with.
      images: The batch's inputs, [B, ...].
      labels: int [B], class indices in [0, classes).

    Returns:
      A float scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> loss = mean_loss(lambda p, x: x @ p, jnp.zeros((3, 10)), jnp.ones((2, 3)),
      ...                  jnp.array([0, 1]))
      >>> round(float(loss), 4)  # uniform over 10 classes: log 10
      2.3026
    """
    return _loss_and_logits(apply_fn, params, images, labels)[0].mean()


def train_step(
    apply_fn: ApplyFn,
    tx: optax.GradientTransformation,
    *,
    forward_params: ForwardParams | None = None,
    loss: LossFn | None = None,
    penalty: Penalty | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns the pure (unjitted) `step(state, images, labels) -> (state, metrics)`.

    The loss is the mean of `loss` (default: softmax cross-entropy) on the logits
    `apply_fn(forward_params(params, opt_state), images)`, plus `penalty(params, opt_state)`
    if given; its gradient with respect to the
    stored params goes through `tx.update(grads, opt_state, params)` and
    `dynprune.apply_updates` (`optax.apply_updates`, and exact zeros at pruned positions in
    hard mode). Jit it (as
    `make_train_step` does) or `vmap` it over a stack of states first.

    Args:
      apply_fn: `apply_fn(params, images) -> logits`, pure.
      tx: Any optax transformation (extra-args ones get no extra arguments).
      forward_params: Maps stored params and the optimizer state to the params the forward pass
        sees; defaults to the identity.
      loss: `loss(logits, images, labels) -> per-example losses` (:data:`LossFn`, e.g.
        :func:`distillation`); defaults to softmax cross-entropy.
      penalty: `penalty(params, opt_state) -> scalar` (:data:`Penalty`) added to the mean
        loss, its gradient included (e.g. :func:`dynprune.algorithms.sgvb`'s β·KL/N);
        default none.

    Returns:
      The step; `metrics` holds the batch's scalar `loss` (the penalty included) and
      `accuracy`.

    Examples:
      A forward pass that sees `params * mask` gives the masked entries no gradient:

      >>> import jax, jax.numpy as jnp, optax
      >>> mask = jnp.array([[1.0, 1.0], [0.0, 0.0]])
      >>> step = jax.jit(train_step(lambda p, x: x @ p, optax.sgd(0.1),
      ...                           forward_params=lambda p, opt_state: p * mask))
      >>> state, metrics = step(init_state(jnp.ones((2, 2)), optax.sgd(0.1)),
      ...                       jnp.ones((4, 2)), jnp.zeros(4, jnp.int32))
      >>> state.params[1].tolist(), bool(state.params[0, 0] > 1), int(state.step)
      ([1.0, 1.0], True, 1)

      A penalty on the parameters enters the loss and its gradient:

      >>> step = train_step(lambda p, x: x @ p, optax.sgd(0.1),
      ...                   penalty=lambda p, opt_state: 0.5 * jnp.sum(p**2))
      >>> _, metrics = step(init_state(jnp.ones((2, 2)), optax.sgd(0.1)),
      ...                   jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32))
      >>> round(float(metrics["loss"]), 4)  # log 2 + 0.5 · 4
      2.6931
    """
    forward_params = forward_params or _identity

    def loss_fn(params, opt_state, images, labels):
        losses, logits = _loss_and_logits(
            apply_fn, forward_params(params, opt_state), images, labels, loss or _cross_entropy
        )
        total = losses.mean()
        if penalty is not None:
            total = total + penalty(params, opt_state)
        return total, logits

    def step(state: TrainState, images: jax.Array, labels: jax.Array):
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.opt_state, images, labels
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = transform.apply_updates(state.params, updates, opt_state)
        accuracy = (logits.argmax(-1) == labels).mean()
        return TrainState(params, opt_state, state.step + 1), {"loss": loss, "accuracy": accuracy}

    return step


def make_train_step(
    apply_fn: ApplyFn,
    tx: optax.GradientTransformation,
    *,
    forward_params: ForwardParams | None = None,
    loss: LossFn | None = None,
    penalty: Penalty | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns the jitted `step(state, images, labels) -> (state, metrics)` of `train_step`.

    The input state is donated: do not use it after the call.

    Args:
      apply_fn: `apply_fn(params, images) -> logits`, pure.
      tx: Any optax transformation (extra-args ones get no extra arguments).
      forward_params: As in `train_step`.
      loss: As in `train_step`.
      penalty: As in `train_step`.

    Returns:
      The jitted step; `metrics` holds the batch's scalar `loss` and `accuracy`.

    Examples:
      >>> import jax.numpy as jnp, optax
      >>> step = make_train_step(lambda p, x: x.reshape(len(x), -1) @ p, optax.sgd(0.1))
      >>> state = init_state(jnp.zeros((784, 10)), optax.sgd(0.1))
      >>> state, metrics = step(state, jnp.ones((8, 28, 28, 1)), jnp.zeros(8, jnp.int32))
      >>> int(state.step), round(float(metrics["loss"]), 4)  # loss before the update: log 10
      (1, 2.3026)
    """
    step = train_step(apply_fn, tx, forward_params=forward_params, loss=loss, penalty=penalty)
    return jax.jit(step, donate_argnums=0)


def make_eval_step(
    apply_fn: ApplyFn, *, forward_params: ForwardParams | None = None
) -> Callable[..., tuple[jax.Array, jax.Array, jax.Array]]:
    """Returns a jitted `eval(params, opt_state, images, labels, weights)`.

    Args:
      apply_fn: `apply_fn(params, images) -> logits`, pure.
      forward_params: As in `make_train_step`.

    Returns:
      The jitted function, returning `(sum_correct, sum_loss, count)` over the batch, each
      example weighted by `weights` (0 for padding, see `data.eval_batches`): Σ w·[argmax =
      label], Σ w·loss and Σ w.

    Examples:
      >>> import jax.numpy as jnp
      >>> eval_step = make_eval_step(lambda p, x: x @ p)
      >>> sums = eval_step(jnp.eye(2), None, jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
      ...                  jnp.array([0, 0, 1]), jnp.array([1.0, 1.0, 0.0]))
      >>> [round(float(x), 4) for x in sums]  # 1 of 2 real examples right; the 3rd is padding
      [1.0, 1.6265, 2.0]
    """
    forward_params = forward_params or _identity

    def eval_step(params, opt_state, images, labels, weights):
        losses, logits = _loss_and_logits(
            apply_fn, forward_params(params, opt_state), images, labels
        )
        correct = (logits.argmax(-1) == labels).astype(weights.dtype)
        return (correct * weights).sum(), (losses * weights).sum(), weights.sum()

    return jax.jit(eval_step)


def evaluate(
    eval_step: Callable[..., tuple[jax.Array, jax.Array, jax.Array]],
    state: TrainState,
    data: Dataset,
    batch_size: int,
) -> tuple[float, float]:
    """Returns `(accuracy, mean loss)` over every example of `data`, padding excluded.

    Args:
      eval_step: From `make_eval_step`, called as `eval_step(state.params, state.opt_state,
        images, labels, weights)` on each batch of `data.eval_batches`.
      state: The state to evaluate.
      data: The examples (at least one).
      batch_size: Examples per evaluation batch; the last batch is padded.

    Returns:
      Accuracy in [0, 1] and mean softmax cross-entropy, as Python floats.

    Raises:
      ValueError: If `data` has no examples.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, optax
      >>> state = init_state(jnp.zeros((784, 10)), optax.sgd(0.1))
      >>> data = Dataset(np.zeros((5, 28, 28, 1), np.uint8), np.zeros(5, np.int32))
      >>> eval_step = make_eval_step(lambda p, x: x.reshape(len(x), -1) @ p)
      >>> accuracy, loss = evaluate(eval_step, state, data, batch_size=4)
      >>> accuracy, round(loss, 4)  # ties go to class 0, every label's class
      (1.0, 2.3026)
    """
    if not len(data.labels):
        raise ValueError("evaluate: no examples to evaluate (the dataset is empty)")
    totals = [
        eval_step(state.params, state.opt_state, images, labels, weights)
        for images, labels, weights in eval_batches(data, batch_size)
    ]
    correct, loss, count = np.sum(jax.device_get(totals), axis=0, dtype=np.float64)
    return float(correct / count), float(loss / count)


def fit(
    state: TrainState,
    train_step: Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict]],
    train_data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    eval_step: Callable[..., tuple[jax.Array, jax.Array, jax.Array]] | None = None,
    eval_data: Dataset | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, TrainState, History], None] | None = None,
    shift: int = 0,
) -> FitResult:
    """Trains for `epochs` epochs of full batches, evaluating after each epoch.

    Every batch has the same shape, so `train_step` and `eval_step` compile once for the whole
    run. The data order depends only on `(seed, epoch)`; with the same initial state the run is
    reproducible bitwise on CPU.

    Args:
      state: Initial state (donated to `train_step`).
      train_step: From `make_train_step`, or any function with its signature.
      train_data: Training examples.
      epochs: Number of passes over `train_data`.
      batch_size: Examples per step; the remainder of each shuffled epoch is dropped.
      seed: Seed of the data order.
      eval_step: From `make_eval_step`; needed with `eval_data`.
      eval_data: Evaluated after every epoch (e.g. the validation split), if given.
      progress: Show a tqdm progress bar over steps.
      on_epoch_end: Called as `on_epoch_end(epoch, state, history)` after each epoch.
      shift: Random-translation augmentation of the training images (see `data.batches`).

    Returns:
      The final state, the per-epoch history and the total wall time.

    Raises:
      ValueError: If only one of `eval_step` and `eval_data` is given, or `batch_size` exceeds
        the number of training examples.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, optax
      >>> apply_fn = lambda p, x: x.reshape(len(x), -1) @ p
      >>> tx = optax.sgd(0.1)
      >>> data = Dataset(np.zeros((10, 28, 28, 1), np.uint8), np.zeros(10, np.int32))
      >>> result = fit(init_state(jnp.zeros((784, 10)), tx), make_train_step(apply_fn, tx), data,
      ...              epochs=2, batch_size=4, seed=0, eval_step=make_eval_step(apply_fn),
      ...              eval_data=data, progress=False)
      >>> int(result.state.step), len(result.history.train_loss), result.history.eval_accuracy
      (4, 2, [1.0, 1.0])
    """
    if (eval_step is None) != (eval_data is None):
        raise ValueError("Pass eval_step and eval_data together, or neither.")
    history = History([], [], [], [])
    steps_per_epoch = len(train_data.labels) // batch_size
    start = time.perf_counter()
    with tqdm(total=epochs * steps_per_epoch, disable=not progress, unit="step") as bar:
        for epoch in range(epochs):
            epoch_start = time.perf_counter()
            losses = []
            epoch_batches = batches(train_data, batch_size, seed=seed, epoch=epoch, shift=shift)
            for images, labels in epoch_batches:
                state, metrics = train_step(state, images, labels)
                losses.append(metrics["loss"])
                bar.update()
            history.train_loss.append(float(np.mean(jax.device_get(losses))))
            postfix = {"epoch": epoch + 1, "loss": f"{history.train_loss[-1]:.4f}"}
            if eval_data is not None:
                accuracy, loss = evaluate(eval_step, state, eval_data, batch_size)
                history.eval_accuracy.append(accuracy)
                history.eval_loss.append(loss)
                postfix["eval_acc"] = f"{accuracy:.4f}"
            history.seconds.append(time.perf_counter() - epoch_start)
            bar.set_postfix(postfix)
            if on_epoch_end is not None:
                on_epoch_end(epoch, state, history)
    return FitResult(state, history, time.perf_counter() - start)
