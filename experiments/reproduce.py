"""Reproduce published MNIST pruning results with dynprune recipes, and compare.

Each recipe trains a reference model densely (cached per seed, shared across recipes),
prunes it with a dynprune algorithm inside the jitted train step, optionally fine-tunes
with the masks fixed, and evaluates on the 10,000 MNIST test images. Hyperparameters were
chosen on a 5,000-image validation split held out of the training set, never on the test
set. One JSONL row per (recipe, seed) is appended to ``--out``; runs already there are
skipped, so an interrupted invocation resumes. The Markdown table beside ``--out``
(``.md``) is rewritten from all rows, next to the published numbers.

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
import hashlib
import inspect
import itertools
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

import dynprune as dp
from dynprune.harness import data, models, results, train

log = logging.getLogger("reproduce")
EXAMPLE = jnp.zeros((1, 28, 28, 1), jnp.float32)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One training phase: optimizer settings and, when pruning, the pruner.

    ``pruner`` gets the phase's number of steps and the steps per epoch; ``None`` trains
    densely (or, after a pruning phase, with the masks fixed). ``shift`` > 0 augments the
    training images with random translations of up to that many pixels.
    """

    epochs: int
    lr: float
    pruner: Callable[[int, int], dp.Pruner] | None = None
    optimizer: str = "adam"
    schedule: str = "cosine"
    weight_decay: float = 0.0
    shift: int = 0


