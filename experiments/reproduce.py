"""Reproduce published MNIST pruning results with dynprune recipes, and compare.

The recipes are data, in experiments/recipes.json: each trains a reference model densely
(cached per seed, shared across recipes), prunes it with a dynprune algorithm inside the jitted
train step, optionally fine-tunes with the masks fixed, and evaluates it (validation error;
the 10,000 MNIST test images only in final mode, below). Hyperparameters were chosen on a
5,000-image validation split held out of the training set. One JSONL row per (recipe, seed)
is appended to ``--out``; runs already there are skipped, so an interrupted invocation
resumes. The Markdown table beside ``--out`` (``.md``) is
rewritten from all rows, next to the published numbers.

With ``--checkpoint-dir DIR`` each (recipe, seed) run saves its whole state in
``DIR/<run key>/`` every ``--checkpoint-every`` steps (default: every epoch); the same command
after a kill resumes the interrupted run where it was, with the row an uninterrupted run
writes. Ctrl-C (SIGINT) finishes the current step, saves, and exits with status 130.
Finished runs delete their checkpoints unless ``--keep-checkpoints``.

Compression = all parameters (weights *and* biases) ÷ nonzero parameters of w ⊙ m.

Usage:
  python experiments/reproduce.py RECIPE [--seeds N] [--out FILE] [--final [--unlocked]]
  python experiments/reproduce.py --list

The test set is locked. By default a run is *exploration*: validation error only. ``--final``
computes test error, and only for a recipe committed unchanged (its data equal to the
committed recipes file's), with no uncommitted library changes, on the seeds the recipe
declares; the rows record the commit. ``--final --unlocked`` skips those checks: its rows say
``"mode": "unlocked"`` and never enter the table.

The last line printed is one JSON object: recipe, mode, val_error (mean, %) and
val_error_std (sample std), test_error and test_error_std in final mode, compression, seeds,
wall_s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dynprune.harness import cli, config, experiment, recipes, results, sweep_runner

log = logging.getLogger("reproduce")
RECIPES = Path(__file__).resolve().parent / "recipes.json"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    available = recipes.load(RECIPES)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("recipe", nargs="?", choices=list(available))
    p.add_argument("--seeds", type=cli.positive, default=None, help="default: the recipe's")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--out", default="experiments/results/reproductions.jsonl")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--list", action="store_true", help="list the recipes and exit")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 epoch per phase, 2k images")
    p.add_argument(
        "--final",
        action="store_true",
        help="compute test error: only for a committed, unchanged recipe on its declared seeds",
    )
    p.add_argument(
        "--unlocked",
        action="store_true",
        help="with --final: skip those checks; the rows say so and stay out of the table",
    )
    cli.add_checkpoint_arguments(p)
    args = p.parse_args(argv)
    if args.unlocked and not args.final:
        p.error("--unlocked only qualifies --final")
    if args.quick and args.final:
        p.error("--quick runs are exploration: they never compute test error")
    if args.list or args.recipe is None:
        for name, r in available.items():
            print(f"{name:<16} {r.run.model:<11} published: {r.published}; target: {r.target}")
            print(f"{'':<16} {r.description}")
        return {}
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.WARNING)
    log.setLevel(logging.INFO)

    recipe = available[args.recipe]
    seeds = range(args.first_seed, args.first_seed + (args.seeds or recipe.seeds))
    mode = "exploration"
    if args.final:
        problems = recipes.lock_problems(RECIPES, args.recipe, seeds)
        if problems and not args.unlocked:
            p.error("final mode refused: " + "; ".join(problems) + " (--unlocked to run anyway)")
        mode = "unlocked" if problems else "final"
    test = mode != "exploration"
    run = sweep_runner.quick(recipe.run) if args.quick else recipe.run
    out = Path(args.out)
    done = results.completed_keys(out)
    metadata = results.run_metadata()
    splits = experiment.load_splits(run, args.data_dir)
    programs = experiment.Programs()
    start = time.perf_counter()
    checkpoints = cli.checkpoint_options(args)
    for seed in seeds:
        key = config.run_key(run, seed, test=test, mode=mode)
        if key in done:
            log.info("seed %d already in %s, skipped", seed, out)
            continue
        with cli.stops(__file__, argv, checkpoints):
            [row] = experiment.run_points(
                [run],
                [seed],
                test=test,
                splits=splits,
                programs=programs,
                checkpoints=checkpoints,
            )
        row = {
            "key": key,
            "recipe": args.recipe,
            "method": args.recipe.split("-", 1)[1],
            "mode": mode,
            "config": config.to_dict(run),
            **metadata,
            **row,
        }
        if not results.append_jsonl(out, row, unique=True):
            log.info("seed %d was written by another process meanwhile; kept theirs", seed)
            continue
        error = "test_error" if test else "val_error"
        log.info(
            "%s seed %d (%s): %s %.2f%%, compression %.1fx, %.0f s",
            args.recipe,
            seed,
            mode,
            error.replace("_", " "),
            100 * row[error],
            row["compression"],
            row["wall_s"],
        )
    rows = results.read_jsonl(out)
    recipes.write_atomically(out.with_suffix(".md"), recipes.format_tables(rows, available))
    mine = recipes.rows_of(rows, args.recipe, dataclasses.replace(recipe, run=run), mode=mode)
    if not mine:
        sys.exit(f"no {mode} rows of {args.recipe} in {out}")
    summary: dict[str, Any] = {"recipe": args.recipe, "mode": mode}
    for error in ("val_error", "test_error") if test else ("val_error",):
        values = 100 * np.array([r[error] for r in mine])
        summary[error] = float(values.mean())
        summary[f"{error}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    summary.update(
        compression=float(np.mean([r["compression"] for r in mine])),
        seeds=len(mine),
        wall_s=time.perf_counter() - start,
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
