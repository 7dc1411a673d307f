"""The per-input pruning experiment: a gated CNN against the same network without gates and
against static channel pruning at equal MACs.

Three methods per (dataset, seed), all on one :class:`dynprune.gating.GatedCNN`:

- ``"dense"``: the network without gates (``GatedCNN.dense``), trained ``epochs`` epochs.
- ``"gated"``: prefix gates (dynamic width, Li et al. 2021) at density d, trained from
  scratch ``epochs`` epochs with FBS's loss (Gao et al. 2019)

      L = CE(f(x; d), y) + λ · Σ_layers mean_batch ‖s_l‖₁.

- ``"static"``: the dense run's weights (same seed); each gated layer keeps the same
  fraction f of its output channels, the largest L1 filter norms (Li et al. 2017), f chosen
  on a grid of whole channels so that the MACs are closest to the gated run's mean
  effective MACs on the validation images; fine-tuned ``static_epochs`` epochs under the
  masks, then rebuilt by :func:`dynprune.surgery.reconstruct` into a smaller dense network.

All train on the training split minus the ``validation`` held-out images. A row is
evaluated on ``split``: ``"validation"`` rows choose the density (:func:`choose_density`),
``"test"`` rows report the chosen configuration. Each row has ``error``, ``mac_ratio``
(dense MACs ÷ MACs executed per example, predictors included), ``speedup_b1`` and
``speedup_b64`` (dense ÷ method latency: at batch 1, the sum over ``latency_examples``
images of each image's median of interleaved calls; at batch 64, the median over
interleaved calls on one batch). Gated rows add the per-input accounting: MACs p50/p95,
kept fraction per layer, mean pairwise Jaccard of kept sets, density per class.

References:
  Gao et al., "Dynamic Channel Pruning: Feature Boosting and Suppression", ICLR 2019;
  Li et al., "Dynamic Slimmable Network", CVPR 2021;
  Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import dynprune as dp
from dynprune import gating
from dynprune.harness import cache as cache_lib
from dynprune.harness import data as data_lib
from dynprune.harness import results

log = logging.getLogger(__name__)

METHODS = ("dense", "gated", "static")
SPLITS = ("validation", "test")
SMALL = {
    "features": [4, 8, 8],
    "stem_pool": True,
    "buckets": [0.25, 0.5, 0.75, 1.0],
    "epochs": 1,
    "static_epochs": 1,
    "batch_size": 64,
    "learning_rate": 0.003,
    "l1": 0.0001,
    "validation": 1000,
    "train_examples": 256,
    "densities": [0.5, 0.3],
    "max_loss": 0.003,
    "selection_seed": 0,
    "seeds": [0, 1, 2],
    "datasets": ["mnist"],
    "latency_examples": 2,
    "latency_reps": 2,
}
"""A tiny configuration (a 4-8-8 network on 256 images) for examples and quick checks: it
exercises every step in seconds and measures nothing worth reporting."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The experiment, as data (``experiments/gating.json``).

    Examples:
      >>> from dynprune.harness import gating_runs
      >>> config = gating_runs.Config.from_dict(gating_runs.SMALL)
      >>> config.model().features, config.densities
      ((4, 8, 8), (0.5, 0.3))

    Attributes:
      features: the :class:`~dynprune.gating.GatedCNN`'s (stem, gated 1, …, gated L) widths.
      stem_pool: max-pool the stem's output.
      buckets: the prefix gates' width fractions.
      epochs: training epochs of the dense and gated runs.
      static_epochs: fine-tuning epochs of the static run.
      batch_size: training batch.
      learning_rate: Adam's step size (constant).
      l1: λ, the weight of the saliencies' L1 penalty.
      validation: training images held out as the validation split.
      train_examples: train on the first this many of the remaining training images
        (0: all of them; a smaller number makes a quick check, not a result).
      densities: the candidate densities d, chosen among on validation.
      max_loss: the most validation error a chosen density may add to the dense run's
        (a fraction: 0.003 is 0.3 points).
      selection_seed: the seed of the validation runs.
      seeds: the seeds of the test runs, fixed in advance.
      datasets: dataset names (:data:`dynprune.harness.data.DATASETS`).
      latency_examples: images timed one at a time for ``speedup_b1``.
      latency_reps: timed rounds per image (batch 1) or per batch (batch 64).
    """

    features: tuple[int, ...]
    stem_pool: bool
    buckets: tuple[float, ...]
    epochs: int
    static_epochs: int
    batch_size: int
    learning_rate: float
    l1: float
    validation: int
    train_examples: int
    densities: tuple[float, ...]
    max_loss: float
    selection_seed: int
    seeds: tuple[int, ...]
    datasets: tuple[str, ...]
    latency_examples: int
    latency_reps: int

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        """A config from a JSON object; unknown or missing fields are refused by name.

        Args:
          values: one value per field (lists become tuples); a ``"comment"`` is allowed.

        Returns:
          The :class:`Config`.

        Raises:
          ValueError: naming unknown and missing fields, a density outside (0, 1] or an
            unknown dataset.

        Examples:
          >>> from dynprune.harness import gating_runs
          >>> gating_runs.Config.from_dict({**gating_runs.SMALL, "datasets": ["cifar10"]})
          Traceback (most recent call last):
          ...
          ValueError: gating config: unknown dataset 'cifar10'
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names - {"comment"})
        missing = sorted(names - set(values))
        if unknown or missing:
            raise ValueError(f"gating config: unknown fields {unknown}, missing fields {missing}")
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        args.pop("comment", None)
        config = cls(**args)
        for d in config.densities:
            gating.check_density(d)
        for name in config.datasets:
            if name not in data_lib.DATASETS:
                raise ValueError(f"gating config: unknown dataset {name!r}")
        return config

    def model(self) -> gating.GatedCNN:
        """The network every method shares: a prefix-mode :class:`~dynprune.gating.GatedCNN`."""
        return gating.GatedCNN(
            features=self.features, mode="prefix", buckets=self.buckets, stem_pool=self.stem_pool
        )

    def training(self) -> dict[str, Any]:
        """The fields a run's key depends on besides (dataset, method, seed, split, density):
        every field but the choices among runs (densities, seeds, datasets, selection) and
        the latency measurement's size."""
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k
            not in {"densities", "max_loss", "selection_seed", "seeds", "datasets"}
            | {"latency_examples", "latency_reps"}
        }


