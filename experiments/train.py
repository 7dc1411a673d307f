"""Trains one reference model on MNIST or Fashion-MNIST, optionally pruning it, and appends a row.

A thin command line over ``dynprune.harness.experiment.run``: the arguments become a
``RunConfig`` (data), the run's key is the hash of that data, and a run whose key is already in
``--out`` is skipped. Validation error always (5,000 training images held out); ``--test`` adds
test error (for final runs of settings fixed in advance).

With ``--prune`` the optimizer is wrapped in ``dp.prune`` and the masks are updated inside the
jitted step: ``gmp`` ramps to ``--target`` between 10% and 70% of the run (every quarter
epoch), ``one_shot`` prunes by magnitude at the middle of the run, ``snip`` and ``random`` at
step 0, ``rigl`` and ``set`` train sparse from an ERK start (mask updates every 100 steps
until 75% of the run).

With ``--checkpoint-dir DIR`` the run saves its whole state (params, optimizer state with the
masks, PRNG key, records, position in the data order) in ``DIR/<run key>/`` every
``--checkpoint-every`` steps (default: every epoch). Run the same command again after a kill
or a crash and it resumes from there, ending with the row an uninterrupted run writes. Ctrl-C
(SIGINT) finishes the current step, saves, and exits with status 130. A finished run deletes
its checkpoint unless ``--keep-checkpoints``.

Example:
  python experiments/train.py --model lenet300 --epochs 20 --prune gmp --target 0.95
  python experiments/train.py --model lenet300 --prune gmp --checkpoint-dir checkpoints
"""

from __future__ import annotations

import argparse
import logging
import sys

from dynprune.harness import cli, config, data, experiment, models, results

log = logging.getLogger("train")

PRUNERS = {
    "gmp": {"algorithm": "gmp", "begin": 0.1, "end": 0.7, "every": {"epochs": 0.25}},
    "one_shot": {"algorithm": "one_shot", "at": 0.5},
    "snip": {"algorithm": "snip"},
    "random": {"algorithm": "random"},
    "rigl": {"algorithm": "rigl", "every": 100, "end": 0.75},
    "set": {"algorithm": "set", "every": 100, "end": 0.75},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", choices=sorted(models.MODELS), default="lenet300")
    p.add_argument("--dataset", choices=data.DATASETS, default="mnist")
    p.add_argument("--epochs", type=cli.positive, default=20)
    p.add_argument("--batch-size", type=cli.positive, default=128)
    p.add_argument("--optimizer", choices=config.OPTIMIZERS, default="adam")
    p.add_argument("--lr", type=cli.finite, default=1e-3, help="peak learning rate")
    p.add_argument("--schedule", choices=config.SCHEDULES, default="cosine")
    p.add_argument("--momentum", type=cli.finite, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=cli.finite, default=0.0, help="AdamW decay / SGD L2")
    p.add_argument("--seed", type=int, default=0, help="seeds the initialisation and data order")
    p.add_argument("--prune", choices=["none", *PRUNERS], default="none", help="algorithm")
    p.add_argument(
        "--target", type=cli.fraction, default=0.9, help="target sparsity of the kernels"
    )
    p.add_argument("--validation", type=int, default=5000, help="training images held out")
    p.add_argument("--test", action="store_true", help="also compute test error")
    p.add_argument("--data-dir", default=None, help="TFDS data dir (default: $TFDS_DATA_DIR)")
    p.add_argument("--out", default="experiments/results/train.jsonl", help="JSONL to append to")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--force", action="store_true", help="run even if --out has this run: a distinct row"
    )
    cli.add_checkpoint_arguments(p)
    return p.parse_args(argv)


def run_config(args: argparse.Namespace) -> config.RunConfig:
    pruner = None if args.prune == "none" else {**PRUNERS[args.prune], "target": args.target}
    phase = config.Phase(
        epochs=args.epochs,
        lr=args.lr,
        pruner=pruner,
        optimizer=args.optimizer,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
    )
    return config.RunConfig(
        model=args.model,
        prune=phase,
        dataset=args.dataset,
        validation=args.validation,
        batch_size=args.batch_size,
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    run = run_config(args)
    key = config.run_key(run, args.seed, test=args.test)
    done = results.completed_keys(args.out)
    extra: dict = {}
    if key in done and not args.force:
        log.info("run %s is already in %s: skipped (--force runs it again)", key, args.out)
        return next(r for r in results.read_jsonl(args.out) if r.get("key") == key)
    if key in done:  # a repeat is its own row, under a key of its own
        extra["repeat_of"] = key
        key = f"{key}-{sum(k.startswith(f'{key}-') for k in done) + 1}"
    metadata = results.run_metadata()  # before training: the code and host this run starts with
    checkpoints = cli.checkpoint_options(args)
    with cli.stops(__file__, argv, checkpoints):
        row = experiment.run(
            run,
            args.seed,
            test=args.test,
            data_dir=args.data_dir,
            progress=not args.no_progress,
            checkpoints=checkpoints,
        )
    row = {
        "key": key,
        "config": config.to_dict(run),
        "model": args.model,
        **extra,
        **metadata,
        **row,
    }
    results.append_jsonl(args.out, row, unique=True)
    log.info("appended run %s to %s", key, args.out)
    if row["status"] == "diverged":
        sys.exit(f"train.py: diverged at step {row['diverged_at']['step']} ({args.out}: {key})")

    print(f"{'leaf':<16} {'size':>10} {'nonzeros':>10} {'sparsity':>9}")
    for path, leaf in row["layers"].items():
        print(f"{path:<16} {leaf['size']:>10,} {leaf['nonzeros']:>10,} {leaf['sparsity']:>9.2%}")
    test = f" {100 * row['test_error']:>8.2f}%" if args.test else ""
    print(
        f"{'model':<12} {'method':<9} {'steps':>6} {'val err':>8}{' test err' if test else ''}"
        f" {'compr.':>7} {'wall s':>7}"
    )
    print(
        f"{args.model:<12} {row['method']:<9} {row['steps']:>6} {100 * row['val_error']:>7.2f}%"
        f"{test} {row['compression']:>6.1f}x {row['wall_s']:>7.1f}"
    )
    return row


if __name__ == "__main__":
    main()
