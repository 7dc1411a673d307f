"""Trains a reference model on MNIST or Fashion-MNIST, optionally pruning it, and appends a row.

Tunes on a held-out validation split of the training set, reports accuracy on the 10,000 test
images, prints a summary table and appends a JSONL row (config, seed, run metadata, test
accuracy/error, steps, wall time, parameter counts, FLOPs).

With ``--prune`` the optimizer is wrapped in ``dp.prune`` and the masks are updated inside the
jitted step: ``gmp`` ramps to ``--sparsity`` between 10% and 70% of the run (every quarter
epoch), ``one_shot`` prunes by magnitude at the middle of the run, ``snip`` and ``random`` at
step 0, ``rigl`` and ``set`` train sparse from an ERK start (mask updates every 100 steps
until 75% of the run).

Example:
  python experiments/train.py --model lenet300 --epochs 20 --prune gmp --sparsity 0.95
"""

from __future__ import annotations

import argparse
import logging
import time

import jax
import jax.numpy as jnp
import optax

import dynprune as dp
from dynprune.harness import data, models, results, train

log = logging.getLogger("train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", choices=sorted(models.MODELS), default="lenet300")
    p.add_argument("--dataset", choices=data.DATASETS, default="mnist")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="learning-rate schedule over all steps",
    )
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=0.0, help="decoupled weight decay")
    p.add_argument("--seed", type=int, default=0, help="seeds the initialisation and data order")
    p.add_argument("--prune", choices=sorted(PRUNERS), default="none", help="pruning algorithm")
    p.add_argument("--sparsity", type=float, default=0.9, help="target sparsity of the kernels")
    p.add_argument(
        "--validation", type=int, default=5000, help="training examples held out for validation"
    )
    p.add_argument("--data-dir", default=None, help="TFDS data dir (default: $TFDS_DATA_DIR)")
    p.add_argument("--out", default="experiments/results/train.jsonl", help="JSONL to append to")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p.parse_args(argv)


def make_optimizer(args: argparse.Namespace, total_steps: int) -> optax.GradientTransformation:
    if args.schedule == "cosine":
        lr = optax.cosine_decay_schedule(args.lr, total_steps)
    else:
        lr = optax.constant_schedule(args.lr)
    if args.optimizer == "adam":
        return optax.adamw(lr, weight_decay=args.weight_decay)
    return optax.chain(
        optax.add_decayed_weights(args.weight_decay), optax.sgd(lr, momentum=args.momentum)
    )


PRUNERS = {
    "none": None,
    "gmp": lambda s, steps, per_epoch: dp.algorithms.gmp(
        s, begin=steps // 10, end=7 * steps // 10, every=max(1, per_epoch // 4)
    ),
    "one_shot": lambda s, steps, per_epoch: dp.algorithms.one_shot(s, at=steps // 2),
    "snip": lambda s, steps, per_epoch: dp.algorithms.snip(s),
    "random": lambda s, steps, per_epoch: dp.algorithms.random(s),
    "rigl": lambda s, steps, per_epoch: dp.algorithms.rigl(s, every=100, end=3 * steps // 4),
    "set": lambda s, steps, per_epoch: dp.algorithms.sparse_evolutionary(
        s, every=100, end=3 * steps // 4
    ),
}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s")
    for name in (log.name, "dynprune"):  # third-party INFO logs (absl, jax) stay quiet
        logging.getLogger(name).setLevel(logging.INFO)
    config = {k: v for k, v in vars(args).items() if k not in ("data_dir", "out", "no_progress")}

    metadata = results.run_metadata()  # before training: the code and host this run starts with
    start = time.perf_counter()
    load = lambda split: data.load(
        args.dataset, split, validation=args.validation, data_dir=args.data_dir
    )
    train_data, test_data = load("train"), load("test")
    val_data = load("validation") if args.validation else None
    log.info(
        "%s: %d train, %d validation, %d test examples",
        args.dataset,
        len(train_data.labels),
        0 if val_data is None else len(val_data.labels),
        len(test_data.labels),
    )

    model = models.get_model(args.model)
    apply_fn = lambda p, x: model.apply({"params": p}, x)
    params = model.init(jax.random.key(args.seed), jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]
    per_epoch = len(train_data.labels) // args.batch_size
    steps = args.epochs * per_epoch
    tx = make_optimizer(args, steps)
    forward = None
    if args.prune != "none":
        tx = dp.prune(tx, PRUNERS[args.prune](args.sparsity, steps, per_epoch), seed=args.seed)
        forward = dp.masked_params
    state = train.init_state(params, tx)
    if forward is not None:  # sparse-from-the-start algorithms begin with their masks applied
        state = state._replace(params=dp.apply_masks(params, dp.masks_of(state.opt_state)))
    eval_step = train.make_eval_step(apply_fn, forward_params=forward)
    fitted = train.fit(
        state,
        train.make_train_step(apply_fn, tx, forward_params=forward),
        train_data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        eval_step=None if val_data is None else eval_step,
        eval_data=val_data,
        progress=not args.no_progress,
        on_epoch_end=lambda epoch, state, h: log.info(
            "epoch %d: train loss %.4f%s",
            epoch + 1,
            h.train_loss[-1],
            f", validation accuracy {h.eval_accuracy[-1]:.4f}" if h.eval_accuracy else "",
        ),
    )
    test_accuracy, test_loss = train.evaluate(eval_step, fitted.state, test_data, args.batch_size)

    final = fitted.state.params
    masks = None
    if forward is not None:
        final = forward(final, fitted.state.opt_state)
        masks = dp.masks_of(fitted.state.opt_state)
    report = dp.summary(jax.device_get(final), masks)
    flops = dp.stats.flops(apply_fn, final, jnp.zeros((1, 28, 28, 1), jnp.float32))
    row = {
        "key": results.run_key(config),
        "config": config,
        "method": args.prune if args.prune != "none" else "dense",
        "model": args.model,
        "dataset": args.dataset,
        "seed": args.seed,
        **metadata,
        "test_accuracy": test_accuracy,
        "test_error": 1.0 - test_accuracy,
        "test_loss": test_loss,
        "val_accuracy": fitted.history.eval_accuracy[-1] if val_data is not None else None,
        "history": fitted.history._asdict(),
        "steps": int(fitted.state.step),
        "params": report["total"]["size"],
        "nonzeros": report["total"]["nonzeros"],
        "sparsity": report["total"]["sparsity"],
        "compression": report["total"]["compression"],
        "layers": {
            k: {f: v[f] for f in ("size", "nonzeros", "sparsity")}
            for k, v in report["leaves"].items()
        },
        "flops_dense": flops["dense"],
        "flops_effective": flops["effective"],
        "train_time_s": fitted.seconds,
        "wall_time_s": time.perf_counter() - start,
    }
    results.append_jsonl(args.out, row)
    log.info("appended run %s to %s", row["key"], args.out)

    if forward is not None:
        print(dp.format_summary(report))
    header = (
        f"{'model':<12} {'dataset':<14} {'method':<9} {'epochs':>6} {'steps':>6} {'val acc':>8} "
    )
    header += f"{'test err':>9} {'compr.':>7} {'wall s':>8}"
    val = "-" if row["val_accuracy"] is None else f"{row['val_accuracy']:.4f}"
    print(header)
    print(
        f"{args.model:<12} {args.dataset:<14} {row['method']:<9} {args.epochs:>6} "
        f"{row['steps']:>6} {val:>8} {100 * row['test_error']:>8.2f}% "
        f"{row['compression']:>6.1f}x {row['wall_time_s']:>8.1f}"
    )
    return row


if __name__ == "__main__":
    main()
