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
    "format_table",
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
    """A reproduction.

    Attributes:
      run: the run configuration.
      published: the published result, in words (e.g. ``"1.99% at 56x (Guo et al. 2016)"``).
      target: what the reproduction aims at.
      seeds: seeds 0 … seeds − 1 (declared in advance).
      description: one line on the recipe.
      baseline: the recipe of the dense model this one is compared with (same net, same
        protocol), or ``None``.
      published_error: the published test error in percent, or ``None`` (no number to
        compare with).
      published_compression: the published compression over the pruned weights alone (the
        papers' counting), or ``None``.
    """

    run: RunConfig
    published: str
    target: str
    seeds: int = 3
    description: str = ""
    baseline: str | None = None
    published_error: float | None = None
    published_compression: float | None = None


def load(path: str | os.PathLike) -> dict[str, Recipe]:
    """The recipes of a JSON file ``{name: {"run": {...}, "published": ..., ...}}``."""
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


PRE_PROTOCOL = None  # the mode of rows written before the protocol existed

# Two-sided 95% quantiles of Student's t, t_{0.975, df}, for df = 1 … 30.
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def rows_of(
    rows: Sequence[Mapping[str, Any]], name: str, recipe: Recipe, *, mode: str | None = "final"
) -> list[Mapping[str, Any]]:
    """The rows of recipe ``name`` in its current configuration and in ``mode``
    (:data:`PRE_PROTOCOL` for rows without one), one per key."""
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
    """(mean, sample std s with ddof 1, half-width of the 95% t-interval t_{0.975, n−1}·s/√n).

    Examples:
      >>> [round(x, 4) for x in interval([1.0, 2.0, 3.0])]
      [2.0, 1.0, 2.4843]
    """
    x = np.asarray(values, np.float64)
    if not 2 <= len(x) <= len(T_975) + 1:
        raise ValueError(f"a t-interval needs 2 to {len(T_975) + 1} values, got {len(x)}")
    s = float(x.std(ddof=1))
    return float(x.mean()), s, T_975[len(x) - 2] * s / math.sqrt(len(x))


def lock_problems(path: str | os.PathLike, name: str, seeds: range) -> list[str]:
    """Why recipe ``name`` of the recipes file at ``path`` may not run in final mode now
    (empty: it may): the recipe must be committed unchanged (its data equal to the committed
    file's at ``HEAD``), the library must have no uncommitted changes, and ``seeds`` must lie
    within the seeds the recipe declares."""
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
    """``"paper"`` if no phase of the recipe augments its images (the papers' protocol),
    else ``"ours"`` (random ±shift-pixel translations in some phase)."""
    run = recipe.run
    phases = [run.pretrain, run.prune, run.finetune, run.init_masks]
    return "ours" if any(p is not None and p.shift for p in phases) else "paper"


def verdict(recipe: Recipe, errors: Sequence[float], weights_compression: float | None) -> str:
    """How a final result compares with the published one, under the papers' protocol only.

    With mean error ē, the upper end u of its 95% t-interval (ē itself for one seed), the
    published error e_p and compression c_p (over the pruned weights, the papers' counting):
    ``"beats"`` if u < e_p, ``"meets"`` if ē <= e_p, ``"misses"`` otherwise — each only at a
    weights-only compression >= c_p (else ``"misses"``); ``"ours"`` for an augmented recipe
    (not comparable) and ``""`` without a published number.
    """
    if recipe.published_error is None:
        return ""
    if protocol(recipe) != "paper":
        return "ours"
    if recipe.published_compression is not None and (
        weights_compression is None or weights_compression < recipe.published_compression
    ):
        return "misses"
    mean = float(np.mean(errors))
    upper = mean + interval(errors)[2] if len(errors) > 1 else mean
    if upper < recipe.published_error:
        return "beats"
    return "meets" if mean <= recipe.published_error else "misses"


def format_table(rows: Sequence[Mapping[str, Any]], recipes: Mapping[str, Recipe]) -> str:
    """Markdown table: per recipe (current configuration), its protocol (``paper``: no
    augmentation; ``ours``: ±1 px shifts), test error over seeds — mean, sample std (ddof 1)
    and the 95% t-interval — the change against its dense baseline (same net, same protocol;
    points), the difference from the published error in test images (10,000 · Δ, negative:
    fewer errors), the :func:`verdict`, the mean validation error, and compression over all
    parameters and over the pruned weights alone (the papers' per-layer tables leave biases
    out). Final rows only; a recipe without any shows its rows from before the protocol,
    marked †."""
    lines = [
        "| recipe | protocol | published | test error (mean ± s) | 95% interval | vs dense "
        "| vs published | verdict | validation error | compression | weights only | seeds "
        "| wall s / run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    final = {name: rows_of(rows, name, recipe) for name, recipe in recipes.items()}
    means = {n: 100 * float(np.mean([r["test_error"] for r in f])) for n, f in final.items() if f}
    for name, recipe in recipes.items():
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
        dense = means.get(recipe.baseline) if recipe.baseline else None
        versus = "–" if dense is None else f"{mean - dense:+.2f}"
        published = (
            "–"
            if recipe.published_error is None
            else f"{round(100 * (mean - recipe.published_error)):+d} images"
        )
        val = 100 * np.mean([r["val_error"] for r in mine])
        comp = np.mean([r["compression"] for r in mine])
        weights = [r.get("weights_compression") for r in mine]
        weights_mean = None if None in weights else float(np.mean(weights))
        shown = "–" if weights_mean is None else f"{weights_mean:.1f}x"
        wall = np.mean([r["wall_s"] for r in mine])
        lines.append(
            f"| `{name}`{mark} | {protocol(recipe)} | {recipe.published} | {spread} | "
            f"{versus} | {published} | {verdict(recipe, errors, weights_mean)} | "
            f"{val:.2f}% | {comp:.1f}x | {shown} | {len(mine)} | {wall:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, whole
    (readable as a file ``open(path, "w")`` would have made: mode 0o666 less the umask)."""
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