def load_config(path: str | os.PathLike) -> Config:
    """Reads a :class:`Config` from a JSON file.

    Args:
      path: the file (``experiments/gating.json``).

    Returns:
      The :class:`Config` (:meth:`Config.from_dict` checks it).

    Examples:
      >>> import json, tempfile, pathlib
      >>> from dynprune.harness import gating_runs
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "gating.json"
      >>> _ = path.write_text(json.dumps(gating_runs.SMALL))
      >>> gating_runs.load_config(path).epochs
      1
    """
    return Config.from_dict(json.loads(Path(path).read_text()))


def run_key(
    config: Config, dataset: str, method: str, seed: int, split: str, density: float | None
) -> str:
    """The key of one run's row (its identity: a row with this key is written once).

    Args:
      config: the experiment (only :meth:`Config.training`'s fields count).
      dataset: the dataset name.
      method: one of :data:`METHODS`.
      seed: the run's seed.
      split: where the row's error is measured (:data:`SPLITS`).
      density: the gates' d (None for dense runs).

    Returns:
      16 hex digits (:func:`dynprune.harness.results.run_key`).

    Examples:
      >>> from dynprune.harness import gating_runs
      >>> config = gating_runs.Config.from_dict(gating_runs.SMALL)
      >>> a = gating_runs.run_key(config, "mnist", "gated", 0, "test", 0.5)
      >>> len(a), a == gating_runs.run_key(config, "mnist", "gated", 0, "test", 0.3)
      (16, False)
    """
    return results.run_key(
        {
            "experiment": "gating",
            "dataset": dataset,
            "method": method,
            "seed": seed,
            "split": split,
            "density": density,
            **config.training(),
        }
    )


def _dense_params(params: Any) -> Any:
    """The parameters ``GatedCNN.dense`` reads: every layer but the predictors."""
    return {
        name: ({"layer": sub["layer"]} if name.startswith("gated_") else sub)
        for name, sub in params.items()
    }


def _losses(
    model: gating.GatedCNN, method: str, l1: float, masks: Any
) -> Callable[[Any, jax.Array, jax.Array, Any], jax.Array]:
    def loss(params: Any, images: jax.Array, labels: jax.Array, density: Any) -> jax.Array:
        if method == "gated":
            logits, gates = model.apply({"params": params}, images, density)
            penalty = l1 * gating.l1_penalty(gates)
        else:
            if masks is not None:
                params = dp.apply_masks(params, masks)
            logits = model.apply({"params": params}, images, method=gating.GatedCNN.dense)
            penalty = 0.0
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return ce + penalty

    return loss


