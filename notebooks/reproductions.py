# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reproductions: error against compression
#
# Reads the rows `experiments/reproduce.py` appends to
# `experiments/results/reproductions.jsonl` (one per recipe and seed) and plots each recipe's
# test error against its compression, next to the published point it is compared with.
# Rows of a recipe's current configuration are the headline; rows of earlier configurations
# (kept under their own keys, and in `reproductions-legacy.jsonl` for those from before
# configurations were data) are drawn faintly, so the tuning history stays in view. The plots
# use the compression of the pruned weights alone (biases left out), the convention of SNIP's
# "99% sparsity" and of the papers' per-layer tables; the printed summary also gives the
# README's all-parameter figure.
#
# Set `DYNPRUNE_RESULTS` to read another results file, `DYNPRUNE_FIGURES` to choose where the
# figure is written.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image

from dynprune.harness import recipes, results

ROOT = Path.cwd() if (Path.cwd() / "experiments").is_dir() else Path.cwd().parent
RESULTS = Path(os.environ.get("DYNPRUNE_RESULTS", ROOT / "experiments/results/reproductions.jsonl"))
FIGURES = Path(os.environ.get("DYNPRUNE_FIGURES", ROOT / "experiments/results/figures"))
RECIPES = recipes.load(ROOT / "experiments/recipes.json")

rows = results.unique_rows(results.read_jsonl(RESULTS))
legacy = results.read_jsonl(RESULTS.with_name("reproductions-legacy.jsonl"))
print(f"{len(rows)} rows from {RESULTS} ({len(legacy)} legacy rows beside it)")

# %% [markdown]
# Each recipe's rows in its current configuration (the README table's rows): final rows, or,
# for a recipe without any yet, its rows from before the protocol (the table's †). The
# published points come from the recipes themselves (`published_error`,
# `published_compression`). Recipes trained without augmentation (the papers' protocol) are
# drawn filled, augmented ones (ours) hollow; the dense baselines are horizontal lines, solid
# for the papers' protocol, dashed for ours.

# %%
headline = {
    name: recipes.rows_of(rows, name, recipe)
    or recipes.rows_of(rows, name, recipe, mode=recipes.PRE_PROTOCOL)
    for name, recipe in RECIPES.items()
}
for name, mine in headline.items():
    if mine:
        err = 100 * np.array([r["test_error"] for r in mine])
        comp = np.mean([r["compression"] for r in mine])
        weights = [r["weights_compression"] for r in mine]
        shown = "dense" if None in weights else f"{np.mean(weights):.1f}x weights only"
        spread = f" ± {err.std(ddof=1):.2f}" if len(err) > 1 else ""
        print(
            f"{name:<26} {recipes.protocol(RECIPES[name]):<5} {err.mean():.2f}%{spread} at "
            f"{comp:6.1f}x ({shown}, {len(mine)} seeds)"
        )

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
for ax, net in zip(axes, ("lenet300", "lenet5"), strict=True):
    names = [n for n, r in RECIPES.items() if r.run.model == net]
    pruned = [n for n in names if RECIPES[n].baseline is not None]
    for n in names:
        if RECIPES[n].baseline is None and headline[n]:
            paper = recipes.protocol(RECIPES[n]) == "paper"
            ax.axhline(
                100 * np.mean([r["test_error"] for r in headline[n]]),
                color="0.4",
                linestyle="-" if paper else "--",
                linewidth=1,
                label=f"{n} (dense)",
            )
    for i, name in enumerate(pruned):
        recipe, color = RECIPES[name], f"C{i % 10}"
        mine = headline[name]
        ids = {r["key"] for r in mine}
        older = [r for r in rows + legacy if r["recipe"] == name and r["key"] not in ids]
        filled = recipes.protocol(recipe) == "paper"
        face = color if filled else "none"
        for group, style in ((older, {"alpha": 0.25, "s": 14}), (mine, {"s": 30, "label": name})):
            if group:
                ax.scatter(
                    [r["weights_compression"] for r in group],
                    [100 * r["test_error"] for r in group],
                    facecolors=face,
                    edgecolors=color,
                    **style,
                )
        if recipe.published_error is not None and filled:
            ax.scatter(
                [recipe.published_compression],
                [recipe.published_error],
                color=color,
                marker="*",
                s=160,
                edgecolor="k",
                label=f"{name}, published",
            )
    ax.set_xscale("log")
    ax.set_xlabel("compression of the pruned weights")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"{net}: filled = papers' protocol, hollow = ours (±1 px)", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
fig.tight_layout()
FIGURES.mkdir(parents=True, exist_ok=True)
fig.savefig(FIGURES / "reproductions.png", dpi=120)
plt.close(fig)
Image(FIGURES / "reproductions.png")

# %% [markdown]
# ## Where the surviving weights are
#
# Fraction of each kernel kept, per recipe (current configuration, mean over seeds).

# %%
for name, mine in headline.items():
    if not mine or RECIPES[name].baseline is None:
        continue
    kernels = [k for k in mine[0]["layers"] if k.endswith("kernel")]
    kept = {
        k: np.mean([r["layers"][k]["nonzeros"] / r["layers"][k]["size"] for r in mine])
        for k in kernels
    }
    print(f"{name:<18} " + "  ".join(f"{k.split('/')[0]} {v:6.2%}" for k, v in kept.items()))
