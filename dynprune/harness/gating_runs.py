"""The per-input pruning experiment: per-input (dynamic) networks against the same network
without gates and against static channel pruning at equal MACs.

Five methods per (dataset, seed), all on one :class:`dynprune.gating.GatedCNN` in prefix
mode, whose gated layer l runs at one of the bucket widths W_{l,j} = ⌈f_j·C_l⌉
(f_0 < … < f_{J−1} = 1 the config's ``buckets``):

- ``"dense"``: the network without gates (``GatedCNN.dense``), trained ``epochs`` epochs.
- ``"gated"``: prefix gates (dynamic width, Li et al. 2021) at density d, trained from
  scratch ``epochs`` epochs with FBS's loss (Gao et al. 2019)

      L = CE(f(x; d), y) + λ_1 · Σ_layers mean_batch ‖s_l‖₁        (λ_1: ``l1``).

- ``"slimmable"``: Dynamic Slimmable Networks (Li et al. 2021), two stages. Stage 1 trains
  the trunk as a supernet over the bucket widths, ``epochs`` epochs of the sandwich rule
  with in-place distillation (Yu & Huang 2019; :func:`dynprune.gating.slimmable_loss`),

      L_1 = CE(f_{J−1}(x), y) + Σ_{j ∈ {0} ∪ S} CE(f_j(x), sg(softmax(f_{J−1}(x)))),

  f_j the network with every gated layer at bucket j, S two buckets drawn uniformly per
  step. Stage 2 freezes the supernet and trains a :class:`~dynprune.gating.WidthGate`
  (on the pooled stem features, hidden layer ``gate_hidden``) for ``gate_epochs`` epochs;
  it picks one bucket c per example, in training a relaxed Gumbel-softmax sample at
  temperature τ (``temperature``), at inference the argmax, and is charged for the MACs it picks
  (:func:`dynprune.gating.width_gate_loss`):

      L_2 = mean_b [ CE(f_{c_b}(x_b), y_b) + λ · M_{c_b} / M_{J−1} ],

  M_j the MACs per example at bucket j (:func:`dynprune.gating.bucket_macs`), λ the MAC
  weight: running the full width instead of the narrowest costs λ·(1 − M_0/M_{J−1}) nats
  per example. At inference c = argmax of the gate's logits. The supernet does not
  depend on λ: one per (dataset, seed) is trained, stored, and shared by every λ's gate.
- ``"cascade"``: a confidence cascade on the same stored supernet, no training of its own
  (Big/Little inference, Park et al. 2015; early exit, Teerapittayanon et al. 2016;
  :func:`dynprune.gating.cascade`). Every image runs at bucket j_0, and again at the next
  level only while its max softmax probability is below the threshold t (levels
  j_0 < … < j_{K−1}, ``cascade_levels``, default the narrowest and the full width):

      i* = min { i : max softmax(f_{j_i}(x)) ≥ t }  (K − 1 if none),  output f_{j_{i*}}(x),

  and an image pays every level it ran: M_stem + Σ_{i ≤ i*} (M_{j_i} − M_stem)
  (:func:`dynprune.gating.cascade_macs`).
- ``"static"``: the dense run's weights (same seed); each gated layer keeps the same
  fraction f of its output channels, the largest L1 filter norms (Li et al. 2017), f chosen
  on a grid of whole channels so that the MACs are closest to a dynamic run's (gated at d,
  slimmable at λ, or cascade at t) mean effective MACs on the validation images; fine-tuned
  ``static_epochs`` epochs under the masks, then rebuilt by
  :func:`dynprune.surgery.reconstruct` into a smaller dense network.

All train on the training split minus the ``validation`` held-out images. A row is
evaluated on ``split``: ``"validation"`` rows choose each dynamic method's setting
(:func:`choose`: the gated method's d among ``densities``, the slimmable's λ among
``mac_weights``, the cascade's t among ``thresholds``; an empty list leaves the method out),
``"test"`` rows report the chosen configurations. Each row has ``error``, ``mac_ratio``
(dense MACs ÷ MACs executed per example, gates and a cascade's earlier levels included),
``speedup_b1`` and ``speedup_b64`` (dense ÷ method latency: at batch 1, the sum over
``latency_examples`` images of each image's median of interleaved calls; at batch 64, the
median over interleaved calls on one batch). Dynamic rows (gated,
slimmable, cascade) add the per-input accounting: MACs p50/p95, kept fraction per layer,
mean pairwise Jaccard of kept sets, density per class, the fraction of examples at each
bucket width per layer (a cascade's: the width it stopped at), and ``validation_macs`` (the
static arm's budget); cascade rows add ``escalated``, the fraction of examples that ran
past level 0.

References:
  Gao et al., "Dynamic Channel Pruning: Feature Boosting and Suppression", ICLR 2019;
  Li et al., "Dynamic Slimmable Network", CVPR 2021;
  Yu & Huang, "Universally Slimmable Networks and Improved Training Techniques", ICCV 2019;
  Park et al., "Big/LITTLE Deep Neural Network for Ultra Low Power Inference",
  CODES+ISSS 2015; Teerapittayanon et al., "BranchyNet: Fast Inference via Early Exiting
  from Deep Neural Networks", ICPR 2016;
  Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import numbers
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

METHODS = ("dense", "gated", "static", "slimmable", "cascade")
_EXAMPLE = np.zeros((1, 28, 28, 1), np.float32)  # one input: MAC counts, traces; NumPy: no backend
DYNAMIC = {"gated": "density", "slimmable": "mac_weight", "cascade": "threshold"}
"""The per-input methods and the :func:`run` argument that sets each (its candidates: the
config's ``densities``, ``mac_weights``, ``thresholds``; :meth:`Config.candidates`)."""
REMEASURABLE = ("cascade", "slimmable", "static")
"""The methods whose networks the store keeps, so :func:`remeasure` can time them again."""
SPLITS = ("validation", "test")
SCHEDULES = ("constant", "cosine")
"""Step-size schedules of every stage (:attr:`Config.schedule`)."""
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

_GATE_FIELDS = ("gate_epochs", "temperature", "gate_hidden")
_LOG_STEPS = 100


def check_mac_weight(mac_weight: Any) -> float:
    """``mac_weight`` as a float after checking it is a finite number ≥ 0.

    Args:
      mac_weight: λ, the width gate's MAC charge (:func:`dynprune.gating.width_gate_loss`).

    Returns:
      λ as a float.

    Raises:
      ValueError: naming ``mac_weight`` and the value.

    Examples:
      >>> from dynprune.harness import gating_runs
      >>> gating_runs.check_mac_weight(1)
      1.0
      >>> gating_runs.check_mac_weight(-0.1)
      Traceback (most recent call last):
      ...
      ValueError: mac_weight must be a finite number >= 0, got -0.1
    """
    if not (isinstance(mac_weight, numbers.Real) and math.isfinite(mac_weight) and mac_weight >= 0):
        raise ValueError(f"mac_weight must be a finite number >= 0, got {mac_weight!r}")
    return float(mac_weight)


@dataclasses.dataclass(frozen=True)
class Config:
    """The experiment, as data (``experiments/gating.json``, ``experiments/gating-dsnet.json``).

    Examples:
      >>> from dynprune.harness import gating_runs
      >>> config = gating_runs.Config.from_dict(gating_runs.SMALL)
      >>> config.model().features, config.densities, config.mac_weights, config.thresholds
      ((4, 8, 8), (0.5, 0.3), (), ())

    Attributes:
      features: the :class:`~dynprune.gating.GatedCNN`'s (stem, gated 1, …, gated L) widths.
      stem_pool: max-pool the stem's output.
      buckets: the prefix gates' width fractions (the slimmable supernet's widths).
      epochs: training epochs of the dense and gated runs and of the slimmable supernet.
      static_epochs: fine-tuning epochs of the static run.
      batch_size: training batch.
      learning_rate: Adam's step size η, every stage.
      schedule: the step size over each stage's T steps: ``"constant"`` (η throughout, the
        default) or ``"cosine"`` (η_t = η·½(1 + cos(π·t/T)), decayed to 0 at the stage's
        end, as :func:`dynprune.harness.optimizers.make`'s ``"cosine"``).
      l1: λ_1, the weight of the gated method's L1 penalty on saliencies.
      validation: training images held out as the validation split.
      train_examples: train on the first this many of the remaining training images
        (0: all of them; a smaller number makes a quick check, not a result).
      densities: the gated method's candidate densities d, chosen among on validation
        (empty: no gated runs).
      max_loss: the most validation error a chosen setting may add to the dense run's
        (a fraction: 0.003 is 0.3 points).
      selection_seed: the seed of the validation runs.
      seeds: the seeds of the test runs, fixed in advance.
      datasets: dataset names (:data:`dynprune.harness.data.DATASETS`).
      latency_examples: images timed one at a time for ``speedup_b1``.
      latency_reps: timed rounds per image (batch 1) or per batch (batch 64).
      mac_weights: the slimmable method's candidate MAC weights λ (per example, in nats per
        the full network's MACs), chosen among on validation (default empty: no
        slimmable runs).
      gate_epochs: training epochs of the slimmable method's width gate (default 1).
      temperature: τ of the width gate's Gumbel-softmax (default 1).
      gate_hidden: the width gate's hidden layer (default None: one linear layer).
      thresholds: the cascade's candidate thresholds t ∈ [0, 1], chosen among on
        validation (default empty: no cascade runs).
      cascade_levels: the cascade's levels, bucket indices (default None: the narrowest
        and the full width; :func:`dynprune.gating.cascade_levels`).
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
    mac_weights: tuple[float, ...] = ()
    gate_epochs: int = 1
    temperature: float = 1.0
    gate_hidden: int | None = None
    schedule: str = "constant"
    thresholds: tuple[float, ...] = ()
    cascade_levels: tuple[int, ...] | None = None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        """A config from a JSON object; unknown or missing fields are refused by name.

        Args:
          values: one value per field (lists become tuples; the fields with defaults may be
            left out); a ``"comment"`` is allowed.

        Returns:
          The :class:`Config`.

        Raises:
          ValueError: naming unknown and missing fields, a density outside (0, 1], a MAC
            weight below 0, a threshold outside [0, 1], bad cascade levels, a temperature
            ≤ 0, gate epochs < 1, no candidate of any dynamic method, or an unknown dataset.

        Examples:
          >>> from dynprune.harness import gating_runs
          >>> gating_runs.Config.from_dict({**gating_runs.SMALL, "datasets": ["cifar10"]})
          Traceback (most recent call last):
          ...
          ValueError: gating config: unknown dataset 'cifar10'
        """
        fields = dataclasses.fields(cls)
        unknown = sorted(set(values) - {f.name for f in fields} - {"comment"})
        missing = sorted(
            f.name for f in fields if f.default is dataclasses.MISSING and f.name not in values
        )
        if unknown or missing:
            raise ValueError(f"gating config: unknown fields {unknown}, missing fields {missing}")
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        args.pop("comment", None)
        config = cls(**args)
        for d in config.densities:
            gating.check_density(d)
        for mac_weight in config.mac_weights:
            check_mac_weight(mac_weight)
        for threshold in config.thresholds:
            gating.check_confidence_threshold(threshold)
        if config.thresholds or config.cascade_levels is not None:
            gating.cascade_levels(config.model(), config.cascade_levels)
        if not (math.isfinite(config.temperature) and config.temperature > 0):
            raise ValueError(f"gating config: temperature must be > 0, got {config.temperature}")
        if config.schedule not in SCHEDULES:
            raise ValueError(
                f"gating config: schedule must be one of {SCHEDULES}, got {config.schedule!r}"
            )
        if config.gate_epochs < 1:
            raise ValueError(f"gating config: gate_epochs must be >= 1, got {config.gate_epochs}")
        if not (config.densities or config.mac_weights or config.thresholds):
            raise ValueError(
                "gating config: no densities, mac_weights or thresholds, nothing to compare"
            )
        for name in config.datasets:
            if name not in data_lib.DATASETS:
                raise ValueError(f"gating config: unknown dataset {name!r}")
        return config

    def model(self) -> gating.GatedCNN:
        """The network every method shares: a prefix-mode :class:`~dynprune.gating.GatedCNN`."""
        return gating.GatedCNN(
            features=self.features, mode="prefix", buckets=self.buckets, stem_pool=self.stem_pool
        )

    def candidates(self, method: str) -> tuple[float, ...]:
        """The settings a dynamic method (:data:`DYNAMIC`) is chosen among: ``densities``
        (gated), ``mac_weights`` (slimmable) or ``thresholds`` (cascade)."""
        return {
            "gated": self.densities,
            "slimmable": self.mac_weights,
            "cascade": self.thresholds,
        }[method]

    def training(self) -> dict[str, Any]:
        """The fields every run's key depends on besides (dataset, method, seed, split,
        density): every field but the choices among runs (candidates, seeds, datasets,
        selection), the latency measurement's size, the width gate's fields
        (:meth:`gate_training`) and the cascade's levels (:meth:`cascade_setting`). A
        constant schedule is left out, so the keys of runs made before ``schedule`` existed
        stay what they were."""
        left_out = {"densities", "mac_weights", "thresholds", "max_loss", "selection_seed"}
        left_out |= {"seeds", "datasets", "latency_examples", "latency_reps", "cascade_levels"}
        left_out |= set(_GATE_FIELDS)
        if self.schedule == "constant":
            left_out.add("schedule")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in left_out}

    def gate_training(self) -> dict[str, Any]:
        """The width gate's fields: the keys of the runs that depend on a MAC weight
        (slimmable runs and the static runs at their budget) add them."""
        return {k: getattr(self, k) for k in _GATE_FIELDS}

    def cascade_setting(self) -> dict[str, Any]:
        """The cascade's levels, resolved (:func:`dynprune.gating.cascade_levels`): the keys
        of the runs that depend on a threshold (cascade runs and the static runs at their
        budget) add them."""
        return {"cascade_levels": gating.cascade_levels(self.model(), self.cascade_levels)}


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
    config: Config,
    dataset: str,
    method: str,
    seed: int,
    split: str,
    density: float | None,
    mac_weight: float | None = None,
    threshold: float | None = None,
) -> str:
    """The key of one run's row (its identity: a row with this key is written once).

    Args:
      config: the experiment (only :meth:`Config.training`'s fields count, with a
        ``mac_weight`` :meth:`Config.gate_training`'s, with a ``threshold``
        :meth:`Config.cascade_setting`'s).
      dataset: the dataset name.
      method: one of :data:`METHODS`.
      seed: the run's seed.
      split: where the row's error is measured (:data:`SPLITS`).
      density: the gates' d (gated runs, static runs at a gated budget; else None).
      mac_weight: the width gate's λ (slimmable runs, static runs at a slimmable budget;
        else None, and the key is what it was before slimmable runs existed).
      threshold: the cascade's t (cascade runs, static runs at a cascade budget; else
        None, and the key is what it was before cascade runs existed).

    Returns:
      16 hex digits (:func:`dynprune.harness.results.run_key`).

    Examples:
      >>> from dynprune.harness import gating_runs
      >>> config = gating_runs.Config.from_dict(gating_runs.SMALL)
      >>> a = gating_runs.run_key(config, "mnist", "gated", 0, "test", 0.5)
      >>> len(a), a == gating_runs.run_key(config, "mnist", "gated", 0, "test", 0.3)
      (16, False)
    """
    setting: dict[str, Any] = {}
    if mac_weight is not None:
        setting |= {"mac_weight": mac_weight, **config.gate_training()}
    if threshold is not None:
        setting |= {"threshold": threshold, **config.cascade_setting()}
    return results.run_key(
        {
            "experiment": "gating",
            "dataset": dataset,
            "method": method,
            "seed": seed,
            "split": split,
            "density": density,
            **config.training(),
            **setting,
        }
    )


def _supernet_key(config: Config, dataset: str, seed: int) -> str:
    """The stored supernet's key: its training depends on neither the split nor λ nor t."""
    return results.run_key(
        {
            "experiment": "gating",
            "dataset": dataset,
            "method": "supernet",
            "seed": seed,
            **config.training(),
        }
    )


