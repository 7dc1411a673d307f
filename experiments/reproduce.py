"""Reproduce published MNIST pruning results with dynprune recipes, and compare.

The recipes are data, in experiments/recipes.json: each trains a reference model densely
(cached per seed, shared across recipes), prunes it with a dynprune algorithm inside the jitted
train step, optionally fine-tunes with the masks fixed, and evaluates on the 10,000 MNIST test
images. Hyperparameters were chosen on a 5,000-image validation split held out of the
training set. One JSONL row per (recipe, seed) is appended to ``--out``; runs already there are
skipped, so an interrupted invocation resumes. The Markdown table beside ``--out`` (``.md``) is
rewritten from all rows, next to the published numbers.

With ``--checkpoint-dir DIR`` each (recipe, seed) run saves its whole state in
``DIR/<run key>/`` every ``--checkpoint-every`` steps (default: every epoch); the same command
after a kill resumes the interrupted run where it was, with the row an uninterrupted run
writes. Ctrl-C (SIGINT) finishes the current step, saves, and exits with status 130.
Finished runs delete their checkpoints unless ``--keep-checkpoints``.

Compression = all parameters (weights *and* biases) ÷ nonzero parameters of w ⊙ m.

Usage:
  python experiments/reproduce.py RECIPE [--seeds N] [--out FILE]
  python experiments/reproduce.py --list

The last line printed is one JSON object: recipe, test_error (mean, %), test_error_std,
compression, seeds, wall_s.
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
    cli.add_checkpoint_arguments(p)
    args = p.parse_args(argv)
    if args.list or args.recipe is None:
        for name, r in available.items():
            print(f"{name:<16} {r.run.model:<11} published: {r.published}; target: {r.target}")
            print(f"{'':<16} {r.description}")
        return {}
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.WARNING)
    log.setLevel(logging.INFO)

    recipe = available[args.recipe]
    run = sweep_runner.quick(recipe.run) if args.quick else recipe.run
    out = Path(args.out)
    done = results.completed_keys(out)
    metadata = results.run_metadata()
    splits = experiment.load_splits(run, args.data_dir)
    programs = experiment.Programs()
    start = time.perf_counter()
    seeds = args.seeds or recipe.seeds
    checkpoints = cli.checkpoint_options(args)
    for seed in range(args.first_seed, args.first_seed + seeds):
        key = config.run_key(run, seed, test=True)
        if key in done:
            log.info("seed %d already in %s, skipped", seed, out)
            continue
        with cli.stops(__file__, argv, checkpoints):
            [row] = experiment.run_points(
                [run],
                [seed],
                test=True,
                splits=splits,
                programs=programs,
                checkpoints=checkpoints,
            )
        row = {
            "key": key,
            "recipe": args.recipe,
            "method": args.recipe.split("-", 1)[1],
            "config": config.to_dict(run),
            **metadata,
            **row,
        }
        if not results.append_jsonl(out, row, unique=True):
            log.info("seed %d was written by another process meanwhile; kept theirs", seed)
            continue
        log.info(
            "%s seed %d: test error %.2f%%, compression %.1fx, %.0f s",
            args.recipe,
            seed,
            100 * row["test_error"],
            row["compression"],
            row["wall_s"],
        )
    rows = results.read_jsonl(out)
    recipes.write_atomically(out.with_suffix(".md"), recipes.format_table(rows, available))
    mine = recipes.rows_of(rows, args.recipe, dataclasses.replace(recipe, run=run))
    if not mine:
        sys.exit(f"no rows of {args.recipe} in {out}")
    errors = 100 * np.array([r["test_error"] for r in mine])
    summary = {
        "recipe": args.recipe,
        "test_error": float(errors.mean()),
        "test_error_std": float(errors.std()),
        "compression": float(np.mean([r["compression"] for r in mine])),
        "seeds": len(mine),
        "wall_s": time.perf_counter() - start,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
