"""Performance benchmark of dynprune's pruning transform against its targets.

What is measured (batch 128, Adam 1e-3, the harness's ``make_train_step`` for every variant so
that only the optax transformation differs — ``experiment.Programs``' steps for the sweep keys;
inputs are random arrays with MNIST shapes, [128, 28, 28, 1] in [0, 1] and labels in 0..9 — no
dataset is read; weights are N(0, 1/fan_in) draws) on two models, keyed by name: ``lenet300``
(LeNet-300-100, ``LeNet300100``'s parameter tree, 266,200 kernel weights) and ``mlp4m`` (an MLP
784-2000-1200-10, 3,980,000 kernel weights):

- ``step_overhead_ratio`` {model} (target <= 1.02): the step that applies masks without
  recomputing them, ``dp.prune(adam, gmp, update_masks=False)`` (what a host loop runs on the
  steps where the cadence does not fire, :func:`dynprune.update_schedule`) ÷ a plain ``adam``
  step. ``step_overhead_ratio_one_program`` {model} (no target): the one-program step, whose
  ``lax.cond`` holds the untaken mask update (the cadence never fires: ``begin=10**9``) ÷ the
  plain step.
- ``mask_update_ratio`` {model/scope} (<= 1.5): a step that recomputes a 90 % magnitude mask
  over all kernels on every step, ``scope`` ``global`` or ``layer`` ÷ a plain step.
- ``update_speedup_vs_sort`` (>= 10): the global 90 % magnitude mask by a full ``jnp.argsort``
  (concatenate the kernels, argsort, keep rank >= k; jaxpruner's method) ÷ ours
  (``dp.masks.sparsity(..., scope="global")``), both jitted; the min of LeNet-300-100
  (266,200 kernel weights) and a 3,980,000-weight MLP, both also reported.
- ``gmp_run_overhead_ratio`` (<= 1.02): a 2,000-step GMP run on LeNet-300-100 (mask update
  every 100 steps; the two programs chosen on the host by the schedule) ÷ the dense run, from
  the medians of interleaved 100-step chunks; ``gmp_run_overhead_ratio_one_program``: the same
  run through the one program.
- ``sparse_speedup_99`` (no target): dense ÷ sparse inference latency of LeNet-300-100 at 99%
  unstructured (layer-wise magnitude) sparsity, batch 1: the dense model on w ⊙ m against
  :func:`dynprune.sparse.sparse_apply` on the BCOO export (``dynprune.sparse.benchmark``);
  ``sparse_speedup_99_b256`` at batch 256.
- ``reconstruct_speedup`` (>= 0.8 × ``reconstruct_flop_ratio``): dense ÷ reconstructed
  inference latency at batch 256 of the 4M-weight MLP with 75% of its hidden neurons removed
  (by neuron L1 norm, ``dp.masks.structured``) and rebuilt smaller by
  :func:`dynprune.surgery.reconstruct` (784-500-300-10); ``reconstruct_flop_ratio``: dense ÷
  reconstructed MACs (``dp.stats.cost``).
- ``gating_speedup_b1`` / ``gating_speedup_b64`` (target: ≥ 0.8 × ``gating_mac_ratio`` at
  batch 1): dense ÷ gated latency of the gating experiment's network
  (``experiments/gating.json``: a prefix-mode ``dp.gating.GatedCNN``, 32-128-256 channels,
  stem max-pooled, buckets of quarter widths) at density 0.5 on random MNIST-shaped batches
  of 1 and 64 (``dp.gating.measure_skipping``; dense is ``GatedCNN.dense``, the same network
  without gates). At batch 1 the gated path is ``BucketRunner.compact`` (one dispatch that
  runs the image's own widths), at batch 64 the per-example bucket path (gates, a host
  sync, a program per bucket); ``gating_mac_ratio``: dense ÷
  executed MACs (predictors included) at batch 64. The gates are untrained, so every
  example lands in the same bucket: this measures the skipping path, not how much a trained
  network adapts (``experiments/gating.py`` measures that).
- ``cascade_speedup_b1`` / ``cascade_speedup_b64`` (target: ≥ 0.8 × ``cascade_mac_ratio``
  at batch 1): dense ÷ cascade latency of the same network run as a confidence cascade
  (``experiments/gating-cascade.json``: a quarter of the width first, the full width for
  the inputs whose confidence there is below t), on :data:`CASCADE_IMAGES` random images at
  batch 1 (summed; ``dp.gating.CascadeRunner.compact``, one dispatch per image) and 64 at
  batch 64 (``CascadeRunner.run`` after the jitted stem: each level on the inputs that
  reach it). The weights are untrained, so t is set to the confidences' quantile at which
  :data:`CASCADE_ESCALATED` of the inputs go on to the full width (about the share the
  validation-chosen t = 0.95 sends on, 10.3%, on MNIST); ``cascade_mac_ratio``: dense ÷
  the cascade's mean MACs per input (``dp.gating.cascade_macs``, both passes counted for
  the escalated ones) at batch 64.
- ``compiles_across_sweep`` (== 1): train-step compilations while 5 sparsity targets run
  through one jitted step, each from ``dp.set_hyperparams(tx.init(params), target=s)``; the
  5 runs must end at exactly round(s·n) zeros per kernel.
- ``sweep_compiles`` (== 1): the same kind of sweep through the harness's compiled steps
  (``experiment.Programs``, what ``run_points`` uses): 8 targets from 0.3 to 0.99, each through
  the 1-point program in turn and all 8 at once through the 8-point (``vmap``-ped) program, on
  shared batches; the most compilations of either program.
- ``vmap_throughput_ratio`` (no target): model-steps per second of the 8-point program ÷ those
  of the 8 targets stepped one after another through the 1-point program, after the GMP ramp
  (no mask update in the timed window); the vmapped models must end at the sequential ones'
  sparsities. On a 2-core CPU, vmapping K models mostly does not raise throughput: one
  model's matmuls already keep both cores busy, and the batched matmuls ran slower than 8
  separate ones (a ratio of about 0.6 where this was written; the compiled program keeps the
  mask update a conditional, so that is not the cause). On an accelerator, which one small
  model leaves mostly idle, this is where the win is expected.

Methodology. The machine is shared, so absolute times drift; ratios are taken within one run
from interleaved measurements. Every variant is compiled and warmed up first. Then the
variants are timed in turn (A B C, B C A, C A B, ... : the order rotates so no variant always
runs first), each timed call ending with ``jax.block_until_ready``; a ratio is the ratio of
the medians of the per-iteration times. The GMP run interleaves its chunks the same way: 100
steps of the GMP run, 100 steps of the dense run, and so on (each chunk of the GMP run holds
exactly one mask update, so chunks are comparable and their median is robust to a busy
neighbour). Compilations are counted from JAX's ``/jax/core/compile/backend_compile_duration``
monitoring events during the sweep's step calls, and cross-checked with the jitted step's
cache size; ``sweep_compiles`` is ``Programs.max_compiles`` (traces of each program). The
vmapped program shares the step count among its points (unbatched), so the transform's
``lax.cond`` stays a conditional rather than a select computing the mask update every step.

Examples:
  python experiments/bench.py            # readable table
  python experiments/bench.py --json     # one JSON object on the last line of stdout
  python experiments/bench.py --quick    # smoke run: fewer repetitions and steps
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

import dynprune as dp
from dynprune.harness import experiment, models, train

BATCH = 128
LEARNING_RATE = 1e-3
SPARSITY = 0.9
LENET_SHAPES = ((784, 300), (300, 100), (100, 10))
MLP4M_SHAPES = ((784, 2000), (2000, 1200), (1200, 10))  # 3,980,000 kernel weights
MODELS = ("lenet300", "mlp4m")
SCOPES = ("global", "layer")
SWEEP_TARGETS = (0.5, 0.6, 0.7, 0.8, 0.9)
VMAP_POINTS = 8  # targets vmapped into one program by ``bench_vmap_throughput``
CHUNK = 100  # steps per timed chunk of the GMP run = its mask-update period
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

REQUIRED_KEYS = (
    "step_overhead_ratio",
    "mask_update_ratio",
    "update_speedup_vs_sort",
    "update_speedup_vs_sort_lenet300",
    "update_speedup_vs_sort_4m",
    "gmp_run_overhead_ratio",
    "compiles_across_sweep",
    "sweep_final_sparsities",
    "sweep_compiles",
    "vmap_throughput_ratio",
    "backend",
    "device_kind",
    "jax_version",
    "reps",
)
RATIO_KEYS = (  # some hold one ratio per model (and scope)
    "step_overhead_ratio",
    "step_overhead_ratio_one_program",
    "mask_update_ratio",
    "update_speedup_vs_sort",
    "update_speedup_vs_sort_lenet300",
    "update_speedup_vs_sort_4m",
    "gmp_run_overhead_ratio",
    "gmp_run_overhead_ratio_one_program",
    "gmp_run_total_ratio",
    "vmap_throughput_ratio",
    "sparse_speedup_99",
    "sparse_speedup_99_b256",
    "reconstruct_speedup",
    "reconstruct_flop_ratio",
    "gating_mac_ratio",
    "gating_speedup_b1",
    "gating_speedup_b64",
    "cascade_mac_ratio",
    "cascade_speedup_b1",
    "cascade_speedup_b64",
)

TARGETS = {  # a dict-valued key meets its target when every entry does
    "step_overhead_ratio": ("<=", 1.02),
    "mask_update_ratio": ("<=", 1.5),
    "update_speedup_vs_sort": (">=", 10.0),
    "gmp_run_overhead_ratio": ("<=", 1.02),
    "compiles_across_sweep": ("==", 1),
    "sweep_compiles": ("==", 1),
}

Batches = Sequence[tuple[jax.Array, jax.Array]]
Step = Callable[[train.TrainState, jax.Array, jax.Array], tuple[train.TrainState, Any]]


def dense_params(shapes: Sequence[tuple[int, int]], seed: int = 0) -> dict[str, Any]:
    """MLP parameters ``{"fc1": {"kernel", "bias"}, ...}``, kernels ~ N(0, 1/fan_in).

    Drawn with NumPy: initialising through JAX would compile a kernel per random op.
    """
    rng = np.random.default_rng(seed)
    return {
        f"fc{i + 1}": {
            "kernel": jnp.asarray(rng.standard_normal(shape, np.float32) / math.sqrt(shape[0])),
            "bias": jnp.zeros(shape[1], jnp.float32),
        }
        for i, shape in enumerate(shapes)
    }


@functools.cache
def lenet_apply() -> train.ApplyFn:
    """LeNet-300-100's apply function; its parameters are ``dense_params(LENET_SHAPES)``."""
    model = models.LeNet300100()
    expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    actual = jax.eval_shape(lambda: {"params": dense_params(LENET_SHAPES)})
    if expected != actual:
        raise RuntimeError("LENET_SHAPES no longer match LeNet300100's parameters")
    return lambda p, x: model.apply({"params": p}, x)