InitMasks = Callable[[Callable[..., jax.Array], Any, data.Dataset, int], Any]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A reproduction: model, dense pre-training, pruning phase, optional fixed-mask fine-tune.

    ``init_masks(loss, params, train, seed)``, if given, chooses the masks from the initial
    weights before the prune phase, which then trains with them fixed (its ``pruner`` is
    ``None``).
    """

    model: str
    prune: Phase
    published: str
    target: str
    pretrain: Phase | None = None
    finetune: Phase | None = None
    batch_size: int = 128
    init_masks: InitMasks | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.init_masks is not None and self.prune.pruner is not None:
            raise ValueError(
                "a recipe with init_masks trains them fixed: its prune phase takes no pruner"
            )


def _dns_lenet300(steps: int, per_epoch: int) -> dp.Pruner:
    return dp.algorithms.dns(
        c={"fc1": 5.7, "fc2": 4.4, "fc3": 2.4, "default": 1.0},
        gamma=1e-4,
        power=1.0,
        iter_stop=int(steps * 0.75),
        warmup=int(steps * 0.4),
    )


def _dns_lenet300_70x(steps: int, per_epoch: int) -> dp.Pruner:
    return dp.algorithms.dns(
        c={"fc1": 6.1, "fc2": 4.8, "fc3": 2.8, "default": 1.0},
        gamma=1e-4,
        power=1.0,
        iter_stop=int(steps * 0.75),
        warmup=int(steps * 0.4),
    )


def _dns_lenet5(steps: int, per_epoch: int) -> dp.Pruner:
    return dp.algorithms.dns(
        c={"conv1": 2.9, "conv2": 4.6, "fc1": 5.2, "fc2": 5.2, "default": 1.0},
        gamma=1e-4,
        power=1.0,
        iter_stop=int(steps * 0.75),
        warmup=int(steps * 0.4),
    )


def _han_lenet300(steps: int, per_epoch: int) -> dp.Pruner:
    # Han et al. 2015, Table 2: fc1 8 %, fc2 9 %, fc3 26 % of weights kept.
    return dp.algorithms.iterative(
        0.92,
        rounds=4,
        begin=0,
        period=steps // 5,
        overrides={"fc2": 0.91, "fc3": 0.74},
    )


def _gmp_lenet300(steps: int, per_epoch: int) -> dp.Pruner:
    return dp.algorithms.gmp(
        0.984, begin=0, end=int(steps * 0.6), every=per_epoch // 4, scope="global"
    )


def _rigl_lenet300(steps: int, per_epoch: int) -> dp.Pruner:
    return dp.algorithms.rigl(0.984, every=100, end=int(steps * 0.75), alpha=0.3)


def _snip_lenet5(
    loss: Callable[..., jax.Array], params: Any, train: data.Dataset, seed: int
) -> Any:
    first = itertools.islice(data.batches(train, 128, seed=seed, epoch=0, shift=1), 4)
    return dp.algorithms.snip_masks(loss, params, first, 0.99)


def _origin_threshold(steps: int, per_epoch: int) -> dp.Pruner:
    return dp.algorithms.threshold(0.1, every=1, begin=0, end=0)


ADAM_DENSE_LENET300 = Phase(epochs=30, lr=3e-3, weight_decay=0.1, shift=1)
ADAM_DENSE_LENET5 = Phase(epochs=12, lr=1e-3, shift=1)

RECIPES: dict[str, Recipe] = {
    "lenet300-dns": Recipe(
        model="lenet300",
        pretrain=ADAM_DENSE_LENET300,
        prune=Phase(epochs=60, lr=0.01, optimizer="sgd", pruner=_dns_lenet300, shift=1),
        finetune=Phase(epochs=10, lr=0.002, optimizer="sgd", shift=1),
        published="1.99% at 56x (Guo et al. 2016)",
        target="<= 1.8% error at >= 56x",
        description="Dynamic Network Surgery from the dense model (SGD, momentum 0.9), its "
        "thresholds warmed up over the first 40% of the phase, masks frozen after 75%, then "
        "10 epochs with the masks fixed",
    ),
    "lenet300-dns-70x": Recipe(
        model="lenet300",
        pretrain=ADAM_DENSE_LENET300,
        prune=Phase(epochs=60, lr=0.01, optimizer="sgd", pruner=_dns_lenet300_70x, shift=1),
        finetune=Phase(epochs=10, lr=0.002, optimizer="sgd", shift=1),
        published="1.92% at 68x (Sparse VD, Molchanov et al. 2017)",
        target=">= 68x at <= 1.9% error",
        description="as lenet300-dns with larger rates c",
    ),
    "lenet5-dns": Recipe(
        model="lenet5",
        pretrain=ADAM_DENSE_LENET5,
        prune=Phase(epochs=28, lr=0.01, optimizer="sgd", pruner=_dns_lenet5, shift=1),
        published="0.91% at 108x (Guo et al. 2016)",
        target="<= 0.9% error at >= 108x",
        description="Dynamic Network Surgery from the dense model (SGD), thresholds "
        "warmed up over the first 40% of the phase, masks frozen after 75%",
    ),
    "lenet300-han": Recipe(
        model="lenet300",
        pretrain=ADAM_DENSE_LENET300,
        prune=Phase(epochs=25, lr=1e-3, pruner=_han_lenet300, shift=1),
        published="1.59% at 12x (Han et al. 2015)",
        target="match",
        description="4 rounds of magnitude pruning with retraining, Han's per-layer rates",
    ),
    "lenet300-gmp": Recipe(
        model="lenet300",
        pretrain=ADAM_DENSE_LENET300,
        prune=Phase(epochs=60, lr=1e-3, pruner=_gmp_lenet300, shift=1),
        published="-",
        target="compare with DNS at the same compression",
        description="global gradual magnitude pruning (Zhu & Gupta) from the dense model",
    ),
    "lenet5-snip": Recipe(
        model="lenet5",
        prune=Phase(epochs=120, lr=5e-3, shift=1),
        published="1.1% at 99% sparsity (Lee et al. 2019)",
        target="beat it",
        batch_size=64,
        init_masks=_snip_lenet5,
        description="SNIP at initialisation (saliency summed over several training batches at "
        "the initial weights), then training the 1% survivors with the masks fixed",
    ),
    "lenet300-rigl": Recipe(
        model="lenet300",
        prune=Phase(epochs=60, lr=3e-3, pruner=_rigl_lenet300, shift=1),
        published="-",
        target="sparse from scratch at the DNS compression",
        description="RigL from a random ERK-sparse start, no dense pre-training",
    ),
    "origin-example": Recipe(
        model="origin_mlp",
        pretrain=Phase(epochs=10, lr=1e-3, schedule="constant"),
        prune=Phase(epochs=0, lr=1e-3, pruner=_origin_threshold),
        finetune=Phase(epochs=5, lr=1e-4, schedule="constant"),
        published="0.990 -> 0.987 accuracy, no compression figure (origin document)",
        target="report what really happens",
        description="784-128-10 MLP, prune |w| <= 0.1, with and without retraining",
    ),
}


def make_optimizer(phase: Phase, steps: int) -> optax.GradientTransformation:
    lr = (
        optax.cosine_decay_schedule(phase.lr, max(steps, 1))
        if phase.schedule == "cosine"
        else phase.lr
    )
    if phase.optimizer == "adam":
        return optax.adamw(lr, weight_decay=phase.weight_decay)
    return optax.chain(optax.add_decayed_weights(phase.weight_decay), optax.sgd(lr, momentum=0.9))


def cache_dir() -> Path:
    base = os.environ.get("DYNPRUNE_CACHE_DIR") or Path.home() / ".cache" / "dynprune"
    path = Path(base) / "pretrained"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Runner:
    """Runs the phases of a recipe for one seed on fixed data splits."""

    def __init__(self, recipe: Recipe, seed: int, splits: dict[str, data.Dataset], quick: bool):
        self.recipe, self.seed, self.splits, self.quick = recipe, seed, splits, quick
        self.model = models.get_model(recipe.model)
        self.apply_fn = lambda p, x: self.model.apply({"params": p}, x)
        self.per_epoch = len(splits["train"].labels) // recipe.batch_size
        self.eval_step = train.make_eval_step(self.apply_fn, forward_params=dp.masked_params)

    def steps(self, phase: Phase) -> int:
        return phase.epochs * self.per_epoch

    def fit(self, params: Any, phase: Phase, pruner: dp.Pruner) -> train.TrainState:
        steps = self.steps(phase)
        tx = dp.prune(make_optimizer(phase, steps), pruner, seed=self.seed)
        state = train.init_state(params, tx)
        masks = dp.masks_of(state.opt_state)
        if not pruner.soft:
            state = state._replace(params=dp.apply_masks(state.params, masks))
        if steps == 0:
            updates, opt_state = tx.update(
                jax.tree.map(jnp.zeros_like, params), state.opt_state, params
            )
            return state._replace(params=optax.apply_updates(params, updates), opt_state=opt_state)
        step = train.make_train_step(self.apply_fn, tx, forward_params=dp.masked_params)
        return train.fit(
            state,
            step,
            self.splits["train"],
            epochs=phase.epochs,
            batch_size=self.recipe.batch_size,
            seed=self.seed,
            progress=False,
            shift=phase.shift,
        ).state

    def loss(self, params: Any, images: jax.Array, labels: jax.Array) -> jax.Array:
        return train.mean_loss(self.apply_fn, params, images, labels)

    def accuracy(self, state: train.TrainState, split: str) -> float:
        return train.evaluate(self.eval_step, state, self.splits[split], 1000)[0]

    def pretrained(self, phase: Phase) -> Any:
        init = self.model.init(jax.random.key(self.seed), EXAMPLE)["params"]
        key = results.run_key(
            {
                "model": self.recipe.model,
                "seed": self.seed,
                "phase": dataclasses.asdict(phase),
                "quick": self.quick,
            }
        )
        path = cache_dir() / f"{self.recipe.model}-{key}.msgpack"
        if path.exists():
            return flax.serialization.from_bytes(init, path.read_bytes())
        state = self.fit(init, phase, dp.algorithms.fixed(jax.tree.map(lambda _: None, init)))
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(flax.serialization.to_bytes(jax.device_get(state.params)))
        os.replace(tmp, path)
        return state.params

    def run(self) -> dict[str, Any]:
        recipe = self.recipe
        row: dict[str, Any] = {}
        if recipe.pretrain is not None:
            params = self.pretrained(recipe.pretrain)
            dense = train.TrainState(params, optax.EmptyState(), jnp.zeros([], jnp.int32))
            row["dense_test_error"] = (
                1
                - train.evaluate(
                    train.make_eval_step(self.apply_fn), dense, self.splits["test"], 1000
                )[0]
            )
        else:
            params = self.model.init(jax.random.key(self.seed), EXAMPLE)["params"]
        if recipe.init_masks is not None:
            masks = recipe.init_masks(self.loss, params, self.splits["train"], self.seed)
            pruner = dp.algorithms.fixed(masks)
        else:
            pruner = recipe.prune.pruner(self.steps(recipe.prune), self.per_epoch)
        state = self.fit(params, recipe.prune, pruner)
        masks = dp.masks_of(state.opt_state)
        aux = dp.find_state(state.opt_state).aux
        if isinstance(aux, dp.algorithms.DNSState):  # mask dynamics of the surgery phase
            row["dns_prunes"], row["dns_splices"] = int(aux.total_prunes), int(aux.total_splices)
        if recipe.finetune is not None:
            row["before_finetune_test_error"] = 1 - self.accuracy(state, "test")
            params = dp.masked_params(state.params, state.opt_state)
            state = self.fit(params, recipe.finetune, dp.algorithms.fixed(masks))
        effective = dp.masked_params(state.params, state.opt_state)
        report = dp.summary(effective, dp.masks_of(state.opt_state))
        compute = dp.stats.flops(self.apply_fn, effective, EXAMPLE)
        row.update(
            val_error=1 - self.accuracy(state, "validation"),
            test_error=1 - self.accuracy(state, "test"),
            params=report["total"]["size"],
            nonzeros=report["total"]["nonzeros"],
            sparsity=report["total"]["sparsity"],
            compression=report["total"]["compression"],
            weights_compression=report["pruned_only"]["compression"],
            layers={
                p: {k: v[k] for k in ("size", "nonzeros", "sparsity")}
                for p, v in report["leaves"].items()
            },
            flops_dense=compute["dense"],
            flops_effective=compute["effective"],
            steps=sum(self.steps(p) for p in (recipe.pretrain, recipe.prune, recipe.finetune) if p),
        )
        return row


def _source_key(fn: Callable[..., Any]) -> str:
    """A function's settings live in its source: its name and a hash of that source."""
    return f"{fn.__name__}:{hashlib.sha1(inspect.getsource(fn).encode()).hexdigest()[:10]}"


