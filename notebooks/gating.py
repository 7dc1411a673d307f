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
# # Per-input pruning: which inputs get how much network
#
# Reads the rows `experiments/gating.py` appends, one file per attempt: `gating.jsonl`, the
# CNN with FBS-style prefix gates trained from scratch (`gated`; Gao et al. 2019, dynamic
# width as in Li et al. 2021), and `gating-cascade.jsonl`, a confidence cascade over a
# slimmable supernet's widths (`cascade`: the narrowest width first, the full width for the
# images it is unsure of). Each beside the same CNN without gates (`dense`) and the dense
# network statically cut to the same MACs, retrained and rebuilt smaller (`static`). Only
# the test rows of the configurations fixed on validation are plotted; the validation rows
# that chose them are listed first.
#
# Set `DYNPRUNE_RESULTS_DIR` to read the results files from another directory,
# `DYNPRUNE_FIGURES` to choose where the figure is written.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image

from dynprune.harness import gating_runs, results

ROOT = Path.cwd() if (Path.cwd() / "experiments").is_dir() else Path.cwd().parent
RESULTS = Path(os.environ.get("DYNPRUNE_RESULTS_DIR", ROOT / "experiments/results"))
FIGURES = Path(os.environ.get("DYNPRUNE_FIGURES", ROOT / "experiments/results/figures"))
EXPERIMENTS = {"gating": "gated", "gating-cascade": "cascade"}  # config name: its method
CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": [
        "T-shirt", "trouser", "pullover", "dress", "coat",
        "sandal", "shirt", "sneaker", "bag", "boot",
    ],
}  # fmt: skip

configs, rows = {}, {}
for name in EXPERIMENTS:
    configs[name] = gating_runs.load_config(ROOT / f"experiments/{name}.json")
    rows[name] = results.unique_rows(results.read_jsonl(RESULTS / f"{name}.jsonl"))
    print(f"{len(rows[name])} rows from {RESULTS / f'{name}.jsonl'}")
    for r in rows[name]:
        if r["split"] == "validation":
            print(
                f"  validation  {r['dataset']:<13} {r['method']:<8} "
                f"{gating_runs.setting_label(r):<7} error {100 * r['error']:.2f}%  "
                f"MAC ratio {r['mac_ratio']:.2f}x"
            )

# %% [markdown]
# The test rows: error (mean ± sd over the seeds fixed in advance), the loss against the
# dense network, MACs and measured speedups at batch 1 and 64 (dense ÷ method latency, as
# measured during the run; `experiments/gating.py latency` times them again).

# %%
for name in EXPERIMENTS:
    print(f"{name}\n{gating_runs.format_table(rows[name], configs[name])}\n")

# %% [markdown]
# One row of panels per attempt. Left: how much of the gated layers each class of test
# image keeps (mean kept fraction of the gated channels; a cascade's: at the level the
# image stopped; mean over seeds, bars at ± one sd). Right: test error against the MACs
# saved, per seed, for every method.

# %%
datasets = list(CLASSES)
fig, axes = plt.subplots(len(EXPERIMENTS), 3, figsize=(15, 4.4 * len(EXPERIMENTS)), squeeze=False)
for row_axes, (name, method) in zip(axes, EXPERIMENTS.items(), strict=True):
    config = configs[name]
    test = [r for r in rows[name] if r["split"] == "test"]
    for ax, dataset in zip(row_axes[:2], datasets, strict=True):
        mine = [r for r in test if r["dataset"] == dataset and r["method"] == method]
        ax.set_title(f"{name}, {dataset}: no test rows yet", fontsize=9)
        if not mine:
            continue
        per_class = np.array([r["density_per_class"] for r in mine])
        spread = per_class.std(axis=0, ddof=1) if len(mine) > 1 else None
        ax.bar(CLASSES[dataset], per_class.mean(axis=0), yerr=spread, color="C1", capsize=3)
        ax.set_ylim(0, 1)
        channels = np.array(config.features[1:])
        overall = [np.dot(r["kept_fraction"], channels) / channels.sum() for r in mine]
        ax.axhline(np.mean(overall), color="k", lw=1)
        jaccard = np.mean([r["jaccard"] for r in mine])
        escalated = (
            f"; escalated {100 * np.mean([r['escalated'] for r in mine]):.1f}%"
            if method == "cascade"
            else ""
        )
        ax.set_title(
            f"{name}, {dataset}, {method} {gating_runs.setting_label(mine[0])}: kept fraction "
            f"per class\n(line: all classes; mean pairwise Jaccard {jaccard:.2f}{escalated})",
            fontsize=9,
        )
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    markers = {"mnist": "o", "fashion_mnist": "s"}
    for i, m in enumerate(gating_runs.METHODS):
        for dataset in datasets:
            mine = [r for r in test if r["dataset"] == dataset and r["method"] == m]
            row_axes[2].scatter(
                [r["mac_ratio"] for r in mine],
                [100 * r["error"] for r in mine],
                color=f"C{i}",
                marker=markers[dataset],
                label=f"{dataset} {m}" if mine else None,
            )
    row_axes[2].set_xlabel("MAC ratio (dense ÷ executed per example)")
    row_axes[2].set_ylabel("test error (%)")
    row_axes[2].set_title(name, fontsize=9)
    row_axes[2].legend(fontsize=7)
fig.tight_layout()
FIGURES.mkdir(parents=True, exist_ok=True)
fig.savefig(FIGURES / "gating.png", dpi=120)
plt.close(fig)
Image(FIGURES / "gating.png")