def mlp_apply(params: dict[str, Any], x: jax.Array) -> jax.Array:
    """The MLP of ``dense_params``: ReLU between layers, logits out."""
    h = x.reshape(len(x), -1)
    for i in range(len(params)):
        layer = params[f"fc{i + 1}"]
        h = h @ layer["kernel"] + layer["bias"][None, :]
        h = jax.nn.relu(h) if i < len(params) - 1 else h
    return h


def model_of(model: str) -> tuple[train.ApplyFn, tuple[tuple[int, int], ...]]:
    """``(apply_fn, kernel shapes)`` of a benchmark model: ``"lenet300"`` or ``"mlp4m"``."""
    if model == "lenet300":
        return lenet_apply(), LENET_SHAPES
    if model == "mlp4m":
        return mlp_apply, MLP4M_SHAPES
    raise ValueError(f"unknown benchmark model {model!r}; valid: {', '.join(MODELS)}")


def random_batches(n: int, seed: int = 0) -> list[tuple[jax.Array, jax.Array]]:
    """``n`` random batches with MNIST shapes (images in [0, 1], labels in 0..9)."""
    rng = np.random.default_rng(seed)
    return [
        (
            jnp.asarray(rng.random((BATCH, 28, 28, 1), np.float32)),
            jnp.asarray(rng.integers(0, 10, BATCH, np.int32)),
        )
        for _ in range(n)
    ]


