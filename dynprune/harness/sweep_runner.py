"""Run a sweep: expand its grid, skip finished rows, train the rest in compiled groups, report.

Points are grouped by :func:`~dynprune.harness.experiment.group_key` (configurations equal up
to pruner state values) and run K at a time (``vmap``; K = 1 runs them one after another
through the same compiled step). Each finished run is appended to the results file at once,
under a lock and only if its key is not there yet, so a sweep killed at any moment and run
again ends with every row exactly once, and concurrent shards never write a key twice. With
checkpoints (:mod:`dynprune.harness.checkpoint`), the program that was killed resumes from its
last checkpoint instead of starting over.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from dynprune.harness import checkpoint, experiment, results, sweep
from dynprune.harness import config as config_lib

__all__ = ["choose_backend", "initialize_distributed", "make_mesh", "quick", "run_sweep"]

log = logging.getLogger(__name__)

#: Images per split in smoke mode (:func:`quick`).
QUICK_EXAMPLES = 2048
PLATFORMS = ("cpu", "gpu", "tpu")


def quick(config: config_lib.RunConfig) -> config_lib.RunConfig:
    """Smoke mode: every phase at most 1 epoch, splits cut short.

    Each phase (pretrain, prune, fine-tune, retrain) runs ``min(epochs, 1)`` epochs (0 stays
    0), and every split is cut to its first ``min(config.examples, QUICK_EXAMPLES)`` images
    (:data:`QUICK_EXAMPLES`: 2,048; a config that asks for fewer keeps its number).

    Args:
      config: the run configuration.

    Returns:
      The shortened configuration (a new one; ``config`` is unchanged).

    Examples:
      >>> from dynprune.harness.config import Phase, RunConfig
      >>> config = RunConfig(model="origin_mlp", prune=Phase(epochs=20, lr=1e-3),
      ...     finetune=Phase(epochs=0, lr=1e-4), retrain=Phase(epochs=5, lr=1e-4))
      >>> smoke = quick(config)
      >>> smoke.prune.epochs, smoke.finetune.epochs, smoke.retrain.epochs, smoke.examples
      (1, 0, 1, 2048)
      >>> quick(dataclasses.replace(config, examples=512)).examples
      512
    """
    shrink = lambda p: None if p is None else dataclasses.replace(p, epochs=min(p.epochs, 1))
    return dataclasses.replace(
        config,
        pretrain=shrink(config.pretrain),
        prune=shrink(config.prune),
        finetune=shrink(config.finetune),
        retrain=shrink(config.retrain),
        examples=(
            QUICK_EXAMPLES if config.examples is None else min(config.examples, QUICK_EXAMPLES)
        ),
    )


def choose_backend(backend: str | None) -> str:
    """Make ``backend`` JAX's default platform (its first device becomes the default device).

    Args:
      backend: a JAX platform name (``"cpu"``, ``"gpu"``, ``"tpu"``), or ``None``: leave
        JAX's default as it is.

    Returns:
      The platform now in use: ``backend``, or :func:`jax.default_backend` for ``None``.

    Raises:
      ValueError: the platform is not available here (the message names those that are).

    Examples:
      >>> import jax
      >>> choose_backend(None) == jax.default_backend()
      True
      >>> choose_backend("nonesuch")  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: backend 'nonesuch' is not available here; available: ...cpu...
    """
    if backend is None:
        return jax.default_backend()
    try:
        devices = jax.devices(backend)
    except RuntimeError:
        present = []
        for platform in PLATFORMS:
            try:
                jax.devices(platform)
                present.append(platform)
            except RuntimeError:
                pass
        raise ValueError(
            f"backend {backend!r} is not available here; available: {', '.join(present)}"
        ) from None
    jax.config.update("jax_default_device", devices[0])
    return backend


def initialize_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Join JAX's multi-controller runtime, so that ``jax.devices()`` is every process's devices.

    Calls :func:`jax.distributed.initialize`; with no arguments it reads them from the cluster
    environment (e.g. SLURM). Cross-process collectives on CPU go through gloo. Call it
    before anything else touches JAX; every process then runs the same sweep, and process 0
    writes the rows.

    Args:
      coordinator: the coordinator's ``"host:port"`` (process 0's); default: from the
        cluster environment.
      num_processes: how many processes take part; default: from the environment.
      process_id: this process's index in [0, num_processes); default: from the environment.

    Raises:
      RuntimeError: JAX's backends are already initialised, or the runtime cannot start
        (as :func:`jax.distributed.initialize` raises).

    Examples:
      Two processes on one machine; each runs this with its own ``process_id``:

      >>> initialize_distributed("localhost:12355", num_processes=2,
      ...     process_id=0)  # doctest: +SKIP
      >>> import jax; jax.process_count()  # doctest: +SKIP
      2
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )


def make_mesh(devices: str | None, backend: str) -> jax.sharding.Mesh | None:
    """A 1-D mesh with axis ``"points"`` over ``"all"`` or the first N devices of ``backend``.

    :func:`dynprune.harness.experiment.run_points` shards the K points of a program over it.

    Args:
      devices: ``"all"``, a count N as a string (1 ≤ N ≤ the devices present), or ``None``:
        no mesh.
      backend: the platform whose devices are used (e.g. ``"cpu"``).

    Returns:
      The :class:`jax.sharding.Mesh`, or ``None`` for ``devices=None``.

    Raises:
      ValueError: ``devices`` is neither ``"all"`` nor an integer, or N is out of range.

    Examples:
      >>> make_mesh(None, "cpu") is None
      True
      >>> dict(make_mesh("1", "cpu").shape)
      {'points': 1}
      >>> make_mesh("x", "cpu")
      Traceback (most recent call last):
      ...
      ValueError: --devices takes 'all' or a count, got 'x'
    """
    if devices is None:
        return None
    available = jax.devices(backend)
    if devices == "all":
        n = len(available)
    else:
        try:
            n = int(devices)
        except ValueError:
            raise ValueError(f"--devices takes 'all' or a count, got {devices!r}") from None
        if not 1 <= n <= len(available):
            raise ValueError(f"--devices {n}: {backend} has {len(available)} device(s)")
    return jax.sharding.Mesh(np.array(available[:n]), ("points",))


def run_sweep(
    path: str | os.PathLike,
    *,
    overrides: Mapping[str, Sequence[Any]] | None = None,
    seeds: int | None = None,
    out: str | os.PathLike | None = None,
    results_dir: str | os.PathLike = "experiments/results",
    plot_path: str | os.PathLike | None = None,
    vmap: int | None = None,
    devices: str | None = None,
    backend: str | None = None,
    shard: str | None = None,
    test: bool = False,
    quick_mode: bool = False,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    checkpoints: checkpoint.Options | None = None,
) -> dict[str, Any]:
    """Run the sweep config at ``path``; returns the summary (the command's last JSON line)
    plus ``"table"``, the printed table.

    The grid (:func:`dynprune.harness.sweep.expand`) less the rows already in ``out`` is run
    group by group (:func:`~dynprune.harness.experiment.group_key`), ``vmap`` points per
    program (a last short chunk is padded by repeating its last point, so every program has
    one shape); each row is appended to ``out`` as soon as it is done, then the whole sweep's
    rows are summarised, tabled and plotted.

    Args:
      path: a sweep config (JSON, :func:`dynprune.harness.sweep.load`).
      overrides: ``{key: values}`` (see :func:`dynprune.harness.sweep.expand`).
      seeds: seeds per point (default: the config's).
      out: the JSONL results file (default: ``results_dir / config["out"]``, else
        ``results_dir / <config name>.jsonl``).
      results_dir: where default results files go.
      plot_path: the PNG (default: ``out`` with suffix ``.png``).
      vmap: points per vmapped program (default 1, or the device count with ``devices``).
      devices: ``"all"`` or a count: shard each program's points over that many devices.
      backend: ``"cpu"``, ``"gpu"`` or ``"tpu"`` (default: JAX's).
      shard: ``"I/N"``: run only the I-th of N disjoint slices of the grid.
      test: also compute test error (the rows record it; the key differs from validation-only
        runs).
      quick_mode: smoke mode (:func:`quick`).
      data_dir: the TFDS data directory.
      progress: show a tqdm bar over runs.
      checkpoints: checkpoint each program (one run, or K vmapped points) and resume it
        (:func:`dynprune.harness.experiment.run_points`); ``None``: off.

    Returns:
      ``process`` (this process's index; 0 writes the rows), ``runs`` (written now),
      ``skipped`` (already in ``out``), ``rows`` (the sweep's rows in ``out``), ``compiles``
      (the most train-step compilations of any group and phase), ``out``, ``plot`` (``None``
      when there are no rows or this process does not write), ``wall_s``, ``table``.

    Raises:
      ValueError: a malformed sweep config or override, an unavailable backend, a bad
        ``devices`` or ``shard``, or ``vmap`` not a multiple of the device count.
      dynprune.harness.data.DatasetNotFoundError: the dataset is not prepared under
        ``data_dir``.

    Examples:
      A smoke run of a one-point sweep (it loads MNIST from ``data_dir`` and trains):

      >>> import json, os, tempfile
      >>> root = tempfile.mkdtemp()
      >>> path = os.path.join(root, "tiny.json")
      >>> with open(path, "w") as f:
      ...     _ = f.write(json.dumps({
      ...         "run": {"model": "origin_mlp", "prune": {"epochs": 1, "lr": 0.001}},
      ...         "methods": {"one_shot": {"pruner": {"algorithm": "one_shot"},
      ...                                  "knob": "target", "values": [0.5]}}}))
      >>> summary = run_sweep(path, results_dir=root, quick_mode=True,
      ...     progress=False)  # doctest: +SKIP
      >>> summary["runs"], summary["skipped"], summary["rows"]  # doctest: +SKIP
      (1, 0, 1)
      >>> run_sweep(path, results_dir=root, quick_mode=True,
      ...     progress=False)["skipped"]  # doctest: +SKIP
      1
    """
    start = time.perf_counter()
    platform = choose_backend(backend)
    mesh = make_mesh(devices, platform)
    config = sweep.load(path)
    name = Path(path).stem
    out = Path(out) if out is not None else Path(results_dir) / (config.out or f"{name}.jsonl")
    plot_path = Path(plot_path) if plot_path is not None else out.with_suffix(".png")
    if quick_mode:
        config = dataclasses.replace(config, run=quick(config.run))
    points = sweep.expand(config, overrides, seeds=seeds)
    keys = {id(p): config_lib.run_key(p.config, p.seed, test=test) for p in points}
    mine = points if shard is None else sweep.shard(points, shard)
    k = vmap or (1 if mesh is None else mesh.size)
    if mesh is not None and k % mesh.size:
        raise ValueError(f"--vmap {k} does not divide evenly over {mesh.size} devices")

    done = results.completed_keys(out)
    todo = [p for p in mine if keys[id(p)] not in done]
    groups: dict[str, list[sweep.Point]] = {}
    for p in todo:
        groups.setdefault(experiment.group_key(p.config), []).append(p)
    programs = experiment.Programs()
    splits: dict[tuple[Any, ...], experiment.Splits] = {}
    metadata = results.run_metadata()
    writer = jax.process_index() == 0  # every process computes every row; one writes them
    runs = 0
    with tqdm(total=len(todo), disable=not progress, unit="run") as bar:
        for group in groups.values():
            for i in range(0, len(group), k):
                chunk = group[i : i + k]
                padded = chunk + [chunk[-1]] * (k - len(chunk))  # one program shape: one compile
                base = chunk[0].config
                split_key = (base.dataset, base.validation, base.examples)
                if split_key not in splits:
                    splits[split_key] = experiment.load_splits(base, data_dir)
                rows = experiment.run_points(
                    [p.config for p in padded],
                    [p.seed for p in padded],
                    test=test,
                    splits=splits[split_key],
                    programs=programs,
                    mesh=mesh,
                    progress=progress,
                    checkpoints=checkpoints,
                )
                for p, row in zip(chunk, rows, strict=False):
                    row = {
                        "key": keys[id(p)],
                        "sweep": name,
                        "method": p.method,
                        "target": p.target,
                        "seed": p.seed,
                        "swept": p.swept,
                        "config": config_lib.to_dict(p.config),
                        **metadata,
                        **row,
                        "compiles": programs.compiles_of(p.config),
                    }
                    if not writer:
                        continue
                    if results.append_jsonl(out, row, unique=True):
                        runs += 1
                    else:
                        log.warning(
                            "row %s was written by another process; kept theirs", row["key"]
                        )
                bar.update(len(chunk))

    every_key = set(keys.values())
    rows = [r for r in results.unique_rows(results.read_jsonl(out)) if r.get("key") in every_key]
    summaries = sweep.summarise(rows)
    plot = None
    if rows and writer:
        plot = sweep.plot(
            summaries,
            plot_path,
            title=f"{name}: {len(rows)} runs",
            published=config.published,
        )
    return {
        "process": jax.process_index(),
        "runs": runs,
        "skipped": len(mine) - len(todo),
        "rows": len(rows),
        "compiles": programs.max_compiles,
        "out": str(out),
        "plot": None if plot is None else str(plot),
        "wall_s": time.perf_counter() - start,
        "table": sweep.format_table(summaries),
    }
