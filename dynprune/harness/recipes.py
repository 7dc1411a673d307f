"""Named reproductions of published results: a run config with the paper's number beside it.

Recipes are data (``experiments/recipes.json``): each names a
:class:`~dynprune.harness.config.RunConfig`, the published result it is compared with, the
target, the number of seeds, and a description. Their rows are those of
``experiments/reproduce.py``; :func:`rows_of` picks a recipe's rows (its current
configuration; earlier configurations keep their rows under their own keys) and
:func:`format_table` renders the comparison.

The protocol (the test set is locked): a row's ``mode`` is ``"exploration"`` (validation
error only), ``"final"`` (test error, for a recipe committed unchanged and run on the seeds it
declares: :func:`lock_problems` finds none) or ``"unlocked"`` (test error without those
checks: never in the table). Rows from before the protocol have no mode; the table shows them,
marked, only where a recipe has no final rows yet.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynprune.harness import config as config_lib
from dynprune.harness.config import RunConfig

__all__ = [
    "PRE_PROTOCOL",
    "Recipe",
    "format_structured_table",
    "format_table",
    "format_tables",
    "interval",
    "load",
    "lock_problems",
    "protocol",
    "rows_of",
    "verdict",
    "write_atomically",
]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A reproduction: a run configuration and the published result it is compared with.

    One entry of ``experiments/recipes.json`` (:func:`load`); frozen, so two recipes compare
    equal when their data are equal (which :func:`lock_problems` relies on).

    Attributes:
      run: the run configuration.
      published: the published result, in words (e.g. ``"1.99% at 56x (Guo et al. 2016)"``).
      target: what the reproduction aims at, in words.
      seeds: seeds 0 … seeds − 1 (declared in advance; default 3).
      description: one line on the recipe (default ``""``).
      baseline: the name of the recipe of the dense model this one is compared with (same
        net, same protocol), or ``None`` (the default).
      published_error: the published test error in percent, or ``None`` (the default: no
        number to compare with).
      published_compression: the published compression over the pruned weights alone (the
        papers' counting), or ``None`` (the default).
      published_params: for a structured result, the parameters (biases included) of the
        published smaller model, which the reconstructed model must undercut (rows'
        ``reconstructed_params``), or ``None`` (the default).

    Examples:
      >>> from dynprune.harness.config import Phase, RunConfig
      >>> recipe = Recipe(
      ...     run=RunConfig(model="lenet300", prune=Phase(epochs=20, lr=1e-3,
      ...         pruner={"algorithm": "one_shot", "target": 0.9})),
      ...     published="1.59% at 12x (Han et al. 2015)", target="<= 1.6% at >= 12x",
      ...     published_error=1.59, published_compression=12.0)
      >>> recipe.seeds, recipe.baseline, protocol(recipe)
      (3, None, 'paper')
    """

    run: RunConfig
    published: str
    target: str
    seeds: int = 3
    description: str = ""
    baseline: str | None = None
    published_error: float | None = None
    published_compression: float | None = None
    published_params: int | None = None


def load(path: str | os.PathLike) -> dict[str, Recipe]:
    """The recipes of a JSON file ``{name: {"run": {...}, "published": ..., ...}}``.

    Each value holds :class:`Recipe`'s fields, ``run`` as
    :func:`~dynprune.harness.config.to_dict` writes a run configuration.

    Args:
      path: the recipes file (e.g. ``experiments/recipes.json``).

    Returns:
      ``{name: Recipe}`` in the file's order.

    Raises:
      ValueError: the file is not JSON, or a recipe has an unknown or missing field (the
        message names the file and the recipe).
      FileNotFoundError: there is no file at ``path``.

    Examples:
      >>> import json, os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "recipes.json")
      >>> run = {"model": "origin_mlp", "prune": {"epochs": 1, "lr": 0.001}}
      >>> with open(path, "w") as f:
      ...     _ = f.write(json.dumps({"dense": {"run": run, "published": "2%", "target": "2%"}}))
      >>> recipes = load(path)
      >>> list(recipes), recipes["dense"].run.model, recipes["dense"].seeds
      (['dense'], 'origin_mlp', 3)
    """
    try:
        return {n: _parse(n, v) for n, v in json.loads(Path(path).read_text()).items()}
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _parse(name: str, values: Mapping[str, Any]) -> Recipe:
    values = dict(values)
    try:
        return Recipe(run=config_lib.from_dict(values.pop("run")), **values)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"recipe {name!r}: {err}") from None