def train(
    config: Config,
    method: str,
    train_data: data_lib.Dataset,
    seed: int,
    *,
    density: float = 1.0,
    params: Any = None,
    masks: Any = None,
    epochs: int | None = None,
) -> Any:
    """Trains one method's parameters with Adam; returns them.

    Args:
      config: the experiment.
      method: ``"dense"``, ``"gated"``, or ``"static"`` (fine-tunes ``params`` under ``masks``).
      train_data: the training images.
      seed: initialisation (when ``params`` is None) and data order.
      density: the gates' d (gated runs).
      params: start from these instead of a fresh initialisation.
      masks: neuron-shaped masks kept applied in the forward pass (static runs).
      epochs: default ``config.epochs``.

    Returns:
      The trained parameters (without the predictors' for dense and static runs).

    Examples:
      >>> import numpy as np
      >>> from dynprune.harness import data, gating_runs
      >>> config = gating_runs.Config.from_dict(gating_runs.SMALL)
      >>> images = np.random.default_rng(0).integers(0, 255, (64, 28, 28, 1), np.uint8)
      >>> tiny = data.Dataset(images, np.arange(64) % 10)
      >>> params = gating_runs.train(config, "gated", tiny, seed=0, density=0.5)
      >>> sorted(params), sorted(params["gated_0"])
      (['gated_0', 'gated_1', 'head', 'stem'], ['layer', 'predictor'])
    """
    model = config.model()
    if params is None:
        params = model.init(jax.random.key(seed), jnp.zeros((1, 28, 28, 1)))["params"]
        if method != "gated":
            params = _dense_params(params)
    tx = optax.adam(config.learning_rate)
    loss = _losses(model, method, config.l1, masks)

    @jax.jit
    def step(params, opt_state, images, labels, d):
        value, grads = jax.value_and_grad(loss)(params, images, labels, d)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = tx.init(params)
    d = np.float32(density)
    for epoch in range(config.epochs if epochs is None else epochs):
        for images, labels in data_lib.batches(
            train_data, config.batch_size, seed=seed, epoch=epoch
        ):
            params, opt_state, value = step(params, opt_state, images, labels, d)
        log.info("%s epoch %d: last batch loss %.4f", method, epoch + 1, float(value))
    return dp.apply_masks(params, masks) if masks is not None else params


def _predict(fn: Callable[..., Any], data: data_lib.Dataset, batch: int = 500) -> list[Any]:
    """``fn(images)`` over ``data`` in fixed-shape batches, padding rows dropped."""
    outs = []
    for images, _, weights in data_lib.eval_batches(data, batch):
        keep = int(weights.sum())
        outs.append(jax.tree.map(lambda a, k=keep: np.asarray(a)[:k], fn(images)))
    leaves = [jax.tree.leaves(o) for o in outs]
    return [np.concatenate(parts) for parts in zip(*leaves, strict=True)]


def _error(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, -1) != labels))


def gated_accounting(
    model: gating.GatedCNN, params: Any, data: data_lib.Dataset, density: float
) -> dict[str, Any]:
    """Error and per-input accounting of a gated network on ``data``.

    Args:
      model: the gated network.
      params: its parameters (predictors included).
      data: the images to evaluate, each gated on its own.
      density: the gates' d.

    Returns:
      ``error``, ``macs_dense`` (the ungated network), ``macs`` (mean effective MACs per
      example, predictors included), ``macs_p50``, ``macs_p95``, ``mac_ratio``,
      ``kept_fraction`` (mean per gated layer), ``jaccard`` (mean pairwise, all layers'
      kept sets together), ``density_per_class`` (mean kept fraction, all layers, per
      class).

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from dynprune.harness import data, gating_runs
      >>> model = gating_runs.Config.from_dict(gating_runs.SMALL).model()
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
      >>> images = np.random.default_rng(0).integers(0, 255, (20, 28, 28, 1), np.uint8)
      >>> images = data.Dataset(images, np.arange(20) % 10)
      >>> row = gating_runs.gated_accounting(model, params, images, 0.5)
      >>> row["macs"] < row["macs_dense"], len(row["kept_fraction"]), len(row["density_per_class"])
      (True, 2, 10)
    """
    fn = jax.jit(lambda x: _logits_and_kept(model, params, x, density))
    logits, *kept = _predict(fn, data)
    layers = gating.layer_macs(model, params, kept, jnp.zeros((1, 28, 28, 1)))
    summary = gating.summarize_macs(gating.effective_macs(layers), gating.dense_macs(layers))
    return {
        "error": _error(logits, data.labels),
        "macs_dense": summary.dense,
        "macs": summary.mean,
        "macs_p50": summary.p50,
        "macs_p95": summary.p95,
        "mac_ratio": summary.reduction,
        "kept_fraction": [float(k.mean()) for k in kept],
        "jaccard": gating.mean_pairwise_jaccard(kept),
        "density_per_class": gating.density_per_class(kept, data.labels, 10).tolist(),
    }