def idle_pruner() -> dp.Pruner:
    """GMP whose cadence never fires in a benchmark window (it begins at step 10**9)."""
    return dp.algorithms.gmp(SPARSITY, begin=10**9, end=10**9 + 1)


def every_step_pruner(scope: str = "global") -> dp.Pruner:
    """Recomputes a magnitude mask at the target sparsity (over all kernels jointly, or each
    kernel on its own: ``scope``) on every step."""
    return dp.algorithms.scheduled(
        lambda ctx: dp.scores.magnitude(ctx.params),
        lambda hp: dp.schedules.constant(hp["target"]),
        dp.schedules.every(1),
        hyperparams={"target": SPARSITY},
        scope=scope,
    )


def gmp_pruner(end: int, every: int) -> dp.Pruner:
    """GMP from 0 at step 0 to ``target`` at step ``end``, layer-wise, every ``every`` steps."""
    return dp.algorithms.gmp(SPARSITY, begin=0, end=end, every=every)


PRUNERS = {
    "branch": idle_pruner,
    "idle": idle_pruner,
    "global": lambda: every_step_pruner("global"),
    "layer": lambda: every_step_pruner("layer"),
    "gmp": gmp_pruner,
    "gmp-idle": gmp_pruner,
}


@functools.cache
def train_step(
    kind: str, *args: int, model: str = "lenet300"
) -> tuple[optax.GradientTransformation, Step]:
    """``(tx, jitted harness train step)`` of ``model`` for ``kind``: ``"adam"`` (plain),
    ``"branch"`` (the idle pruner in one program: an untaken ``lax.cond``), ``"idle"`` (it,
    built with ``update_masks=False``), ``"global"`` / ``"layer"`` (a mask update every step),
    ``"gmp"`` / ``"gmp-idle"`` (``args``: end, every; the two programs of a GMP run); cached
    so that sections share compilations."""
    adam = optax.adam(LEARNING_RATE)
    if kind == "adam":
        tx = adam
    else:
        tx = dp.prune(adam, PRUNERS[kind](*args), update_masks=not kind.endswith("idle"))
    return tx, train.make_train_step(model_of(model)[0], tx)


def updates_in_window(pruner: dp.Pruner, first: int, steps: int) -> int:
    """How many of steps ``first .. first + steps - 1`` the pruner's cadence fires on."""
    ctx = dp.Context(*([None] * len(dp.Context._fields)))
    ctx = ctx._replace(step=jnp.arange(first, first + steps, dtype=jnp.int32))
    return int(jnp.sum(jnp.broadcast_to(pruner.should_update(ctx), (steps,))))


def fresh_state(
    tx: optax.GradientTransformation, model: str = "lenet300", **hyperparams: float
) -> train.TrainState:
    """Step-0 state of ``model`` (pruner hyperparameters replaced if given)."""
    params = dense_params(model_of(model)[1])
    opt_state = tx.init(params)
    if hyperparams:
        opt_state = dp.set_hyperparams(opt_state, **hyperparams)
    return train.TrainState(params, opt_state, jnp.zeros([], jnp.int32))


class Runner:
    """A jitted train step with its (donated) state, stepping through fixed batches.

    With ``idle`` (the kind of the ``update_masks=False`` step), the step of each count is
    chosen on the host: ``kind``'s where :func:`dynprune.update_schedule` says the cadence
    fires, ``idle``'s elsewhere.
    """

    def __init__(
        self,
        kind: str,
        *args: int,
        data: Batches,
        model: str = "lenet300",
        idle: str | None = None,
        steps: int = 0,
    ):
        tx, self.step = train_step(kind, *args, model=model)
        self.state = fresh_state(tx, model)
        self.data = data
        self.i = 0
        self.idle, self.due = self.step, np.zeros(0, bool)
        if idle is not None:
            _, self.idle = train_step(idle, *args, model=model)
            self.due = dp.update_schedule(PRUNERS[kind](*args), self.state.opt_state, steps)
            jax.block_until_ready(self.idle(fresh_state(tx, model), *data[0]))
        # Compile (or reuse the cached executable) on a throwaway state: the run starts at 0.
        jax.block_until_ready(self.step(fresh_state(tx, model), *data[0]))

    def run(self, n: int) -> float:
        """Take ``n`` steps; return their wall time in seconds (ending when results are ready)."""
        start = time.perf_counter()
        for _ in range(n):
            images, labels = self.data[self.i % len(self.data)]
            due = self.i >= len(self.due) or self.due[self.i]
            self.state, _ = (self.step if due else self.idle)(self.state, images, labels)
            self.i += 1
        jax.block_until_ready(self.state)
        return time.perf_counter() - start