#: The ``mode`` of rows written before the protocol existed (they have none): ``None``.
PRE_PROTOCOL = None

# Two-sided 95% quantiles of Student's t, t_{0.975, df}, for df = 1 … 30.
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def rows_of(
    rows: Sequence[Mapping[str, Any]], name: str, recipe: Recipe, *, mode: str | None = "final"
) -> list[Mapping[str, Any]]:
    """The rows of recipe ``name`` in its current configuration and in ``mode``, one per key.

    A row is the recipe's when its ``recipe`` is ``name``, its ``config`` equals
    ``to_dict(recipe.run)`` (rows of earlier configurations are left out) and its ``mode``
    is ``mode``; of rows sharing a ``key``, the first is kept.

    Args:
      rows: result rows (dicts with ``recipe``, ``config``, ``mode`` and ``key``), e.g. of
        ``experiments/reproduce.py``'s results file.
      name: the recipe's name.
      recipe: the recipe (its current configuration).
      mode: ``"final"`` (the default), ``"exploration"``, ``"unlocked"``, or
        :data:`PRE_PROTOCOL` for rows without a mode.

    Returns:
      The matching rows, in their order.

    Examples:
      >>> from dynprune.harness.config import Phase, RunConfig, to_dict
      >>> recipe = Recipe(run=RunConfig(model="origin_mlp", prune=Phase(epochs=1, lr=1e-3)),
      ...     published="2%", target="2%")
      >>> row = {"recipe": "dense", "config": to_dict(recipe.run), "mode": "final", "key": "a"}
      >>> old = {**row, "config": {**row["config"], "batch_size": 64}, "key": "b"}
      >>> [r["key"] for r in rows_of([row, row, old], "dense", recipe)]
      ['a']
      >>> rows_of([row], "dense", recipe, mode="exploration")
      []
    """
    current = config_lib.to_dict(recipe.run)
    seen: set[str] = set()
    mine = []
    for row in rows:
        if (
            row.get("recipe") == name
            and row.get("config") == current
            and row.get("mode") == mode
            and row["key"] not in seen
        ):
            seen.add(row["key"])
            mine.append(row)
    return mine


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """The mean, sample standard deviation and 95% t-interval half-width of ``values``.

    For n values with mean x̄ and sample standard deviation s (ddof 1), the half-width is
    h = t_{0.975, n−1} · s / √n, so the two-sided 95% interval of the mean is x̄ ± h.

    Args:
      values: 2 to 31 numbers (e.g. test errors over seeds).

    Returns:
      ``(mean, s, h)`` as floats.

    Raises:
      ValueError: fewer than 2 or more than 31 values (the table of t quantiles ends at 30
        degrees of freedom).

    Examples:
      >>> [round(x, 4) for x in interval([1.0, 2.0, 3.0])]
      [2.0, 1.0, 2.4843]
      >>> interval([1.0])
      Traceback (most recent call last):
      ...
      ValueError: a t-interval needs 2 to 31 values, got 1
    """
    x = np.asarray(values, np.float64)
    if not 2 <= len(x) <= len(T_975) + 1:
        raise ValueError(f"a t-interval needs 2 to {len(T_975) + 1} values, got {len(x)}")
    s = float(x.std(ddof=1))
    return float(x.mean()), s, T_975[len(x) - 2] * s / math.sqrt(len(x))