def recipe_config(name: str, recipe: Recipe, quick: bool) -> dict[str, Any]:
    def phase(p: Phase | None) -> Any:
        if p is None:
            return None
        d = dataclasses.asdict(p)
        if p.pruner is not None:
            d["pruner"] = _source_key(p.pruner)
        return d

    config = {
        "recipe": name,
        "model": recipe.model,
        "batch_size": recipe.batch_size,
        "pretrain": phase(recipe.pretrain),
        "prune": phase(recipe.prune),
        "finetune": phase(recipe.finetune),
        "quick": quick,
    }
    if recipe.init_masks is not None:
        config["init_masks"] = _source_key(recipe.init_masks)
    return config


def rows_of(rows: list[dict[str, Any]], name: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of recipe ``name`` run with ``config`` (other configurations' rows stay in the
    file under their own keys)."""
    return [r for r in rows if r["recipe"] == name and r["config"] == config]


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    """Markdown table: per recipe (rows of its current configuration only), test error mean ±
    std and mean validation error over seeds, next to the published numbers. Compression is
    given over all parameters and over the pruned weights alone (the papers' per-layer tables
    leave biases out)."""
    lines = [
        "| recipe | net | published | target | test error (mean ± std) | validation error "
        "| compression | weights only | seeds | wall s / run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, recipe in RECIPES.items():
        mine = rows_of(rows, name, recipe_config(name, recipe, quick=False))
        if not mine:
            continue
        err = 100 * np.array([r["test_error"] for r in mine])
        val = 100 * np.mean([r["val_error"] for r in mine])
        comp = np.mean([r["compression"] for r in mine])
        weights = np.mean([r["weights_compression"] for r in mine])
        wall = np.mean([r["wall_s"] for r in mine])
        lines.append(
            f"| `{name}` | {recipe.model} | {recipe.published} | {recipe.target} | "
            f"{err.mean():.2f}% ± {err.std():.2f} | {val:.2f}% | {comp:.1f}x | {weights:.1f}x | "
            f"{len(mine)} | {wall:.0f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("recipe", nargs="?", choices=sorted(RECIPES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--out", default="experiments/results/reproductions.jsonl")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--list", action="store_true", help="list the recipes and exit")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 epoch per phase, 2k images")
    args = p.parse_args(argv)
    if args.list or args.recipe is None:
        for name, r in RECIPES.items():
            print(f"{name:<16} {r.model:<11} published: {r.published}; target: {r.target}")
            print(f"{'':<16} {r.description}")
        return {}
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.WARNING)
    log.setLevel(logging.INFO)

    recipe = RECIPES[args.recipe]
    if args.quick:
        shrink = lambda ph: (
            None if ph is None else dataclasses.replace(ph, epochs=min(ph.epochs, 1))
        )
        recipe = dataclasses.replace(
            recipe,
            pretrain=shrink(recipe.pretrain),
            prune=shrink(recipe.prune),
            finetune=shrink(recipe.finetune),
        )
    splits = {
        s: data.load("mnist", s, validation=5000, data_dir=args.data_dir)
        for s in ("train", "validation", "test")
    }
    if args.quick:
        splits = {s: data.Dataset(d.images[:2048], d.labels[:2048]) for s, d in splits.items()}
    config = recipe_config(args.recipe, recipe, args.quick)
    out = Path(args.out)
    done = results.completed_keys(out)
    metadata = results.run_metadata()
    start = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        key = results.run_key({**config, "seed": seed})
        if key in done:
            log.info("seed %d already in %s, skipped", seed, out)
            continue
        t0 = time.perf_counter()
        row = Runner(recipe, seed, splits, args.quick).run()
        row = {
            "key": key,
            "recipe": args.recipe,
            "method": args.recipe.split("-", 1)[1],
            "seed": seed,
            "config": config,
            **metadata,
            **row,
            "wall_s": time.perf_counter() - t0,
        }
        results.append_jsonl(out, row)
        log.info(
            "%s seed %d: test error %.2f%%, compression %.1fx, %.0f s",
            args.recipe,
            seed,
            100 * row["test_error"],
            row["compression"],
            row["wall_s"],
        )
    rows = results.read_jsonl(out)
    write_table(rows, out.with_suffix(".md"))
    mine = rows_of(rows, args.recipe, config)
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
