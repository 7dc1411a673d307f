"""Run a configuration: train, prune, evaluate, and return the run's row.

:func:`run_points` is the one function every script calls (``train.py``, ``reproduce.py``,
``sweep.py``). It runs K *points* — configurations that differ only in values the pruner keeps
in its state (a target sparsity, a threshold, DNS's rates) — with their seeds:

- K = 1: one jitted train step.
- K > 1: one jitted, ``vmap``-ped step over the stacked states of all K points. The step
  count stays a shared, unbatched value, so the transform's ``lax.cond`` stays a conditional
  (a batched predicate would make ``vmap`` compute the mask update on every step). With a
  ``jax.sharding.Mesh``, the stacked axis is sharded over its devices (every host's devices
  after ``jax.distributed.initialize()``).

Steps are cached per *group* (:meth:`Programs.step`): points whose configurations are equal up
to state values share one compiled step, so a sweep of N targets compiles it once
(:attr:`Programs.compiles`). Each phase has two programs over the same state: the step that
updates masks under the transform's ``lax.cond``, run only on the steps where some point's
cadence fires (:func:`dynprune.update_schedule`, computed before the phase), and the step
built with ``update_masks=False`` (no branch compiled: XLA:CPU pays for an untaken branch),
run on all the others. The latter evaluates the cadence too and the phase stops with an error
if it ever fires there.

A row holds validation error (test error only when asked: the test set is for final runs),
sparsity and compression (all parameters, biases included, ÷ nonzeros of w ⊙ m), per-layer
counts (``layers``: size, nonzeros, sparsity and whether the layer has a mask, ``pruned``, as
in :func:`dynprune.summary`), dense and effective FLOPs, per-epoch training loss, and the
*mask trace*: at every step where the masks changed, the step, the number of kept weights,
and how many were pruned and regrown by that update (DNS's prunes and splices, SET/RigL's
drops and regrowth).

A prune phase of Sparse Variational Dropout (``{"algorithm": "sparse_vd", ...}``,
:func:`dynprune.algorithms.sparse_vd`) trains other parameters and another loss: θ (the
model's parameters, from initialisation or pre-training) with log σ² on the kernels
(:func:`dynprune.algorithms.variational_params`, started at the pruner's
``log_sigma2_init``), on the SGVB loss — cross-entropy of the locally reparameterised
stochastic forward pass plus β_t·KL/N, N the training split's size
(:func:`dynprune.algorithms.sgvb`). At the phase's end the run continues from the sparse
model θ ⊙ m, m = [log α < t] (:func:`dynprune.algorithms.sparsify`), with m as fixed
masks: the fine-tune, retrain, evaluation and the row's counts see it as any pruned model,
and the trace gets an entry at the phase's last step T if m differs from the state's
masks (recomputed every ``every`` steps during training). Its ``train_loss`` includes the
KL term.

With a ``retrain`` phase (:mod:`dynprune.harness.retrain`), the final w ⊙ m is rebuilt as a
physically smaller model and trained densely; the row's ``val_error`` (and ``test_error``) is
then the retrained model's, ``pruned_val_error`` the masked model's before it, and the sizes,
sparsity and FLOPs above describe the masked model; the row adds ``architecture`` and
``dense_architecture`` (kept units per position; equal when nothing could be removed),
``reconstructed_params``, ``reconstructed_macs``, ``reconstructed_val_error`` (right after
surgery) and the measured ``retrain_speedup`` and ``inference_speedup``. With K > 1 points
the retrain runs after the vmapped phases, one point at a time (each point's smaller model
has its own architecture), and it is not checkpointed.

A run whose training loss stops being finite has ``status: "diverged"`` and
``diverged_at: {"phase", "step"}`` (the first such step; a single run stops at the end of that
epoch), and ``null`` for the losses that were not finite: rows are strict JSON.

Checkpoints (``checkpoints=``, :mod:`dynprune.harness.checkpoint`): the prune and fine-tune
phases save, every N steps (default: at the end of every epoch), between steps and from the
host, the whole state of the K points (stacked for K > 1) with the phase, the steps done, the
records so far (this epoch's per-step metrics included) and the rows of the phases before.
A rerun resumes from the latest checkpoint: the data order depends only on (seed, epoch), so
it skips the batches of the current epoch already consumed, and its rows equal an
uninterrupted run's. SIGINT finishes the step in progress, saves and raises
:class:`~dynprune.harness.checkpoint.Interrupted`. A finished run deletes its checkpoint
unless asked to keep it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

import dynprune as dp
from dynprune.algorithms.variational_dropout import Objective
from dynprune.harness import cache, checkpoint, data, models, results, retrain, train
from dynprune.harness.config import (
    Phase,
    RunConfig,
    phase_dict,
    pruner_arguments,
    run_key,
    to_dict,
)
from dynprune.harness.optimizers import make_optimizer

__all__ = ["Programs", "load_splits", "run", "run_points", "state_arguments"]

log = logging.getLogger(__name__)

EXAMPLE = np.zeros((1, 28, 28, 1), np.float32)  # NumPy: importing starts no backend
EVAL_BATCH = 1000
# Pruner arguments that only set the starting state (not the step): points differing in them
# share a compiled step. Hyperparameters (``Pruner.hyperparams``) are found by building the
# pruner; these are the init-only ones.
INIT_ARGUMENTS = {"dns": ("c",)}
# Algorithms whose prune phase trains variational parameters (θ, log σ²) on their own loss.
VARIATIONAL = ("sparse_vd",)
# Phases that checkpoint; pre-training is cached per seed once it is finished.
CHECKPOINTED = ("prune", "finetune")

Splits = Mapping[str, data.Dataset]
Step = Callable[..., tuple[train.TrainState, dict[str, jax.Array]]]


def load_splits(config: RunConfig, data_dir: str | os.PathLike | None = None) -> Splits:
    """The train / validation / test splits of ``config``, read from prepared TFDS data.

    The splits are those of :func:`dynprune.harness.data.load` for ``config.dataset`` with
    ``config.validation`` training examples held out; with ``config.examples`` set, every
    split is cut to its first ``config.examples`` images (smoke runs). Nothing is downloaded.

    Args:
      config: the run whose ``dataset``, ``validation`` and ``examples`` are read.
      data_dir: the TFDS data directory holding ``<dataset>/<version>/`` (default:
        ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``).

    Returns:
      ``{"train": ..., "validation": ..., "test": ...}``, each a
      :class:`~dynprune.harness.data.Dataset` (uint8 images [N, 28, 28, 1], int32 labels).

    Raises:
      dynprune.harness.data.DatasetNotFoundError: the dataset is not prepared under
        ``data_dir`` and not in the decoded cache.
      ValueError: ``config.validation`` does not fit in the training split.

    Examples:
      >>> from dynprune.harness.config import Phase, RunConfig
      >>> config = RunConfig(model="origin_mlp", prune=Phase(epochs=1, lr=1e-3), examples=512)
      >>> splits = load_splits(config)  # doctest: +SKIP
      >>> {name: split.images.shape for name, split in splits.items()}  # doctest: +SKIP
      {'train': (512, 28, 28, 1), 'validation': (512, 28, 28, 1), 'test': (512, 28, 28, 1)}
    """
    splits = {
        split: data.load(config.dataset, split, validation=config.validation, data_dir=data_dir)
        for split in data.SPLITS
    }
    if config.examples is not None:
        n = config.examples
        splits = {s: data.Dataset(d.images[:n], d.labels[:n]) for s, d in splits.items()}
    return splits


def state_arguments(spec: Mapping[str, Any] | None) -> set[str]:
    """The arguments of a pruner spec that only enter the pruner's state.

    These are the built pruner's hyperparameters (:attr:`dynprune.Pruner.hyperparams`, e.g.
    GMP's ``target``, DNS's ``gamma``) and its init-only arguments (:data:`INIT_ARGUMENTS`,
    e.g. DNS's ``c``), restricted to those ``spec`` sets. Configurations that differ only in
    them share one compiled train step (:func:`group_key`).

    Args:
      spec: a pruner spec ``{"algorithm": name, **arguments}`` (as
        :attr:`~dynprune.harness.config.Phase.pruner`), or ``None`` (no pruner).

    Returns:
      The names of ``spec``'s arguments that are state values; empty for ``None``.

    Raises:
      ValueError: an unknown algorithm, or a spec missing an argument its algorithm needs
        (:func:`dynprune.algorithms.get` builds the pruner to read its hyperparameters).

    Examples:
      >>> sorted(state_arguments({"algorithm": "gmp", "target": 0.9, "begin": 0.1, "end": 0.7}))
      ['target']
      >>> sorted(state_arguments({"algorithm": "dns", "c": 1.0, "gamma": 1e-4, "warmup": 0.4}))
      ['c', 'gamma']
      >>> state_arguments(None)
      set()
    """
    if spec is None:
        return set()
    name = spec["algorithm"]
    # Any phase length will do: only the names of the built pruner's hyperparameters matter.
    arguments = pruner_arguments(spec, steps=10**6, per_epoch=10**3)
    hyperparams = set(dp.algorithms.get(name, **arguments).hyperparams)
    return (hyperparams | set(INIT_ARGUMENTS.get(name, ()))) & set(spec)


def group_key(config: RunConfig) -> str:
    """A key equal for configurations that can share compiled steps (equal up to state values).

    The key is :func:`dynprune.harness.results.run_key` of the configuration with the pruner
    spec's :func:`state_arguments` removed and the SNIP ``init_masks`` target set to 0: the
    rest decides the program's shapes and code.

    Args:
      config: a run configuration.

    Returns:
      A short hex hash; equal keys mean :func:`run_points` may run the configurations
      together.

    Raises:
      ValueError: the pruner spec is incomplete (see :func:`state_arguments`).

    Examples:
      >>> import dataclasses
      >>> from dynprune.harness.config import Phase, RunConfig
      >>> spec = {"algorithm": "gmp", "target": 0.5, "begin": 0.1, "end": 0.7}
      >>> a = RunConfig(model="origin_mlp", prune=Phase(epochs=1, lr=1e-3, pruner=spec))
      >>> b = dataclasses.replace(a, prune=Phase(epochs=1, lr=1e-3, pruner={**spec, "target": 0.9}))
      >>> c = dataclasses.replace(a, prune=Phase(epochs=2, lr=1e-3, pruner=spec))
      >>> group_key(a) == group_key(b), group_key(a) == group_key(c)
      (True, False)
    """
    spec = config.prune.pruner
    if spec is not None:
        varying = state_arguments(spec)
        spec = {k: v for k, v in spec.items() if k not in varying}
    masks = None if config.init_masks is None else dataclasses.replace(config.init_masks, target=0)
    same = dataclasses.replace(
        config, prune=dataclasses.replace(config.prune, pruner=spec), init_masks=masks
    )
    return results.run_key(to_dict(same))


class Programs:
    """Compiled train and eval steps of an invocation, shared across its runs.

    Pass one instance to every :func:`run_points` call of a script (a sweep does): points of
    one :func:`group_key` then reuse the train steps compiled for the first of them, and runs
    of one model reuse its eval steps. Construct it with no arguments.

    Attributes:
      compiles: a :class:`collections.Counter` of the traces (each one an XLA compilation) of
        each group's train step in each phase, keyed ``"group/phase"`` (the step that updates
        masks) and ``"group/phase/idle"`` (the step that keeps them).
      max_compiles: the largest count in ``compiles`` (0 before any step ran), the number a
        sweep reports.

    Examples:
      >>> import jax.numpy as jnp, optax, dynprune as dp
      >>> programs = Programs()
      >>> programs.max_compiles
      0
      >>> apply_fn = lambda p, x: x.reshape(len(x), -1) @ p["w"]
      >>> tx = dp.prune(optax.sgd(0.1), dp.algorithms.fixed({"w": None}))
      >>> step = programs.step(("group", "prune", 1, 1), apply_fn, tx)
      >>> step is programs.step(("group", "prune", 1, 1), apply_fn, tx)  # built once
      True
      >>> programs.eval_step("mlp", apply_fn, masked=True) is programs.eval_step(
      ...     "mlp", apply_fn, masked=True)
      True
    """

    def __init__(self) -> None:
        self.compiles: collections.Counter[str] = collections.Counter()
        self._steps: dict[tuple[Any, ...], Step] = {}
        self._evals: dict[tuple[str, bool], Callable[..., Any]] = {}

    @property
    def max_compiles(self) -> int:
        """The most compilations of any group's train step in any phase (0 before any)."""
        return max(self.compiles.values(), default=0)

    def compiles_of(self, config: RunConfig) -> int:
        """The most compilations of any phase's train step in ``config``'s group so far.

        Args:
          config: a configuration; its :func:`group_key` selects the counts.

        Returns:
          The largest of the group's ``compiles`` counts (update and idle steps alike); 0 if
          none of its steps ran yet. A sweep records it in each row as ``compiles``.

        Examples:
          >>> from dynprune.harness.config import Phase, RunConfig
          >>> Programs().compiles_of(RunConfig(model="origin_mlp", prune=Phase(epochs=1, lr=1e-3)))
          0
        """
        prefix = f"{group_key(config)}/"
        return max((n for g, n in self.compiles.items() if g.startswith(prefix)), default=0)

    def step(
        self,
        key: tuple[Any, ...],
        apply_fn: train.ApplyFn,
        tx: optax.GradientTransformation,
        *,
        pruner: dp.Pruner | None = None,
        objective: Objective | None = None,
    ) -> Step:
        """The jitted train step of ``key``, built from ``tx`` the first time it is asked for.

        The step is ``step(state, count, images, labels, *, shared_batch) -> (state,
        metrics)``: ``state`` is a :class:`~dynprune.harness.train.TrainState` whose optimizer
        state is :func:`dynprune.prune`'s (stacked along a leading axis for K > 1 points;
        donated), ``count`` the int32 step number shared by all points, and ``shared_batch``
        (static) whether one batch ``[B, ...]`` serves every point instead of a stacked
        ``[K, B, ...]`` one. Its metrics are ``loss`` and ``accuracy``, with ``kept`` (kept
        weights after the step) and ``regrown`` (weights the step regrew) for the step that
        updates masks, or ``missed`` for the step that keeps them. Each trace adds 1 to
        ``compiles["group/phase"]`` (``"group/phase/idle"`` with ``pruner``).

        Args:
          key: ``(group, phase, points, devices)``, plus ``"idle"`` for the step that keeps
            the masks; ``points`` is K (1: no ``vmap``). Equal keys get the same step.
          apply_fn: the model's pure ``apply_fn(params, x) -> logits``.
          tx: the optimizer wrapped by :func:`dynprune.prune` (with ``update_masks=False``
            when ``pruner`` is given); used only the first time ``key`` is asked for.
          pruner: ``None`` for the step that updates masks; else the pruner whose cadence the
            step that keeps the masks evaluates: its ``missed`` metric says whether the cadence
            fires at this step (which the caller must not let happen).
          objective: the loss's pieces for a variational phase
            (:func:`dynprune.algorithms.sgvb`): its stochastic ``apply_fn``, its
            ``forward_params`` and its KL ``penalty`` replace ``apply_fn`` and
            :func:`dynprune.masked_params`; ``None`` (the default): cross-entropy of
            ``apply_fn`` on w ⊙ m.

        Returns:
          The jitted step (compiled on its first call, once per input shape).

        Examples:
          >>> import numpy as np, jax.numpy as jnp, optax, dynprune as dp
          >>> from dynprune.harness import train
          >>> programs = Programs()
          >>> apply_fn = lambda p, x: x.reshape(len(x), -1) @ p["w"]
          >>> masks = {"w": np.array([[True, False, False]] * 4)}
          >>> tx = dp.prune(optax.sgd(0.1), dp.algorithms.fixed(masks))
          >>> step = programs.step(("group", "prune", 1, 1), apply_fn, tx)
          >>> state = train.init_state({"w": jnp.ones((4, 3))}, tx)
          >>> images, labels = jnp.ones((2, 2, 2)), jnp.zeros(2, jnp.int32)
          >>> for count in range(2):
          ...     state, metrics = step(state, np.int32(count), images, labels, shared_batch=True)
          >>> dict(programs.compiles), int(metrics["kept"]), int(metrics["regrown"])
          ({'group/prune': 1}, 4, 0)
        """
        if key not in self._steps:
            name = f"{key[0]}/{key[1]}" + ("" if pruner is None else "/idle")
            self._steps[key] = _jitted_step(
                apply_fn, tx, key[2], self.compiles, name, pruner, objective
            )
        return self._steps[key]

    def eval_step(self, model: str, apply_fn: train.ApplyFn, *, masked: bool) -> Callable[..., Any]:
        """The jitted eval step of ``model``, built the first time it is asked for.

        Args:
          model: the model's name (the cache key, with ``masked``).
          apply_fn: the model's pure ``apply_fn(params, x) -> logits``; used only the first
            time.
          masked: evaluate w ⊙ m (:func:`dynprune.masked_params`, masks from the optimizer
            state) instead of the stored parameters.

        Returns:
          :func:`dynprune.harness.train.make_eval_step`'s ``eval(params, opt_state, images,
          labels, weights) -> (sum_correct, sum_loss, count)``.

        Examples:
          >>> import jax.numpy as jnp, optax
          >>> programs = Programs()
          >>> apply_fn = lambda p, x: x.reshape(len(x), -1) @ p
          >>> evaluate = programs.eval_step("linear", apply_fn, masked=False)
          >>> correct, loss, count = evaluate(jnp.eye(4, 3), optax.EmptyState(),
          ...     jnp.eye(2, 4).reshape(2, 2, 2), jnp.array([0, 1]), jnp.ones(2))
          >>> float(correct), float(count)
          (2.0, 2.0)
        """
        if (model, masked) not in self._evals:
            forward = dp.masked_params if masked else None
            self._evals[model, masked] = train.make_eval_step(apply_fn, forward_params=forward)
        return self._evals[model, masked]


