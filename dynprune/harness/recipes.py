"""Named reproductions of published results: a run config with the paper's number beside it.

Recipes are data (``experiments/configs/reproductions.json``): each names a
:class:`~dynprune.harness.config.RunConfig`, the published result it is compared with, the
target, the number of seeds, and a description. Their rows are those of
``experiments/reproduce.py``; :func:`rows_of` picks a recipe's rows (its current
configuration; earlier configurations keep their rows under their own keys) and
:func:`format_table` renders the comparison.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynprune.harness import config as config_lib
from dynprune.harness.config import RunConfig

__all__ = ["Recipe", "format_table", "load", "rows_of", "write_atomically"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A reproduction.

    Attributes:
      run: the run configuration.
      published: the published result, in words (e.g. ``"1.99% at 56x (Guo et al. 2016)"``).
      target: what the reproduction aims at.
      seeds: seeds 0 … seeds − 1 (declared in advance).
      description: one line on the recipe.
    """

    run: RunConfig
    published: str
    target: str
    seeds: int = 3
    description: str = ""


def load(path: str | os.PathLike) -> dict[str, Recipe]:
    """The recipes of a JSON file ``{name: {"run": {...}, "published": ..., ...}}``."""
    recipes = {}
    for name, values in json.loads(Path(path).read_text()).items():
        values = dict(values)
        try:
            run = config_lib.from_dict(values.pop("run"))
            recipes[name] = Recipe(run=run, **values)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: recipe {name!r}: {err}") from None
    return recipes


def rows_of(
    rows: Sequence[Mapping[str, Any]], name: str, recipe: Recipe
) -> list[Mapping[str, Any]]:
    """The rows of recipe ``name`` in its current configuration, one per key."""
    current = config_lib.to_dict(recipe.run)
    seen: set[str] = set()
    mine = []
    for row in rows:
        if row.get("recipe") == name and row.get("config") == current and row["key"] not in seen:
            seen.add(row["key"])
            mine.append(row)
    return mine


def format_table(rows: Sequence[Mapping[str, Any]], recipes: Mapping[str, Recipe]) -> str:
    """Markdown table: per recipe (current configuration), test error mean ± std (ddof 0) and
    mean validation error over seeds, next to the published numbers. Compression is given
    over all parameters and over the pruned weights alone (the papers' per-layer tables leave
    biases out)."""
    lines = [
        "| recipe | net | published | target | test error (mean ± std) | validation error "
        "| compression | weights only | seeds | wall s / run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, recipe in recipes.items():
        mine = rows_of(rows, name, recipe)
        if not mine:
            continue
        err = 100 * np.array([r["test_error"] for r in mine])
        val = 100 * np.mean([r["val_error"] for r in mine])
        comp = np.mean([r["compression"] for r in mine])
        weights = np.mean([r["weights_compression"] for r in mine])
        wall = np.mean([r["wall_s"] for r in mine])
        lines.append(
            f"| `{name}` | {recipe.run.model} | {recipe.published} | {recipe.target} | "
            f"{err.mean():.2f}% ± {err.std():.2f} | {val:.2f}% | {comp:.1f}x | {weights:.1f}x | "
            f"{len(mine)} | {wall:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
