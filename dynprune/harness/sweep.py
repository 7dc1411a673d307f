"""Sweeps: a grid of runs (swept fields × methods × their knob values × seeds) as data.

A sweep config (JSON, e.g. ``experiments/configs/mnist-frontier.json``) holds a base
:class:`~dynprune.harness.config.RunConfig` and *methods*: a pruner spec, the argument it
sweeps (its *knob*: ``target`` for GMP / RigL / one-shot, ``c`` for DNS, ``threshold`` for the
origin document's rule) and the knob's values::

    {"description": "...", "seeds": 1,
     "run": {"model": "lenet300", "prune": {"epochs": 20, "lr": 0.001}},
     "methods": {"gmp": {"pruner": {"algorithm": "gmp", "begin": 0.1, "end": 0.7},
                         "knob": "target", "values": [0.9, 0.95, 0.98]}}}

:func:`expand` turns it, with overrides (``"prune.epochs": [5]``, ``"prune.target": [0.8,
0.9]``, ``"method": ["gmp"]``, ``"gmp.every": [50, 100]``), into the list of :class:`Point`
s in a fixed order; :func:`shard` takes the I-th of N disjoint slices of it. Rows are
summarised per (method, knob value) by :func:`summarise`, printed by :func:`format_table` and
drawn by :func:`plot`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dynprune import algorithms
from dynprune.harness import config as config_lib
from dynprune.harness.config import RunConfig

__all__ = [
    "Method",
    "Point",
    "SweepConfig",
    "expand",
    "format_table",
    "label",
    "load",
    "plot",
    "shard",
    "summarise",
]


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of a sweep: a pruner spec and the argument it sweeps.

    Attributes:
      pruner: the pruner spec without its knob (``{"algorithm": ..., **fixed arguments}``).
      knob: the argument swept (``target`` for GMP / RigL / one-shot, ``c`` for DNS, …).
      values: the knob's values (any JSON values: a float, a per-layer dict, …).

    Examples:
      >>> gmp = Method({"algorithm": "gmp", "begin": 0.1, "end": 0.7}, "target", (0.9, 0.95))
      >>> [{**gmp.pruner, gmp.knob: v}["target"] for v in gmp.values]
      [0.9, 0.95]
    """

    pruner: Mapping[str, Any]
    knob: str
    values: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A sweep: a base run, its methods, and how many seeds (0 … seeds − 1) each point gets.

    Read from JSON by :func:`load`; :func:`expand` turns it into its points.

    Attributes:
      run: the base run configuration; each point sets its prune phase's pruner.
      methods: ``{name: Method}``, at least one.
      seeds: seeds per point, 0 … seeds − 1 (default 1).
      description: one line on the sweep (default ``""``).
      published: ``{label: [error %, compression]}`` points drawn in the plot for comparison
        (default: none).
      out: the default results file's name, in the results directory (default ``None``:
        the config file's name with ``.jsonl``).

    Examples:
      >>> from dynprune.harness.config import Phase, RunConfig
      >>> config = SweepConfig(
      ...     run=RunConfig(model="origin_mlp", prune=Phase(epochs=1, lr=1e-3)),
      ...     methods={"one_shot": Method({"algorithm": "one_shot"}, "target", (0.5, 0.9))},
      ...     seeds=2)
      >>> len(expand(config))  # 2 values × 2 seeds
      4
    """

    run: RunConfig
    methods: Mapping[str, Method]
    seeds: int = 1
    description: str = ""
    published: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)
    out: str | None = None


class Point(NamedTuple):
    """One run of a sweep: its method, knob value, seed, configuration and swept fields.

    Attributes:
      method: the method's name in :attr:`SweepConfig.methods`.
      target: the knob's value for this run (whatever the knob is: a target, DNS's ``c``, …).
      seed: the run's seed.
      config: the full run configuration, pruner spec included.
      swept: the overridden fields swept by :func:`expand`, ``{key: value}`` (empty without
        overrides of several values).

    Examples:
      >>> from dynprune.harness.config import Phase, RunConfig
      >>> spec = {"algorithm": "one_shot", "target": 0.9}
      >>> point = Point("one_shot", 0.9, 0,
      ...     RunConfig(model="origin_mlp", prune=Phase(epochs=1, lr=1e-3, pruner=spec)), {})
      >>> point.method, point.target, point.config.method
      ('one_shot', 0.9, 'one_shot')
    """

    method: str
    target: Any
    seed: int
    config: RunConfig
    swept: dict[str, Any]


def load(path: str | Path) -> SweepConfig:
    """Read a sweep config from JSON.

    The file holds ``{"run": {...}, "methods": {name: {"pruner": {...}, "knob": ...,
    "values": [...]}}, "seeds": ..., "description": ..., "published": ..., "out": ...}``;
    ``run`` as :func:`~dynprune.harness.config.to_dict` writes a run configuration (see the
    module docstring).

    Args:
      path: the sweep config file.

    Returns:
      The :class:`SweepConfig`.

    Raises:
      ValueError: an unknown top-level field, a method without exactly ``pruner``, ``knob``
        and ``values`` or whose pruner has no ``algorithm``, no methods, or a malformed
        ``run`` (the message names the field).
      KeyError: the file has no ``run``.
      FileNotFoundError: there is no file at ``path``.

    Examples:
      >>> import json, os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "tiny.json")
      >>> with open(path, "w") as f:
      ...     _ = f.write(json.dumps({
      ...         "run": {"model": "origin_mlp", "prune": {"epochs": 1, "lr": 0.001}},
      ...         "methods": {"gmp": {"pruner": {"algorithm": "gmp", "begin": 0.1, "end": 0.7},
      ...                             "knob": "target", "values": [0.5, 0.9]}}}))
      >>> sweep = load(path)
      >>> sweep.seeds, sweep.methods["gmp"].values
      (1, (0.5, 0.9))
    """
    values = json.loads(Path(path).read_text())
    valid = {f.name for f in dataclasses.fields(SweepConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown}; valid fields: {sorted(valid)}")
    methods = {}
    for name, m in values.get("methods", {}).items():
        extra = sorted(set(m) - {"pruner", "knob", "values"})
        if extra or "knob" not in m or "values" not in m:
            raise ValueError(
                f"{path}: method {name!r} needs exactly 'pruner', 'knob' and 'values', got "
                f"{sorted(m)}"
            )
        if not isinstance(m.get("pruner"), dict) or "algorithm" not in m["pruner"]:
            raise ValueError(f"{path}: method {name!r} needs a pruner spec with an 'algorithm'")
        methods[name] = Method(m["pruner"], m["knob"], tuple(m["values"]))
    if not methods:
        raise ValueError(f"{path}: a sweep needs at least one method")
    return SweepConfig(
        run=config_lib.from_dict(values["run"]),
        methods=methods,
        seeds=values.get("seeds", 1),
        description=values.get("description", ""),
        published=values.get("published", {}),
        out=values.get("out"),
    )


def _set_field(values: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested config data, refusing fields the config does not have."""
    *parents, last = dotted.split(".")
    node = values
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            raise ValueError(
                f"--set {dotted}: {'.'.join(parents[: i + 1])} is not set in this config"
            )
        node = node[part]
    node[last] = value