def _counted(step: Step) -> Step:
    """The step with the mask trace's counts: kept weights after it and regrown by it."""

    def counted(state: train.TrainState, images: jax.Array, labels: jax.Array):
        before = dp.tree.scored_leaves(dp.masks_of(state.opt_state))
        state, metrics = step(state, images, labels)
        after = dp.tree.scored_leaves(dp.masks_of(state.opt_state))
        zero = jnp.zeros([], jnp.int32)
        metrics["kept"] = sum((jnp.sum(m, dtype=jnp.int32) for _, m in after), zero)
        metrics["regrown"] = sum(
            (
                jnp.sum(m & ~b, dtype=jnp.int32)
                for (_, b), (_, m) in zip(before, after, strict=True)
            ),
            zero,
        )
        return state, metrics

    return counted


def _missed(step: Step, pruner: dp.Pruner) -> Step:
    """The step (one that keeps the masks) with ``missed``: does the cadence fire here?"""

    def idle(state: train.TrainState, images: jax.Array, labels: jax.Array):
        prune_state = dp.find_state(state.opt_state)
        missed = dp.transform.cadence_fires(pruner, prune_state, prune_state.count)
        state, metrics = step(state, images, labels)
        metrics["missed"] = missed
        return state, metrics

    return idle


def _jitted_step(
    apply_fn: train.ApplyFn,
    tx: optax.GradientTransformation,
    points: int,
    compiles: collections.Counter[str],
    group: str,
    pruner: dp.Pruner | None = None,
    objective: Objective | None = None,
) -> Step:
    if objective is None:
        step = train.train_step(apply_fn, tx, forward_params=dp.masked_params)
    else:
        step = train.train_step(
            objective.apply_fn,
            tx,
            forward_params=objective.forward_params,
            penalty=objective.penalty,
        )
    step = _counted(step) if pruner is None else _missed(step, pruner)

    def at_count(state: train.TrainState, count: jax.Array) -> train.TrainState:
        opt_state = state.opt_state._replace(count=count)
        return state._replace(opt_state=opt_state, step=count)

    def program(state, count, images, labels, *, shared_batch: bool):
        compiles[group] += 1  # runs once per trace, i.e. per compilation
        if points == 1:
            return step(at_count(state, count), images, labels)
        # ``count`` is closed over unbatched: the cadence predicate and its lax.cond stay scalar.
        batch_axis = None if shared_batch else 0
        return jax.vmap(
            lambda s, x, y: step(at_count(s, count), x, y), in_axes=(0, batch_axis, batch_axis)
        )(state, images, labels)

    return jax.jit(program, donate_argnums=0, static_argnames="shared_batch")