def interleaved(thunks: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Time each thunk ``reps`` times, rotating the order every round; thunks return seconds."""
    names = list(thunks)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(reps):
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            times[name].append(thunks[name]())
    return times


def timed(fn: Callable[..., Any], *args: Any) -> Callable[[], float]:
    """A thunk that calls ``fn(*args)``, blocks on the result and returns the seconds taken."""

    def thunk() -> float:
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        return time.perf_counter() - start

    return thunk


def median_ms(times: Sequence[float]) -> float:
    return 1e3 * statistics.median(times)


def kernel_sparsity(masks: Any) -> float:
    """Fraction of False over all (non-``None``) mask leaves."""
    leaves = [m for _, m in dp.tree.scored_leaves(masks)]
    return 1.0 - sum(int(jnp.sum(m)) for m in leaves) / sum(m.size for m in leaves)


def bench_step_overhead(model: str, reps: int, *, warmup: int = 5) -> dict[str, Any]:
    """Per-step times on ``model`` of plain Adam, the wrapped step without a mask update (in
    its own program and under the untaken branch of the one program) and a step updating a
    global and a per-layer mask; ratios to the plain step."""
    data = random_batches(4)
    kinds = {"plain": "adam", "idle": "idle", "branch": "branch", "global": "global"}
    runners = {name: Runner(kind, data=data, model=model) for name, kind in kinds.items()}
    runners["layer"] = Runner("layer", data=data, model=model)
    for runner in runners.values():
        runner.run(warmup)
    times = interleaved({name: (lambda r=r: r.run(1)) for name, r in runners.items()}, reps)
    fired = updates_in_window(idle_pruner(), 0, runners["branch"].i)
    if fired:
        raise RuntimeError(f"the idle pruner's cadence fired {fired} times")
    ms = {name: median_ms(t) for name, t in times.items()}
    sparsity = {
        f"{model}/{scope}": kernel_sparsity(dp.masks_of(runners[scope].state.opt_state))
        for scope in SCOPES
    }
    if any(abs(v - SPARSITY) > 1e-5 for v in sparsity.values()):
        raise RuntimeError(f"the updating steps ended at sparsities {sparsity}, not {SPARSITY}")
    return {
        "step_overhead_ratio": ms["idle"] / ms["plain"],
        "step_overhead_ratio_one_program": ms["branch"] / ms["plain"],
        "mask_update_ratio": {f"{model}/{scope}": ms[scope] / ms["plain"] for scope in SCOPES},
        "plain_step_ms": ms["plain"],
        "idle_step_ms": ms["idle"],
        "branch_step_ms": ms["branch"],
        "update_step_ms": {f"{model}/{scope}": ms[scope] for scope in SCOPES},
        "update_step_sparsity": sparsity,
        "step_reps": reps,
    }


def argsort_global_masks(scores: Any, s: jax.Array) -> Any:
    """Baseline: global masks by a full sort (jaxpruner's method): keep rank >= round(s·n)."""
    leaves = dp.tree.scored_leaves(scores)
    flat = jnp.concatenate([x.reshape(-1) for _, x in leaves])
    k = dp.masks.count_to_drop(s, flat.size)
    order = jnp.argsort(flat)
    rank = jnp.zeros(flat.size, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
    keep = rank >= k
    by_path, offset = {}, 0
    for path, x in leaves:
        by_path[path] = keep[offset : offset + x.size].reshape(x.shape)
        offset += x.size
    return dp.tree.map_scored(lambda path, x: by_path[path], scores)


def bench_selection(shapes: Sequence[tuple[int, int]], reps: int) -> dict[str, Any]:
    """Median ms of our global mask and of the argsort baseline, on one MLP's kernels."""
    params = dense_params(shapes)
    ours = jax.jit(lambda p, s: dp.masks.sparsity(dp.scores.magnitude(p), s, scope="global"))
    sort = jax.jit(lambda p, s: argsort_global_masks(dp.scores.magnitude(p), s))
    s = jnp.float32(SPARSITY)
    ours_masks, sort_masks = ours(params, s), sort(params, s)
    pairs = zip(dp.tree.scored_leaves(ours_masks), dp.tree.scored_leaves(sort_masks), strict=True)
    if not all(bool(jnp.array_equal(a, b)) for (_, a), (_, b) in pairs):
        raise RuntimeError("radix selection and the argsort baseline disagree")
    times = interleaved({"ours": timed(ours, params, s), "sort": timed(sort, params, s)}, reps)
    ours_ms, sort_ms = median_ms(times["ours"]), median_ms(times["sort"])
    return {
        "speedup": sort_ms / ours_ms,
        "ours_ms": ours_ms,
        "sort_ms": sort_ms,
        "weights": sum(a * b for a, b in shapes),
        "reps": reps,
        "sparsity": kernel_sparsity(ours_masks),
    }


def bench_gmp_run(steps: int, repeats: int = 3) -> dict[str, Any]:
    """A GMP run (update every ``CHUNK`` steps) in two programs chosen by the schedule, the
    same run in one program, and a dense run, interleaved chunk by chunk.

    Each chunk of a GMP run is timed next to the same chunk of the dense run, so the ratio
    of a pair cancels the machine's drift; the reported ratios are the medians over all pairs
    of ``repeats`` whole runs.
    """
    if steps % CHUNK or steps < 2 * CHUNK:
        raise ValueError(f"steps ({steps}) must be a multiple >= 2 of {CHUNK}")
    end = steps - CHUNK  # the last update, at the target, falls inside the run
    data = random_batches(8, seed=1)
    times: dict[str, list[float]] = {"gmp": [], "one_program": [], "dense": []}
    for _ in range(repeats):
        runners = {
            "dense": Runner("adam", data=data),
            "gmp": Runner("gmp", end, CHUNK, data=data, idle="gmp-idle", steps=steps),
            "one_program": Runner("gmp", end, CHUNK, data=data),
        }
        run = interleaved(
            {name: functools.partial(r.run, CHUNK) for name, r in runners.items()}, steps // CHUNK
        )
        for name in times:
            times[name].extend(run[name])
        pruned = runners["gmp"]
        same = zip(
            dp.tree.scored_leaves(dp.masks_of(pruned.state.opt_state)),
            dp.tree.scored_leaves(dp.masks_of(runners["one_program"].state.opt_state)),
            strict=True,
        )
        if not all(bool(jnp.array_equal(a, b)) for (_, a), (_, b) in same):
            raise RuntimeError("the two-program GMP run ended with other masks than the one")
    gmp_ms, dense_ms = median_ms(times["gmp"]), median_ms(times["dense"])
    pair = lambda name: statistics.median(
        [g / d for g, d in zip(times[name], times["dense"], strict=True)]
    )
    return {
        "gmp_run_overhead_ratio": pair("gmp"),
        "gmp_run_overhead_ratio_one_program": pair("one_program"),
        "gmp_run_total_ratio": sum(times["gmp"]) / sum(times["dense"]),
        "gmp_chunk_ms": gmp_ms,
        "dense_chunk_ms": dense_ms,
        "gmp_run_seconds": sum(times["gmp"]) / repeats,
        "dense_run_seconds": sum(times["dense"]) / repeats,
        "gmp_run_repeats": repeats,
        "gmp_run_steps": steps,
        "gmp_run_updates": updates_in_window(gmp_pruner(end, CHUNK), 0, steps),
        "gmp_run_final_sparsity": kernel_sparsity(dp.masks_of(pruned.state.opt_state)),
    }


@contextlib.contextmanager
def counting_compiles() -> Iterator[list[float]]:
    """Collect the durations of XLA backend compilations that happen inside the block."""
    events: list[float] = []

    def listener(event: str, duration: float, **kwargs: Any) -> None:
        del kwargs
        if event == COMPILE_EVENT:
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def bench_sweep(targets: Sequence[float], steps: int, every: int) -> dict[str, Any]:
    """Sweep sparsity targets through one jitted step (GMP ramp to each target by step
    ``steps - every``)."""
    data = random_batches(4, seed=2)
    end = steps - every
    # A fresh jit object (not the cache): its compilations are this sweep's alone.
    tx = dp.prune(optax.adam(LEARNING_RATE), gmp_pruner(end, every))
    step = train.make_train_step(lenet_apply(), tx)
    compiles = 0
    final: list[dict[str, Any]] = []
    for s in targets:
        state = fresh_state(tx, target=s)
        for i in range(steps):
            with counting_compiles() as events:
                state, _ = step(state, *data[i % len(data)])
            compiles += len(events)
        zeros = {path: int(jnp.sum(w == 0)) for path, w in dp.tree.scored_leaves(state.params)}
        final.append(
            {
                path: {
                    "size": int(m.size),
                    "mask_zeros": int(m.size - jnp.sum(m)),
                    "param_zeros": zeros[path],
                    "expected_zeros": round(s * m.size),
                }
                for path, m in dp.tree.scored_leaves(dp.masks_of(state.opt_state))
            }
        )
    result: dict[str, Any] = {
        "compiles_across_sweep": compiles,
        "sweep_step_cache_size": step._cache_size(),
        "sweep_targets": list(targets),
        "sweep_final_sparsities": [
            sum(leaf["mask_zeros"] for leaf in run.values())
            / sum(leaf["size"] for leaf in run.values())
            for run in final
        ],
        "sweep_exact": all(
            leaf["mask_zeros"] == leaf["param_zeros"] == leaf["expected_zeros"]
            for run in final
            for leaf in run.values()
        ),
        "sweep_leaves": final,
        "sweep_steps": steps,
    }
    return result


def vmap_targets(k: int) -> list[float]:
    """``k`` sparsity targets evenly spaced from 0.3 to 0.99 (rounded to 0.01)."""
    return [round(float(s), 2) for s in np.linspace(0.3, 0.99, k)]


def bench_vmap_throughput(k: int = 8, *, steps: int, every: int, reps: int) -> dict[str, Any]:
    """K sparsity targets as one vmapped program vs one after another, through the harness's
    :class:`experiment.Programs` (the compiled steps a sweep shares).

    Both ramp GMP from every target's fresh state (``fresh_state(tx, target=s)``) over ``steps``
    steps (the last update at ``steps - every``) on the same shared batches; then each timed
    call takes one more step of all K models, with no mask update due. Each program must
    compile once, and the vmapped models must end at the sequential ones' sparsities.
    """
    if k < 2:
        raise ValueError(f"need k >= 2 points to vmap, got {k}")
    targets = vmap_targets(k)
    data = random_batches(4, seed=3)
    tx = dp.prune(optax.adam(LEARNING_RATE), gmp_pruner(steps - every, every))
    programs = experiment.Programs()
    sequential_step = programs.step(("sequential", "prune", 1, 1), lenet_apply(), tx)
    vmapped_step = programs.step(("vmapped", "prune", k, 1), lenet_apply(), tx)
    singles = [fresh_state(tx, target=s) for s in targets]
    batched = stack([fresh_state(tx, target=s) for s in targets])
    counts = {"sequential": 0, "vmapped": 0}

    def sequential_once() -> float:
        count = np.int32(counts["sequential"])
        images, labels = data[counts["sequential"] % len(data)]
        start = time.perf_counter()
        for i, state in enumerate(singles):
            singles[i], _ = sequential_step(state, count, images, labels, shared_batch=True)
        jax.block_until_ready(singles)
        counts["sequential"] += 1
        return time.perf_counter() - start

    def vmapped_once() -> float:
        nonlocal batched
        count = np.int32(counts["vmapped"])
        images, labels = data[counts["vmapped"] % len(data)]
        start = time.perf_counter()
        batched, _ = vmapped_step(batched, count, images, labels, shared_batch=True)
        jax.block_until_ready(batched)
        counts["vmapped"] += 1
        return time.perf_counter() - start

    for _ in range(steps):  # the ramp; its first calls compile
        sequential_once()
        vmapped_once()
    fired = updates_in_window(gmp_pruner(steps - every, every), steps, reps)
    if fired:
        raise RuntimeError(f"{fired} mask updates fell inside the timed window")
    times = interleaved({"sequential": sequential_once, "vmapped": vmapped_once}, reps)
    sequential = [kernel_sparsity(dp.masks_of(s.opt_state)) for s in singles]
    masks = dp.masks_of(batched.opt_state)
    vmapped = [kernel_sparsity(jax.tree.map(lambda m, i=i: m[i], masks)) for i in range(k)]
    if vmapped != sequential:
        raise RuntimeError(f"vmapped sparsities {vmapped} != sequential {sequential}")
    sequential_rate = 1e3 * k / median_ms(times["sequential"])
    vmapped_rate = 1e3 * k / median_ms(times["vmapped"])
    return {
        "sweep_compiles": programs.max_compiles,
        "vmap_program_compiles": dict(programs.compiles),
        "vmap_throughput_ratio": vmapped_rate / sequential_rate,
        "vmap_model_steps_per_s": vmapped_rate,
        "sequential_model_steps_per_s": sequential_rate,
        "vmap_points": k,
        "vmap_targets": targets,
        "vmap_final_sparsities": vmapped,
        "sequential_final_sparsities": sequential,
        "vmap_steps": steps,
        "vmap_reps": reps,
    }


def bench_sparse(reps: int) -> dict[str, Any]:
    """Sparse (BCOO) against dense inference of LeNet-300-100 at 99% sparsity, batch 1 and 256."""
    params = dense_params(LENET_SHAPES)
    example = jnp.zeros((1, 28, 28, 1), jnp.float32)
    rows = dp.sparse.benchmark(
        lenet_apply(), params, example, sparsities=(0.99,), formats=("bcoo",), reps=reps
    )
    by_batch = {row.batch_size: row for row in rows}
    return {
        "sparse_speedup_99": by_batch[1].speedup,
        "sparse_speedup_99_b256": by_batch[256].speedup,
        "sparse_ms_99": {str(b): 1e3 * r.sparse_s for b, r in by_batch.items()},
        "sparse_dense_ms_99": {str(b): 1e3 * r.dense_s for b, r in by_batch.items()},
    }


def bench_reconstruct(reps: int, hidden_removed: float = 0.75) -> dict[str, Any]:
    """The 4M MLP with ``hidden_removed`` of each hidden layer's neurons removed: the masked
    model against the reconstructed one, at batch 256 (latency) and in MACs."""
    params = dense_params(MLP4M_SHAPES)
    last = f"fc{len(MLP4M_SHAPES)}"
    hidden = {k: {"kernel": v["kernel"]} for k, v in params.items() if k != last}
    neurons = dp.masks.structured(dp.scores.magnitude(hidden), hidden_removed)
    masks = jax.tree.map(lambda _: None, params)
    for name, leaf in neurons.items():
        masks[name]["kernel"] = jnp.broadcast_to(leaf["kernel"], params[name]["kernel"].shape)
    masks = dp.masks.with_bias(masks, params)
    masked = dp.apply_masks(params, masks)
    example = jnp.zeros((1, 28, 28, 1), jnp.float32)
    small = dp.surgery.reconstruct(mlp_apply, params, masks, example)
    x = jnp.asarray(np.random.default_rng(4).random((256, 28, 28, 1), np.float32))
    difference = float(jnp.max(jnp.abs(mlp_apply(masked, x) - small.apply(small.params, x))))
    if difference > 1e-4:
        raise RuntimeError(f"the reconstructed MLP's outputs differ by {difference}")
    timing = dp.stats.compare_latency(
        {"masked": (mlp_apply, (masked, x)), "reconstructed": (small.apply, (small.params, x))},
        reps=reps,
    )
    dense_macs = dp.stats.cost(mlp_apply, params, example)["total"]["macs_dense"]
    small_macs = dp.stats.cost(small.apply, small.params, example)["total"]["macs_dense"]
    return {
        "reconstruct_speedup": timing.speedups["reconstructed"],
        "reconstruct_flop_ratio": dense_macs / small_macs,
        "reconstruct_architecture": small.architecture,
        "reconstruct_ms": {k: 1e3 * v for k, v in timing.medians.items()},
    }


def bench_gating(reps: int, density: float = 0.5) -> dict[str, Any]:
    """Masked against width-bucket execution of an untrained prefix-mode gated CNN."""
    model = dp.gating.GatedCNN(
        features=(32, 128, 256), mode="prefix", buckets=(0.25, 0.5, 0.75, 1.0), stem_pool=True
    )
    x = jnp.asarray(np.random.default_rng(5).random((64, 28, 28, 1), np.float32))
    params = model.init(jax.random.key(0), x[:1])["params"]
    runner = dp.gating.BucketRunner(model, params)
    one, many = (
        dp.gating.measure_skipping(model, params, batch, density, reps=reps, runner=runner)
        for batch in (x[:1], x)
    )
    for got in (one, many):
        if got.max_abs_diff > 1e-4:
            raise RuntimeError(f"the bucket path differs from the masked one by {got.max_abs_diff}")
    return {
        "gating_mac_ratio": many.macs_dense / many.macs_skipping,
        "gating_speedup_b1": one.dense_s / one.compact_s,
        "gating_speedup_b64": many.speedup_over_dense,
        "gating_ms": {
            "dense_b1": 1e3 * one.dense_s,
            "masked_b1": 1e3 * one.masked_s,
            "buckets_b1": 1e3 * one.skipping_s,
            "compact_b1": 1e3 * one.compact_s,
            "dense_b64": 1e3 * many.dense_s,
            "masked_b64": 1e3 * many.masked_s,
            "buckets_b64": 1e3 * many.skipping_s,
        },
    }


CASCADE_ESCALATED = 0.1
CASCADE_IMAGES = 20


def bench_cascade(reps: int) -> dict[str, Any]:
    """Dense against the skipping confidence cascade of an untrained slimmable CNN, with t
    set so that :data:`CASCADE_ESCALATED` of the inputs run the full width too."""
    model = dp.gating.GatedCNN(
        features=(32, 128, 256), mode="prefix", buckets=(0.25, 0.5, 0.75, 1.0), stem_pool=True
    )
    x = jnp.asarray(np.random.default_rng(6).random((64, 28, 28, 1), np.float32))
    params = model.init(jax.random.key(0), x[:1])["params"]
    params = {k: v for k, v in params.items() if "predictor" not in k}
    stem = jax.jit(lambda x: model.apply({"params": params}, x, method=type(model).features_of))
    dense = jax.jit(lambda x: model.apply({"params": params}, x, method=type(model).dense))
    runner = dp.gating.CascadeRunner(model, params)

    def threshold(h: jax.Array) -> float:
        """The confidence quantile below which CASCADE_ESCALATED of ``h``'s inputs fall."""
        gates = dp.gating.width_gates(model, jnp.zeros(len(h), jnp.int32))
        narrow = model.apply({"params": params}, h, gates, method=type(model).trunk)
        confidence = np.asarray(jax.nn.softmax(narrow).max(-1))
        return float(np.quantile(confidence, CASCADE_ESCALATED))

    h = stem(x)
    t64 = threshold(h)
    logits, level = runner.run(h, t64)
    masked, expected = dp.gating.cascade(model, params, h, t64)
    if float(jnp.max(jnp.abs(logits - masked))) > 1e-4 or (level != np.asarray(expected)).any():
        raise RuntimeError("the cascade runner differs from the masked cascade")
    macs = dp.gating.cascade_macs(model, params, level, example=x[:1])
    dense_macs = float(dp.gating.bucket_macs(model, params, x[:1])[-1])
    t1 = threshold(h[:CASCADE_IMAGES])
    b1 = dp.stats.per_image_medians(
        {"dense": dense, "cascade": lambda one: runner.compact(one, t1)},
        x[:CASCADE_IMAGES],
        reps=reps,
    )
    b64 = dp.stats.interleaved_medians(
        {"dense": lambda: dense(x), "cascade": lambda: runner.run(stem(x), t64)[0]},
        reps=reps,
        warmup=2,
    )
    return {
        "cascade_mac_ratio": dense_macs / float(np.mean(macs)),
        "cascade_speedup_b1": b1["dense"] / b1["cascade"],
        "cascade_speedup_b64": b64["dense"] / b64["cascade"],
        "cascade_escalated": float(np.mean(level > 0)),
        "cascade_ms": {
            "dense_b1": 1e3 * b1["dense"] / CASCADE_IMAGES,
            "cascade_b1": 1e3 * b1["cascade"] / CASCADE_IMAGES,
            "dense_b64": 1e3 * b64["dense"],
            "cascade_b64": 1e3 * b64["cascade"],
        },
    }


def metadata(reps: int, quick: bool) -> dict[str, Any]:
    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "optax_version": optax.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "reps": reps,
        "quick": quick,
        "data": "random arrays with MNIST shapes (no dataset)",
    }


def run(
    *,
    quick: bool = False,
    reps: int | None = None,
    large_shapes: Sequence[tuple[int, int]] | None = None,
    gmp_steps: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every benchmark and return one flat dict (keys in the module docstring).

    Args:
      quick: few repetitions and a short GMP run and sweep (a smoke test, not a measurement).
      reps: interleaved repetitions of the per-step timings (default 300, quick 10); the
        selection timings use reps // 10 (LeNet) and reps // 60 (4M), at least 3 and 2; the
        vmapped-vs-sequential timing uses reps // 3, at least 5.
      large_shapes: kernel shapes of the large MLP for the selection benchmark (default
        ``MLP4M_SHAPES``; its weight count is reported as ``select_weights_4m``).
      gmp_steps: length of the GMP and dense runs (default 2000, quick 300).
      progress: called with a line before each section.
    """
    reps = reps or (10 if quick else 300)
    large_shapes = large_shapes or MLP4M_SHAPES
    say = progress or (lambda msg: None)
    out: dict[str, Any] = metadata(reps, quick)
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    def section(name: str, label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        say(label)
        t0 = time.perf_counter()
        result = fn()
        seconds[name] = time.perf_counter() - t0
        return result

    for model in MODELS:  # one step of mlp4m costs about 12 of LeNet-300-100's
        model_reps = reps if model == "lenet300" else max(3, reps // 5)
        got = section(
            f"step_{model}",
            f"{model} train step: plain vs wrapped vs mask update",
            lambda model=model, model_reps=model_reps: bench_step_overhead(model, model_reps),
        )
        for key, value in got.items():
            if isinstance(value, dict):
                out.setdefault(key, {}).update(value)
            else:
                out.setdefault(key, {})[model] = value
    large_n = sum(a * b for a, b in large_shapes)
    small = section(
        "select_lenet300",
        "global mask vs argsort: LeNet-300-100",
        lambda: bench_selection(LENET_SHAPES, max(3, reps // 10)),
    )
    large = section(
        "select_4m",
        f"global mask vs argsort: {large_n:,}-weight MLP",
        lambda: bench_selection(large_shapes, max(2, reps // 60)),
    )
    for name, res in (("lenet300", small), ("4m", large)):
        out[f"update_speedup_vs_sort_{name}"] = res["speedup"]
        out[f"select_ours_ms_{name}"] = res["ours_ms"]
        out[f"select_argsort_ms_{name}"] = res["sort_ms"]
        out[f"select_weights_{name}"] = res["weights"]
        out[f"select_reps_{name}"] = res["reps"]
    out["update_speedup_vs_sort"] = min(small["speedup"], large["speedup"])
    out.update(
        section(
            "gmp_run",
            "GMP run vs dense run",
            lambda: bench_gmp_run(gmp_steps or (300 if quick else 2000), 1 if quick else 3),
        )
    )
    out.update(
        section(
            "sweep",
            "sparsity sweep through one compiled step",
            lambda: bench_sweep(SWEEP_TARGETS, 12 if quick else 30, 4 if quick else 10),
        )
    )
    out.update(
        section(
            "vmap",
            f"{VMAP_POINTS} targets: one vmapped program vs one after another",
            lambda: bench_vmap_throughput(
                VMAP_POINTS,
                steps=12 if quick else 30,
                every=4 if quick else 10,
                reps=max(5, reps // 3),
            ),
        )
    )
    out.update(
        section(
            "sparse",
            "sparse (BCOO) vs dense inference at 99% sparsity",
            lambda: bench_sparse(max(3, reps // 10)),
        )
    )
    out.update(
        section(
            "reconstruct",
            "reconstructed vs masked MLP at batch 256",
            lambda: bench_reconstruct(max(3, reps // 10)),
        )
    )
    out.update(
        section(
            "gating",
            "gated CNN: dense vs width buckets",
            lambda: bench_gating(max(3, reps // 10)),
        )
    )
    out.update(
        section(
            "cascade",
            "slimmable CNN: dense vs the confidence cascade",
            lambda: bench_cascade(max(3, reps // 10)),
        )
    )
    out["targets_met"] = {key: target_met(key, out[key]) for key in TARGETS}
    out["targets_met"]["gating_speedup_b1"] = (
        out["gating_speedup_b1"] >= 0.8 * out["gating_mac_ratio"]
    )
    out["targets_met"]["cascade_speedup_b1"] = (
        out["cascade_speedup_b1"] >= 0.8 * out["cascade_mac_ratio"]
    )
    out["targets_met"]["reconstruct_speedup"] = (
        out["reconstruct_speedup"] >= 0.8 * out["reconstruct_flop_ratio"]
    )
    out["section_seconds"] = seconds
    out["bench_seconds"] = time.perf_counter() - start
    return out


def target_met(key: str, value: float | dict[str, float]) -> bool:
    if isinstance(value, dict):
        return all(target_met(key, v) for v in value.values())
    op, bound = TARGETS[key]
    return {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[op]


def format_table(result: dict[str, Any]) -> str:
    rows: list[tuple[str, str | None, str]] = []
    for model in MODELS:
        rows.append(
            (
                "step_overhead_ratio",
                model,
                f"plain {result['plain_step_ms'][model]:.2f} ms, "
                f"wrapped {result['idle_step_ms'][model]:.2f} ms",
            )
        )
        rows.append(
            (
                "step_overhead_ratio_one_program",
                model,
                f"with the untaken branch {result['branch_step_ms'][model]:.2f} ms",
            )
        )
    for name, ms in result["update_step_ms"].items():
        rows.append(("mask_update_ratio", name, f"update step {ms:.2f} ms"))
    rows += [
        (
            "update_speedup_vs_sort_lenet300",
            None,
            f"ours {result['select_ours_ms_lenet300']:.2f} ms, "
            f"argsort {result['select_argsort_ms_lenet300']:.1f} ms",
        ),
        (
            "update_speedup_vs_sort_4m",
            None,
            f"ours {result['select_ours_ms_4m']:.1f} ms, "
            f"argsort {result['select_argsort_ms_4m']:.0f} ms "
            f"({result['select_weights_4m']:,} weights)",
        ),
        ("update_speedup_vs_sort", None, "min of the two"),
        (
            "gmp_run_overhead_ratio",
            None,
            f"{result['gmp_run_steps']} steps, {result['gmp_run_updates']} updates, two "
            f"programs; total ratio {result['gmp_run_total_ratio']:.3f}",
        ),
        ("gmp_run_overhead_ratio_one_program", None, "the same run in one program"),
        (
            "compiles_across_sweep",
            None,
            "final sparsities "
            + ", ".join(f"{s:.3f}" for s in result["sweep_final_sparsities"])
            + f"; exact: {result['sweep_exact']}",
        ),
        (
            "sweep_compiles",
            None,
            f"most compilations of a program; {result['vmap_points']} targets "
            "through the 1-point and the vmapped program",
        ),
        (
            "vmap_throughput_ratio",
            None,
            f"{result['vmap_model_steps_per_s']:.0f} vs "
            f"{result['sequential_model_steps_per_s']:.0f} model-steps/s "
            f"({result['vmap_points']} vmapped vs one after another)",
        ),
        (
            "reconstruct_speedup",
            None,
            f"{result['reconstruct_architecture']}: masked "
            f"{result['reconstruct_ms']['masked']:.2f} ms, reconstructed "
            f"{result['reconstruct_ms']['reconstructed']:.2f} ms; target >= 0.8 x "
            f"{result['reconstruct_flop_ratio']:.2f} (MAC ratio): "
            + ("yes" if result["targets_met"]["reconstruct_speedup"] else "NO"),
        ),
        (
            "gating_speedup_b1",
            None,
            f"dense {result['gating_ms']['dense_b1']:.2f} ms, "
            f"one dispatch {result['gating_ms']['compact_b1']:.2f} ms (untrained gates, d = 0.5); "
            f"target >= 0.8 x {result['gating_mac_ratio']:.2f} (MAC ratio): "
            + ("yes" if result["targets_met"]["gating_speedup_b1"] else "NO"),
        ),
        (
            "gating_speedup_b64",
            None,
            f"dense {result['gating_ms']['dense_b64']:.1f} ms, buckets "
            f"{result['gating_ms']['buckets_b64']:.1f} ms; MAC ratio "
            f"{result['gating_mac_ratio']:.2f}",
        ),
        (
            "cascade_speedup_b1",
            None,
            f"dense {result['cascade_ms']['dense_b1']:.2f} ms, cascade "
            f"{result['cascade_ms']['cascade_b1']:.2f} ms (untrained, "
            f"{100 * CASCADE_ESCALATED:.0f}% escalated); target >= 0.8 x "
            f"{result['cascade_mac_ratio']:.2f} (MAC ratio): "
            + ("yes" if result["targets_met"]["cascade_speedup_b1"] else "NO"),
        ),
        (
            "cascade_speedup_b64",
            None,
            f"dense {result['cascade_ms']['dense_b64']:.1f} ms, cascade "
            f"{result['cascade_ms']['cascade_b64']:.1f} ms; "
            f"{100 * result['cascade_escalated']:.1f}% escalated",
        ),
        (
            "sparse_speedup_99",
            None,
            f"batch 1: dense {result['sparse_dense_ms_99']['1']:.3f} ms, "
            f"sparse {result['sparse_ms_99']['1']:.3f} ms",
        ),
        (
            "sparse_speedup_99_b256",
            None,
            f"batch 256: dense {result['sparse_dense_ms_99']['256']:.2f} ms, "
            f"sparse {result['sparse_ms_99']['256']:.2f} ms",
        ),
    ]
    lines = [
        f"dynprune bench — {result['backend']} ({result['device_kind']}), jax "
        f"{result['jax_version']}, {result['cpu_count']} CPUs, reps {result['reps']}"
        + (" [quick]" if result["quick"] else ""),
        f"{'metric':52} {'value':>9} {'target':>9} {'met':>4}  detail",
    ]
    for key, entry, detail in rows:
        value = result[key] if entry is None else result[key][entry]
        shown = f"{value:9.3f}" if isinstance(value, float) else f"{value:9d}"
        target, met = "", ""
        if key in TARGETS:
            op, bound = TARGETS[key]
            target = f"{op} {bound:g}"
            met = "yes" if target_met(key, value) else "NO"
        name = key if entry is None else f"{key}[{entry}]"
        lines.append(f"{name:52} {shown} {target:>9} {met:>4}  {detail}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object (last line)")
    p.add_argument("--quick", action="store_true", help="smoke run: few repetitions and steps")
    p.add_argument(
        "--reps",
        type=int,
        default=None,
        help="interleaved repetitions per step timing (default 300; quick 10)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(
        quick=args.quick,
        reps=args.reps,
        progress=None if args.json else (lambda msg: print(f"… {msg}", flush=True)),
    )
    if args.json:
        print(json.dumps(result, default=float))
    else:
        print(format_table(result))
    return result


if __name__ == "__main__":
    main()