def lock_problems(path: str | os.PathLike, name: str, seeds: range) -> list[str]:
    """Why recipe ``name`` of the recipes file at ``path`` may not run in final mode now.

    Final mode (test error) is allowed when the recipe is committed unchanged (its data equal
    to the committed file's at ``HEAD``), the library (``dynprune/``) has no uncommitted
    changes to tracked files, and ``seeds`` lie within the seeds the recipe declares. Runs
    ``git`` in the file's and the library's directories.

    Args:
      path: the recipes file.
      name: a recipe in it.
      seeds: the seeds to run, a ``range`` within ``range(recipe.seeds)``.

    Returns:
      One message per problem; empty: the recipe may run in final mode. A file outside a
      git checkout gives that one problem.

    Raises:
      KeyError: ``path`` has no recipe ``name``.
      ValueError: the recipes file is malformed (as :func:`load`).

    Examples:
      >>> import json, os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "recipes.json")
      >>> run = {"model": "origin_mlp", "prune": {"epochs": 1, "lr": 0.001}}
      >>> with open(path, "w") as f:
      ...     _ = f.write(json.dumps({"dense": {"run": run, "published": "2%", "target": "2%"}}))
      >>> [p.split(" is ")[1] for p in lock_problems(path, "dense", range(3))]
      ['not in a git checkout: the recipe cannot be shown to be committed']
    """
    path = Path(path).resolve()
    recipe = load(path)[name]
    problems = []
    git = lambda *args: subprocess.run(
        ["git", *args], cwd=path.parent, capture_output=True, text=True, timeout=30
    )
    root = git("rev-parse", "--show-toplevel")
    if root.returncode:
        return [f"{path} is not in a git checkout: the recipe cannot be shown to be committed"]
    relative = path.relative_to(Path(root.stdout.strip()).resolve()).as_posix()
    shown = git("show", f"HEAD:{relative}")
    committed = json.loads(shown.stdout).get(name) if shown.returncode == 0 else None
    if committed is None or _parse(name, committed) != recipe:
        problems.append(f"recipe {name!r} differs from the committed {relative} (commit it first)")
    library = Path(__file__).resolve().parents[1]
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
        cwd=library,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if status.returncode or status.stdout.strip():
        problems.append(f"{library} has uncommitted changes or is not in a git checkout")
    if seeds.start < 0 or seeds.stop > recipe.seeds:
        problems.append(
            f"seeds {seeds.start}..{seeds.stop - 1} are not among the {recipe.seeds} declared"
        )
    return problems


def protocol(recipe: Recipe) -> str:
    """The recipe's data protocol: ``"paper"`` without augmentation, else ``"ours"``.

    ``"ours"`` when any phase (pretrain, prune, fine-tune or retrain) or the SNIP
    ``init_masks`` batches use random ±``shift``-pixel translations (``shift > 0``);
    ``"paper"`` (the papers' protocol, comparable with their numbers) otherwise.

    Args:
      recipe: the recipe.

    Returns:
      ``"paper"`` or ``"ours"``.

    Examples:
      >>> from dynprune.harness.config import Phase, RunConfig
      >>> plain = Recipe(run=RunConfig(model="origin_mlp", prune=Phase(epochs=1, lr=1e-3)),
      ...     published="2%", target="2%")
      >>> shifted = Recipe(run=RunConfig(model="origin_mlp",
      ...     prune=Phase(epochs=1, lr=1e-3, shift=1)), published="2%", target="2%")
      >>> protocol(plain), protocol(shifted)
      ('paper', 'ours')
    """
    run = recipe.run
    augmented = [phase for _, phase in run.phases()] + [run.init_masks]
    return "ours" if any(p is not None and p.shift for p in augmented) else "paper"