def _logits_and_kept(
    model: gating.GatedCNN, params: Any, x: jax.Array, density: float
) -> tuple[jax.Array, ...]:
    logits, gates = model.apply({"params": params}, x, density)
    return (logits, *(g.kept for g in gates))


def static_widths(
    model: gating.GatedCNN, params: Any, target_macs: float
) -> tuple[float, tuple[int, ...], float]:
    """The widths of a static pruning whose MACs per example are closest to ``target_macs``.

    Every gated layer keeps the same fraction f of its output channels, round(f·C_l) (at
    least 1), f = k / C_1 for k = 1 … C_1 (whole channels of the first gated layer).

    Args:
      model: the network (its ``features`` give the widths).
      params: the ungated network's parameters (``GatedCNN.dense`` reads them).
      target_macs: the MACs per example to match (the gated run's mean on validation).

    Returns:
      ``(f, widths, macs)``: the fraction, each gated layer's width, and the MACs per
      example of the network cut to those widths.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune.harness import gating_runs
      >>> model = gating_runs.Config.from_dict(gating_runs.SMALL).model()
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
      >>> fraction, widths, macs = gating_runs.static_widths(model, params, 60_000)
      >>> fraction, widths, macs
      (0.5, (4, 4), 63928.0)
    """
    first = model.features[1]
    fractions = np.arange(1, first + 1) / first
    widths = [np.maximum(1, np.round(fractions * c)).astype(int) for c in model.features[1:]]
    channels = model.features[1:]
    kept = [np.arange(c)[None, :] < w[:, None] for c, w in zip(channels, widths, strict=True)]
    layers = gating.layer_macs(model, params, kept, jnp.zeros((1, 28, 28, 1)))
    macs = gating.effective_macs(layers)
    best = int(np.argmin(np.abs(macs - target_macs)))
    return float(fractions[best]), tuple(int(w[best]) for w in widths), float(macs[best])


def _channel_masks(params: Any, widths: Sequence[int]) -> Any:
    """Masks keeping each gated layer's ``widths[l]`` output channels of largest L1 filter
    norm (Li et al. 2017), extended to the biases; the other leaves unmasked."""

    def keep(path: str, leaf: Any) -> bool:
        return path.startswith("gated_") and path.endswith("layer/kernel")

    norms = dp.scores.group_norm(params, ord=1, filter=keep)
    width = {f"gated_{i}/layer/kernel": w for i, w in enumerate(widths)}
    drop = dp.tree.map_scored(lambda path, n: 1.0 - width[path] / n.shape[-1], norms)
    masks = dp.masks.structured(norms, drop)
    return dp.masks.with_bias(masks, params)


def _latency_b1(
    calls: Mapping[str, Callable[[jax.Array], Any]], images: np.ndarray, reps: int
) -> dict[str, float]:
    """Per call name, Σ over ``images`` of the median seconds of one call on that image
    alone (:func:`dynprune.stats.interleaved_medians`, one untimed call first)."""
    totals = dict.fromkeys(calls, 0.0)
    for image in images:
        x = jnp.asarray(image[None])
        bound = {name: functools.partial(fn, x) for name, fn in calls.items()}
        for name, median in dp.stats.interleaved_medians(bound, reps=reps, warmup=1).items():
            totals[name] += median
    return totals


def _dense_fn(model: gating.GatedCNN) -> Callable[[Any, jax.Array], jax.Array]:
    return lambda p, x: model.apply({"params": p}, x, method=gating.GatedCNN.dense)


