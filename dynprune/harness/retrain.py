"""The retrain phase: rebuild a pruned model physically smaller, train it densely, measure it.

The origin document's loop ends prune → reconstruct → retrain → evaluate. After a run's last
masked phase (prune, or fine-tune), w ⊙ m is rebuilt by :func:`dynprune.surgery.reconstruct`
into a model whose removable units (whole neurons and channels, input pixels the first layer
no longer reads) are gone, and that model is trained *densely* for the config's ``retrain``
phase: its own optimizer (:func:`~dynprune.harness.optimizers.make_optimizer` over
T = epochs · steps per epoch), the data order of ``(seed, epoch)`` like every phase, and a
jitted step over ``reconstruction.apply``. Zeros that the masks left *inside* kept units
(unstructured sparsity) are not kept: the smaller model has no masks, and all its weights
train. A model with nothing removable (e.g. unstructured masks only) reconstructs to itself,
and the retrain continues on the same-size model; its ``architecture`` is then the dense one.

What :func:`retrain` measures, besides the errors:

- ``retrain_speedup`` = t_masked / t_reconstructed, the median seconds per train step of the
  masked full-size model (the fine-tune's step: w ⊙ m, masks fixed in the optimizer state)
  over the reconstructed model's, timed interleaved on one training batch by
  :func:`dynprune.stats.compare_latency` (:data:`REPS` rounds). A measurement on the run's
  machine, not a target: it is noisy on a shared CPU, and a model that shrank a little may
  not gain (a shrunk model's ``apply`` runs each example on its own, under ``vmap``).
- ``inference_speedup`` = ``{"1": s, "256": s}``: the same ratio for the eval forward pass
  (the dense model on w ⊙ m against the reconstructed one), on validation batches of 1 and 256.

The retrain phase is not checkpointed: a run interrupted during it resumes from the last
checkpoint of the phase before, and retrains again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import dynprune as dp
from dynprune.harness import data, train
from dynprune.harness.config import Phase
from dynprune.harness.optimizers import make_optimizer

__all__ = ["REPS", "fit", "reconstruct", "retrain", "speedups"]

log = logging.getLogger(__name__)

#: Timed rounds of each latency comparison (:func:`speedups`' default ``reps``).
REPS = 30
INFERENCE_BATCHES = (1, 256)


def reconstruct(
    apply_fn: train.ApplyFn, state: train.TrainState, example: Any
) -> dp.surgery.Reconstruction:
    """The physically smaller model of a pruning run's state: w ⊙ m with m from its optimizer.

    Args:
      apply_fn: the full-size model's pure ``apply_fn(params, x)``.
      state: a state whose optimizer holds the masks (:func:`dynprune.masks_of`).
      example: an input batch of the model's input shape, e.g. ``np.zeros((1, 28, 28, 1))``.

    Returns:
      :func:`dynprune.surgery.reconstruct`'s :class:`~dynprune.surgery.Reconstruction`
      ``(params, apply, kept, architecture)``: ``apply(params, x)`` computes what the masked
      model computes, up to float rounding.

    Raises:
      ValueError: the masks prune units that the model cannot lose (see
        :func:`dynprune.surgery.reconstruct`).

    Examples:
      >>> import numpy as np, jax, optax, dynprune as dp
      >>> from dynprune.harness import data, train
      >>> from dynprune.harness.config import Phase
      >>> def apply_fn(p, x):  # a 784-4-10 MLP, as Flax's Dense layers would compute it
      ...     h = jax.nn.relu(x.reshape(len(x), -1) @ p["fc1"]["kernel"] + p["fc1"]["bias"][None])
      ...     return h @ p["fc2"]["kernel"] + p["fc2"]["bias"][None]
      >>> rng = np.random.default_rng(0)
      >>> normal = lambda *shape: rng.normal(0, 0.1, shape).astype(np.float32)
      >>> params = {"fc1": {"kernel": normal(784, 4), "bias": normal(4)},
      ...     "fc2": {"kernel": normal(4, 10), "bias": normal(10)}}
      >>> example = np.zeros((1, 28, 28, 1), np.float32)
      >>> keep = np.array([True, True, False, False])  # hidden neurons 2 and 3 pruned
      >>> masks = {"fc1": {"kernel": np.broadcast_to(keep, (784, 4)), "bias": keep},
      ...     "fc2": {"kernel": None, "bias": None}}
      >>> state = train.init_state(params, dp.prune(optax.sgd(0.1), dp.algorithms.fixed(masks)))
      >>> small = reconstruct(apply_fn, state, example)
      >>> small.architecture
      '784-2'
      >>> jax.tree.map(np.shape, small.params)  # doctest: +NORMALIZE_WHITESPACE
      {'fc1': {'bias': (2,), 'kernel': (784, 2)},
       'fc2': {'bias': (10,), 'kernel': (2, 10)}}
    """
    masks = dp.masks_of(state.opt_state)
    params = dp.masked_params(state.params, state.opt_state)
    return dp.surgery.reconstruct(apply_fn, params, masks, example)


def fit(
    reconstruction: dp.surgery.Reconstruction,
    phase: Phase,
    train_data: data.Dataset,
    *,
    batch_size: int,
    seed: int,
    progress: bool = False,
    teacher: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[Any, list[list[dict[str, np.ndarray]]]]:
    """Trains the reconstructed model densely through ``phase``.

    Steps: ``phase.epochs`` epochs of ⌊n / batch_size⌋ full batches in the order of
    ``(seed, epoch)`` (:func:`dynprune.harness.data.batches` with ``phase.shift``), the
    optimizer :func:`~dynprune.harness.optimizers.make_optimizer` ``(phase, T)`` with T the
    phase's steps. An epoch whose loss is not finite is the last one.

    Args:
      reconstruction: the smaller model (its ``params`` are copied, not consumed).
      phase: the retrain phase (no pruner).
      train_data: the training split.
      batch_size: images per step.
      seed: the run's seed (data order).
      progress: show a tqdm bar over the steps.
      teacher: ``images -> logits`` of the dense model, for a phase with ``distill``
        (the loss is then :func:`~dynprune.harness.train.distillation`'s).

    Returns:
      The trained parameters, and each epoch's per-step metrics (host ``{"loss",
      "accuracy"}`` dicts, as the harness's other phases record them).

    Raises:
      ValueError: ``batch_size`` exceeds the training examples, or the phase distills
        without a ``teacher``.

    Examples:
      >>> import numpy as np, jax, optax, dynprune as dp
      >>> from dynprune.harness import data, train
      >>> from dynprune.harness.config import Phase
      >>> def apply_fn(p, x):  # a 784-4-10 MLP, as Flax's Dense layers would compute it
      ...     h = jax.nn.relu(x.reshape(len(x), -1) @ p["fc1"]["kernel"] + p["fc1"]["bias"][None])
      ...     return h @ p["fc2"]["kernel"] + p["fc2"]["bias"][None]
      >>> rng = np.random.default_rng(0)
      >>> normal = lambda *shape: rng.normal(0, 0.1, shape).astype(np.float32)
      >>> params = {"fc1": {"kernel": normal(784, 4), "bias": normal(4)},
      ...     "fc2": {"kernel": normal(4, 10), "bias": normal(10)}}
      >>> example = np.zeros((1, 28, 28, 1), np.float32)
      >>> keep = np.array([True, True, False, False])  # hidden neurons 2 and 3 pruned
      >>> masks = {"fc1": {"kernel": np.broadcast_to(keep, (784, 4)), "bias": keep},
      ...     "fc2": {"kernel": None, "bias": None}}
      >>> state = train.init_state(params, dp.prune(optax.sgd(0.1), dp.algorithms.fixed(masks)))
      >>> tiny = data.Dataset(rng.integers(0, 256, (16, 28, 28, 1), np.uint8),
      ...     rng.integers(0, 10, 16, np.int32))
      >>> small = reconstruct(apply_fn, state, example)
      >>> trained, epochs = fit(small, Phase(epochs=1, lr=1e-2), tiny, batch_size=8, seed=0)
      >>> trained["fc1"]["kernel"].shape, len(epochs), len(epochs[0]), sorted(epochs[0][0])
      ((784, 2), 1, 2, ['accuracy', 'loss'])
    """
    per_epoch = len(train_data.labels) // batch_size
    tx = make_optimizer(phase, phase.epochs * per_epoch)
    loss = None
    if phase.distill is not None:
        if teacher is None:
            raise ValueError(f"a phase with distill={dict(phase.distill)} needs a teacher")
        loss = train.distillation(teacher, **phase.distill)
    step = train.make_train_step(reconstruction.apply, tx, loss=loss)
    # The step donates its state: train a copy, so the reconstruction stays usable.
    state = train.init_state(jax.tree.map(jnp.copy, reconstruction.params), tx)
    epochs = []
    with tqdm(
        total=phase.epochs * per_epoch, disable=not progress, unit="step", desc="retrain"
    ) as bar:
        for epoch in range(phase.epochs):
            metrics = []
            for images, labels in data.batches(
                train_data, batch_size, seed=seed, epoch=epoch, shift=phase.shift
            ):
                state, m = step(state, images, labels)
                metrics.append(m)
                bar.update()
            epochs.append(jax.device_get(metrics))
            if not all(np.isfinite(m["loss"]) for m in epochs[-1]):
                break
    return state.params, epochs


def speedups(
    apply_fn: train.ApplyFn,
    state: train.TrainState,
    reconstruction: dp.surgery.Reconstruction,
    phase: Phase,
    batch: tuple[np.ndarray, np.ndarray],
    validation: data.Dataset,
    *,
    reps: int = REPS,
) -> dict[str, Any]:
    """Measured speedups of the reconstructed model over the masked full-size one.

    Args:
      apply_fn: the full-size model's pure ``apply_fn(params, x)``.
      state: the masked model's state (masks in its optimizer).
      reconstruction: the smaller model.
      phase: the retrain phase (both train steps use its optimizer).
      batch: one training batch ``(images, labels)`` both train steps are timed on.
      validation: the inference batches are its first 1 and 256 images (zero-padded).
      reps: timed rounds of each :func:`dynprune.stats.compare_latency` (≥ 1; default
        :data:`REPS`).

    Returns:
      ``{"retrain_speedup": t_masked / t_reconstructed per train step,
      "inference_speedup": {"1": ..., "256": ...}}`` (> 1: the reconstruction is faster).
      Medians of measured times: they vary from call to call.

    Raises:
      ValueError: ``reps`` < 1.

    Examples:
      Three comparisons, each compiled and timed (seconds on a CPU):

      >>> import numpy as np, jax, optax, dynprune as dp
      >>> from dynprune.harness import data, train
      >>> from dynprune.harness.config import Phase
      >>> def apply_fn(p, x):  # a 784-4-10 MLP, as Flax's Dense layers would compute it
      ...     h = jax.nn.relu(x.reshape(len(x), -1) @ p["fc1"]["kernel"] + p["fc1"]["bias"][None])
      ...     return h @ p["fc2"]["kernel"] + p["fc2"]["bias"][None]
      >>> rng = np.random.default_rng(0)
      >>> normal = lambda *shape: rng.normal(0, 0.1, shape).astype(np.float32)
      >>> params = {"fc1": {"kernel": normal(784, 4), "bias": normal(4)},
      ...     "fc2": {"kernel": normal(4, 10), "bias": normal(10)}}
      >>> example = np.zeros((1, 28, 28, 1), np.float32)
      >>> keep = np.array([True, True, False, False])  # hidden neurons 2 and 3 pruned
      >>> masks = {"fc1": {"kernel": np.broadcast_to(keep, (784, 4)), "bias": keep},
      ...     "fc2": {"kernel": None, "bias": None}}
      >>> state = train.init_state(params, dp.prune(optax.sgd(0.1), dp.algorithms.fixed(masks)))
      >>> tiny = data.Dataset(rng.integers(0, 256, (16, 28, 28, 1), np.uint8),
      ...     rng.integers(0, 10, 16, np.int32))
      >>> small = reconstruct(apply_fn, state, example)
      >>> batch = next(data.batches(tiny, 8, seed=0, epoch=0))
      >>> out = speedups(apply_fn, state, small, Phase(epochs=1, lr=1e-2), batch, tiny,
      ...     reps=3)  # doctest: +SKIP
      >>> sorted(out), sorted(out["inference_speedup"])  # doctest: +SKIP
      (['inference_speedup', 'retrain_speedup'], ['1', '256'])
    """
    masks = dp.masks_of(state.opt_state)
    masked = dp.masked_params(state.params, state.opt_state)
    optimizer = make_optimizer(phase, 1)  # the schedule's length does not change a step's cost
    masked_tx = dp.prune(optimizer, dp.algorithms.fixed(masks))
    masked_step = train.train_step(apply_fn, masked_tx, forward_params=dp.masked_params)
    small_step = train.train_step(reconstruction.apply, optimizer)
    calls: dict[str, tuple[Callable[..., Any], tuple]] = {
        "masked": (masked_step, (train.init_state(masked, masked_tx), *batch)),
        "reconstructed": (small_step, (train.init_state(reconstruction.params, optimizer), *batch)),
    }
    out: dict[str, Any] = {"retrain_speedup": _speedup(calls, reps)}
    out["inference_speedup"] = {}
    for size in INFERENCE_BATCHES:
        images = next(data.eval_batches(validation, size))[0]
        calls = {
            "masked": (apply_fn, (masked, images)),
            "reconstructed": (reconstruction.apply, (reconstruction.params, images)),
        }
        out["inference_speedup"][str(size)] = _speedup(calls, reps)
    return out


def _speedup(calls: Mapping[str, tuple[Callable[..., Any], tuple]], reps: int) -> float:
    return dp.stats.compare_latency(calls, reps=reps, baseline="masked").speedups["reconstructed"]


def retrain(
    apply_fn: train.ApplyFn,
    state: train.TrainState,
    phase: Phase,
    splits: Mapping[str, data.Dataset],
    *,
    batch_size: int,
    seed: int,
    test: bool,
    example: Any,
    eval_batch: int,
    progress: bool = False,
    teacher: Callable[[jax.Array], jax.Array] | None = None,
) -> tuple[dict[str, Any], list[list[dict[str, np.ndarray]]]]:
    """Reconstruct a pruned run's model, measure it, retrain it, evaluate it.

    Args:
      apply_fn: the full-size model's pure ``apply_fn(params, x)``.
      state: the run's final masked state (host arrays; masks in its optimizer).
      phase: the retrain phase.
      splits: ``{"train", "validation", "test"}`` datasets.
      batch_size: images per train step.
      seed: the run's seed (data order).
      test: also compute the retrained model's test error (final runs only).
      example: an input batch of the model's input shape for the surgery's trace.
      eval_batch: images per evaluation batch.
      progress: show a tqdm bar over the retrain's steps.
      teacher: the dense model's ``images -> logits``, for a retrain phase with ``distill``.

    Returns:
      The row's fields — ``architecture`` (kept units per position, see
      :class:`~dynprune.surgery.Reconstruction`), ``reconstructed_params`` (all parameters of
      the smaller model, biases included), ``reconstructed_macs`` (its MACs for one example,
      :func:`dynprune.stats.cost`), ``reconstructed_val_error`` (right after surgery, before
      any retraining: equal to the masked model's up to float rounding), ``retrain_speedup``,
      ``inference_speedup`` (see the module docstring), and the retrained model's
      ``val_error`` (and ``test_error`` if ``test``) — and each epoch's step metrics.

    Raises:
      ValueError: the masks prune units that the model cannot lose
        (:func:`dynprune.surgery.reconstruct`), or ``batch_size`` exceeds the training
        examples.

    Examples:
      It compiles, times (:data:`REPS` rounds) and trains: seconds on a CPU.

      >>> import numpy as np, jax, optax, dynprune as dp
      >>> from dynprune.harness import data, train
      >>> from dynprune.harness.config import Phase
      >>> def apply_fn(p, x):  # a 784-4-10 MLP, as Flax's Dense layers would compute it
      ...     h = jax.nn.relu(x.reshape(len(x), -1) @ p["fc1"]["kernel"] + p["fc1"]["bias"][None])
      ...     return h @ p["fc2"]["kernel"] + p["fc2"]["bias"][None]
      >>> rng = np.random.default_rng(0)
      >>> normal = lambda *shape: rng.normal(0, 0.1, shape).astype(np.float32)
      >>> params = {"fc1": {"kernel": normal(784, 4), "bias": normal(4)},
      ...     "fc2": {"kernel": normal(4, 10), "bias": normal(10)}}
      >>> example = np.zeros((1, 28, 28, 1), np.float32)
      >>> keep = np.array([True, True, False, False])  # hidden neurons 2 and 3 pruned
      >>> masks = {"fc1": {"kernel": np.broadcast_to(keep, (784, 4)), "bias": keep},
      ...     "fc2": {"kernel": None, "bias": None}}
      >>> state = train.init_state(params, dp.prune(optax.sgd(0.1), dp.algorithms.fixed(masks)))
      >>> tiny = data.Dataset(rng.integers(0, 256, (16, 28, 28, 1), np.uint8),
      ...     rng.integers(0, 10, 16, np.int32))
      >>> splits = {"train": tiny, "validation": tiny, "test": tiny}
      >>> row, epochs = retrain(apply_fn, state, Phase(epochs=1, lr=1e-2), splits, batch_size=8,
      ...     seed=0, test=True, example=example, eval_batch=8)  # doctest: +SKIP
      >>> row["architecture"], row["reconstructed_params"]  # doctest: +SKIP
      ('784-2', 1600)
      >>> sorted(row)  # doctest: +SKIP, +NORMALIZE_WHITESPACE
      ['architecture', 'inference_speedup', 'reconstructed_macs', 'reconstructed_params',
       'reconstructed_val_error', 'retrain_speedup', 'test_error', 'val_error']
    """
    small = reconstruct(apply_fn, state, example)
    log.info("retraining the reconstructed model %s", small.architecture)
    eval_step = train.make_eval_step(small.apply)

    def error(params: Any, split: str) -> float:
        evaluated = train.TrainState(params, optax.EmptyState(), jnp.zeros([], jnp.int32))
        return 1.0 - train.evaluate(eval_step, evaluated, splits[split], eval_batch)[0]

    macs = dp.stats.cost(small.apply, small.params, example)["total"]["macs_dense"]
    row: dict[str, Any] = {
        "architecture": small.architecture,
        "reconstructed_params": sum(int(np.size(x)) for x in jax.tree.leaves(small.params)),
        "reconstructed_macs": macs,
        "reconstructed_val_error": error(small.params, "validation"),
    }
    first = next(data.batches(splits["train"], batch_size, seed=seed, epoch=0, shift=phase.shift))
    row.update(speedups(apply_fn, state, small, phase, first, splits["validation"]))
    params, epochs = fit(
        small,
        phase,
        splits["train"],
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        teacher=teacher,
    )
    row["val_error"] = error(params, "validation")
    if test:
        row["test_error"] = error(params, "test")
    return row, epochs
