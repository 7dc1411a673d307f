"""Run configurations as plain data: frozen dataclasses that round-trip through JSON.

A run is described by values, never by code, so it can be hashed, diffed, swept and shown. A
pruner is named with its arguments, ``{"algorithm": "dns", "c": {"fc1": 5.7, "default": 1.0},
"warmup": 0.4}``, and built through :func:`dynprune.algorithms.get`. Arguments that count
steps (:data:`dynprune.algorithms.STEP_ARGUMENTS`: ``begin``, ``end``, ``every``, …) are written
relative to their phase, so one config serves any dataset size or batch size:

- an ``int`` is a number of steps;
- a ``float`` in [0, 1] is a fraction f of the phase's T steps: ⌊f·T⌋;
- ``{"epochs": e}`` is ⌊e·E⌋ with E steps per epoch.

A run's key is the hash of its canonical data (:func:`run_key`), so reformatting code never
orphans a result row.

Examples:
  >>> config = RunConfig(model="lenet300", prune=Phase(epochs=20, lr=1e-3,
  ...     pruner={"algorithm": "gmp", "target": 0.9, "begin": 0.1, "end": 0.7}))
  >>> from_dict(to_dict(config)) == config
  True
  >>> pruner_arguments(config.prune.pruner, steps=8580, per_epoch=429)
  {'target': 0.9, 'begin': 858, 'end': 6006}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from dynprune import algorithms, checks
from dynprune.harness import data, models, results

__all__ = [
    "MaskInit",
    "Phase",
    "RunConfig",
    "from_dict",
    "phase_dict",
    "pruner_arguments",
    "run_key",
    "to_dict",
]

OPTIMIZERS = ("adam", "sgd")
DISTILL = {"alpha", "temperature"}
SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass(frozen=True)
class Phase:
    """One training phase: optimizer settings and, when pruning, the pruner spec.

    The optimizer is built by :func:`dynprune.harness.optimizers.make_optimizer`; the pruner's
    step arguments are resolved against the phase by :func:`pruner_arguments`.

    Attributes:
      epochs: passes over the training split, an integer >= 0 (0: the pruner acts once at
        step 0, no training).
      lr: peak learning rate η, >= 0.
      pruner: ``{"algorithm": name, **arguments}`` for :func:`dynprune.algorithms.get`, or
        ``None`` (the default): train densely (or, after a pruning phase, with its masks fixed).
        ``{"algorithm": "sparse_vd", ...}`` trains θ and log σ² on the SGVB loss instead
        (:func:`dynprune.algorithms.sparse_vd`; the harness's
        :mod:`~dynprune.harness.experiment` says how), with no weight decay.
      optimizer: ``"adam"`` (the default: AdamW, decoupled weight decay) or ``"sgd"``
        (momentum, L2 decay added to the gradient).
      schedule: ``"cosine"`` (the default: decay to 0 over the phase) or ``"constant"``.
      weight_decay: AdamW's decoupled decay, or SGD's L2 coefficient, >= 0 (default 0).
      momentum: SGD momentum, in [0, 1] (default 0.9; unused by Adam).
      shift: augmentation: random translations of up to ``shift`` pixels, an integer >= 0
        (default 0: none).
      distill: ``{"alpha": α, "temperature": T}``: train on the distillation loss of
        :func:`dynprune.harness.train.distillation` with the run's dense model as the
        teacher, α in [0, 1], T > 0; retrain phase only. ``None`` (the default): plain
        cross-entropy; left out of :func:`to_dict`, so configs without it keep their keys.

    Raises:
      ValueError: a number field out of its range (the message names the field and the
        value), an unknown optimizer or schedule, or a pruner spec with no or an unknown
        algorithm, an argument that algorithm does not take, or a hyperparameter out of range;
        weight decay with ``sparse_vd``.

    Examples:
      >>> Phase(epochs=20, lr=1e-3, pruner={"algorithm": "gmp", "target": 0.9}).optimizer
      'adam'
      >>> Phase(epochs=1, lr=0.1, optimizer="rmsprop")
      Traceback (most recent call last):
      ValueError: unknown optimizer 'rmsprop'; valid: adam, sgd
      >>> Phase(epochs=1, lr=-0.1)
      Traceback (most recent call last):
      ValueError: Phase: lr must be a finite number >= 0, got -0.1
      >>> Phase(epochs=1, lr=0.1, pruner={"algorithm": "gmp", "target": 1.5})
      Traceback (most recent call last):
      ValueError: pruner 'gmp': hyperparameter 'target' must be a finite number in [0, 1], got 1.5
    """

    epochs: int
    lr: float
    pruner: Mapping[str, Any] | None = None
    optimizer: str = "adam"
    schedule: str = "cosine"
    weight_decay: float = 0.0
    momentum: float = 0.9
    shift: int = 0
    distill: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        _check("Phase", checks.steps, "epochs", self.epochs, 0)
        _check("Phase", checks.real, "lr", self.lr, 0.0)
        _check("Phase", checks.real, "weight_decay", self.weight_decay, 0.0)
        _check("Phase", checks.real, "momentum", self.momentum, 0.0, 1.0)
        _check("Phase", checks.steps, "shift", self.shift, 0)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        if self.pruner is not None:
            _check_pruner(self.pruner)
            if self.pruner["algorithm"] == "sparse_vd" and self.weight_decay:
                raise ValueError(
                    "Phase: sparse_vd trains log σ² beside the weights, and weight decay would "
                    f"pull it towards 0; its KL term is the regulariser: set weight_decay to 0, "
                    f"got {self.weight_decay}"
                )
        if self.distill is not None:
            if not isinstance(self.distill, Mapping) or set(self.distill) != DISTILL:
                raise ValueError(
                    "Phase: distill takes {'alpha': ..., 'temperature': ...}, "
                    f"got {self.distill!r}"
                )
            _check("Phase", checks.real, "distill alpha", self.distill["alpha"], 0.0, 1.0)
            _check("Phase", checks.real, "distill temperature", self.distill["temperature"], 1e-6)


@dataclasses.dataclass(frozen=True)
class MaskInit:
    """Masks chosen before training from several batches at the initial weights (SNIP).

    Attributes:
      target: fraction of the kernel weights to drop, in [0, 1], ranked globally by
        s = Σ_b |w₀ · ∂L_b/∂w| (:func:`dynprune.algorithms.snip_masks`).
      batches: number of training batches B, >= 1 (default 1: the first B of epoch 0 in the
        run's data order).
      batch_size: images per saliency batch, >= 1 (default 128).
      shift: the augmentation of those batches (as :attr:`Phase.shift`, an integer >= 0;
        default 0).

    Raises:
      ValueError: a field out of its range; the message names the field and the value.

    Examples:
      >>> config = RunConfig(model="lenet300", prune=Phase(epochs=20, lr=1e-3),
      ...                    init_masks=MaskInit(target=0.9, batches=10))
      >>> config.method
      'snip_masks'
      >>> MaskInit(target=1.5)
      Traceback (most recent call last):
      ValueError: MaskInit: target must be a finite number in [0, 1], got 1.5

    References:
      Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity", 2019.
    """

    target: float
    batches: int = 1
    batch_size: int = 128
    shift: int = 0

    def __post_init__(self) -> None:
        _check("MaskInit", checks.real, "target", self.target, 0.0, 1.0)
        _check("MaskInit", checks.steps, "batches", self.batches, 1)
        _check("MaskInit", checks.steps, "batch_size", self.batch_size, 1)
        _check("MaskInit", checks.steps, "shift", self.shift, 0)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole run: model, data, optional dense pre-training, the pruning phase, a fine-tune,
    and an optional retrain of the physically smaller model.

    Attributes:
      model: a name in :data:`dynprune.harness.models.MODELS`.
      prune: the main phase (with ``pruner=None`` and no ``init_masks``, dense training).
      dataset: a name in :data:`dynprune.harness.data.DATASETS`.
      validation: training examples held out as the validation split, >= 1 (every run
        reports its validation error).
      batch_size: images per training step in every phase, >= 1.
      pretrain: dense pre-training, cached per (model, data, seed, phase).
      finetune: a phase after pruning that trains with the masks fixed.
      init_masks: SNIP masks chosen before the prune phase (which then trains them fixed).
      examples: if set (>= 1), every split is cut to its first ``examples`` images (smoke
        runs); ``None`` (the default): whole splits.
      retrain: after pruning (and fine-tuning), rebuild w ⊙ m as a physically smaller model
        (:func:`dynprune.surgery.reconstruct`) and train it densely for this phase
        (:mod:`dynprune.harness.retrain`). ``None`` (the default) is left out of
        :func:`to_dict`, so configs without it keep their keys.

    Raises:
      ValueError: ``validation``, ``batch_size`` or ``examples`` out of its range (the
        message names the field and the value), an unknown model or dataset, a pruner
        together with ``init_masks`` (which are trained fixed), or a pruner in
        ``pretrain``, ``finetune`` or ``retrain``.

    Examples:
      >>> config = RunConfig(model="lenet5", prune=Phase(epochs=20, lr=1e-3,
      ...     pruner={"algorithm": "gmp", "target": 0.99}), finetune=Phase(epochs=5, lr=1e-4))
      >>> [name for name, _ in config.phases()], config.method
      (['prune', 'finetune'], 'gmp')
      >>> RunConfig(model="lenet5", prune=Phase(epochs=1, lr=1e-3),
      ...           finetune=Phase(epochs=1, lr=1e-4, pruner={"algorithm": "gmp", "target": 0.5}))
      Traceback (most recent call last):
      ValueError: finetune keeps the prune phase's masks fixed: it takes no pruner
    """

    model: str
    prune: Phase
    dataset: str = "mnist"
    validation: int = 5000
    batch_size: int = 128
    pretrain: Phase | None = None
    finetune: Phase | None = None
    init_masks: MaskInit | None = None
    examples: int | None = None
    retrain: Phase | None = None

    def __post_init__(self) -> None:
        _check("RunConfig", checks.steps, "validation", self.validation, 1)
        _check("RunConfig", checks.steps, "batch_size", self.batch_size, 1)
        if self.examples is not None:
            _check("RunConfig", checks.steps, "examples", self.examples, 1)
        _check_choice("model", self.model, tuple(models.MODELS))
        _check_choice("dataset", self.dataset, data.DATASETS)
        if self.init_masks is not None and self.prune.pruner is not None:
            raise ValueError(
                "a config with init_masks trains them fixed: its prune phase takes no pruner, "
                f"got {dict(self.prune.pruner)}"
            )
        if self.pretrain is not None and self.pretrain.pruner is not None:
            raise ValueError("pretrain is dense: it takes no pruner")
        if self.finetune is not None and self.finetune.pruner is not None:
            raise ValueError("finetune keeps the prune phase's masks fixed: it takes no pruner")
        if self.retrain is not None and self.retrain.pruner is not None:
            raise ValueError("retrain trains the reconstructed model densely: it takes no pruner")
        for name, phase in self.phases():
            if phase.distill is not None and (name != "retrain" or self.pretrain is None):
                raise ValueError(
                    f"distill (in {name}) applies to the retrain phase of a run with a "
                    "pretrain phase, whose dense model is the teacher"
                )

    def phases(self) -> list[tuple[str, Phase]]:
        """``[(name, phase)]`` of the phases that exist, in the order they run.

        The order is ``pretrain``, ``prune``, ``finetune``, ``retrain``; absent ones are left out.

        Returns:
          The present phases with their names.

        Examples:
          >>> config = RunConfig(model="lenet300", prune=Phase(epochs=2, lr=1e-3),
          ...                    pretrain=Phase(epochs=5, lr=1e-3))
          >>> [(name, phase.epochs) for name, phase in config.phases()]
          [('pretrain', 5), ('prune', 2)]
        """
        named = (
            ("pretrain", self.pretrain),
            ("prune", self.prune),
            ("finetune", self.finetune),
            ("retrain", self.retrain),
        )
        return [(name, phase) for name, phase in named if phase is not None]

    @property
    def method(self) -> str:
        """The pruning algorithm's name, ``"snip_masks"`` for init masks, ``"dense"`` if none.

        Examples:
          >>> RunConfig(model="lenet300", prune=Phase(epochs=2, lr=1e-3)).method
          'dense'
        """
        if self.init_masks is not None:
            return "snip_masks"
        return "dense" if self.prune.pruner is None else self.prune.pruner["algorithm"]


_NESTED = {
    "prune": Phase,
    "pretrain": Phase,
    "finetune": Phase,
    "retrain": Phase,
    "init_masks": MaskInit,
}
# Fields added after rows were keyed: left out of the data while unset, so old keys stay.
_OMITTED_WHEN_NONE = ("retrain", "distill")


def to_dict(config: RunConfig) -> dict[str, Any]:
    """The config as JSON-ready data (nested dicts; pruner specs as plain dicts).

    Every field is written, defaults included, except fields added after results were keyed
    (``retrain``, :class:`Phase`'s ``distill``): they are left out while they are ``None``, so a
    config that does not use them has the data, and the :func:`run_key`, it had before they
    existed.

    Args:
      config: the run's configuration.

    Returns:
      A dict of JSON types that :func:`from_dict` turns back into an equal config.

    Examples:
      >>> values = to_dict(RunConfig(model="lenet300", prune=Phase(epochs=2, lr=1e-3)))
      >>> values["prune"]["optimizer"], values["pretrain"], "retrain" in values
      ('adam', None, False)
    """

    return _plain(config)


def phase_dict(phase: Phase) -> dict[str, Any]:
    """One phase as JSON-ready data, as :func:`to_dict` writes it (e.g. for a cache key).

    Args:
      phase: the phase.

    Returns:
      Its fields as a dict, ``distill`` left out while it is ``None``.

    Examples:
      >>> sorted(phase_dict(Phase(epochs=2, lr=1e-3)))  # doctest: +NORMALIZE_WHITESPACE
      ['epochs', 'lr', 'momentum', 'optimizer', 'pruner', 'schedule', 'shift',
       'weight_decay']
    """
    return _plain(phase)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        fields = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
        return {k: _plain(v) for k, v in fields if not (k in _OMITTED_WHEN_NONE and v is None)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def from_dict(values: Mapping[str, Any]) -> RunConfig:
    """Inverse of :func:`to_dict`: the :class:`RunConfig` of JSON data.

    Nested phases (``prune``, ``pretrain``, ``finetune``, ``retrain``) and ``init_masks`` are
    mappings of their fields, or ``None``; omitted fields take their defaults.

    Args:
      values: a mapping of :class:`RunConfig` fields, e.g. a parsed JSON config file.

    Returns:
      The config, validated as on construction.

    Raises:
      ValueError: a value that is not a mapping where one is expected, unknown or missing
        fields (the message lists the valid ones), or an invalid value (see
        :class:`RunConfig`, :class:`Phase` and :class:`MaskInit`).

    Examples:
      >>> config = from_dict({"model": "lenet300", "prune": {"epochs": 2, "lr": 1e-3}})
      >>> config.prune.schedule, config.dataset
      ('cosine', 'mnist')
      >>> from_dict({"model": "lenet300"})
      Traceback (most recent call last):
      ValueError: missing field(s) ['prune'] in config (RunConfig)
    """
    return _build(RunConfig, values, "config")


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping of {cls.__name__} fields, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown field(s) {unknown} in {where}; valid {cls.__name__} fields: {sorted(fields)}"
        )
    missing = sorted(
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"missing field(s) {missing} in {where} ({cls.__name__})")
    kwargs = {}
    for name, value in values.items():
        nested = _NESTED.get(name) if cls is RunConfig else None
        kwargs[name] = (
            _build(nested, value, f"{where}.{name}")
            if nested is not None and value is not None
            else value
        )
    return cls(**kwargs)


def run_key(config: RunConfig, seed: int, *, test: bool, mode: str | None = None) -> str:
    """The key of one run: a hash of its canonical data.

    The data are the config (:func:`to_dict`), the seed, whether test error is computed, and
    the protocol mode if one is given; the key is :func:`dynprune.harness.results.run_key` of
    them. Equal data give equal keys in any process, on any machine.

    Args:
      config: the run's configuration.
      seed: the run's seed.
      test: whether the run computes test error (a test run is another run).
      mode: the protocol mode, e.g. ``"final"``; ``None`` (the default) leaves it out of the
        data, so keys from before modes existed stay.

    Returns:
      16 hex digits.

    Examples:
      >>> config = RunConfig(model="lenet300", prune=Phase(epochs=2, lr=1e-3))
      >>> key = run_key(config, 0, test=False)
      >>> len(key), key == run_key(from_dict(to_dict(config)), 0, test=False)
      (16, True)
      >>> key == run_key(config, 0, test=True)
      False
    """
    data = {"config": to_dict(config), "seed": seed, "test": test}
    return results.run_key(data if mode is None else {**data, "mode": mode})


def pruner_arguments(spec: Mapping[str, Any], *, steps: int, per_epoch: int) -> dict[str, Any]:
    """The keyword arguments of ``spec``'s algorithm, step arguments resolved for a phase.

    Arguments named in :data:`dynprune.algorithms.STEP_ARGUMENTS` are resolved as the module
    docstring says: an ``int`` is kept (steps), a ``float`` f in [0, 1] becomes ⌊f·T⌋, and
    ``{"epochs": e}`` becomes ⌊e·E⌋; ``None`` and booleans are kept. Other arguments pass
    through unchanged.

    Args:
      spec: ``{"algorithm": name, **arguments}``, as in :attr:`Phase.pruner`.
      steps: the phase's number of steps T.
      per_epoch: steps per epoch E.

    Returns:
      The arguments without ``"algorithm"``, ready for :func:`dynprune.algorithms.get`.

    Raises:
      ValueError: a step argument that is a float outside [0, 1] or of another form.

    Examples:
      >>> spec = {"algorithm": "gmp", "target": 0.9, "begin": {"epochs": 2}, "end": 0.5,
      ...         "every": 100}
      >>> pruner_arguments(spec, steps=1000, per_epoch=100)
      {'target': 0.9, 'begin': 200, 'end': 500, 'every': 100}
    """
    arguments = {k: v for k, v in spec.items() if k != "algorithm"}
    for name in set(arguments) & set(algorithms.STEP_ARGUMENTS):
        arguments[name] = _steps(arguments[name], name, steps, per_epoch)
    return arguments


def _steps(value: Any, name: str, steps: int, per_epoch: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"pruner argument {name}={value!r}: a float is a fraction of the phase and must "
                "be in [0, 1]; write an int for a number of steps"
            )
        return math.floor(value * steps)
    if isinstance(value, Mapping) and set(value) == {"epochs"}:
        return math.floor(value["epochs"] * per_epoch)
    raise ValueError(
        f"pruner argument {name}={value!r} must be an int (steps), a float in [0, 1] (fraction "
        'of the phase) or {"epochs": e}'
    )


def _check_pruner(spec: Mapping[str, Any]) -> None:
    if "algorithm" not in spec:
        raise ValueError(f"a pruner spec names its algorithm: {{'algorithm': ...}}, got {spec}")
    name = spec["algorithm"]
    if name not in algorithms.names():
        raise ValueError(f"unknown algorithm {name!r}; valid names: {algorithms.names()}")
    valid = algorithms.arguments(name)
    unknown = sorted(set(spec) - {"algorithm"} - set(valid))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for {name!r}; valid arguments: {valid}")
    # Hyperparameter values are checked now, by name, before anything trains; a per-layer
    # table {regex: value} is checked entry by entry, as "<name>:<regex>".
    values = {}
    for k, v in spec.items():
        if k in checks.RANGES and k not in algorithms.STEP_ARGUMENTS:
            values |= {f"{k}:{p}": x for p, x in v.items()} if isinstance(v, Mapping) else {k: v}
    try:
        checks.hyperparams(values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"pruner {name!r}: {err}") from None


def _check(where: str, check: Callable[..., Any], *args: Any) -> None:
    """Runs ``check(*args)`` (``checks.steps`` or ``real``); its error names ``where``."""
    try:
        check(*args)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def _check_choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
