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
# Reads the rows `experiments/gating.py` appends to `experiments/results/gating.jsonl`: per
# dataset and seed, the CNN without gates (`dense`), the same CNN with prefix gates trained
# from scratch (`gated`, FBS's L1 penalty, Gao et al. 2019; dynamic width, Li et al. 2021)
# and the dense network statically cut to the same MACs and rebuilt smaller (`static`).
# Only the test rows of the configuration fixed on validation are plotted; the validation
# rows that chose the density are listed first.
#
# Set `DYNPRUNE_RESULTS` to read another results file, `DYNPRUNE_FIGURES` to choose where
# the figure is written.

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
RESULTS = Path(os.environ.get("DYNPRUNE_RESULTS", ROOT / "experiments/results/gating.jsonl"))
FIGURES = Path(os.environ.get("DYNPRUNE_FIGURES", ROOT / "experiments/results/figures"))
CONFIG = gating_runs.load_config(ROOT / "experiments/gating.json")
CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": [
        "T-shirt", "trouser", "pullover", "dress", "coat",
        "sandal", "shirt", "sneaker", "bag", "boot",
    ],
}  # fmt: skip

rows = results.unique_rows(results.read_jsonl(RESULTS))
print(f"{len(rows)} rows from {RESULTS}")
for r in rows:
    if r["split"] == "validation":
        print(
            f"validation  {r['dataset']:<13} {r['method']:<6} d={r['density']}  "
            f"error {100 * r['error']:.2f}%  MAC ratio {r['mac_ratio']:.2f}x"
        )

# %% [markdown]
# The test rows: error (mean ± sd over the seeds fixed in advance), the loss against the
# dense network, MACs and measured speedups at batch 1 and 64 (dense ÷ method latency).

# %%
print(gating_runs.format_table(rows, CONFIG))

# %% [markdown]
# Left: how much of the gated layers each class of test image keeps (mean kept fraction of
# the gated channels; mean over seeds, bars at ± one sd). Right: test error against the MACs
# saved, per seed, for the three methods.

# %%
test = [r for r in rows if r["split"] == "test"]
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
for ax, dataset in zip(axes[:2], CONFIG.datasets, strict=True):
    gated = [r for r in test if r["dataset"] == dataset and r["method"] == "gated"]
    if gated:
        per_class = np.array([r["density_per_class"] for r in gated])
        spread = per_class.std(axis=0, ddof=1) if len(gated) > 1 else None
        ax.bar(CLASSES[dataset], per_class.mean(axis=0), yerr=spread, color="C1", capsize=3)
        ax.set_ylim(0, 1)
        channels = np.array(CONFIG.features[1:])
        overall = [np.dot(r["kept_fraction"], channels) / channels.sum() for r in gated]
        ax.axhline(np.mean(overall), color="k", lw=1)
        jaccard = np.mean([r["jaccard"] for r in gated])
        ax.set_title(
            f"{dataset}, d={gated[0]['density']}: kept fraction per class\n"
            f"(line: all classes; mean pairwise Jaccard of kept sets {jaccard:.2f})",
            fontsize=9,
        )
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
markers = {"mnist": "o", "fashion_mnist": "s"}
for i, method in enumerate(gating_runs.METHODS):
    for dataset in CONFIG.datasets:
        mine = [r for r in test if r["dataset"] == dataset and r["method"] == method]
        axes[2].scatter(
            [r["mac_ratio"] for r in mine],
            [100 * r["error"] for r in mine],
            color=f"C{i}",
            marker=markers[dataset],
            label=f"{dataset} {method}" if mine else None,
        )
axes[2].set_yscale("log")
axes[2].set_xlabel("MAC ratio (dense ÷ executed per example)")
axes[2].set_ylabel("test error (%)")
axes[2].legend(fontsize=7)
fig.tight_layout()
FIGURES.mkdir(parents=True, exist_ok=True)
fig.savefig(FIGURES / "gating.png", dpi=120)
plt.close(fig)
Image(FIGURES / "gating.png")