def expand(
    sweep: SweepConfig,
    overrides: Mapping[str, Sequence[Any]] | None = None,
    *,
    seeds: int | None = None,
) -> list[Point]:
    """Every point of the sweep with ``overrides`` applied, in a fixed order.

    Override keys: ``"method"`` (which methods run); ``"<field>"`` or ``"<phase>.<field>"`` of
    the run config (``"batch_size"``, ``"prune.epochs"``); ``"prune.<argument>"`` for a pruner
    argument of every method whose algorithm takes it (for a method's knob it replaces the
    values swept); ``"<method>.<argument>"`` for one method. Several values sweep the field:
    the grid is their product × methods × knob values × seeds.

    The order: methods (in the config's order, or ``"method"``'s), then the product of the
    overrides' values, then knob values, then seeds.

    Args:
      sweep: the sweep config.
      overrides: ``{key: values}`` as above (default: none).
      seeds: seeds per point, 0 … seeds − 1 (default: ``sweep.seeds``).

    Returns:
      The :class:`Point` s; a point's ``swept`` holds the overridden keys' values (a
      method's own overrides as ``"<method>.<argument>"``).

    Raises:
      ValueError: an unknown method, field or argument, listing the valid ones.

    Examples:
      >>> from dynprune.harness.config import Phase, RunConfig
      >>> sweep = SweepConfig(
      ...     run=RunConfig(model="origin_mlp", prune=Phase(epochs=1, lr=1e-3)),
      ...     methods={"gmp": Method({"algorithm": "gmp", "begin": 0.1, "end": 0.7}, "target",
      ...                            (0.5, 0.9))})
      >>> [(p.target, p.seed) for p in expand(sweep, seeds=2)]
      [(0.5, 0), (0.5, 1), (0.9, 0), (0.9, 1)]
      >>> points = expand(sweep, {"prune.epochs": [1, 2], "gmp.every": [10]})
      >>> [(p.swept["prune.epochs"], p.target, p.config.prune.pruner["every"]) for p in points]
      [(1, 0.5, 10), (1, 0.9, 10), (2, 0.5, 10), (2, 0.9, 10)]
      >>> expand(sweep, {"method": ["dns"]})
      Traceback (most recent call last):
      ...
      ValueError: unknown method(s) ['dns']; this sweep has ['gmp']
    """
    overrides = dict(overrides or {})
    methods = dict(sweep.methods)
    if "method" in overrides:
        chosen = list(overrides.pop("method"))
        unknown = sorted(set(chosen) - set(methods))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; this sweep has {sorted(methods)}")
        methods = {name: methods[name] for name in chosen}

    run_fields = _run_fields(sweep.run)
    per_method: dict[str, dict[str, Sequence[Any]]] = {name: {} for name in methods}
    shared: dict[str, Sequence[Any]] = {}
    for key, values in overrides.items():
        head, _, rest = key.partition(".")
        if key in run_fields:
            shared[key] = values
        elif head in methods and rest:
            per_method[head][rest] = values
        elif head == "prune" and rest:
            takers = [n for n, m in methods.items() if _takes(m, rest)]
            if not takers:
                raise ValueError(
                    f"--set {key}: no method of this sweep takes {rest!r}; fields: "
                    f"{sorted(run_fields)}; pruner arguments: {_arguments(methods)}"
                )
            for name in takers:
                per_method[name][rest] = values
        else:
            raise ValueError(
                f"--set {key}: unknown field; valid: 'method', {sorted(run_fields)}, "
                f"'prune.<argument>' with arguments {_arguments(methods)}, or '<method>.<argument>'"
                f" with methods {sorted(methods)}"
            )

    points = []
    n_seeds = sweep.seeds if seeds is None else seeds
    base_values = config_lib.to_dict(sweep.run)
    for name, method in methods.items():
        arguments = dict(per_method[name])
        knob_values = arguments.pop(method.knob, method.values)
        for arg in arguments:
            if not _takes(method, arg):
                raise ValueError(
                    f"--set {name}.{arg}: {method.pruner['algorithm']} takes no {arg!r}; "
                    f"valid: {_arguments({name: method})}"
                )
        dims = {**shared, **{f"{name}.{k}": v for k, v in arguments.items()}}
        for combo in itertools.product(*dims.values()):
            chosen = dict(zip(dims, combo, strict=True))
            values = json.loads(json.dumps(base_values))
            pruner = dict(method.pruner)
            for k, v in chosen.items():
                if k in shared:
                    _set_field(values, k, v)
                else:
                    pruner[k.partition(".")[2]] = v
            base = config_lib.from_dict(values)
            for value in knob_values:
                spec = {**pruner, method.knob: value}
                config = dataclasses.replace(
                    base, prune=dataclasses.replace(base.prune, pruner=spec)
                )
                for seed in range(n_seeds):
                    points.append(Point(name, value, seed, config, chosen))
    return points