def verdict(
    recipe: Recipe,
    errors: Sequence[float],
    weights_compression: float | None,
    params: float | None = None,
) -> str:
    """How a final result compares with the published one, under the papers' protocol only.

    With mean error ē, the upper end u of its 95% t-interval (ē itself for one seed), the
    published error e_p and compression c_p (over the pruned weights, the papers' counting):
    ``"beats"`` if u < e_p, ``"meets"`` if ē <= e_p, ``"misses"`` otherwise — each only at a
    weights-only compression >= c_p, and for a structured result only with fewer parameters
    than the published model's p_p (else ``"misses"``); ``"ours"`` for an augmented recipe
    (not comparable) and ``""`` without a published number.

    Args:
      recipe: the recipe (its ``published_error``, ``published_compression`` and
        ``published_params``).
      errors: test errors in percent, one per seed (1 to 31 of them).
      weights_compression: the mean compression over the pruned weights alone, or ``None``
        (unknown: ``"misses"`` when the recipe publishes a compression).
      params: the largest parameter count of the reconstructed models over the seeds, or
        ``None`` (unknown: ``"misses"`` when the recipe publishes a parameter count).

    Returns:
      ``"beats"``, ``"meets"``, ``"misses"``, ``"ours"`` or ``""``.

    Raises:
      ValueError: more than 31 errors (see :func:`interval`).

    Examples:
      >>> from dynprune.harness.config import Phase, RunConfig
      >>> recipe = Recipe(run=RunConfig(model="origin_mlp", prune=Phase(epochs=1, lr=1e-3)),
      ...     published="1.59% at 12x", target="", published_error=1.59,
      ...     published_compression=12.0)
      >>> verdict(recipe, [1.5, 1.6], 50.0)  # mean 1.55 <= 1.59, but the interval reaches it
      'meets'
      >>> verdict(recipe, [1.50, 1.52, 1.51], 50.0), verdict(recipe, [1.5, 1.6], 10.0)
      ('beats', 'misses')

      A structured result must also undercut the published model's parameters:

      >>> small = dataclasses.replace(recipe, published_compression=None, published_params=9674)
      >>> verdict(small, [1.5, 1.52], None, 9500), verdict(small, [1.5, 1.52], None, 9674)
      ('meets', 'misses')
    """
    if recipe.published_error is None:
        return ""
    if protocol(recipe) != "paper":
        return "ours"
    if recipe.published_compression is not None and (
        weights_compression is None or weights_compression < recipe.published_compression
    ):
        return "misses"
    if recipe.published_params is not None and (
        params is None or params >= recipe.published_params
    ):
        return "misses"
    mean = float(np.mean(errors))
    upper = mean + interval(errors)[2] if len(errors) > 1 else mean
    if upper < recipe.published_error:
        return "beats"
    return "meets" if mean <= recipe.published_error else "misses"


