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
# # Pruning inside your own training loop
#
# For a researcher who has a model and a train step of their own and wants pruning in it.
# `dp.prune` wraps any optax optimizer; the masks live in the optimizer state, so the train
# step stays one jitted function of `(params, opt_state, batch)`. This notebook:
#
# 1. prunes a Flax **Linen** MLP with gradual magnitude pruning (GMP) and checks the counts;
# 2. does the same with a Flax **NNX** model;
# 3. switches the algorithm (one-shot magnitude, RigL) with nothing else changed;
# 4. changes the target sparsity mid-run without recompiling the step;
# 5. reads the masks correctly (`None` on unpruned leaves) and prints the summary table;
# 6. plots sparsity per layer and the loss over training.
#
# Everything runs on a synthetic task, in under a minute on a 2-core CPU. Set
# `DYNPRUNE_FIGURES` to choose where the figure is written.

# %%
import os
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import flax.linen as nn
import jax
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx
from IPython.display import Image, display
from matplotlib.lines import Line2D

import dynprune as dp

ROOT = Path.cwd() if (Path.cwd() / "experiments").is_dir() else Path.cwd().parent
FIGURES = Path(os.environ.get("DYNPRUNE_FIGURES", ROOT / "experiments/results/figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
START = time.perf_counter()

# %% [markdown]
# ## The task: Gaussian blobs
#
# Ten classes in ℝ³², class c drawn from N(μ_c, σ²I) with random centres μ_c ~ N(0, 0.25 I)
# and σ = 0.75, so that the classes overlap a little; no download. With equal priors and a
# shared isotropic covariance the nearest centre is the Bayes-optimal rule, which gives the
# best accuracy any model can reach. Mini-batches of 128 are drawn in a fixed order, one row
# of `ORDER` per step, so every run below sees the same batches.

# %%
N_TRAIN, N_VAL, DIM, CLASSES, BATCH, STEPS = 8192, 2048, 32, 10, 128, 600

rng = np.random.default_rng(0)
centres = rng.normal(scale=0.5, size=(CLASSES, DIM))
y_all = rng.integers(0, CLASSES, size=N_TRAIN + N_VAL).astype(np.int32)
x_all = (centres[y_all] + rng.normal(scale=0.75, size=(N_TRAIN + N_VAL, DIM))).astype(np.float32)
x_train, y_train = x_all[:N_TRAIN], y_all[:N_TRAIN]
x_val, y_val = x_all[N_TRAIN:], y_all[N_TRAIN:]
ORDER = rng.integers(0, N_TRAIN, size=(STEPS, BATCH))
print(f"{N_TRAIN} training rows from {CLASSES} Gaussian blobs ({N_VAL} more for validation)")
nearest = ((x_val[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
print(f"Bayes-optimal (nearest-centre) validation accuracy: {(nearest == y_val).mean():.3f}")

# %% [markdown]
# ## 1. A Linen MLP, pruned by GMP in a hand-written jitted step
#
# GMP (Zhu & Gupta 2017) raises each pruned layer's sparsity from s_i to s_f along a cubic,
# recomputing the masks every Δt steps from t₀ to t₀ + nΔt:
#
# $$s_t = s_f + (s_i - s_f)\left(1 - \frac{t - t_0}{n\,\Delta t}\right)^3 ,$$
#
# keeping the (1 − s_t) largest |w| of each kernel. Here s_f = 0.9, s_i = 0, t₀ = 100,
# t₀ + nΔt = 400, Δt = 25. By default only kernels are pruned (leaves with ndim ≥ 2), not
# biases.
#
# Three lines differ from a dense train step:
#
# * `tx = dp.prune(optax.adam(...), pruner)`: the masks live in `tx`'s state;
# * the loss sees `dp.masked_params(params, state)`, w ⊙ m (in hard mode, as here, the pruned
#   weights are already 0; soft-mode algorithms such as DNS need it);
# * `dp.apply_updates(params, updates, state)` instead of `optax.apply_updates`: it keeps
#   pruned weights at exactly 0.0.
#
# And one line before training, `params = dp.apply_masks(params, dp.masks_of(state))`, so
# that the first step starts from the initial masks (all-ones for GMP, not for RigL below).
# `TRACES` counts how often each step is traced, i.e. compiled.


# %%
class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(256, name="fc1")(x))
        x = nn.relu(nn.Dense(128, name="fc2")(x))
        return nn.Dense(CLASSES, name="fc3")(x)


model = MLP()


def linen_apply(params, x):
    return model.apply({"params": params}, x)


TRACES = Counter()


def make_step(tx, apply_fn, name):
    """The jitted train step of `tx` for a model `apply_fn(params, x) -> logits`."""

    def loss_fn(params, state, x, y):
        logits = apply_fn(dp.masked_params(params, state), x)  # the model sees w ⊙ m
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, state, x, y):
        TRACES[name] += 1  # a Python side effect: runs only when jax traces the step
        loss, grads = jax.value_and_grad(loss_fn)(params, state, x, y)
        updates, state = tx.update(grads, state, params)  # masks updated here, on cadence
        return dp.apply_updates(params, updates, state), state, loss  # pruned w: exactly 0.0

    return step


def train(step, params, state, start, stop, log):
    """Steps start..stop-1 on the fixed batches; logs the loss and, every 25 steps, the
    sparsity of each pruned leaf (a host sync, so not on every step)."""
    for t in range(start, stop):
        params, state, loss = step(params, state, x_train[ORDER[t]], y_train[ORDER[t]])
        log.setdefault("loss", []).append(loss)
        if t % 25 == 0:  # right after the step's mask update, if it had one
            log.setdefault("t", []).append(t)
            for path, leaf in dp.summary(params, dp.masks_of(state))["leaves"].items():
                if leaf["pruned"]:
                    log.setdefault(path, []).append(leaf["sparsity"])
    return params, state


def accuracy(apply_fn, params):
    return float((apply_fn(params, x_val).argmax(-1) == y_val).mean())


# %%
params = model.init(jax.random.PRNGKey(0), x_train[:1])["params"]
tx = dp.prune(optax.adam(1e-3), dp.algorithms.gmp(target=0.9, begin=100, end=400, every=25))
state = tx.init(params)
params = dp.apply_masks(params, dp.masks_of(state))
step = make_step(tx, linen_apply, "gmp")
logs = {"gmp": {}}
params, state = train(step, params, state, 0, STEPS, logs["gmp"])
print(f"validation accuracy {accuracy(linen_apply, params):.3f}, compiled {TRACES['gmp']}x")

# %% [markdown]
# **Check.** The target lives in the state as a float32, s₃₂, so each kernel of n weights
# must have exactly round(s₃₂ · n) zeros (half to even; computed exactly with `Fraction`),
# every weight its mask prunes must be exactly 0.0, and the biases must have no mask. The
# sparsity logged every 25 steps must follow the cubic s_t, held between updates, to within
# one weight.


# %%
def expected_pruned(s, n):
    return round(Fraction(float(np.float32(s))) * n)


def check(params, state, target):
    weights = dict(zip(dp.tree.paths(params), jax.tree.leaves(params), strict=True))
    pruned_paths = []
    for path, m in dp.tree.scored_leaves(dp.masks_of(state)):  # (path, mask), pruned leaves
        w, m = np.asarray(weights[path]), np.asarray(m)
        n, pruned, want = w.size, int((~m).sum()), expected_pruned(target, w.size)
        zeros = bool((w[~m] == 0.0).all())
        print(
            f"{path}: n={n:6d}  pruned={pruned:6d}  round(s·n)={want:6d}  "
            f"sparsity={pruned / n:.4f}  pruned weights all 0.0: {zeros}"
        )
        assert pruned == want and zeros
        pruned_paths.append(path)
    assert pruned_paths == ["fc1/kernel", "fc2/kernel", "fc3/kernel"]  # biases: no mask


def cubic(t, s_f=0.9, s_i=0.0, t0=100, end=400, every=25):
    """GMP's s_t at step t: that of the last mask update at or before t."""
    t = np.asarray(t)
    last = np.minimum((t - t0) // every * every, end - t0)  # t - t0 at the last update
    return np.where(t < t0, 0.0, s_f + (s_i - s_f) * (1 - last / (end - t0)) ** 3)


def check_schedule(log, s_t):
    for path, n in [("fc1/kernel", 8192), ("fc2/kernel", 32768), ("fc3/kernel", 1280)]:
        assert np.abs(np.asarray(log[path]) - s_t).max() <= 1 / n, path


check(params, state, 0.9)
check_schedule(logs["gmp"], cubic(logs["gmp"]["t"]))
print("the logged sparsities follow s_t:", [round(float(s), 3) for s in logs["gmp"]["fc2/kernel"]])

# %% [markdown]
# ## 2. The same with Flax NNX
#
# `nnx.split(model, nnx.Param)` gives a graph definition and an `nnx.State` of the
# parameters: a pytree like a Linen dict, with the same leaf paths (`fc1/kernel`). The
# transformation, `make_step`, `train` and `check` are reused unchanged; only `apply_fn`
# differs (`nnx.merge` rebuilds the module from the state inside the jitted step). At the
# end `nnx.update` writes the pruned parameters back into the module.


# %%
class NNXMLP(nnx.Module):
    def __init__(self, rngs):
        self.fc1 = nnx.Linear(DIM, 256, rngs=rngs)
        self.fc2 = nnx.Linear(256, 128, rngs=rngs)
        self.fc3 = nnx.Linear(128, CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.fc3(nnx.relu(self.fc2(nnx.relu(self.fc1(x)))))


nnx_model = NNXMLP(nnx.Rngs(0))
graphdef, nnx_params = nnx.split(nnx_model, nnx.Param)


def nnx_apply(params, x):
    return nnx.merge(graphdef, params)(x)


nnx_state = tx.init(nnx_params)
nnx_params = dp.apply_masks(nnx_params, dp.masks_of(nnx_state))
nnx_step = make_step(tx, nnx_apply, "nnx gmp")
nnx_params, nnx_state = train(nnx_step, nnx_params, nnx_state, 0, STEPS, {})
check(nnx_params, nnx_state, 0.9)
nnx.update(nnx_model, nnx_params)
print("the masks are an nnx.State:", isinstance(dp.masks_of(nnx_state), nnx.State))
print(
    f"validation accuracy of the module: {float((nnx_model(x_val).argmax(-1) == y_val).mean()):.3f}"
)

# %% [markdown]
# ## 3. Switching the algorithm
#
# Only the pruner changes; the model, the optimizer, the step and the loop do not.
#
# * **One-shot magnitude** (Han et al. 2015): train dense until step 200, then drop the
#   round(s · n) smallest |w| of each kernel at once and retrain the survivors.
# * **RigL** (Evci et al. 2020): sparse from the start, with a random mask whose per-layer
#   sparsities come from Erdős–Rényi-Kernel, s_l = 1 − ε (Σᵢ kᵢ)/(Πᵢ kᵢ) for a kernel of shape
#   (k₁, k₂), ε set so that 90% of all kernel weights are pruned: small layers are pruned
#   less. Every ΔT = 25 steps until T_end = 450 it drops the fraction
#   f_t = α/2 · (1 + cos(π t / T_end)) (α = 0.3) of active weights with the smallest |w| and
#   regrows as many where |∂L/∂w| is largest. Its initial masks are not all-ones, which is
#   why the `dp.apply_masks` line before training matters.


# %%
def start(tx):
    """The same initial parameters, tx's state, and the initial masks applied."""
    params = model.init(jax.random.PRNGKey(0), x_train[:1])["params"]
    state = tx.init(params)
    return dp.apply_masks(params, dp.masks_of(state)), state


pruners = {
    "one-shot": dp.algorithms.one_shot(target=0.9, at=200),
    "rigl": dp.algorithms.rigl(target=0.9, every=25, end=450),
}
runs = {"gmp": (params, state)}
for name, pruner in pruners.items():
    tx_other = dp.prune(optax.adam(1e-3), pruner)
    logs[name] = {}
    runs[name] = train(
        make_step(tx_other, linen_apply, name), *start(tx_other), 0, STEPS, logs[name]
    )

for name, (p, s) in runs.items():
    report = dp.summary(p, dp.masks_of(s))
    layers = ", ".join(
        f"{k} {v['sparsity']:.3f}" for k, v in report["leaves"].items() if v["pruned"]
    )
    print(
        f"{name:8s} kernels {report['pruned_only']['sparsity']:.4f} sparse ({layers}); "
        f"validation accuracy {accuracy(linen_apply, p):.3f}; compiled {TRACES[name]}x"
    )
    assert report["pruned_only"]["nonzeros"] == 42240 - expected_pruned(0.9, 42240)
check(*runs["one-shot"], 0.9)

# %% [markdown]
# ## 4. Changing the target mid-run, without recompiling
#
# A pruner's hyperparameters (GMP's `target` and `initial`) live in the optimizer state as
# float32 arrays, so `dp.set_hyperparams(state, target=0.95)` gives a state of the same
# shapes and dtypes, and the jitted step runs it without tracing again. GMP as in section 1,
# but at step 250, half-way up the ramp, the target goes from 0.9 to 0.95: from then on the
# cubic aims at 0.95 and reaches it at step 400. (After `end` GMP no longer updates its
# masks, so a new target then would change nothing.)

# %%
name = "gmp 0.9 → 0.95"
retarget_step, logs[name] = make_step(tx, linen_apply, name), {}
p, s = train(retarget_step, *start(tx), 0, 250, logs[name])
print("before:", {k: round(float(v), 4) for k, v in dp.hyperparams_of(s).items()})
s = dp.set_hyperparams(s, target=0.95)
print("after: ", {k: round(float(v), 4) for k, v in dp.hyperparams_of(s).items()})
p, s = train(retarget_step, p, s, 250, STEPS, logs[name])
check(p, s, 0.95)
t = np.asarray(logs[name]["t"])
check_schedule(logs[name], np.where(t < 250, cubic(t), cubic(t, s_f=0.95)))
print(f"traces of the step: {TRACES[name]}, jit cache entries: {retarget_step._cache_size()}")
assert TRACES[name] == 1 and retarget_step._cache_size() == 1
print(f"validation accuracy {accuracy(linen_apply, p):.3f}")

# %% [markdown]
# ## 5. Reading the masks
#
# `dp.masks_of(state)` has the structure of the parameters, with a bool array (True = kept)
# on each pruned leaf and `None` on each leaf that is not pruned, here the biases. JAX
# treats `None` as an empty subtree, not a leaf, so `jax.tree.leaves(masks)` is *shorter*
# than `jax.tree.leaves(params)`, and zipping the two pairs masks with the wrong weights
# (`zip` stops silently at the shorter list):

# %%
masks = dp.masks_of(state)
print(jax.tree.map(lambda m: None if m is None else m.shape, masks, is_leaf=dp.tree.is_none))
leaves_p, leaves_m = jax.tree.leaves(params), jax.tree.leaves(masks)
print(f"{len(leaves_p)} parameter leaves, {len(leaves_m)} mask leaves")
for path, w, m in zip(dp.tree.paths(params), leaves_p, leaves_m, strict=False):
    print(f"  wrong: {path:10s} w {w.shape!s:10s} paired with a mask of shape {m.shape}")

# %% [markdown]
# With `is_leaf=lambda m: m is None` (`dp.tree.is_none`) the `None`s count as leaves and the
# lists line up; `jax.tree.map` over masks and parameters needs it too.
# `dp.tree.scored_leaves` and `dp.tree.map_scored` pair by path and skip the `None`s. In NNX
# the unpruned leaf is an `nnx.Param` holding `None`, so test it with `is_leaf` too, not
# with `masks["fc1"]["bias"] is None`.

# %%
leaves_m = jax.tree.leaves(masks, is_leaf=lambda m: m is None)
for path, w, m in zip(dp.tree.paths(params), leaves_p, leaves_m, strict=True):
    print(f"  right: {path:10s} w {w.shape!s:10s} mask {None if m is None else m.shape}")
kept = jax.tree.map(
    lambda m, w: w.size if m is None else int(m.sum()), masks, params, is_leaf=dp.tree.is_none
)
print("kept per leaf:", kept)
nnx_bias = dp.masks_of(nnx_state)["fc1"]["bias"]
print(f"NNX: the fc1/bias mask is an nnx.{type(nnx_bias).__name__} of {nnx_bias.get_value()}")
print("     with is_leaf:", jax.tree.leaves(dp.masks_of(nnx_state), is_leaf=dp.tree.is_none)[0])

# %% [markdown]
# `dp.format_summary(dp.summary(params, masks))` prints one row per leaf. Its `mask` column
# tells a leaf that is *not pruned* (mask `None`: the biases; their sparsity counts only the
# zeros they happen to hold) from one that is pruned at 0%. A common choice keeps the output
# layer dense: `overrides={"fc3": 0.0}` gives `fc3`'s kernel a mask that keeps everything,
# so it reads `pruned` at 0.00%.

# %%
tx_dense_out = dp.prune(
    optax.adam(1e-3),
    dp.algorithms.gmp(target=0.9, begin=100, end=400, every=25, overrides={"fc3": 0.0}),
)
p, s = train(make_step(tx_dense_out, linen_apply, "fc3 dense"), *start(tx_dense_out), 0, STEPS, {})
report = dp.summary(p, dp.masks_of(s))
print(dp.format_summary(report))
assert report["leaves"]["fc3/kernel"] == {
    "size": 1280,
    "nonzeros": 1280,
    "sparsity": 0.0,
    "pruned": True,
}
assert not report["leaves"]["fc3/bias"]["pruned"]
print(f"validation accuracy {accuracy(linen_apply, p):.3f}")

# %% [markdown]
# ## 6. Sparsity and loss over training
#
# Left: the sparsity of each kernel (line style) per run (colour), read from the masks right
# after every 25th step. GMP's three kernels coincide on a staircase through the formula's
# s_t (black dots); the retargeted run follows it until step 250, then climbs to 0.95;
# one-shot jumps to 0.9 at step 200; RigL holds its ERK sparsities from the first step (fc2
# 0.94, fc1 0.82, fc3 0.44). Right: the training loss, a moving average over 20 steps. Each
# mask update removes weights the network was using, so the loss rises while the sparsity
# climbs and falls again as the survivors retrain; RigL, sparse from step 0, learns more
# slowly at first but ends lowest.

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
colors = {"gmp": "C0", "one-shot": "C1", "rigl": "C2", "gmp 0.9 → 0.95": "C3"}
styles = {"fc1/kernel": "-", "fc2/kernel": "--", "fc3/kernel": ":"}
for name, log in logs.items():
    z = 3 if name == "gmp" else 2  # GMP on top of the retargeted run, equal until step 250
    for path, style in styles.items():
        ax1.plot(log["t"], log[path], style, color=colors[name], drawstyle="steps-post", zorder=z)
    losses = np.asarray(jax.device_get(log["loss"]))
    smooth = np.convolve(losses, np.ones(20) / 20, mode="valid")  # mean of steps t-19..t
    ax2.plot(np.arange(19, STEPS), smooth, color=colors[name], label=name, zorder=z)
updates = np.arange(100, 401, 25)
ax1.plot(updates, cubic(updates), "k.", ms=4, label="GMP's $s_t$ (formula)")
handles = [Line2D([], [], color=c, label=n) for n, c in colors.items()]
handles += [Line2D([], [], ls=ls, color="grey", label=k.split("/")[0]) for k, ls in styles.items()]
handles += ax1.get_legend_handles_labels()[0]
ax1.legend(handles=handles, fontsize=8, ncol=2, loc="lower right")
ax1.set(xlabel="step", ylabel="sparsity of the kernel", title="sparsity per layer")
ax2.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="training loss")
ax2.legend()
fig.tight_layout()
fig.savefig(FIGURES / "compose_transforms.png", dpi=120, bbox_inches="tight")
plt.close(fig)
display(Image(filename=FIGURES / "compose_transforms.png"))
print(f"notebook ran in {time.perf_counter() - START:.0f} s")