def _run_fields(run: RunConfig) -> set[str]:
    """Dotted names of the run config's fields that can be set (phases that exist)."""
    fields = {f.name for f in dataclasses.fields(RunConfig)} - {"prune", "pretrain", "finetune"}
    fields -= {"init_masks"}
    for name, phase in run.phases():
        fields |= {f"{name}.{f.name}" for f in dataclasses.fields(phase) if f.name != "pruner"}
    return fields


def _takes(method: Method, argument: str) -> bool:
    return argument in algorithms.arguments(method.pruner["algorithm"])


def _arguments(methods: Mapping[str, Method]) -> list[str]:
    return sorted(
        {a for m in methods.values() for a in algorithms.arguments(m.pruner["algorithm"])}
    )


def shard(points: Sequence[Point], spec: str) -> list[Point]:
    """The ``I``-th of ``N`` disjoint slices of ``points``: every N-th, starting at I.

    Together the N slices are all the points, each once; slicing with a stride (not in
    blocks) spreads a grid's cheap and dear points over the shards.

    Args:
      points: the points (e.g. :func:`expand`'s).
      spec: ``"I/N"`` with integers 0 ≤ I < N.

    Returns:
      ``points[I::N]`` as a list.

    Raises:
      ValueError: ``spec`` is not ``"I/N"`` with integers 0 ≤ I < N.

    Examples:
      >>> shard(["a", "b", "c", "d", "e"], "1/2")
      ['b', 'd']
      >>> shard(["a"], "2/2")
      Traceback (most recent call last):
      ...
      ValueError: --shard must be I/N with 0 <= I < N, got '2/2'
    """
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be I/N with integers 0 <= I < N, got {spec!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard must be I/N with 0 <= I < N, got {spec!r}")
    return list(points[i::n])


def label(value: Any) -> str:
    """A short label of a knob value, for tables and plots.

    A float as ``%g``; a mapping as ``key=label`` pairs sorted by key with ``default`` last;
    a string as itself; anything else as compact JSON.

    Args:
      value: a knob value (a JSON value).

    Returns:
      The label.

    Examples:
      >>> label(0.9), label({"fc2": 4.4, "default": 1.0, "fc1": 5.7}), label([1, 2])
      ('0.9', 'fc1=5.7,fc2=4.4,default=1', '[1, 2]')
    """
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: (kv[0] == "default", kv[0]))
        return ",".join(f"{k}={label(v)}" for k, v in items)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class Summary(NamedTuple):
    """One line of the sweep table: a method at one knob value (and swept fields), over seeds.

    Attributes:
      method: the method's name.
      target: the knob value's :func:`label`.
      swept: the swept fields' :func:`label` (``""`` without).
      seeds: how many rows (seeds) it summarises.
      val_error: mean validation error in percent.
      val_error_std: its sample standard deviation over seeds (ddof 1; 0 for one seed).
      test_error: mean test error in percent, or ``None`` unless every row has one.
      sparsity: mean sparsity, a fraction.
      compression: mean compression (``inf`` when a row kept nothing).
      wall_s: mean wall seconds per run.
      diverged: how many of the rows diverged.

    Examples:
      >>> row = {"method": "gmp", "target": 0.9, "val_error": 0.02, "sparsity": 0.9,
      ...     "compression": 10.0, "wall_s": 3.0}
      >>> line = summarise([row])[0]
      >>> line.target, line.val_error, line.test_error
      ('0.9', 2.0, None)
    """

    method: str
    target: str
    swept: str
    seeds: int
    val_error: float
    val_error_std: float
    test_error: float | None
    sparsity: float
    compression: float
    wall_s: float
    diverged: int


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[Summary]:
    """Per (method, knob value, swept fields): means over seeds and how many diverged.

    Rows are grouped by ``method`` and the :func:`label` of ``target`` and ``swept``; each
    group gives a :class:`Summary` of means over its rows, with the sample std of the
    validation error (ddof 1; 0 for one seed).

    Args:
      rows: result rows with ``method``, ``target``, ``val_error``, ``sparsity``,
        ``compression`` (``None``: nothing kept) and ``wall_s``; optionally ``swept``,
        ``test_error`` and ``status``.

    Returns:
      The summaries sorted by method, swept fields and compression.

    Raises:
      KeyError: a row lacks a required field.

    Examples:
      >>> rows = [{"method": "gmp", "target": 0.9, "val_error": e, "sparsity": 0.9,
      ...     "compression": 10.0, "wall_s": 4.0, "status": s}
      ...     for e, s in [(0.02, "ok"), (0.03, "diverged")]]
      >>> [line] = summarise(rows)
      >>> line.seeds, round(line.val_error, 2), round(line.val_error_std, 3), line.diverged
      (2, 2.5, 0.707, 1)
    """
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        key = (row["method"], label(row["target"]), label(row.get("swept") or {}))
        groups.setdefault(key, []).append(row)
    out = []
    for (method, target, swept), mine in groups.items():
        val = 100 * np.array([r["val_error"] for r in mine])
        tests = [r["test_error"] for r in mine if "test_error" in r]
        out.append(
            Summary(
                method=method,
                target=target,
                swept="" if swept == "{}" else swept,
                seeds=len(mine),
                val_error=float(val.mean()),
                val_error_std=float(val.std(ddof=1)) if len(val) > 1 else 0.0,
                test_error=100 * float(np.mean(tests)) if len(tests) == len(mine) else None,
                sparsity=float(np.mean([r["sparsity"] for r in mine])),
                # None: nothing left unpruned, compression undefined
                compression=float(
                    np.mean(
                        [np.inf if r["compression"] is None else r["compression"] for r in mine]
                    )
                ),
                wall_s=float(np.mean([r["wall_s"] for r in mine])),
                diverged=sum(r.get("status") == "diverged" for r in mine),
            )
        )
    return sorted(out, key=lambda s: (s.method, s.swept, s.compression))