def _variational_params(params: Sequence[Any], pruners: Sequence[dp.Pruner]) -> list[Any]:
    """Each point's θ (its params) with log σ² on the kernels at its pruner's
    ``log_sigma2_init``: what a variational phase trains."""
    return [
        dp.algorithms.variational_params(p, pruner.hyperparams["log_sigma2_init"])
        for p, pruner in zip(params, pruners, strict=True)
    ]


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree: Any, k: int) -> list[Any]:
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(k)]


class _Points:
    """K runs going through the phases of one configuration group together."""

    def __init__(
        self,
        configs: Sequence[RunConfig],
        seeds: Sequence[int],
        splits: Splits,
        programs: Programs,
        mesh: jax.sharding.Mesh | None,
        progress: bool,
        checkpoints: checkpoint.Options | None = None,
        keys: Sequence[str] = (),
    ):
        self.configs, self.seeds, self.splits = list(configs), list(seeds), splits
        self.programs, self.mesh, self.progress = programs, mesh, progress
        self.base = configs[0]
        self.model = models.get_model(self.base.model)
        self.apply_fn = lambda p, x: self.model.apply({"params": p}, x)
        self.per_epoch = len(splits["train"].labels) // self.base.batch_size
        self.group = group_key(self.base)
        spec = self.base.prune.pruner
        self.variational = spec is not None and spec["algorithm"] in VARIATIONAL
        self.checkpoints = checkpoints
        # The checkpoint's key is its directory's name: the run key, or the hash of K keys.
        self.directory = (
            None if checkpoints is None else checkpoint.run_directory(checkpoints.root, keys)
        )
        # Wall time: this process's since it began, plus what the checkpoint it resumes had.
        self.started, self.wall_before = time.perf_counter(), 0.0

    def wall(self) -> float:
        """Seconds the run has taken: the segments before the checkpoint it resumed (up to
        that checkpoint) and this one so far."""
        return self.wall_before + time.perf_counter() - self.started

    def steps(self, phase: Phase) -> int:
        return phase.epochs * self.per_epoch

    def initial_params(self, seed: int) -> Any:
        return self.model.init(jax.random.key(seed), EXAMPLE)["params"]

    def pretrained(self, seed: int) -> Any:
        """Dense pre-training of ``seed``, cached on disk (shared by every config and script)."""
        phase = self.base.pretrain
        key = results.run_key(
            {
                "model": self.base.model,
                "dataset": self.base.dataset,
                "validation": self.base.validation,
                "examples": self.base.examples,
                "batch_size": self.base.batch_size,
                "seed": seed,
                "phase": phase_dict(phase),
            }
        )
        path = cache.cache_dir("pretrained") / f"{self.base.model}-{key}.msgpack"
        init = self.initial_params(seed)
        if path.exists():
            try:
                return flax.serialization.from_bytes(init, path.read_bytes())
            except (ValueError, msgpack.exceptions.UnpackException) as err:
                log.warning("Cached weights %s are unreadable (%s); retraining them", path, err)
                path.unlink(missing_ok=True)
        empty = dp.algorithms.fixed(jax.tree.map(lambda _: None, init))
        [state], _ = self.fit("pretrain", phase, [init], [empty], [seed])
        params = jax.device_get(state.params)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(flax.serialization.to_bytes(params))
        os.replace(tmp, path)
        return params

    def initial_states(
        self,
        phase: Phase,
        params: Sequence[Any],
        pruners: Sequence[dp.Pruner],
        seeds: Sequence[int],
    ) -> list[train.TrainState]:
        """Each point's state before the first step of ``phase``."""
        steps = self.steps(phase)
        states = []
        for p, pruner, seed in zip(params, pruners, seeds, strict=True):
            tx = dp.prune(make_optimizer(phase, steps), pruner, seed=seed)
            state = train.init_state(p, tx)
            if not pruner.soft:
                state = state._replace(params=dp.apply_masks(p, dp.masks_of(state.opt_state)))
            states.append(state)
        return states

    def fit(
        self,
        name: str,
        phase: Phase,
        params: Sequence[Any],
        pruners: Sequence[dp.Pruner],
        seeds: Sequence[int],
        rows: list[dict[str, Any]] | None = None,
        resume: Mapping[str, Any] | None = None,
    ) -> tuple[list[train.TrainState], dict[str, Any]]:
        """Train every point through ``phase``; returns their states and what was recorded.

        With checkpoints on, a phase in :data:`CHECKPOINTED` saves ``rows`` (the rows so far)
        with its state, and starts from the checkpoint when ``resume`` (its meta) is of it.
        """
        steps = self.steps(phase)
        variational = self.variational and name == "prune"
        if variational:
            params = _variational_params(params, pruners)
        states = self.initial_states(phase, params, pruners, seeds)
        kept = [_kept(dp.masks_of(s.opt_state)) for s in states]
        record: dict[str, Any] = {
            "train_loss": [[] for _ in states],
            "trace": [[] for _ in states],
            "diverged_at": [None for _ in states],
        }
        if steps == 0:
            return self._act_once(phase, states, pruners, seeds, kept, record), record

        k = len(states)
        optimizer = make_optimizer(phase, steps)
        devices = 1 if self.mesh is None else self.mesh.size
        key = (self.group, name, k, devices)
        objective = None
        if variational:
            objective = dp.algorithms.sgvb(self.apply_fn, len(self.splits["train"].labels))
        tx = dp.prune(optimizer, pruners[0], seed=seeds[0])
        update = self.programs.step(key, self.apply_fn, tx, objective=objective)
        idle_tx = dp.prune(optimizer, pruners[0], seed=seeds[0], update_masks=False)
        idle = self.programs.step(
            (*key, "idle"), self.apply_fn, idle_tx, pruner=pruners[0], objective=objective
        )
        shared = len(set(seeds)) == 1  # one data order: one batch serves every point
        state = states[0] if k == 1 else self._place(_stack(states))
        due = dp.update_schedule(pruners[0], state.opt_state, steps).reshape(-1, steps).any(0)
        saving = self.checkpoints is not None and name in CHECKPOINTED
        start, done_metrics = 0, []
        if saving and resume is not None and resume["phase"] == name:
            state, start, done_metrics = self._restore(state, record, kept)
        bar = tqdm(
            total=steps,
            initial=start,
            disable=not self.progress,
            unit="step",
            desc=name,
            leave=False,
        )
        with checkpoint.deferred_sigint() if saving else contextlib.nullcontext() as sigint:
            for epoch in range(start // self.per_epoch, phase.epochs):
                if all(at is not None for at in record["diverged_at"]):
                    break  # every point's loss is no longer finite: stop instead of training on
                streams = [
                    data.batches(
                        self.splits["train"],
                        self.base.batch_size,
                        seed=s,
                        epoch=epoch,
                        shift=phase.shift,
                    )
                    for s in (seeds[:1] if shared else seeds)
                ]
                metrics = done_metrics if epoch == start // self.per_epoch else []
                # Resuming mid-epoch: the epoch's order is (seed, epoch)'s; skip what was used.
                for batch in itertools.islice(zip(*streams, strict=True), len(metrics), None):
                    if shared:
                        images, labels = batch[0]
                    else:
                        images, labels = self._place(
                            tuple(np.stack(xs) for xs in zip(*batch, strict=True))
                        )
                    count = np.int32(epoch * self.per_epoch + len(metrics))
                    step = update if due[count] else idle
                    state, m = step(state, count, images, labels, shared_batch=shared)
                    metrics.append(m)
                    bar.update()
                    if saving and len(metrics) < self.per_epoch:
                        done = epoch * self.per_epoch + len(metrics)
                        self._checkpoint(
                            name, steps, done, state, record, kept, metrics, rows, sigint
                        )
                got = self._gather(metrics)
                self._check_hyperparams(state)
                for i in range(k):
                    mine = got if k == 1 else [jax.tree.map(lambda x, i=i: x[i], m) for m in got]
                    self._record_epoch(record, i, epoch, mine, kept)
                if saving:
                    done = (epoch + 1) * self.per_epoch
                    self._checkpoint(name, steps, done, state, record, kept, [], rows, sigint)
        bar.close()
        return ([state] if k == 1 else _unstack(self._gather(state), k)), record

    def _check_hyperparams(self, state: train.TrainState) -> None:
        """Refuse to go on (and so to write a row) if a hyperparameter went out of its range
        or NaN inside jit, where it could not raise (:func:`dynprune.invalid_hyperparams`)."""
        invalid = np.atleast_1d(self._gather(dp.invalid_hyperparams(state.opt_state)))
        if invalid.any():
            points = np.flatnonzero(invalid).tolist()
            raise ValueError(
                f"a hyperparameter of point(s) {points} (seeds "
                f"{[self.seeds[i] for i in points]}) was out of range or NaN inside the jitted "
                f"step: {dict(jax.device_get(dp.hyperparams_of(state.opt_state)))}; no row is "
                "written"
            )

    def _checkpoint(
        self,
        phase: str,
        steps: int,
        done: int,
        state: train.TrainState,
        record: dict[str, Any],
        kept: list[int],
        metrics: Sequence[Mapping[str, Any]],
        rows: list[dict[str, Any]] | None,
        sigint: Any,
    ) -> None:
        """Save after ``done`` steps of ``phase`` if it is time or SIGINT asked (then raise
        :class:`~dynprune.harness.checkpoint.Interrupted`). ``metrics``: this epoch's so far."""
        options = self.checkpoints
        every = options.every or self.per_epoch
        due = (done % every == 0 and done < steps) or (done == steps and options.keep)
        if not (due or sigint.is_set()):
            return
        meta = {
            "phase": phase,
            "phase_step": done,
            "record": record,
            "kept": kept,
            "metrics": [
                {name: np.asarray(v).tolist() for name, v in m.items()}
                for m in self._gather(metrics)
            ],
            "rows": rows,
            "wall_s": self.wall(),
        }
        # Checkpoints are numbered by the steps taken since the run began: later ones are larger.
        before = itertools.takewhile(lambda named: named[0] != phase, self.base.phases())
        offset = sum(self.steps(p) for n, p in before if n in CHECKPOINTED)
        key = self.directory.name
        checkpoint.save(self.directory, offset + done, self._gather(state), meta, key=key)
        if sigint.is_set():
            raise checkpoint.Interrupted(self.directory, phase, done)

    def _restore(
        self, state: train.TrainState, record: dict[str, Any], kept: list[int]
    ) -> tuple[train.TrainState, int, list[dict[str, Any]]]:
        """The checkpointed state (into ``state``'s structure), filling ``record`` and
        ``kept``; also the steps done and the current epoch's metrics so far."""
        saved, meta = checkpoint.restore(self.directory, state, key=self.directory.name)
        record.update(meta["record"])
        kept[:] = meta["kept"]
        metrics = [{name: np.asarray(v) for name, v in m.items()} for m in meta["metrics"]]
        log.warning(
            "resuming %s at step %d from %s", meta["phase"], meta["phase_step"], self.directory
        )
        state = jax.device_put(saved) if self.mesh is None else self._place(saved)
        return state, meta["phase_step"], metrics

    def _act_once(
        self,
        phase: Phase,
        states: list[train.TrainState],
        pruners: Sequence[dp.Pruner],
        seeds: Sequence[int],
        kept: list[int],
        record: dict[str, Any],
    ) -> list[train.TrainState]:
        """A phase of 0 epochs: each pruner acts once, at step 0, on the weights as they are."""
        out = []
        for i, (state, pruner, seed) in enumerate(zip(states, pruners, seeds, strict=True)):
            tx = dp.prune(make_optimizer(phase, 0), pruner, seed=seed)
            zeros = jax.tree.map(jnp.zeros_like, state.params)
            updates, opt_state = tx.update(zeros, state.opt_state, state.params)
            params = dp.apply_updates(state.params, updates, opt_state)
            out.append(state._replace(params=params, opt_state=opt_state))
            now = _kept(dp.masks_of(opt_state))
            if now != kept[i]:
                record["trace"][i].append(
                    {"step": 0, "kept": now, "pruned": kept[i] - now, "regrown": 0}
                )
        return out

    def _record_epoch(
        self,
        record: dict[str, Any],
        i: int,
        epoch: int,
        metrics: Sequence[Mapping[str, Any]],
        kept: list[int],
    ) -> None:
        """Point ``i``'s mean loss of the epoch (None once it is not finite, with the first such
        step in ``diverged_at``), and a trace entry for every step of it that changed its
        masks: pruned = kept before + regrown − kept after."""
        losses = np.array([m["loss"] for m in metrics], np.float64)
        finite = np.isfinite(losses)
        if not finite.all() and record["diverged_at"][i] is None:
            record["diverged_at"][i] = epoch * self.per_epoch + int(np.argmin(finite))
            log.warning("point %d diverged at step %d", i, record["diverged_at"][i])
        record["train_loss"][i].append(float(losses.mean()) if finite.all() else None)
        for j, m in enumerate(metrics):
            if np.any(m.get("missed", False)):
                raise RuntimeError(
                    f"the pruner's cadence fired at step {epoch * self.per_epoch + j}, which "
                    "dynprune.update_schedule said it would not: the masks were not updated"
                )
            if "kept" not in m:  # the step that keeps the masks
                continue
            now, regrown = int(m["kept"]), int(m["regrown"])
            if now != kept[i] or regrown:
                record["trace"][i].append(
                    {
                        "step": epoch * self.per_epoch + j,
                        "kept": now,
                        "pruned": kept[i] + regrown - now,
                        "regrown": regrown,
                    }
                )
                kept[i] = now

    def _place(self, tree: Any) -> Any:
        """Shard the leading (points) axis over the mesh, if there is one. Every process holds
        the whole stack; each puts the slices of its own devices (multi-controller JAX)."""
        if self.mesh is None:
            return tree
        sharding = jax.sharding.NamedSharding(
            self.mesh, jax.sharding.PartitionSpec(self.mesh.axis_names[0])
        )

        def place(x: Any) -> jax.Array:
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

        return jax.tree.map(place, tree)

    def _gather(self, tree: Any) -> Any:
        """Host copies of (possibly sharded) arrays; across processes, every process gets all."""
        if self.mesh is not None and jax.process_count() > 1:
            return multihost_utils.process_allgather(tree, tiled=True)
        return jax.device_get(tree)

    def errors(
        self, state: train.TrainState, prefix: str, test: bool, *, masked: bool = True
    ) -> dict[str, float]:
        """``{prefix}val_error`` (and ``{prefix}test_error`` if ``test``) of ``state``."""
        eval_step = self.programs.eval_step(self.base.model, self.apply_fn, masked=masked)
        error = lambda split: (
            1.0 - train.evaluate(eval_step, state, self.splits[split], EVAL_BATCH)[0]
        )
        out = {f"{prefix}val_error": error("validation")}
        if test:
            out[f"{prefix}test_error"] = error("test")
        return out

    def run(self, test: bool) -> list[dict[str, Any]]:
        base, k = self.base, len(self.configs)
        # A checkpoint's meta: its phase, and the rows of the phases before it.
        resume = None
        if self.directory is not None:
            resume = checkpoint.latest(self.directory, key=self.directory.name)
        if resume is not None:
            self.wall_before = resume.get("wall_s", 0.0)
        rows: list[dict[str, Any]] = [
            {"method": c.method, "seed": s} for c, s in zip(self.configs, self.seeds, strict=True)
        ]
        for row in rows:
            row["status"], row["train_loss"], row["trace"] = "ok", {}, []
        if base.pretrain is not None:
            by_seed = {s: self.pretrained(s) for s in dict.fromkeys(self.seeds)}
            params = [by_seed[s] for s in self.seeds]
            for row, p in zip(rows, params, strict=True):
                dense = train.TrainState(p, optax.EmptyState(), jnp.zeros([], jnp.int32))
                row.update(self.errors(dense, "dense_", test, masked=False))
        else:
            params = [self.initial_params(s) for s in self.seeds]

        pruners = [
            self._pruner(c, p, s) for c, p, s in zip(self.configs, params, self.seeds, strict=True)
        ]
        if resume is None or resume["phase"] == "prune":
            states, record = self.fit(
                "prune", base.prune, params, pruners, self.seeds, rows, resume
            )
            if self.variational:
                states = self._sparsified(states, record, self.steps(base.prune))
            self._record(rows, "prune", record)
            if base.finetune is not None:
                for row, state in zip(rows, states, strict=True):
                    row.update(self.errors(state, "before_finetune_", test))
        else:
            # The checkpoint is of the fine-tune: its rows hold the prune phase's records, and
            # its state replaces whatever the fine-tune starts from; these only give its shapes.
            rows = resume["rows"]
            if self.variational:
                params = _variational_params(params, pruners)
            states = self.initial_states(base.prune, params, pruners, self.seeds)
            if self.variational:
                states = self._sparsified(states)
        if base.finetune is not None:
            masks = [dp.masks_of(s.opt_state) for s in states]
            params = [dp.masked_params(s.params, s.opt_state) for s in states]
            fixed = [dp.algorithms.fixed(m) for m in masks]
            states, record = self.fit(
                "finetune", base.finetune, params, fixed, self.seeds, rows, resume
            )
            self._record(rows, "finetune", record)

        phase_steps = {name: self.steps(p) for name, p in base.phases()}
        dense = None
        if base.retrain is not None:
            # The unpruned model's units, from a fresh init: the phases donated ``params``.
            init = self.initial_params(self.seeds[0])
            dense = dp.surgery.reconstruct(self.apply_fn, init, None, EXAMPLE).architecture
        for row, state, seed in zip(rows, states, self.seeds, strict=True):
            state = jax.device_get(state)
            if base.retrain is None:
                row.update(self.errors(state, "", test))
            else:
                row.update(self.errors(state, "pruned_", test), dense_architecture=dense)
                self._retrain(row, state, seed, test)
            row.update(_accounting(self.apply_fn, state))
            row["steps"] = sum(phase_steps.values())
            row["phase_steps"] = phase_steps
            row["points_in_program"] = k
        return rows

    @staticmethod
    def _sparsified(
        states: Sequence[train.TrainState],
        record: dict[str, Any] | None = None,
        step: int = 0,
    ) -> list[train.TrainState]:
        """The sparse models of trained variational states: θ ⊙ m with m = [log α < t] as
        fixed masks (:func:`dynprune.algorithms.sparsify`), the state every later phase and
        the row's counts expect. With ``record``, a trace entry at ``step`` for each point
        whose m differs from its state's last masks."""
        out = []
        for i, state in enumerate(states):
            threshold = dp.hyperparams_of(state.opt_state)["threshold"]
            params, masks = dp.algorithms.sparsify(state.params, threshold)
            tx = dp.prune(optax.identity(), dp.algorithms.fixed(masks))
            out.append(train.TrainState(params, tx.init(params), state.step))
            if record is None:
                continue
            before = dict(dp.tree.scored_leaves(dp.masks_of(state.opt_state).theta))
            after = dp.tree.scored_leaves(masks)
            pruned = sum(int(np.sum(before[p] & ~m)) for p, m in after)
            regrown = sum(int(np.sum(m & ~before[p])) for p, m in after)
            if pruned or regrown:
                record["trace"][i].append(
                    {"step": step, "kept": _kept(masks), "pruned": pruned, "regrown": regrown}
                )
        return out

    def _retrain(self, row: dict[str, Any], state: train.TrainState, seed: int, test: bool) -> None:
        """The retrain phase of one point, after the (vmapped) phases before it: its fields
        and its record go into ``row``."""
        teacher = None
        if self.base.retrain.distill is not None:  # the dense model of this seed teaches
            teacher = functools.partial(self.apply_fn, self.pretrained(seed))
        fields, epochs = retrain.retrain(
            self.apply_fn,
            state,
            self.base.retrain,
            self.splits,
            batch_size=self.base.batch_size,
            seed=seed,
            test=test,
            example=EXAMPLE,
            eval_batch=EVAL_BATCH,
            progress=self.progress,
            teacher=teacher,
        )
        row.update(fields)
        record: dict[str, Any] = {"train_loss": [[]], "trace": [[]], "diverged_at": [None]}
        for epoch, metrics in enumerate(epochs):
            self._record_epoch(record, 0, epoch, metrics, [0])
        self._record([row], "retrain", record)

    def _pruner(self, config: RunConfig, params: Any, seed: int) -> dp.Pruner:
        if config.init_masks is not None:
            return dp.algorithms.fixed(self._init_masks(config, params, seed))
        spec = config.prune.pruner
        if spec is None:
            return dp.algorithms.fixed(jax.tree.map(lambda _: None, params))
        arguments = pruner_arguments(spec, steps=self.steps(config.prune), per_epoch=self.per_epoch)
        return dp.algorithms.get(spec["algorithm"], **arguments)

    def _init_masks(self, config: RunConfig, params: Any, seed: int) -> Any:
        init = config.init_masks
        first = itertools.islice(
            data.batches(
                self.splits["train"], init.batch_size, seed=seed, epoch=0, shift=init.shift
            ),
            init.batches,
        )
        loss = lambda p, x, y: train.mean_loss(self.apply_fn, p, x, y)
        return dp.algorithms.snip_masks(loss, params, first, init.target)

    @staticmethod
    def _record(rows: list[dict[str, Any]], phase: str, record: dict[str, Any]) -> None:
        for i, row in enumerate(rows):
            row["train_loss"][phase] = record["train_loss"][i]
            row["trace"].extend({"phase": phase, **event} for event in record["trace"][i])
            if record["diverged_at"][i] is not None and "diverged_at" not in row:
                row["status"] = "diverged"
                row["diverged_at"] = {"phase": phase, "step": record["diverged_at"][i]}


def _kept(masks: Any) -> int:
    return sum(int(np.sum(m)) for _, m in dp.tree.scored_leaves(masks))


def _accounting(apply_fn: train.ApplyFn, state: train.TrainState) -> dict[str, Any]:
    """Sizes, nonzeros and FLOPs of w ⊙ m."""
    masks = dp.masks_of(state.opt_state)
    effective = dp.masked_params(state.params, state.opt_state)
    report = dp.summary(effective, masks)
    compute = dp.stats.flops(apply_fn, effective, EXAMPLE)
    finite = lambda x: x if np.isfinite(x) else None  # no nonzeros left: compression undefined
    return {
        "params": report["total"]["size"],
        "nonzeros": report["total"]["nonzeros"],
        "sparsity": report["total"]["sparsity"],
        "compression": finite(report["total"]["compression"]),
        "weights_compression": finite(report["pruned_only"]["compression"]),
        "layers": {
            p: {k: v[k] for k in ("size", "nonzeros", "sparsity", "pruned")}
            for p, v in report["leaves"].items()
        },
        "flops_dense": compute["dense"],
        "flops_effective": compute["effective"],
    }


def run_points(
    configs: Sequence[RunConfig],
    seeds: Sequence[int],
    *,
    test: bool = False,
    splits: Splits | None = None,
    programs: Programs | None = None,
    mesh: jax.sharding.Mesh | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: bool = False,
    checkpoints: checkpoint.Options | None = None,
) -> list[dict[str, Any]]:
    """Run K points (configs equal up to pruner state values) with their seeds; one row each.

    The phases run in order — dense ``pretrain`` (cached on disk per seed), ``prune``,
    ``finetune`` with the masks fixed, then ``retrain`` of the physically smaller model — K = 1
    through one jitted step, K > 1 through one ``vmap``-ped step over the stacked states
    (see the module docstring).

    Args:
      configs: K ≥ 1 configurations with one :func:`group_key` (e.g. one method at K targets).
      seeds: K seeds (initialisation, data order, the pruner's PRNG key); equal seeds share
        one batch per step.
      test: also compute test error (for final runs of configurations fixed in advance).
        Default ``False``: validation error only.
      splits: ``{"train", "validation", "test"}`` datasets (default: :func:`load_splits` of
        the first config).
      programs: compiled steps to share with other calls (default: new ones).
      mesh: shard the K points over this mesh's first axis (K must divide evenly); default
        ``None``: one device.
      data_dir: the TFDS data directory, when ``splits`` is not given.
      progress: show a tqdm bar over each phase's steps (default ``False``).
      checkpoints: save the run's state under ``checkpoints.root/<key>/`` (the run key of
        ``(config, seed, test)``; for K > 1 the hash of the K run keys) and resume from it;
        ``None`` (the default): no checkpoints (see the module docstring).

    Returns:
      K rows (JSON-ready dicts) without run metadata; see the module docstring. ``wall_s``
      is the program's wall time ÷ K (``program_wall_s``: the whole program's; a resumed
      run's adds the time its checkpoint recorded, up to its save, to the time since it
      resumed, so the steps a kill lost after that save count once, when they are redone, and
      the wait between the processes not at all).

    Raises:
      ValueError: configs of different groups, mismatched lengths, or K not divisible by the
        mesh size.
      dynprune.harness.checkpoint.MismatchError: the checkpoint in the run's directory is of
        another configuration or model.
      dynprune.harness.checkpoint.Interrupted: SIGINT arrived while checkpointing; the step in
        progress finished and was saved: the same call resumes.

    Examples:
      Two GMP targets in one vmapped program, on made-up data (it trains: seconds on a CPU):

      >>> import numpy as np
      >>> from dynprune.harness import data
      >>> from dynprune.harness.config import Phase, RunConfig
      >>> rng = np.random.default_rng(0)
      >>> tiny = data.Dataset(rng.integers(0, 256, (16, 28, 28, 1), np.uint8),
      ...     rng.integers(0, 10, 16, np.int32))
      >>> splits = {"train": tiny, "validation": tiny, "test": tiny}
      >>> configs = [RunConfig(model="origin_mlp", batch_size=8, prune=Phase(epochs=1, lr=1e-3,
      ...     pruner={"algorithm": "one_shot", "target": t})) for t in (0.5, 0.9)]
      >>> programs = Programs()
      >>> rows = run_points(configs, [0, 0], splits=splits, programs=programs)  # doctest: +SKIP
      >>> [round(row["layers"]["fc1/kernel"]["sparsity"], 3) for row in rows]  # doctest: +SKIP
      [0.5, 0.9]
      >>> programs.max_compiles  # doctest: +SKIP
      1
    """
    if not configs or len(configs) != len(seeds):
        raise ValueError(
            f"need as many seeds as configs (> 0), got {len(configs)} and {len(seeds)}"
        )
    groups = {group_key(c) for c in configs}
    if len(groups) != 1:
        raise ValueError(
            "run_points runs configs that differ only in pruner state values (e.g. target); "
            f"got {len(groups)} groups"
        )
    if mesh is not None and len(configs) % mesh.size:
        raise ValueError(f"{len(configs)} points cannot be sharded evenly over {mesh.size} devices")
    splits = splits if splits is not None else load_splits(configs[0], data_dir)
    programs = programs if programs is not None else Programs()
    keys = [run_key(c, s, test=test) for c, s in zip(configs, seeds, strict=True)]
    points = _Points(configs, seeds, splits, programs, mesh, progress, checkpoints, keys)
    rows = points.run(test)
    if points.directory is not None and not checkpoints.keep:
        checkpoint.delete(points.directory)
    wall = points.wall()
    for row in rows:
        row.update(wall_s=wall / len(rows), program_wall_s=wall)
    return rows


def run(config: RunConfig, seed: int, **kwargs: Any) -> dict[str, Any]:
    """Run one configuration for one seed; its row (:func:`run_points` with K = 1).

    Args:
      config: the run configuration.
      seed: initialisation, data order and the pruner's PRNG key.
      **kwargs: the keyword arguments of :func:`run_points` (``test``, ``splits``,
        ``programs``, ``mesh``, ``data_dir``, ``progress``, ``checkpoints``).

    Returns:
      The run's row (a JSON-ready dict without run metadata; see the module docstring):
      ``val_error``, ``sparsity``, ``compression``, ``layers``, ``trace``, ``train_loss``,
      ``status``, ``wall_s``, …

    Raises:
      ValueError: as :func:`run_points`; also when a hyperparameter went out of range inside
        the jitted step (no row is returned).

    Examples:
      One-shot magnitude pruning to 50% on made-up data (it trains: seconds on a CPU):

      >>> import numpy as np
      >>> from dynprune.harness import data
      >>> from dynprune.harness.config import Phase, RunConfig
      >>> rng = np.random.default_rng(0)
      >>> tiny = data.Dataset(rng.integers(0, 256, (16, 28, 28, 1), np.uint8),
      ...     rng.integers(0, 10, 16, np.int32))
      >>> config = RunConfig(model="origin_mlp", batch_size=8,
      ...     prune=Phase(epochs=1, lr=1e-3, pruner={"algorithm": "one_shot", "target": 0.5}))
      >>> splits = {"train": tiny, "validation": tiny, "test": tiny}
      >>> row = run(config, seed=0, splits=splits)  # doctest: +SKIP
      >>> row["status"], row["steps"], row["layers"]["fc1/kernel"]["sparsity"]  # doctest: +SKIP
      ('ok', 2, 0.5)
      >>> row["trace"]  # doctest: +SKIP
      [{'phase': 'prune', 'step': 0, 'kept': 50816, 'pruned': 50816, 'regrown': 0}]
    """
    return run_points([config], [seed], **kwargs)[0]