def measure_gated(
    config: Config, params: Any, dense: Any, data: data_lib.Dataset, density: float
) -> dict[str, Any]:
    """Batch-1 and batch-64 latency of the gated network's bucket path against the dense
    network's (``dense``: that run's parameters), on the first images of ``data``.

    Args:
      config: the experiment (``latency_examples`` images at batch 1, ``latency_reps``
        timed rounds).
      params: the gated network's parameters.
      dense: the dense run's parameters (``GatedCNN.dense``).
      data: the images timed (the first ones; at least 64 for batch 64).
      density: the gates' d.

    Returns:
      ``speedup_b1`` (dense ÷ ``BucketRunner.compact``: one dispatch, which at batch 1
      runs exactly the image's own widths), ``bucket_speedup_b1`` (dense ÷ the per-example
      bucket path ``BucketRunner.__call__``: the gates, a host sync, then the bucket's
      program), ``speedup_b64`` (dense ÷ the bucket path, each image at its own widths),
      ``max_abs_diff`` (bucket path vs the masked computation, batch 64) and the seconds
      per call.

    Examples:
      It compiles a program per width bucket, which takes seconds, so it is not run here:

      >>> r = gating_runs.measure_gated(config, params, dense, test, 0.5)  # doctest: +SKIP
      >>> r["speedup_b1"], r["speedup_b64"]  # doctest: +SKIP
      (1.4, 1.9)
    """
    model = config.model()
    runner = gating.BucketRunner(model, params)
    dense_fn = jax.jit(_dense_fn(model))
    images = data_lib.preprocess(data.images[: max(config.latency_examples, 64)])
    b1 = _latency_b1(
        {
            "dense": lambda x: dense_fn(dense, x),
            "bucket": lambda x: runner(x, density)[0],
            "compact": lambda x: runner.compact(x, density)[0],
        },
        images[: config.latency_examples],
        config.latency_reps,
    )
    many = gating.measure_skipping(
        model, params, jnp.asarray(images[:64]), density, reps=config.latency_reps
    )
    dense64 = dp.stats.latency(dense_fn, dense, jnp.asarray(images[:64]), reps=config.latency_reps)
    return {
        "speedup_b1": b1["dense"] / b1["compact"],
        "bucket_speedup_b1": b1["dense"] / b1["bucket"],
        "speedup_b64": dense64 / many.skipping_s,
        "max_abs_diff": many.max_abs_diff,
        "seconds": {
            "dense_b1": b1["dense"] / len(images[: config.latency_examples]),
            "bucket_b1": b1["bucket"] / len(images[: config.latency_examples]),
            "compact_b1": b1["compact"] / len(images[: config.latency_examples]),
            "dense_b64": dense64,
            "bucket_b64": many.skipping_s,
        },
    }


def measure_static(
    config: Config, reconstruction: dp.surgery.Reconstruction, dense: Any, data: data_lib.Dataset
) -> dict[str, Any]:
    """Batch-1 and batch-64 latency of a reconstructed network against the dense one.

    Args:
      config: the experiment (``latency_examples``, ``latency_reps``).
      reconstruction: the smaller network (:func:`dynprune.surgery.reconstruct`).
      dense: the dense run's parameters.
      data: the images timed (the first ones; at least 64).

    Returns:
      ``speedup_b1``, ``speedup_b64`` (dense ÷ reconstructed seconds) and the seconds.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, dynprune as dp
      >>> from dynprune.harness import data, gating_runs
      >>> config = gating_runs.Config.from_dict({**gating_runs.SMALL, "latency_examples": 1})
      >>> model = config.model()
      >>> init = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
      >>> dense = {k: {"layer": v["layer"]} if "layer" in v else v for k, v in init.items()}
      >>> apply = lambda p, x: model.apply({"params": p}, x, method=type(model).dense)
      >>> masks = gating_runs._channel_masks(dense, (4, 4))
      >>> half = dp.surgery.reconstruct(apply, dense, masks, jnp.zeros((1, 28, 28, 1)))
      >>> images = data.Dataset(np.zeros((64, 28, 28, 1), np.uint8), np.zeros(64, int))
      >>> sorted(gating_runs.measure_static(config, half, dense, images))
      ['seconds', 'speedup_b1', 'speedup_b64']
    """
    dense_fn = jax.jit(_dense_fn(config.model()))
    small_fn = jax.jit(reconstruction.apply)
    images = data_lib.preprocess(data.images[: max(config.latency_examples, 64)])
    b1 = _latency_b1(
        {
            "dense": lambda x: dense_fn(dense, x),
            "static": lambda x: small_fn(reconstruction.params, x),
        },
        images[: config.latency_examples],
        config.latency_reps,
    )
    b64 = dp.stats.compare_latency(
        {
            "dense": (dense_fn, (dense, jnp.asarray(images[:64]))),
            "static": (small_fn, (reconstruction.params, jnp.asarray(images[:64]))),
        },
        reps=config.latency_reps,
    )
    return {
        "speedup_b1": b1["dense"] / b1["static"],
        "speedup_b64": b64.speedups["static"],
        "seconds": {
            "dense_b1": b1["dense"] / len(images[: config.latency_examples]),
            "static_b1": b1["static"] / len(images[: config.latency_examples]),
            "dense_b64": b64.medians["dense"],
            "static_b64": b64.medians["static"],
        },
    }


