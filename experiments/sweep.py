"""Sweep pruning methods × their knob values × seeds on a named config; print a table, plot.

Usage:
  python experiments/sweep.py CONFIG [--set KEY=V1,V2,...]... [--seeds N] [--out FILE]
      [--vmap K] [--devices all|N] [--backend cpu|gpu|tpu] [--shard I/N] [--test] [--quick]
  python experiments/sweep.py --list

CONFIG names a JSON file in experiments/configs/ (or is a path to one). ``--set`` overrides
or sweeps any field: ``--set prune.target=0.8,0.9,0.95`` (a pruner argument, here the knob of
GMP and one-shot), ``--set prune.epochs=5``, ``--set method=gmp,dns``,
``--set dns.warmup=0.2,0.4``; values are JSON, and a JSON object or array is one value
(``--set 'dns.c={"fc1": 5.0, "default": 1.0}'``). Each (point, seed) is one row in
``--out``; finished rows are skipped, so a killed sweep resumes. ``--vmap K`` trains K points
as one vmapped program; ``--devices`` shards them over that many devices. ``--shard I/N`` runs
the I-th of N disjoint slices of the grid (one per job of a cluster array; all write to the
same ``--out``).

``--checkpoint-dir DIR`` saves each program's whole state (one run, or the K points of a
vmapped one) in ``DIR/<key>/`` every ``--checkpoint-every`` steps (default: every epoch), so
that the run a kill interrupted resumes where it was, ending with the rows an uninterrupted
sweep writes. Ctrl-C (SIGINT) finishes the current step, saves, and exits with status 130.
Finished runs delete their checkpoints unless ``--keep-checkpoints``.

Validation error only; ``--test`` adds test error (final runs of fixed configurations only).
The last line printed is one JSON object: runs, skipped, rows, compiles, out, plot, wall_s.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dynprune.harness import cli, sweep, sweep_runner

CONFIGS = Path(__file__).resolve().parent / "configs"
RESULTS = Path(__file__).resolve().parent / "results"


def configs() -> dict[str, Path]:
    return {p.stem: p for p in sorted(CONFIGS.glob("*.json"))}


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_set(item: str) -> tuple[str, list[object]]:
    """``KEY=V1,V2`` -> (KEY, [V1, V2]), each value JSON (else a string); a JSON object or
    array (``KEY={...}``) is one value."""
    key, sep, text = item.partition("=")
    if not sep or not key or not text:
        raise argparse.ArgumentTypeError(f"--set takes KEY=V1,V2,..., got {item!r}")
    if text[0] in "{[":
        try:
            return key, [json.loads(text)]
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"--set {key}: not JSON: {err}") from None
    return key, [parse_value(v) for v in text.split(",")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("config", nargs="?", help="a config in experiments/configs/ (--list)")
    p.add_argument("--list", action="store_true", help="list the configs and exit")
    p.add_argument("--set", type=parse_set, action="append", default=[], metavar="KEY=V1,V2")
    p.add_argument("--seeds", type=cli.positive, default=None, help="seeds per point (config's)")
    p.add_argument("--out", default=None, help="JSONL results (default: the config's)")
    p.add_argument("--plot", default=None, help="PNG plot (default: beside --out)")
    p.add_argument("--vmap", type=cli.positive, default=None, help="points per vmapped program")
    p.add_argument("--devices", default=None, help="'all' or N: shard vmapped points")
    p.add_argument("--backend", choices=("cpu", "gpu", "tpu"), default=None)
    p.add_argument("--shard", default=None, metavar="I/N", help="run the I-th of N slices")
    p.add_argument("--test", action="store_true", help="also compute test error")
    p.add_argument("--quick", action="store_true", help="smoke mode: 1 epoch, 2,048 images")
    p.add_argument("--data-dir", default=None, help="TFDS data dir (default: $TFDS_DATA_DIR)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    cli.add_checkpoint_arguments(p)
    p.add_argument(
        "--distributed",
        action="store_true",
        help="join jax.distributed (every host's devices); see --coordinator",
    )
    p.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (distributed)")
    p.add_argument("--num-processes", type=cli.positive, default=None, help="(distributed)")
    p.add_argument("--process-id", type=int, default=None, help="(distributed)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    available = configs()
    if args.list or args.config is None:
        for name, path in available.items():
            print(f"{name:<20} {sweep.load(path).description}")
        return {}
    path = available.get(args.config) or Path(args.config)
    if not (args.config.endswith(".json") and path.is_file()) and args.config not in available:
        sys.exit(
            f"sweep.py: error: unknown config {args.config!r}; valid configs: "
            f"{', '.join(available)} (or a path to a .json file)"
        )
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s", level=logging.WARNING)
    if args.distributed:
        sweep_runner.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    checkpoints = cli.checkpoint_options(args)

    with cli.stops(__file__, argv, checkpoints):
        summary = sweep_runner.run_sweep(
            path,
            overrides=dict(args.set),
            seeds=args.seeds,
            out=args.out,
            results_dir=RESULTS,
            plot_path=args.plot,
            vmap=args.vmap,
            devices=args.devices,
            backend=args.backend,
            shard=args.shard,
            test=args.test,
            quick_mode=args.quick,
            data_dir=args.data_dir,
            progress=not args.no_progress,
            checkpoints=checkpoints,
        )
    print(summary["table"])
    del summary["table"]
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