def format_table(summaries: Sequence[Summary]) -> str:
    """A fixed-width table of :func:`summarise`'s lines.

    Columns: method, knob value (with the swept fields), seeds, validation error in percent
    (mean ± std), test error in percent (only when some line has one), sparsity, compression
    and wall seconds per run; a line notes how many of its seeds diverged.

    Args:
      summaries: :func:`summarise`'s lines, in the table's order.

    Returns:
      The table: a header line, a rule, one line per summary (no final newline).

    Examples:
      >>> rows = [{"method": "gmp", "target": 0.9, "val_error": e, "sparsity": 0.9,
      ...     "compression": 10.0, "wall_s": 4.0} for e in (0.02, 0.03)]
      >>> print(format_table(summarise(rows)).splitlines()[2])  # doctest: +NORMALIZE_WHITESPACE
      gmp 0.9 2 2.50 ± 0.71 90.00% 10.0x 4
    """
    tests = any(s.test_error is not None for s in summaries)
    header = f"{'method':<10} {'target':<34} {'seeds':>5} {'val error %':>14} "
    header += f"{'test err %':>10} " if tests else ""
    header += f"{'sparsity':>9} {'compression':>11} {'wall s':>7}"
    lines = [header, "-" * len(header)]
    for s in summaries:
        target = s.target if not s.swept else f"{s.target} {s.swept}"
        line = f"{s.method:<10} {target:<34} {s.seeds:>5} "
        line += f"{s.val_error:>7.2f} ± {s.val_error_std:<4.2f} "
        if tests:
            line += f"{'-' if s.test_error is None else f'{s.test_error:.2f}':>10} "
        line += f"{s.sparsity:>9.2%} {s.compression:>10.1f}x {s.wall_s:>7.0f}"
        lines.append(line + (f"  ({s.diverged} diverged)" if s.diverged else ""))
    return "\n".join(lines)