class Store:
    """Trained parameters of finished runs, kept as ``.npz`` under the cache directory
    (``$DYNPRUNE_CACHE_DIR/gating``), so a static run can start from its dense run's
    weights in a later process.

    Args:
      root: the directory (default: ``cache_dir("gating")``).

    Examples:
      >>> import tempfile, jax.numpy as jnp
      >>> from dynprune.harness import gating_runs
      >>> store = gating_runs.Store(tempfile.mkdtemp())
      >>> store.save("0123456789abcdef", {"head": {"kernel": jnp.ones((2, 3))}})
      >>> like = {"head": {"kernel": jnp.zeros((2, 3))}}
      >>> float(store.load("0123456789abcdef", like)["head"]["kernel"].sum())
      6.0
      >>> store.load("f" * 16, like) is None
      True
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else cache_lib.cache_dir("gating")

    def path(self, key: str) -> Path:
        """The file of run ``key``."""
        return self.root / f"{key}.npz"

    def save(self, key: str, params: Any) -> None:
        """Writes ``params`` atomically (a temporary file renamed into place)."""
        self.root.mkdir(parents=True, exist_ok=True)
        flat = {path: np.asarray(leaf) for path, leaf in dp.tree.scored_leaves(params)}
        tmp = self.path(key).with_suffix(".tmp.npz")
        np.savez(tmp, **flat)
        os.replace(tmp, self.path(key))

    def load(self, key: str, like: Any) -> Any | None:
        """The parameters saved under ``key``, shaped like ``like``; None if absent."""
        if not self.path(key).exists():
            return None
        with np.load(self.path(key)) as saved:
            return dp.tree.map_with_path(lambda path, leaf: jnp.asarray(saved[path]), like)


def run(
    config: Config,
    dataset: str,
    method: str,
    seed: int,
    split: str,
    *,
    density: float | None = None,
    out: str | os.PathLike,
    store: Store | None = None,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Runs one (dataset, method, seed) and appends its row to ``out`` (once per key).

    A static run needs its dense run (same dataset, seed and split) in the store and the
    gated run's row (same dataset, seed, split and ``density``) in ``out``; it reads the
    gated run's ``validation_macs`` as its MAC budget.

    Args:
      config: the experiment.
      dataset: one of ``config.datasets``.
      method: one of :data:`METHODS`.
      seed: initialisation and data order.
      split: :data:`SPLITS`: where the row's ``error`` is measured.
      density: the gates' d (gated and static runs; None for dense).
      out: the JSONL results file.
      store: where dense and gated parameters are kept (default: :class:`Store`'s).
      data_dir: the TFDS data directory (default ``$TFDS_DATA_DIR``).

    Returns:
      The row (the one already in ``out`` if this key is there).

    Raises:
      ValueError: for an unknown method or split, a gated or static run without a density,
        or a static run whose dense or gated run has not finished.

    Examples:
      It trains on the real images, so it is not run here (``experiments/gating.py`` is
      its command line; the tests run it on :data:`SMALL`):

      >>> row = gating_runs.run(config, "mnist", "gated", 0, "test", density=0.5,
      ...                       out="gating.jsonl")  # doctest: +SKIP
      >>> row["error"], row["mac_ratio"], row["speedup_b1"]  # doctest: +SKIP
      (0.011, 2.4, 1.5)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if method != "dense" and density is None:
        raise ValueError(f"a {method} run needs a density")
    density = None if method == "dense" else float(gating.check_density(density))
    key = run_key(config, dataset, method, seed, split, density)
    done = {r["key"]: r for r in results.read_jsonl(out)}
    if key in done:
        return done[key]
    store = Store() if store is None else store
    train_data = data_lib.load(dataset, "train", validation=config.validation, data_dir=data_dir)
    if config.train_examples:
        train_data = data_lib.Dataset(*(a[: config.train_examples] for a in train_data))
    val_data = data_lib.load(dataset, "validation", validation=config.validation, data_dir=data_dir)
    eval_data = (
        val_data if split == "validation" else data_lib.load(dataset, "test", data_dir=data_dir)
    )
    model = config.model()
    dense_key = run_key(config, dataset, "dense", seed, split, None)
    start = time.perf_counter()
    row: dict[str, Any] = {
        "key": key,
        "experiment": "gating",
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "split": split,
        "density": density,
    }
    if method == "dense":
        params = train(config, "dense", train_data, seed)
        store.save(key, params)
        logits = _predict(jax.jit(lambda x: _dense_fn(model)(params, x)), eval_data)[0]
        macs = float(
            dp.stats.cost(_dense_fn(model), params, jnp.zeros((1, 28, 28, 1)))["total"][
                "macs_dense"
            ]
        )
        row |= {"error": _error(logits, eval_data.labels), "macs": macs, "mac_ratio": 1.0}
        row |= {"speedup_b1": 1.0, "speedup_b64": 1.0}
    else:
        dense = store.load(dense_key, _dense_params(_init(model)))
        if dense is None:
            raise ValueError(
                f"the {method} run of {dataset} seed {seed} ({split}) needs its dense run first"
            )
        if method == "gated":
            params = train(config, "gated", train_data, seed, density=density)
            row |= gated_accounting(model, params, eval_data, density)
            row["validation_macs"] = (
                row["macs"]
                if split == "validation"
                else gated_accounting(model, params, val_data, density)["macs"]
            )
            row |= measure_gated(config, params, dense, eval_data, density)
        else:
            gated_key = run_key(config, dataset, "gated", seed, split, density)
            if gated_key not in done:
                raise ValueError(
                    f"the static run of {dataset} seed {seed} ({split}, d={density}) "
                    "needs its gated run first"
                )
            budget = done[gated_key]["validation_macs"]
            fraction, widths, _ = static_widths(model, dense, budget)
            masks = _channel_masks(dense, widths)
            params = train(
                config,
                "static",
                train_data,
                seed,
                params=dense,
                masks=masks,
                epochs=config.static_epochs,
            )
            rebuilt = dp.surgery.reconstruct(
                _dense_fn(model), params, masks, jnp.zeros((1, 28, 28, 1))
            )
            logits = _predict(jax.jit(lambda x: rebuilt.apply(rebuilt.params, x)), eval_data)[0]
            macs = float(
                dp.stats.cost(rebuilt.apply, rebuilt.params, jnp.zeros((1, 28, 28, 1)))["total"][
                    "macs_dense"
                ]
            )
            dense_macs = float(
                dp.stats.cost(_dense_fn(model), dense, jnp.zeros((1, 28, 28, 1)))["total"][
                    "macs_dense"
                ]
            )
            row |= {
                "error": _error(logits, eval_data.labels),
                "macs_dense": dense_macs,
                "macs": macs,
                "mac_ratio": dense_macs / macs,
                "macs_budget": budget,
                "fraction": fraction,
                "architecture": rebuilt.architecture,
                "params": int(sum(np.size(x) for x in jax.tree.leaves(rebuilt.params))),
            }
            row |= measure_static(config, rebuilt, dense, eval_data)
    row["seconds"] = {**row.get("seconds", {}), "run": time.perf_counter() - start}
    row |= results.run_metadata()
    results.append_jsonl(out, row, unique=True)
    return row


def _init(model: gating.GatedCNN) -> Any:
    return jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    )


def choose_density(rows: Iterable[Mapping[str, Any]], config: Config, dataset: str) -> float:
    """The density the validation runs choose for ``dataset`` (the rule fixed in advance).

    Among the candidate densities whose validation error is at most the dense run's plus
    ``config.max_loss``, the one with the largest ``mac_ratio``; if none qualifies, the one
    with the lowest validation error.

    Args:
      rows: result rows (only this config's validation rows of the selection seed count).
      config: the experiment (``densities``, ``max_loss``, ``selection_seed``).
      dataset: the dataset to choose for.

    Returns:
      The chosen density.

    Raises:
      ValueError: if a validation run of the dense network or of a candidate is missing.

    Examples:
      >>> from dynprune.harness import gating_runs
      >>> config = gating_runs.Config.from_dict(gating_runs.SMALL)  # candidates 0.5, 0.3
      >>> def row(method, d, error, mac_ratio):
      ...     key = gating_runs.run_key(config, "mnist", method, 0, "validation", d)
      ...     return {"key": key, "experiment": "gating", "dataset": "mnist", "method": method,
      ...             "seed": 0, "split": "validation", "density": d, "error": error,
      ...             "mac_ratio": mac_ratio}
      >>> rows = [row("dense", None, 0.010, 1.0), row("gated", 0.5, 0.012, 2.1),
      ...         row("gated", 0.3, 0.014, 3.0)]
      >>> gating_runs.choose_density(rows, config, "mnist")  # 0.3 loses 0.4 points > 0.3
      0.5
    """
    mine = [
        r
        for r in rows
        if r.get("experiment") == "gating"
        and r["dataset"] == dataset
        and r["split"] == "validation"
        and r["seed"] == config.selection_seed
        and r["key"] == run_key(config, dataset, r["method"], r["seed"], "validation", r["density"])
    ]
    dense = [r for r in mine if r["method"] == "dense"]
    gated = {r["density"]: r for r in mine if r["method"] == "gated"}
    missing = [d for d in config.densities if d not in gated]
    if not dense or missing:
        raise ValueError(
            f"{dataset}: the validation runs are not finished (dense: {bool(dense)}, "
            f"densities missing: {missing})"
        )
    ok = [d for d in config.densities if gated[d]["error"] <= dense[0]["error"] + config.max_loss]
    if ok:
        return max(ok, key=lambda d: gated[d]["mac_ratio"])
    return min(config.densities, key=lambda d: gated[d]["error"])


def plan(config: Config, rows: Iterable[Mapping[str, Any]], split: str) -> list[dict[str, Any]]:
    """The runs of ``split`` in order, as keyword arguments of :func:`run` (without ``out``):
    validation: per dataset, the dense run and a gated run per candidate density (selection
    seed); test: per dataset and seed, dense, gated and static at the chosen density.

    Args:
      config: the experiment.
      rows: the rows so far (the test plan reads the validation rows' choice).
      split: :data:`SPLITS`.

    Returns:
      One dict per run.

    Raises:
      ValueError: for the test plan before the validation runs are finished.

    Examples:
      >>> from dynprune.harness import gating_runs
      >>> config = gating_runs.Config.from_dict(gating_runs.SMALL)
      >>> [(r["method"], r.get("density")) for r in gating_runs.plan(config, [], "validation")]
      [('dense', None), ('gated', 0.5), ('gated', 0.3)]
    """
    rows = list(rows)
    runs = []
    for dataset in config.datasets:
        if split == "validation":
            seed = config.selection_seed
            runs.append(dict(dataset=dataset, method="dense", seed=seed, split=split))
            for d in config.densities:
                runs.append(
                    dict(dataset=dataset, method="gated", seed=seed, split=split, density=d)
                )
            continue
        d = choose_density(rows, config, dataset)
        for seed in config.seeds:
            runs.append(dict(dataset=dataset, method="dense", seed=seed, split=split))
            for method in ("gated", "static"):
                runs.append(dict(dataset=dataset, method=method, seed=seed, split=split, density=d))
    return runs


def format_table(rows: Iterable[Mapping[str, Any]], config: Config) -> str:
    """Markdown table of the test runs: per dataset and method, error (mean ± sd over
    seeds), the loss against dense, MAC ratio and measured speedups at batch 1 and 64.

    Args:
      rows: result rows (only the test rows count).
      config: the experiment (its datasets, in order).

    Returns:
      The table as Markdown.

    Examples:
      >>> from dynprune.harness import gating_runs
      >>> config = gating_runs.Config.from_dict(gating_runs.SMALL)
      >>> rows = [{"experiment": "gating", "split": "test", "dataset": "mnist", "method": m,
      ...          "density": d, "error": e, "mac_ratio": r, "speedup_b1": r, "speedup_b64": r}
      ...         for m, d, e, r in (("dense", None, 0.01, 1.0), ("gated", 0.5, 0.012, 2.0))]
      >>> print(gating_runs.format_table(rows, config).splitlines()[-1])
      | mnist | gated | 0.5 | 1 | 1.20 | +0.20 | 2.00x | 2.00x | 2.00x |  |
    """
    rows = [r for r in rows if r.get("experiment") == "gating" and r["split"] == "test"]
    lines = [
        "| dataset | method | d | seeds | test error % | vs dense (pt) | MAC ratio "
        "| speedup b1 | speedup b64 | architecture |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in config.datasets:
        base = [r["error"] for r in rows if r["dataset"] == dataset and r["method"] == "dense"]
        for method in METHODS:
            mine = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            if not mine:
                continue
            err = 100 * np.array([r["error"] for r in mine])
            sd = f" ± {err.std(ddof=1):.2f}" if len(err) > 1 else ""
            delta = err.mean() - 100 * np.mean(base) if base else math.nan
            arch = " / ".join(dict.fromkeys(r.get("architecture", "") for r in mine))
            density = "" if mine[0]["density"] is None else f"{mine[0]['density']:g}"
            lines.append(
                f"| {dataset} | {method} | {density} | {len(mine)} | {err.mean():.2f}{sd} "
                f"| {delta:+.2f} | {np.mean([r['mac_ratio'] for r in mine]):.2f}x "
                f"| {np.mean([r['speedup_b1'] for r in mine]):.2f}x "
                f"| {np.mean([r['speedup_b64'] for r in mine]):.2f}x | {arch} |"
            )
    return "\n".join(lines)