def _dense_params(params: Any) -> Any:
    """The parameters ``GatedCNN.dense`` reads: every layer but the predictors."""
    return {
        name: ({"layer": sub["layer"]} if name.startswith("gated_") else sub)
        for name, sub in params.items()
    }


def _loss(
    model: gating.GatedCNN, method: str, l1: float, density: float, masks: Any
) -> Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]:
    def loss(params: Any, images: jax.Array, labels: jax.Array, key: jax.Array) -> jax.Array:
        if method == "slimmable":
            return gating.slimmable_loss(model, params, images, labels, key)
        if method == "gated":
            logits, gates = model.apply({"params": params}, images, np.float32(density))
            penalty = l1 * gating.l1_penalty(gates)
        else:
            if masks is not None:
                params = dp.apply_masks(params, masks)
            logits = model.apply({"params": params}, images, method=gating.GatedCNN.dense)
            penalty = 0.0
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return ce + penalty

    return loss


def _fit(
    config: Config,
    loss: Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array],
    params: Any,
    train_data: data_lib.Dataset,
    seed: int,
    epochs: int,
    key: jax.Array,
    name: str,
) -> Any:
    """Adam on ``loss(params, images, labels, fold_in(key, t))`` at step t, ``epochs``
    epochs of ``train_data`` in the order of ``seed``, the step size by ``config.schedule``
    over those T steps; logs the mean loss of every ``_LOG_STEPS`` steps and of each
    epoch's last ones."""
    steps = epochs * (len(train_data.labels) // config.batch_size)
    lr = (
        optax.cosine_decay_schedule(config.learning_rate, max(steps, 1))
        if config.schedule == "cosine"
        else config.learning_rate
    )
    tx = optax.adam(lr)

    @jax.jit
    def step(params, opt_state, images, labels, t):
        value, grads = jax.value_and_grad(loss)(params, images, labels, jax.random.fold_in(key, t))
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = tx.init(params)
    t, losses = 0, []
    for epoch in range(epochs):
        for images, labels in data_lib.batches(
            train_data, config.batch_size, seed=seed, epoch=epoch
        ):
            params, opt_state, value = step(params, opt_state, images, labels, t)
            t += 1
            losses.append(value)
            if len(losses) == _LOG_STEPS:
                log.info("%s epoch %d step %d: mean loss %.4f", name, epoch + 1, t, np.mean(losses))
                losses = []
        if losses:
            log.info("%s epoch %d step %d: mean loss %.4f", name, epoch + 1, t, np.mean(losses))
            losses = []
    return params


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
      method: ``"dense"``, ``"gated"``, ``"static"`` (fine-tunes ``params`` under
        ``masks``) or ``"slimmable"`` (stage 1, the supernet, by
        :func:`dynprune.gating.slimmable_loss`; stage 2 is :func:`train_gate`).
      train_data: the training images.
      seed: initialisation (when ``params`` is None), data order and the supernet's
        random widths.
      density: the gates' d (gated runs).
      params: start from these instead of a fresh initialisation.
      masks: neuron-shaped masks kept applied in the forward pass (static runs).
      epochs: default ``config.epochs``.

    Returns:
      The trained parameters (without the predictors' but for gated runs).

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
        params = model.init(jax.random.key(seed), _EXAMPLE)["params"]
        if method != "gated":
            params = _dense_params(params)
    params = _fit(
        config,
        _loss(model, method, config.l1, density, masks),
        params,
        train_data,
        seed,
        config.epochs if epochs is None else epochs,
        jax.random.key(seed),
        method,
    )
    return dp.apply_masks(params, masks) if masks is not None else params


def train_gate(
    config: Config, params: Any, train_data: data_lib.Dataset, seed: int, mac_weight: float
) -> tuple[gating.WidthGate, Any]:
    """Stage 2 of the slimmable method: a :class:`~dynprune.gating.WidthGate` trained on the
    frozen supernet ``params`` by :func:`dynprune.gating.width_gate_loss` with Adam, for
    ``config.gate_epochs`` epochs.

    Args:
      config: the experiment (``buckets``, ``gate_hidden``, ``temperature``,
        ``gate_epochs``, ``learning_rate``, ``batch_size``).
      params: the supernet's parameters (:func:`train` with ``"slimmable"``).
      train_data: the training images.
      seed: the gate's initialisation, data order and Gumbel noise.
      mac_weight: λ, the charge per example for the relative MACs of the chosen bucket.

    Returns:
      ``(gate, gate_params)``.

    Raises:
      ValueError: for a negative or non-finite ``mac_weight``.

    Examples:
      It compiles a training step through the whole trunk, which takes seconds, so it is
      not run here (the tests run it on :data:`SMALL`):

      >>> supernet = gating_runs.train(config, "slimmable", train_data, seed=0)  # doctest: +SKIP
      >>> gate, gate_params = gating_runs.train_gate(
      ...     config, supernet, train_data, 0, mac_weight=0.05)  # doctest: +SKIP
      >>> gate.choices, sorted(gate_params)  # doctest: +SKIP
      (4, ['hidden', 'logits'])
    """
    mac_weight = check_mac_weight(mac_weight)
    model = config.model()
    gate = gating.WidthGate(choices=len(config.buckets), hidden=config.gate_hidden)
    h = model.apply({"params": params}, _EXAMPLE, method=gating.GatedCNN.features_of)
    init_key, noise_key = jax.random.split(jax.random.key(seed))
    macs = jnp.asarray(gating.bucket_macs(model, params, _EXAMPLE), jnp.float32)

    def loss(gate_params: Any, images: jax.Array, labels: jax.Array, key: jax.Array) -> jax.Array:
        return gating.width_gate_loss(
            gate, gate_params, model, params, images, labels, key,
            macs=macs, mac_weight=np.float32(mac_weight),
            temperature=np.float32(config.temperature),
        )  # fmt: skip

    gate_params = _fit(
        config,
        loss,
        gate.init(init_key, h)["params"],
        train_data,
        seed,
        config.gate_epochs,
        noise_key,
        f"width gate (λ={mac_weight:g})",
    )
    return gate, gate_params


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


@dataclasses.dataclass(frozen=True, eq=False)
class DynamicNet:
    """A trained per-input network as :func:`accounting` and :func:`measure_dynamic` see it:
    a cheap pass giving the stem features h and every gated layer's
    :class:`~dynprune.gating.Gates`, and the trunk that runs under those gates.

    Build one with :meth:`gated` (FBS prefix gates at density d), :meth:`slimmable` (a
    supernet and its width gate) or :meth:`cascade` (a supernet run level by level).

    Attributes:
      model: the prefix-mode :class:`~dynprune.gating.GatedCNN`.
      params: its parameters (the gated network's with the predictors, the supernet's
        without).
      gates: ``x ↦ (h, gates)``, traceable.
      gate_macs: MACs per example of a gate whose parameters are not in ``params`` (the
        width gate's; 0 for the gated network, whose predictors ``params`` holds).
      levels: a cascade's levels, bucket indices (None: not a cascade). Its gates keep the
        widths of the level an input stopped at; the input also ran every level before.
      threshold: a cascade's t (None: not a cascade).
      stops: a cascade's ``x ↦`` the index into ``levels`` each input stopped at,
        traceable (None: not a cascade).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> from dynprune.harness import gating_runs
      >>> model = gating_runs.Config.from_dict(gating_runs.SMALL).model()
      >>> x = jnp.zeros((2, 28, 28, 1))
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> gate = gating.WidthGate(choices=len(model.buckets))
      >>> h = model.apply({"params": params}, x, method=gating.GatedCNN.features_of)
      >>> gate_params = gate.init(jax.random.key(1), h)["params"]
      >>> net = gating_runs.DynamicNet.slimmable(model, params, gate, gate_params)
      >>> logits, gates = net.logits(x)
      >>> logits.shape, net.gate_macs  # the gate: 4 stem channels to 4 buckets
      ((2, 10), 16.0)
    """

    model: gating.GatedCNN
    params: Any
    gates: Callable[[jax.Array], tuple[jax.Array, tuple[gating.Gates, ...]]]
    gate_macs: float = 0.0
    levels: tuple[int, ...] | None = None
    threshold: float | None = None
    stops: Callable[[jax.Array], jax.Array] | None = None

    @classmethod
    def gated(cls, model: gating.GatedCNN, params: Any, density: float) -> DynamicNet:
        """The gated network: its own predictors' prefix gates at density d.

        Args:
          model: the network.
          params: its parameters, predictors included.
          density: d ∈ (0, 1].

        Returns:
          The :class:`DynamicNet`.

        Raises:
          ValueError: for a density outside (0, 1].

        Examples:
          >>> import jax, jax.numpy as jnp
          >>> from dynprune.harness import gating_runs
          >>> model = gating_runs.Config.from_dict(gating_runs.SMALL).model()
          >>> params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
          >>> net = gating_runs.DynamicNet.gated(model, params, 0.5)
          >>> logits, gates = net.logits(jnp.ones((2, 28, 28, 1)))
          >>> logits.shape, [g.kept.shape for g in gates]
          ((2, 10), [(2, 8), (2, 8)])
        """
        d = np.float32(gating.check_density(density))
        return cls(
            model,
            params,
            lambda x: model.apply({"params": params}, x, d, method=gating.GatedCNN.gates),
        )

    @classmethod
    def slimmable(
        cls, model: gating.GatedCNN, params: Any, gate: gating.WidthGate, gate_params: Any
    ) -> DynamicNet:
        """The slimmable network: each input at the bucket its width gate's logits rank
        first, every gated layer at that bucket's width (:func:`dynprune.gating.width_gates`).

        Args:
          model: the network.
          params: the supernet's parameters (predictors, if present, are dropped).
          gate: the :class:`~dynprune.gating.WidthGate`.
          gate_params: its parameters.

        Returns:
          The :class:`DynamicNet`, ``gate_macs`` counted by :func:`dynprune.stats.cost`.

        Examples:
          An untrained gate's choice, every gated layer at the same bucket:

          >>> import jax, jax.numpy as jnp
          >>> from dynprune import gating
          >>> from dynprune.harness import gating_runs
          >>> model = gating_runs.Config.from_dict(gating_runs.SMALL).model()
          >>> x = jnp.linspace(0, 1, 3 * 784).reshape(3, 28, 28, 1)
          >>> params = model.init(jax.random.key(0), x)["params"]
          >>> gate = gating.WidthGate(choices=4, hidden=8)
          >>> h = model.apply({"params": params}, x, method=gating.GatedCNN.features_of)
          >>> net = gating_runs.DynamicNet.slimmable(
          ...     model, params, gate, gate.init(jax.random.key(1), h)["params"])
          >>> kept = [g.kept.sum(-1) for g in net.gates(x)[1]]
          >>> bool((kept[0] == kept[1]).all()), net.gate_macs  # 8 widths: the same buckets
          (True, 64.0)
        """
        params = _dense_params(params)

        def gates(x: jax.Array) -> tuple[jax.Array, tuple[gating.Gates, ...]]:
            h = model.apply({"params": params}, x, method=gating.GatedCNN.features_of)
            choice = jnp.argmax(gate.apply({"params": gate_params}, h), axis=-1)
            return h, gating.width_gates(model, choice)

        h = model.apply({"params": params}, _EXAMPLE, method=gating.GatedCNN.features_of)
        cost = dp.stats.cost(lambda p, h: gate.apply({"params": p}, h), gate_params, h)
        return cls(model, params, gates, float(cost["total"]["macs_dense"]))

    @classmethod
    def cascade(
        cls,
        model: gating.GatedCNN,
        params: Any,
        threshold: float,
        levels: Sequence[int] | None = None,
    ) -> DynamicNet:
        """The confidence cascade on a supernet: each input at the widths of the level it
        stops at (:func:`dynprune.gating.cascade`), so :meth:`logits` is the cascade's
        output; no gate of its own (``gate_macs`` 0: :func:`accounting` counts the levels
        run before by :func:`dynprune.gating.cascade_macs`).

        Args:
          model: the network.
          params: the supernet's parameters (predictors, if present, are dropped).
          threshold: t ∈ [0, 1].
          levels: bucket indices (default: the narrowest, then the full width).

        Returns:
          The :class:`DynamicNet`.

        Raises:
          ValueError: for a threshold outside [0, 1] or bad levels.

        Examples:
          >>> import jax, jax.numpy as jnp
          >>> from dynprune.harness import gating_runs
          >>> model = gating_runs.Config.from_dict(gating_runs.SMALL).model()
          >>> x = jnp.linspace(0, 1, 3 * 784).reshape(3, 28, 28, 1)
          >>> params = model.init(jax.random.key(0), x)["params"]
          >>> net = gating_runs.DynamicNet.cascade(model, params, 1.0)  # all escalated
          >>> [g.kept.sum(-1).tolist() for g in net.gates(x)[1]], net.levels
          ([[8, 8, 8], [8, 8, 8]], (0, 3))
        """
        params = _dense_params(params)
        levels = gating.cascade_levels(model, levels)
        threshold = gating.check_confidence_threshold(threshold)

        def features(x: jax.Array) -> jax.Array:
            return model.apply({"params": params}, x, method=gating.GatedCNN.features_of)

        def stop_of(h: jax.Array) -> jax.Array:
            return gating.cascade(model, params, h, threshold, levels)[1]

        def stops(x: jax.Array) -> jax.Array:
            return stop_of(features(x))

        def gates(x: jax.Array) -> tuple[jax.Array, tuple[gating.Gates, ...]]:
            h = features(x)  # once: the stem's features serve the cascade and the trunk
            return h, gating.width_gates(model, jnp.asarray(levels)[stop_of(h)])

        return cls(model, params, gates, levels=levels, threshold=threshold, stops=stops)

    def logits(self, x: jax.Array) -> tuple[jax.Array, tuple[gating.Gates, ...]]:
        """The masked computation: logits [B, classes] and the gates (traceable)."""
        h, gates = self.gates(x)
        logits = self.model.apply({"params": self.params}, h, gates, method=gating.GatedCNN.trunk)
        return logits, gates

    @functools.cached_property
    def runner(self) -> gating.BucketRunner:
        """The :class:`~dynprune.gating.BucketRunner` that runs the gates' widths only."""
        return gating.BucketRunner(self.model, self.params)

    def paths(self) -> dict[str, Callable[[jax.Array], jax.Array]]:
        """The paths that skip the pruned work, by name, each ``x ↦ logits`` equal to
        :meth:`logits`' up to float summation order; :func:`measure_dynamic` times the
        first at batch 1 and the last at batch 64.

        Every network has two. A cascade's, through
        :class:`~dynprune.gating.CascadeRunner`: ``"compact"``, ``CascadeRunner.compact``,
        one dispatch from the image that runs a level only if some image of the batch is
        still unsure (at batch 1 exactly the image's own levels); and ``"cascade"``, the stem
        (jitted), then ``CascadeRunner.run``: each level sliced on the images that reach it,
        a host sync per level. The others', through :attr:`runner`: ``"compact"``,
        ``runner.compact_run`` jitted with the gates' pass into one dispatch, which at batch
        1 runs exactly the image's own widths; and ``"bucket"``, ``runner.run``: the gates,
        a host sync, then each bucket's program on its examples.
        """
        if self.levels is not None:
            cascade = gating.CascadeRunner(self.model, self.params, self.levels)
            stem = jax.jit(
                lambda x: self.model.apply(
                    {"params": self.params}, x, method=gating.GatedCNN.features_of
                )
            )
            return {
                "compact": lambda x: cascade.compact(x, self.threshold),
                "cascade": lambda x: cascade.run(stem(x), self.threshold)[0],
            }
        runner, gates = self.runner, jax.jit(self.gates)
        return {
            "compact": jax.jit(lambda x: runner.compact_run(*self.gates(x))[0]),
            "bucket": lambda x: runner.run(*gates(x))[0],
        }


def accounting(net: DynamicNet, data: data_lib.Dataset) -> dict[str, Any]:
    """Error and per-input accounting of a dynamic network on ``data``.

    Args:
      net: the network (:class:`DynamicNet`).
      data: the images to evaluate, each gated on its own.

    Returns:
      ``error``, ``macs_dense`` (the ungated network), ``macs`` (mean effective MACs per
      example, the gates' own included), ``macs_p50``, ``macs_p95``, ``mac_ratio``,
      ``kept_fraction`` (mean per gated layer), ``jaccard`` (mean pairwise, all layers'
      kept sets together), ``density_per_class`` (mean kept fraction, all layers, per
      class), ``bucket_fraction`` (per gated layer, the fraction of examples at each bucket
      width; each row sums to 1, and a slimmable network's rows are equal); a cascade's
      MACs count every level an example ran (:func:`dynprune.gating.cascade_macs`), its
      kept sets and buckets the level it stopped at, and it adds ``escalated`` (the
      fraction of examples that ran past level 0).

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from dynprune.harness import data, gating_runs
      >>> model = gating_runs.Config.from_dict(gating_runs.SMALL).model()
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
      >>> images = np.random.default_rng(0).integers(0, 255, (20, 28, 28, 1), np.uint8)
      >>> images = data.Dataset(images, np.arange(20) % 10)
      >>> row = gating_runs.accounting(gating_runs.DynamicNet.gated(model, params, 0.5), images)
      >>> row["macs"] < row["macs_dense"], len(row["kept_fraction"]), len(row["density_per_class"])
      (True, 2, 10)
      >>> [sum(layer) for layer in row["bucket_fraction"]]
      [1.0, 1.0]
    """

    def logits_and_kept(x: jax.Array) -> tuple[jax.Array, ...]:
        logits, gates = net.logits(x)
        level = net.stops(x) if net.stops is not None else jnp.zeros(len(x), jnp.int32)
        return (logits, level, *(g.kept for g in gates))

    logits, level, *kept = _predict(jax.jit(logits_and_kept), data)
    layers = gating.layer_macs(net.model, net.params, kept, _EXAMPLE)
    buckets = gating.check_buckets(net.model.buckets)
    widths = [gating.bucket_widths(buckets, k.shape[-1]) for k in kept]
    index = [np.searchsorted(w, k.sum(-1)) for w, k in zip(widths, kept, strict=True)]
    cascade: dict[str, float] = {}
    if net.levels is None:
        layers.append(gating.LayerMACs(net.gate_macs, predictor=True))
        macs = gating.effective_macs(layers)
    else:  # each input ran every level up to the one it stopped at
        macs = gating.cascade_macs(net.model, net.params, level, net.levels, example=_EXAMPLE)
        cascade["escalated"] = float(np.mean(level > 0))
    summary = gating.summarize_macs(macs, gating.dense_macs(layers))
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
        "bucket_fraction": [
            (np.bincount(j, minlength=len(buckets)) / len(j)).tolist() for j in index
        ],
        **cascade,
    }


def static_widths(
    model: gating.GatedCNN, params: Any, target_macs: float
) -> tuple[float, tuple[int, ...], float]:
    """The widths of a static pruning whose MACs per example are closest to ``target_macs``.

    Every gated layer keeps the same fraction f of its output channels, round(f·C_l) (at
    least 1), f = k / C_1 for k = 1 … C_1 (whole channels of the first gated layer).

    Args:
      model: the network (its ``features`` give the widths).
      params: the ungated network's parameters (``GatedCNN.dense`` reads them).
      target_macs: the MACs per example to match (a dynamic run's mean on validation).

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
    layers = gating.layer_macs(model, params, kept, _EXAMPLE)
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


def _macs(apply_fn: Callable[[Any, jax.Array], Any], params: Any) -> float:
    """MACs per example of ``apply_fn(params, ·)`` (:func:`dynprune.stats.cost`)."""
    return float(dp.stats.cost(apply_fn, params, _EXAMPLE)["total"]["macs_dense"])


def _dense_fn(model: gating.GatedCNN) -> Callable[[Any, jax.Array], jax.Array]:
    return lambda p, x: model.apply({"params": p}, x, method=gating.GatedCNN.dense)


def measure_dynamic(
    config: Config, net: DynamicNet, dense: Any, data: data_lib.Dataset
) -> dict[str, Any]:
    """Batch-1 and batch-64 latency of a dynamic network's paths that skip the pruned work
    (:meth:`DynamicNet.paths`) against the dense network's (``dense``: that run's
    parameters), on the first images of ``data``.

    Every path is timed at batch 1 (on the same images as the dense network and
    :func:`measure_static`); the first path gives ``speedup_b1`` and the last
    ``speedup_b64``: the compact and the bucket path of a gated or slimmable network
    (at batch 1 the compact path runs exactly the image's own widths without a host sync;
    at batch 64 the bucket path runs each image at its own widths; a cascade's compact path
    runs the image's own levels in one dispatch, its per-level path each level on the
    images that reach it).

    Args:
      config: the experiment (``latency_examples`` images at batch 1, ``latency_reps``
        timed rounds).
      net: the dynamic network (:class:`DynamicNet`).
      dense: the dense run's parameters (``GatedCNN.dense``).
      data: the images timed (the first ones; at least 64 for batch 64).

    Returns:
      ``speedup_b1`` (dense ÷ the first path), ``{name}_speedup_b1`` for each other path
      (``bucket_speedup_b1``), ``speedup_b64`` (dense ÷ the last path), ``max_abs_diff``
      (every path vs the masked computation, :meth:`DynamicNet.logits`, batch 64) and the
      seconds per call (``dense_b1``, ``{name}_b1``, ``dense_b64``, ``{last}_b64``).

    Examples:
      It compiles a program per width bucket, which takes seconds, so it is not run here:

      >>> net = gating_runs.DynamicNet.gated(model, params, 0.5)  # doctest: +SKIP
      >>> r = gating_runs.measure_dynamic(config, net, dense, test)  # doctest: +SKIP
      >>> r["speedup_b1"], r["speedup_b64"]  # doctest: +SKIP
      (1.4, 1.9)
    """
    paths = net.paths()
    names = list(paths)
    first, last = names[0], names[-1]
    dense_fn = jax.jit(_dense_fn(net.model))
    images = data_lib.preprocess(data.images[: max(config.latency_examples, 64)])
    few = images[: config.latency_examples]
    b1 = dp.stats.per_image_medians(
        {"dense": lambda x: dense_fn(dense, x), **paths}, few, reps=config.latency_reps
    )
    batch = jnp.asarray(images[:64])
    b64 = dp.stats.interleaved_medians(
        {"dense": lambda: dense_fn(dense, batch), last: lambda: paths[last](batch)},
        reps=config.latency_reps,
        warmup=3,
    )
    masked = jax.jit(lambda x: net.logits(x)[0])(batch)
    return {
        "speedup_b1": b1["dense"] / b1[first],
        **{f"{name}_speedup_b1": b1["dense"] / b1[name] for name in paths if name != first},
        "speedup_b64": b64["dense"] / b64[last],
        "max_abs_diff": max(
            float(jnp.max(jnp.abs(path(batch) - masked))) for path in paths.values()
        ),
        "seconds": {
            **{f"{name}_b1": seconds / len(few) for name, seconds in b1.items()},
            "dense_b64": b64["dense"],
            f"{last}_b64": b64[last],
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
    b1 = dp.stats.per_image_medians(
        {
            "dense": lambda x: dense_fn(dense, x),
            "static": lambda x: small_fn(reconstruction.params, x),
        },
        images[: config.latency_examples],
        reps=config.latency_reps,
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


def remeasure(
    config: Config,
    row: Mapping[str, Any],
    *,
    store: Store | None = None,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Times a finished run's network against its dense run again, as :func:`run` timed
    it (:func:`measure_dynamic` or :func:`measure_static`, same images, same rounds), and
    trains nothing: a row's own speedups were measured beside whatever else the machine
    was running, so a second measurement, e.g. on a quiet machine, is taken here and
    reported beside the row, never written into it (a row exists once).

    The networks come from the store: a cascade's supernet (``supernet_key``), a
    slimmable run's supernet and width gate (its key), a static run's architecture
    (:func:`static_widths` of the stored dense weights at the row's ``macs_budget``, rebuilt
    by :func:`dynprune.surgery.reconstruct`; its retrained weights are not stored, and
    latency does not depend on them).

    Args:
      config: the experiment the row belongs to.
      row: a ``cascade``, ``slimmable`` or ``static`` row of it.
      store: where its parameters are (default: :class:`Store`'s).
      data_dir: the TFDS data directory (default ``$TFDS_DATA_DIR``).

    Returns:
      ``speedup_b1``, ``speedup_b64`` and ``seconds`` as in the row, and what shows the
      network is the row's: a static row's rebuilt ``architecture``, a dynamic row's
      ``max_abs_diff`` (its skipping path against the masked computation).

    Raises:
      ValueError: for a dense or gated row (a gated run's parameters are not stored), or
        a row whose parameters are not in the store.

    Examples:
      It compiles the networks' programs, which takes seconds, so it is not run here (the
      tests run it on :data:`SMALL`):

      >>> gating_runs.remeasure(config, row)["speedup_b1"]  # doctest: +SKIP
      3.4
    """
    method, dataset = row["method"], row["dataset"]
    if method not in REMEASURABLE:
        raise ValueError(
            f"remeasure times cascade, slimmable and static rows, got a {method} row "
            f"(key {row['key']}): a gated run's parameters are not stored"
        )
    store = Store() if store is None else store
    model = config.model()
    like = _dense_params(_init(model))

    def stored(key: str) -> Any:
        params = store.load(key, like)
        if params is None:
            raise ValueError(f"the {method} row {row['key']} needs {store.path(key)}")
        return params

    dense = stored(run_key(config, dataset, "dense", row["seed"], row["split"], None))
    data = (
        data_lib.load(dataset, "validation", validation=config.validation, data_dir=data_dir)
        if row["split"] == "validation"
        else data_lib.load(dataset, "test", data_dir=data_dir)
    )
    if method == "static":
        widths = static_widths(model, dense, row["macs_budget"])[1]
        masks = _channel_masks(dense, widths)
        rebuilt = dp.surgery.reconstruct(_dense_fn(model), dense, masks, _EXAMPLE)
        return {
            **measure_static(config, rebuilt, dense, data),
            "architecture": rebuilt.architecture,
        }
    supernet = stored(row["supernet_key"])
    if method == "cascade":
        net = DynamicNet.cascade(model, supernet, row["threshold"], config.cascade_levels)
    else:
        gate = gating.WidthGate(choices=len(config.buckets), hidden=config.gate_hidden)
        h = model.apply({"params": supernet}, _EXAMPLE, method=gating.GatedCNN.features_of)
        shape = jax.eval_shape(lambda: gate.init(jax.random.key(0), h)["params"])
        gate_params = store.load(row["key"], shape)
        if gate_params is None:
            raise ValueError(f"the slimmable row {row['key']} needs {store.path(row['key'])}")
        net = DynamicNet.slimmable(model, supernet, gate, gate_params)
    measured = measure_dynamic(config, net, dense, data)
    return {k: measured[k] for k in ("speedup_b1", "speedup_b64", "seconds", "max_abs_diff")}