def plot(
    summaries: Sequence[Summary],
    path: str | Path,
    *,
    title: str = "",
    published: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Plot validation error (mean ± std over seeds) against compression, one line per method.

    One line per (method, swept fields), its points sorted by compression; ``published``
    points are drawn as stars. The compression axis is logarithmic when every compression is
    finite and positive. Uses matplotlib's ``Agg`` backend (no display).

    Args:
      summaries: :func:`summarise`'s lines.
      path: the PNG to write (its directory is created).
      title: the plot's title (default: none).
      published: ``{label: [error %, compression]}`` (default: none).

    Returns:
      ``path`` as a :class:`~pathlib.Path`.

    Examples:
      >>> import os, tempfile
      >>> rows = [{"method": "gmp", "target": t, "val_error": e, "sparsity": t,
      ...     "compression": 1 / (1 - t), "wall_s": 4.0} for t, e in [(0.5, 0.02), (0.9, 0.03)]]
      >>> path = plot(summarise(rows), os.path.join(tempfile.mkdtemp(), "sweep", "gmp.png"),
      ...     title="gmp", published={"Han et al. 2015": [1.59, 12.0]})
      >>> path.name, path.stat().st_size > 0
      ('gmp.png', True)
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    by_method: dict[tuple[str, str], list[Summary]] = {}
    for s in summaries:
        by_method.setdefault((s.method, s.swept), []).append(s)
    for (method, swept), mine in sorted(by_method.items()):
        mine = sorted(mine, key=lambda s: s.compression)
        ax.errorbar(
            [s.compression for s in mine],
            [s.val_error for s in mine],
            yerr=[s.val_error_std for s in mine],
            marker="o",
            capsize=3,
            label=method if not swept else f"{method} {swept}",
        )
    for i, (label, (error, compression)) in enumerate((published or {}).items()):
        ax.scatter(
            [compression], [error], marker="*", s=150, color=f"C{7 + i}", edgecolor="k", label=label
        )
    if all(math.isfinite(s.compression) and s.compression > 0 for s in summaries):
        ax.set_xscale("log")
        times = matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x")
        ax.xaxis.set_major_formatter(times)
        ax.xaxis.set_minor_formatter(times)
    ax.set_xlabel("compression (all parameters ÷ nonzeros)")
    ax.set_ylabel("validation error (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
