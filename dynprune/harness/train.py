"""Jitted train and eval steps for classifiers, and an epoch loop that compiles them once.

A model is any pure `apply_fn(params, images) -> logits`: a Linen module's
`lambda p, x: model.apply({"params": p}, x)`, or an NNX model split with
`graphdef, params = nnx.split(model, nnx.Param)` and `lambda p, x: nnx.merge(graphdef, p)(x)`.

`forward_params(params, opt_state) -> params` is the seam for pruning: it maps the stored
parameters to those the forward pass sees, e.g. `params * mask` with the masks read from the
optimizer state. Gradients flow through it, so a straight-through estimator written there applies.
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


class TrainState(NamedTuple):
    """Everything a train step updates.

    Attributes:
      params: Stored parameters (a pytree).
      opt_state: State of the `optax` transformation (masks live here when pruning).
      step: int32 scalar, the number of steps taken.
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
    """

    train_loss: list[float]
    eval_accuracy: list[float]
    eval_loss: list[float]
    seconds: list[float]


class FitResult(NamedTuple):
    """What `fit` returns: the final state, the history and the total wall time in seconds."""

    state: TrainState
    history: History
    seconds: float


def init_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    """Returns the state before the first step."""
    return TrainState(params, tx.init(params), jnp.zeros([], jnp.int32))


def _identity(params: Any, opt_state: Any) -> Any:
    del opt_state
    return params


def _loss_and_logits(
    apply_fn: ApplyFn, params: Any, images: jax.Array, labels: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Returns per-example softmax cross-entropy losses and the logits."""
    logits = apply_fn(params, images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels), logits


def mean_loss(apply_fn: ApplyFn, params: Any, images: jax.Array, labels: jax.Array) -> jax.Array:
    """The loss the train step minimises: mean softmax cross-entropy of `apply_fn(params, x)`."""
    return _loss_and_logits(apply_fn, params, images, labels)[0].mean()


def train_step(
    apply_fn: ApplyFn,
    tx: optax.GradientTransformation,
    *,
    forward_params: ForwardParams | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns the pure (unjitted) `step(state, images, labels) -> (state, metrics)`.

    The loss is the mean softmax cross-entropy of `apply_fn(forward_params(params, opt_state),
    images)`; its gradient with respect to the stored params goes through
    `tx.update(grads, opt_state, params)` and `dynprune.apply_updates` (`optax.apply_updates`,
    and exact zeros at pruned positions in hard mode). Jit it (as
    `make_train_step` does) or `vmap` it over a stack of states first.

    Args:
      apply_fn: `apply_fn(params, images) -> logits`, pure.
      tx: Any optax transformation (extra-args ones get no extra arguments).
      forward_params: Maps stored params and the optimizer state to the params the forward pass
        sees; defaults to the identity.

    Returns:
      The step; `metrics` holds the batch's scalar `loss` and `accuracy`.
    """
    forward_params = forward_params or _identity

    def loss_fn(params, opt_state, images, labels):
        losses, logits = _loss_and_logits(
            apply_fn, forward_params(params, opt_state), images, labels
        )
        return losses.mean(), logits

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
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns the jitted `step(state, images, labels) -> (state, metrics)` of `train_step`.

    The input state is donated: do not use it after the call.

    Args:
      apply_fn: `apply_fn(params, images) -> logits`, pure.
      tx: Any optax transformation (extra-args ones get no extra arguments).
      forward_params: As in `train_step`.

    Returns:
      The jitted step; `metrics` holds the batch's scalar `loss` and `accuracy`.

    Examples:
      >>> step = make_train_step(lambda p, x: x.reshape(len(x), -1) @ p, optax.sgd(0.1))
      >>> state = init_state(jnp.zeros((784, 10)), optax.sgd(0.1))
      >>> state, metrics = step(state, jnp.ones((8, 28, 28, 1)), jnp.zeros(8, jnp.int32))
    """
    return jax.jit(train_step(apply_fn, tx, forward_params=forward_params), donate_argnums=0)


def make_eval_step(
    apply_fn: ApplyFn, *, forward_params: ForwardParams | None = None
) -> Callable[..., tuple[jax.Array, jax.Array, jax.Array]]:
    """Returns a jitted `eval(params, opt_state, images, labels, weights)`.

    Args:
      apply_fn: `apply_fn(params, images) -> logits`, pure.
      forward_params: As in `make_train_step`.

    Returns:
      The jitted function, returning `(sum_correct, sum_loss, count)` over the batch, each
      example weighted by `weights` (0 for padding, see `data.eval_batches`).
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
    """Returns `(accuracy, mean loss)` over every example of `data`, padding excluded."""
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