class Store:
    """Trained parameters of finished runs, kept as ``.npz`` under the cache directory
    (``$DYNPRUNE_CACHE_DIR/gating``), so a static run can start from its dense run's
    weights and slimmable runs share a supernet in a later process (dense runs: under
    their key; supernets: under a key of (dataset, seed); width gates: under their
    slimmable run's key).

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


def _setting(
    method: str, density: float | None, mac_weight: float | None, threshold: float | None
) -> tuple[float | None, float | None, float | None]:
    """A run's (density, mac_weight, threshold), checked: a dynamic run has the one that
    sets it (:data:`DYNAMIC`), a static run one of them (its budget's run), a dense run
    none."""
    if method == "dense":
        return None, None, None
    given = {"density": density, "mac_weight": mac_weight, "threshold": threshold}
    if method in DYNAMIC:
        wanted = DYNAMIC[method]
        if given[wanted] is None or any(v is not None for k, v in given.items() if k != wanted):
            raise ValueError(f"a {method} run needs a {wanted} (and nothing else)")
    elif sum(v is not None for v in given.values()) != 1:
        raise ValueError(
            "a static run needs one of a density (a gated run's budget), a mac_weight "
            "(a slimmable run's budget) or a threshold (a cascade run's budget)"
        )
    return (
        None if density is None else float(gating.check_density(density)),
        None if mac_weight is None else check_mac_weight(mac_weight),
        None if threshold is None else gating.check_confidence_threshold(threshold),
    )


def setting_label(row: Mapping[str, Any]) -> str:
    """A row's setting as text: ``"0.5"`` (a density), ``"λ=0.1"`` (a MAC weight),
    ``"t=0.9"`` (a cascade's threshold), or ``""`` (dense).

    Args:
      row: a result row (rows written before slimmable or cascade runs existed have no
        ``mac_weight`` or ``threshold``).

    Returns:
      The label.

    Examples:
      >>> from dynprune.harness import gating_runs
      >>> gating_runs.setting_label({"density": 0.5}), gating_runs.setting_label(
      ...     {"density": None, "mac_weight": 0.05}), gating_runs.setting_label(
      ...     {"density": None, "mac_weight": None, "threshold": 0.9})
      ('0.5', 'λ=0.05', 't=0.9')
    """
    if row["density"] is not None:
        return f"{row['density']:g}"
    if row.get("mac_weight") is not None:
        return f"λ={row['mac_weight']:g}"
    return "" if row.get("threshold") is None else f"t={row['threshold']:g}"


def _supernet(
    config: Config, dataset: str, seed: int, train_data: data_lib.Dataset, store: Store
) -> tuple[Any, str]:
    """The stored supernet of (dataset, seed), trained and stored first if missing; its key."""
    key = _supernet_key(config, dataset, seed)
    params = store.load(key, _dense_params(_init(config.model())))
    if params is None:
        params = train(config, "slimmable", train_data, seed)
        store.save(key, params)
    return params, key


def run(
    config: Config,
    dataset: str,
    method: str,
    seed: int,
    split: str,
    *,
    density: float | None = None,
    mac_weight: float | None = None,
    threshold: float | None = None,
    out: str | os.PathLike,
    store: Store | None = None,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Runs one (dataset, method, seed) and appends its row to ``out`` (once per key).

    Every run but the dense one needs its dense run (same dataset, seed and split) in the
    store, for the latency baseline or the static run's weights; a dense run already in the
    store (trained for another config with the same training fields, hence the same key)
    is evaluated, not trained again. A static run needs the
    row of its budget's run in ``out``: the gated run at ``density``, the slimmable run
    at ``mac_weight`` or the cascade run at ``threshold`` (same dataset, seed and split),
    whose ``validation_macs`` it matches. A slimmable run trains the supernet of (dataset,
    seed) once, stores it, and trains its width gate on it (stored under the run's key;
    the row's ``supernet_key`` names the supernet's). A cascade run trains nothing: it
    runs the stored supernet of (dataset, seed) (trained and stored first if missing) at
    ``config.cascade_levels``.

    Args:
      config: the experiment.
      dataset: one of ``config.datasets``.
      method: one of :data:`METHODS`.
      seed: initialisation and data order.
      split: :data:`SPLITS`: where the row's ``error`` is measured.
      density: the gates' d (gated runs; static runs at a gated run's budget).
      mac_weight: the width gate's λ (slimmable runs; static runs at a slimmable run's
        budget).
      threshold: the cascade's t (cascade runs; static runs at a cascade run's budget).
      out: the JSONL results file.
      store: where dense, supernet and width gate parameters are kept (default:
        :class:`Store`'s).
      data_dir: the TFDS data directory (default ``$TFDS_DATA_DIR``).

    Returns:
      The row (the one already in ``out`` if this key is there).

    Raises:
      ValueError: for an unknown method or split, a gated run without a density, a
        slimmable run without a MAC weight, a cascade run without a threshold, a static
        run without exactly one of them, or a run whose dense or budget run has not
        finished.

    Examples:
      It trains on the real images, so it is not run here (``experiments/gating.py`` is
      its command line; the tests run it on :data:`SMALL`):

      >>> row = gating_runs.run(config, "mnist", "slimmable", 0, "test", mac_weight=0.05,
      ...                       out="gating-dsnet.jsonl")  # doctest: +SKIP
      >>> row["error"], row["mac_ratio"], row["bucket_fraction"][0]  # doctest: +SKIP
      (0.011, 2.4, [0.62, 0.2, 0.1, 0.08])
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    density, mac_weight, threshold = _setting(method, density, mac_weight, threshold)
    key = run_key(config, dataset, method, seed, split, density, mac_weight, threshold)
    done = {r["key"]: r for r in results.read_jsonl(out)}
    if key in done:
        return done[key]
    setting = setting_label({"density": density, "mac_weight": mac_weight, "threshold": threshold})
    label = f"{dataset} seed {seed} ({split}, {setting})"
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
        "mac_weight": mac_weight,
        "threshold": threshold,
    }
    if method == "dense":
        # stored already if a config with the same training fields (the key) trained it
        params = store.load(key, _dense_params(_init(model)))
        if params is None:
            params = train(config, "dense", train_data, seed)
            store.save(key, params)
        logits = _predict(jax.jit(lambda x: _dense_fn(model)(params, x)), eval_data)[0]
        macs = _macs(_dense_fn(model), params)
        row |= {"error": _error(logits, eval_data.labels), "macs": macs, "mac_ratio": 1.0}
        row |= {"speedup_b1": 1.0, "speedup_b64": 1.0}
    else:
        dense = store.load(dense_key, _dense_params(_init(model)))
        if dense is None:
            raise ValueError(f"the {method} run of {label} needs its dense run first")
        if method in DYNAMIC:
            if method == "gated":
                params = train(config, "gated", train_data, seed, density=density)
                net = DynamicNet.gated(model, params, density)
            else:
                supernet, row["supernet_key"] = _supernet(config, dataset, seed, train_data, store)
                if method == "slimmable":
                    gate, gate_params = train_gate(config, supernet, train_data, seed, mac_weight)
                    store.save(key, gate_params)
                    net = DynamicNet.slimmable(model, supernet, gate, gate_params)
                else:
                    net = DynamicNet.cascade(model, supernet, threshold, config.cascade_levels)
            row |= accounting(net, eval_data)
            row["validation_macs"] = (
                row["macs"] if split == "validation" else accounting(net, val_data)["macs"]
            )
            row |= measure_dynamic(config, net, dense, eval_data)
        else:
            given = {"density": density, "mac_weight": mac_weight, "threshold": threshold}
            budget_method = next(m for m, setting in DYNAMIC.items() if given[setting] is not None)
            budget_key = run_key(
                config, dataset, budget_method, seed, split, density, mac_weight, threshold
            )
            if budget_key not in done:
                raise ValueError(f"the static run of {label} needs its {budget_method} run first")
            budget = done[budget_key]["validation_macs"]
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
            rebuilt = dp.surgery.reconstruct(_dense_fn(model), params, masks, _EXAMPLE)
            logits = _predict(jax.jit(lambda x: rebuilt.apply(rebuilt.params, x)), eval_data)[0]
            macs = _macs(rebuilt.apply, rebuilt.params)
            dense_macs = _macs(_dense_fn(model), dense)
            row |= {
                "error": _error(logits, eval_data.labels),
                "macs_dense": dense_macs,
                "macs": macs,
                "mac_ratio": dense_macs / macs,
                "macs_budget": budget,
                "budget_method": budget_method,
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
    return jax.eval_shape(lambda: model.init(jax.random.key(0), _EXAMPLE)["params"])


def choose(
    rows: Iterable[Mapping[str, Any]], config: Config, dataset: str, method: str = "gated"
) -> float:
    """The setting the validation runs choose for a dynamic method on ``dataset`` (the rule
    fixed in advance): the gated method's density, the slimmable method's MAC weight or
    the cascade's threshold.

    Among the candidates (:meth:`Config.candidates`) whose validation error is at most the
    dense run's plus ``config.max_loss``, the one with the largest ``mac_ratio``; if none
    qualifies, the one with the lowest validation error.

    Args:
      rows: result rows (only this config's validation rows of the selection seed count).
      config: the experiment (the candidates, ``max_loss``, ``selection_seed``).
      dataset: the dataset to choose for.
      method: a key of :data:`DYNAMIC`.

    Returns:
      The chosen density (gated), MAC weight (slimmable) or threshold (cascade).

    Raises:
      ValueError: for a method that is not dynamic, or if a validation run of the dense
        network or of a candidate is missing.

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
      >>> gating_runs.choose(rows, config, "mnist")  # 0.3 loses 0.4 points > 0.3
      0.5
    """
    if method not in DYNAMIC:
        raise ValueError(f"method must be one of {tuple(DYNAMIC)}, got {method!r}")
    setting = DYNAMIC[method]
    mine = [
        r
        for r in rows
        if r.get("experiment") == "gating"
        and r["dataset"] == dataset
        and r["split"] == "validation"
        and r["seed"] == config.selection_seed
        and r["key"]
        == run_key(
            config,
            dataset,
            r["method"],
            r["seed"],
            "validation",
            r["density"],
            r.get("mac_weight"),
            r.get("threshold"),
        )
    ]
    dense = [r for r in mine if r["method"] == "dense"]
    runs = {r[setting]: r for r in mine if r["method"] == method}
    candidates = config.candidates(method)
    missing = [c for c in candidates if c not in runs]
    if not dense or missing:
        raise ValueError(
            f"{dataset}: the validation runs are not finished (dense: {bool(dense)}, "
            f"{method} runs missing: {setting} in {missing})"
        )
    # "at most": an error exactly max_loss above the dense run's qualifies, float sums aside
    # (0.0116 + 0.003 < 0.0146 in float64), hence the tolerance well below one image.
    bound = dense[0]["error"] + config.max_loss + 1e-9
    ok = [c for c in candidates if runs[c]["error"] <= bound]
    if ok:
        return max(ok, key=lambda c: runs[c]["mac_ratio"])
    return min(candidates, key=lambda c: runs[c]["error"])


def plan(config: Config, rows: Iterable[Mapping[str, Any]], split: str) -> list[dict[str, Any]]:
    """The runs of ``split`` in order, as keyword arguments of :func:`run` (without ``out``):
    validation: per dataset, the dense run, a gated run per candidate density, a
    slimmable run per candidate MAC weight and a cascade run per candidate threshold
    (selection seed); test: per dataset and seed,
    dense, then for each dynamic method with candidates, that method and static at its
    chosen setting (:func:`choose`).

    Args:
      config: the experiment.
      rows: the rows so far (the test plan reads the validation rows' choices).
      split: :data:`SPLITS`.

    Returns:
      One dict per run.

    Raises:
      ValueError: for the test plan before the validation runs are finished.

    Examples:
      >>> from dynprune.harness import gating_runs
      >>> config = gating_runs.Config.from_dict(
      ...     {**gating_runs.SMALL, "mac_weights": [0.1], "thresholds": [0.9]})
      >>> [(r["method"], r.get("density") or r.get("mac_weight") or r.get("threshold"))
      ...  for r in gating_runs.plan(config, [], "validation")]  # doctest: +NORMALIZE_WHITESPACE
      [('dense', None), ('gated', 0.5), ('gated', 0.3), ('slimmable', 0.1),
       ('cascade', 0.9)]
    """
    rows = list(rows)
    runs = []
    for dataset in config.datasets:
        if split == "validation":
            seed = config.selection_seed
            runs.append(dict(dataset=dataset, method="dense", seed=seed, split=split))
            for method, setting in DYNAMIC.items():
                for value in config.candidates(method):
                    runs.append(
                        dict(
                            dataset=dataset,
                            method=method,
                            seed=seed,
                            split=split,
                            **{setting: value},
                        )
                    )
            continue
        chosen = {
            method: {setting: choose(rows, config, dataset, method)}
            for method, setting in DYNAMIC.items()
            if config.candidates(method)
        }
        for seed in config.seeds:
            runs.append(dict(dataset=dataset, method="dense", seed=seed, split=split))
            for method, setting in chosen.items():
                for arm in (method, "static"):
                    runs.append(
                        dict(dataset=dataset, method=arm, seed=seed, split=split, **setting)
                    )
    return runs


def format_table(rows: Iterable[Mapping[str, Any]], config: Config) -> str:
    """Markdown table of the test runs: per dataset, method and setting (d, λ or t), error
    (mean ± sd over seeds), the loss against dense, MAC ratio and measured speedups at
    batch 1 and 64.

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
        "| dataset | method | d / λ / t | seeds | test error % | vs dense (pt) | MAC ratio "
        "| speedup b1 | speedup b64 | architecture |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in config.datasets:
        base = [r["error"] for r in rows if r["dataset"] == dataset and r["method"] == "dense"]
        for method in METHODS:
            arms: dict[str, list[Mapping[str, Any]]] = {}
            for r in rows:
                if r["dataset"] == dataset and r["method"] == method:
                    arms.setdefault(setting_label(r), []).append(r)
            for setting, mine in arms.items():
                err = 100 * np.array([r["error"] for r in mine])
                sd = f" ± {err.std(ddof=1):.2f}" if len(err) > 1 else ""
                delta = err.mean() - 100 * np.mean(base) if base else math.nan
                arch = " / ".join(dict.fromkeys(r.get("architecture", "") for r in mine))
                lines.append(
                    f"| {dataset} | {method} | {setting} | {len(mine)} | {err.mean():.2f}{sd} "
                    f"| {delta:+.2f} | {np.mean([r['mac_ratio'] for r in mine]):.2f}x "
                    f"| {np.mean([r['speedup_b1'] for r in mine]):.2f}x "
                    f"| {np.mean([r['speedup_b64'] for r in mine]):.2f}x | {arch} |"
                )
    return "\n".join(lines)