def format_table(rows: Sequence[Mapping[str, Any]], recipes: Mapping[str, Recipe]) -> str:
    """The Markdown table comparing each recipe's final rows with its published result.

    Per recipe (current configuration): its :func:`protocol` (``paper``: no augmentation;
    ``ours``: random shifts), test error over seeds — mean, sample std (ddof 1) and the 95%
    t-interval — the change against its dense baseline (same net, same protocol; points), the
    difference from the published error in test images (10,000 · Δ, negative: fewer errors),
    the :func:`verdict`, the mean validation error, compression over all parameters and over
    the pruned weights alone (the papers' per-layer tables leave biases out), the number of
    seeds and the mean wall time. Final rows only; a recipe without any shows its rows from
    before the protocol, marked †; a recipe with neither is left out, and so is a structured
    recipe (``published_params``: :func:`format_structured_table` shows it).

    Args:
      rows: result rows (:func:`rows_of` picks each recipe's), with ``test_error``,
        ``val_error`` (fractions), ``compression`` (``None``: nothing kept, shown as
        ``inf``), ``weights_compression`` and ``wall_s``.
      recipes: ``{name: Recipe}``, in the table's order.

    Returns:
      The table, a header line, a separator and one line per recipe shown, ending in a
      newline.

    Raises:
      KeyError: a shown row lacks one of the fields above.

    Examples:
      >>> from dynprune.harness.config import Phase, RunConfig, to_dict
      >>> recipe = Recipe(run=RunConfig(model="origin_mlp", prune=Phase(epochs=1, lr=1e-3)),
      ...     published="1.59% at 12x", target="", published_error=1.59,
      ...     published_compression=12.0)
      >>> rows = [{"recipe": "mlp", "config": to_dict(recipe.run), "mode": "final", "key": k,
      ...     "test_error": e, "val_error": e, "compression": 40.0, "weights_compression": 50.0,
      ...     "wall_s": 60.0} for k, e in [("a", 0.015), ("b", 0.016)]]
      >>> line = format_table(rows, {"mlp": recipe}).splitlines()[2]
      >>> print(line)  # doctest: +NORMALIZE_WHITESPACE
      | `mlp` | paper | 1.59% at 12x | 1.55% ± 0.07 | 0.91–2.19% | – | -4 images | meets |
        1.55% | 40.0x | 50.0x | 2 | 60 |
    """
    lines = [
        "| recipe | protocol | published | test error (mean ± s) | 95% interval | vs dense "
        "| vs published | verdict | validation error | compression | weights only | seeds "
        "| wall s / run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    final = {name: rows_of(rows, name, recipe) for name, recipe in recipes.items()}
    means = _means(final)
    for name, recipe in recipes.items():
        if recipe.published_params is not None:
            continue
        mine, mark = final[name], ""
        if not mine:
            mine, mark = rows_of(rows, name, recipe, mode=PRE_PROTOCOL), " †"
        if not mine:
            continue
        errors = [100 * r["test_error"] for r in mine]
        mean = float(np.mean(errors))
        if len(mine) > 1:
            _, s, half = interval(errors)
            spread = f"{mean:.2f}% ± {s:.2f} | {mean - half:.2f}–{mean + half:.2f}%"
        else:  # one seed so far: no spread to give
            spread = f"{mean:.2f}% | –"
        versus, published = _differences(recipe, mean, means)
        val = 100 * np.mean([r["val_error"] for r in mine])
        # None: nothing left unpruned, compression undefined (as in sweep.summarise)
        comp = np.mean([np.inf if r["compression"] is None else r["compression"] for r in mine])
        weights = [r.get("weights_compression") for r in mine]
        weights_mean = None if None in weights else float(np.mean(weights))
        result = verdict(recipe, errors, weights_mean)
        shown = "–" if weights_mean is None else f"{weights_mean:.1f}x"
        wall = np.mean([r["wall_s"] for r in mine])
        lines.append(
            f"| `{name}`{mark} | {protocol(recipe)} | {recipe.published} | {spread} | "
            f"{versus} | {published} | {result} | "
            f"{val:.2f}% | {comp:.1f}x | {shown} | {len(mine)} | {wall:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _means(final: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, float]:
    """Each recipe's mean test error in percent, over its final rows (those that have any)."""
    return {n: 100 * float(np.mean([r["test_error"] for r in f])) for n, f in final.items() if f}


def _differences(recipe: Recipe, mean: float, means: Mapping[str, float]) -> tuple[str, str]:
    """The table's "vs dense" (points against the baseline's mean test error) and "vs
    published" (the difference in test images, 10,000 · Δ) cells, "–" where unknown."""
    dense = means.get(recipe.baseline) if recipe.baseline else None
    versus = "–" if dense is None else f"{mean - dense:+.2f}"
    if recipe.published_error is None:
        return versus, "–"
    return versus, f"{round(100 * (mean - recipe.published_error)):+d} images"


def _largest(rows: Sequence[Mapping[str, Any]], field: str) -> float | None:
    """The largest ``field`` over ``rows``; ``None`` if a row lacks it."""
    values = [r.get(field) for r in rows]
    return None if not values or None in values else max(values)


def format_structured_table(
    rows: Sequence[Mapping[str, Any]], recipes: Mapping[str, Recipe]
) -> str:
    """The Markdown table of the structured recipes: the rebuilt model against the published one.

    Per recipe with ``published_params`` that has final rows: the published result, the
    reconstructed architecture in the papers' notation (units kept per position, input
    features first; each distinct one over the seeds), the largest parameter count of the
    reconstructed models (biases included) against the published model's, the test error
    over seeds (mean, sample std, 95% t-interval), the change against the dense baseline's
    test error (points), the difference from the published error in test images, the
    :func:`verdict`, and the measured
    inference speedup of the reconstructed model over the dense one on w ⊙ m (median over
    seeds) at batch 1 and 256.

    Args:
      rows: result rows (:func:`rows_of` picks each recipe's final ones), with
        ``architecture``, ``reconstructed_params``, ``test_error`` (a fraction) and
        ``inference_speedup`` (``{"1": s, "256": s}``).
      recipes: ``{name: Recipe}``, in the table's order.

    Returns:
      The table, a header line, a separator and one line per recipe shown, ending in a
      newline; ``""`` when no recipe is shown.

    Raises:
      KeyError: a shown row lacks one of the fields above.

    Examples:
      >>> from dynprune.harness.config import Phase, RunConfig, to_dict
      >>> recipe = Recipe(run=RunConfig(model="lenet300", prune=Phase(epochs=1, lr=1e-3)),
      ...     published="97-71-33 at 1.6% (VIB)", target="", published_error=1.6,
      ...     published_params=9674)
      >>> rows = [{"recipe": "small", "config": to_dict(recipe.run), "mode": "final", "key": k,
      ...     "test_error": e, "architecture": "100-64-40", "reconstructed_params": 9474,
      ...     "inference_speedup": {"1": 1.2, "256": 7.0}} for k, e in [("a", .015), ("b", .016)]]
      >>> print(format_structured_table(rows, {"small": recipe}).splitlines()[2])
      | `small` | 97-71-33 at 1.6% (VIB) | 100-64-40 | 9,474 (9,674) | 1.55% ± 0.07 | 0.91–2.19% | – | -5 images | meets | 1.2x | 7.0x |
    """  # noqa: E501
    lines = [
        "| recipe | published | architecture | parameters (published) | test error (mean ± s) "
        "| 95% interval | vs dense | vs published | verdict | speedup b1 | speedup b256 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    final = {name: rows_of(rows, name, recipe) for name, recipe in recipes.items()}
    means = _means(final)
    for name, recipe in recipes.items():
        mine = final[name]
        if recipe.published_params is None or not mine:
            continue
        errors = [100 * r["test_error"] for r in mine]
        mean, s, half = interval(errors) if len(errors) > 1 else (errors[0], math.nan, math.nan)
        params = _largest(mine, "reconstructed_params")
        speedup = {b: np.median([r["inference_speedup"][b] for r in mine]) for b in ("1", "256")}
        versus, published = _differences(recipe, mean, means)
        lines.append(
            f"| `{name}` | {recipe.published} | "
            f"{' / '.join(dict.fromkeys(r['architecture'] for r in mine))} | "
            f"{params:,} ({recipe.published_params:,}) | {mean:.2f}% ± {s:.2f} | "
            f"{mean - half:.2f}–{mean + half:.2f}% | {versus} | {published} | "
            f"{verdict(recipe, errors, None, params)} | "
            f"{speedup['1']:.1f}x | {speedup['256']:.1f}x |"
        )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def format_tables(rows: Sequence[Mapping[str, Any]], recipes: Mapping[str, Recipe]) -> str:
    """The reproductions' Markdown file: :func:`format_table`, then, if any structured recipe
    has final rows, a blank line and :func:`format_structured_table`.

    Args:
      rows: result rows, as both tables take them.
      recipes: ``{name: Recipe}``, in the tables' order.

    Returns:
      The text (``experiments/results/reproductions.md``).

    Examples:
      >>> format_tables([], {}).splitlines()[0].startswith("| recipe | protocol |")
      True
    """
    tables = [format_table(rows, recipes), format_structured_table(rows, recipes)]
    return "\n".join(t for t in tables if t)


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, whole.

    The text goes to a temporary file beside ``path``, which then replaces it
    (:func:`os.replace`); the file gets the mode ``open(path, "w")`` would have given it,
    0o666 less the umask. On any error the temporary file is removed and ``path`` is
    untouched.

    Args:
      path: the file to write; its directory must exist.
      text: the new contents.

    Raises:
      OSError: the directory does not exist or is not writable.

    Examples:
      >>> import os, pathlib, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "table.md")
      >>> write_atomically(path, "| a |")
      >>> pathlib.Path(path).read_text(), os.listdir(os.path.dirname(path))
      ('| a |', ['table.md'])
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
