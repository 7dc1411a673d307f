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
# # A sweep's results
#
# Reads the rows `experiments/sweep.py` writes to `experiments/results/frontier.jsonl` (one per
# run: a method at one value of its knob, one seed) and shows what the runs reached, where each
# one's sparsity went, how its masks moved during training, and what the sweep cost.
#
# Set `DYNPRUNE_RESULTS` to read another results file, `DYNPRUNE_FIGURES` to choose where the
# figures are written.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

from dynprune.harness import results, sweep

ROOT = Path.cwd() if (Path.cwd() / "experiments").is_dir() else Path.cwd().parent
RESULTS = Path(os.environ.get("DYNPRUNE_RESULTS", ROOT / "experiments/results/frontier.jsonl"))
FIGURES = Path(os.environ.get("DYNPRUNE_FIGURES", ROOT / "experiments/results/figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
rows = results.unique_rows(results.read_jsonl(RESULTS))
print(f"{len(rows)} rows from {RESULTS}")
assert rows, "no rows: run experiments/sweep.py first"
rows.sort(key=lambda r: (r["method"], r["compression"]))
SEEDS = len({r["seed"] for r in rows})


def label(row):
    """The run's method and knob value (a DNS rate c per layer as `fc1=3.5,...`)."""
    extra = [f"{k}={v}" for k, v in row["swept"].items()] + [f"seed {row['seed']}"] * (SEEDS > 1)
    return " ".join([row["method"], sweep.label(row["target"]), *extra])


def show(fig, name):
    """Write the figure to FIGURES as a PNG and show that file."""
    fig.tight_layout()
    fig.savefig(FIGURES / name, dpi=120, bbox_inches="tight")
    plt.close(fig)
    display(Image(filename=FIGURES / name))


# %% [markdown]
# ## 1. The frontier
#
# Validation error (mean ± spread over seeds) against compression (all parameters ÷ nonzeros),
# one line per method; the stars are the published points the sweep config names (reported on
# the test set, so a guide rather than a like-for-like comparison).

# %%
CONFIG = ROOT / "experiments/configs" / f"{rows[0]['sweep']}.json"
published = sweep.load(CONFIG).published if CONFIG.exists() else {}
summaries = sweep.summarise(rows)
print(sweep.format_table(summaries))
frontier = sweep.plot(
    summaries, FIGURES / "frontier.png", title=rows[0]["sweep"], published=published
)
display(Image(filename=frontier))

# %% [markdown]
# ## 2. Where the sparsity went
#
# Sparsity of each kernel: the fully connected layers' budgets differ by method (GMP and
# one-shot rank all weights globally; DNS sets a rate per layer).

# %%
kernels = sorted(k for k in rows[0]["layers"] if k.endswith("kernel"))
sparsity = np.array([[r["layers"][k]["sparsity"] for k in kernels] for r in rows])
fig, ax = plt.subplots(figsize=(2 + 1.6 * len(kernels), 1 + 0.45 * len(rows)))
image = ax.imshow(sparsity, cmap="viridis", vmin=0, vmax=1, aspect="auto")
for (i, j), value in np.ndenumerate(sparsity):
    colour = "black" if value > 0.6 else "white"
    ax.text(j, i, f"{value:.1%}", ha="center", va="center", fontsize=8, color=colour)
ax.set_xticks(range(len(kernels)), kernels)
ax.set_yticks(range(len(rows)), [label(r) for r in rows])
fig.colorbar(image, ax=ax, label="sparsity")
show(fig, "layer_sparsity.png")

# %% [markdown]
# ## 3. Mask dynamics
#
# From each run's mask trace (one entry per step at which its masks changed, in the pruning
# phase): the weights kept against the training step (top), and the weights pruned and regrown
# so far (bottom; dashed: regrown, which only DNS's splicing does here).

# %%
methods = sorted({r["method"] for r in rows})
fig, axes = plt.subplots(
    2, len(methods), figsize=(4.2 * len(methods), 6), sharex=True, squeeze=False
)
for column, method in zip(axes.T, methods, strict=True):
    mine = [r for r in rows if r["method"] == method]
    for row, colour in zip(mine, plt.cm.plasma(np.linspace(0, 0.8, len(mine))), strict=True):
        trace = [t for t in row["trace"] if t["phase"] == "prune"]
        if not trace:
            continue
        steps = [0, *(t["step"] for t in trace), row["phase_steps"]["prune"]]
        kept = [trace[0]["kept"] + trace[0]["pruned"] - trace[0]["regrown"]]
        kept += [t["kept"] for t in trace]
        pruned = np.cumsum([0, *(t["pruned"] for t in trace), 0])
        regrown = np.cumsum([0, *(t["regrown"] for t in trace), 0])
        column[0].step(steps, [*kept, kept[-1]], where="post", color=colour, label=label(row))
        column[1].step(steps, pruned, where="post", color=colour)
        column[1].step(steps, regrown, where="post", color=colour, linestyle="--")
    column[0].set(title=method, yscale="log", ylabel="weights kept")
    column[0].legend(fontsize=7)
    column[1].set(xlabel="step", ylabel="pruned / regrown so far")
show(fig, "mask_dynamics.png")

# %% [markdown]
# ## 4. What the sweep cost
#
# Wall time per run (a program's time shared by the runs vmapped into it), annotated with the
# train-step compilations of the run's group so far and how many runs shared its program.

# %%
wall = np.array([r["wall_s"] for r in rows])
fig, ax = plt.subplots(figsize=(7, 1 + 0.45 * len(rows)))
ax.barh(range(len(rows)), wall, color="tab:blue")
for i, r in enumerate(rows):
    note = f" compiles: {r['compiles']}, runs in program: {r['points_in_program']}"
    ax.text(wall[i], i, note, va="center", fontsize=8)
ax.set_yticks(range(len(rows)), [label(r) for r in rows])
ax.invert_yaxis()
ax.set_xlim(0, wall.max() * 1.6)
ax.set_xlabel("wall time per run (s)")
show(fig, "wall_time.png")
devices = {f"{r['backend']} {r['device_kind']} x{r['device_count']}" for r in rows}
print(f"total {wall.sum():.1f} s over {len(rows)} runs on {', '.join(sorted(devices))}")
