"""Per-input pruning on MNIST and Fashion-MNIST: dynamic networks (FBS-gated, dynamic
slimmable, or a confidence cascade over the slimmable supernet's widths) vs dense vs static
at equal MACs.

A thin command line over ``dynprune.harness.gating_runs``; the experiment is the data in
``--config``: ``experiments/gating.json`` (default; the FBS-gated method, candidate
densities) or ``experiments/gating-dsnet.json`` (the dynamic slimmable method, candidate
MAC weights); a config's ``thresholds`` add the cascade, one candidate threshold each.
Two stages, in order:

  validation  per dataset, the dense run and one run per candidate setting of each dynamic
              method (selection seed), evaluated on the 5,000 held-out training images; no
              test image is read.
  test        per dataset, the setting the validation rows choose for each dynamic method
              (``gating_runs.choose``), and per test seed the dense run, the dynamic run and
              the static run at its MACs, evaluated on the test set.
  table       print the test rows' table (also written next to ``--out`` as ``.md``).
  latency     time the test rows' cascade, slimmable and static networks against their dense
              runs again (``gating_runs.remeasure``; nothing trained, no row written), e.g.
              with the machine otherwise idle, since a row's speedups were measured beside
              whatever else ran; the table is printed and written next to ``--out`` as
              ``-latency.md``.

Rows go to ``--out`` (default ``experiments/results/<config name>.jsonl``) once per run
key: run the same command again after a kill and it goes on with the runs that are
missing. ``--dataset`` restricts a stage to one dataset (two processes, one per dataset,
may share ``--out``).

Example:
  python experiments/gating.py validation
  python experiments/gating.py test
  python experiments/gating.py validation --config experiments/gating-dsnet.json --dataset mnist
  python experiments/gating.py latency --config experiments/gating-cascade.json
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from dynprune.harness import gating_runs, recipes, results

log = logging.getLogger("gating")

HERE = Path(__file__).parent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("stage", choices=["validation", "test", "table", "latency"])
    p.add_argument("--config", type=Path, default=HERE / "gating.json")
    p.add_argument("--out", type=Path, help="default: experiments/results/<config name>.jsonl")
    p.add_argument("--dataset", help="run one dataset of the config only")
    p.add_argument("--data-dir", help="TFDS data directory (default: $TFDS_DATA_DIR)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = gating_runs.load_config(args.config)
    if args.out is None:
        args.out = HERE / "results" / f"{args.config.stem}.jsonl"
    if args.dataset is not None:
        if args.dataset not in config.datasets:
            p.error(f"--dataset {args.dataset!r} is not in the config's {config.datasets}")
        config = dataclasses.replace(config, datasets=(args.dataset,))
    if args.stage == "latency":
        table = latency_table(config, results.read_jsonl(args.out), args.data_dir)
        recipes.write_atomically(args.out.with_name(f"{args.out.stem}-latency.md"), table + "\n")
        print(table)
        return
    if args.stage != "table":
        for kwargs in gating_runs.plan(config, results.read_jsonl(args.out), args.stage):
            row = gating_runs.run(config, **kwargs, out=args.out, data_dir=args.data_dir)
            run = " ".join(filter(None, (row["method"], gating_runs.setting_label(row))))
            log.info(
                "%s %s seed %d (%s): error %.2f%%, MAC ratio %.2fx, speedup b1 %.2fx",
                row["dataset"], run, row["seed"], row["split"],
                100 * row["error"], row["mac_ratio"], row["speedup_b1"],
            )  # fmt: skip
    table = gating_runs.format_table(results.read_jsonl(args.out), config)
    recipes.write_atomically(args.out.with_suffix(".md"), table + "\n")
    print(table)


def latency_table(config: gating_runs.Config, rows: list[dict], data_dir: str | None) -> str:
    """Per test row that :func:`gating_runs.remeasure` can time (in ``config.datasets``),
    its speedups as written and as measured now, then the mean of each arm."""
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} "
        f"({os.cpu_count()} CPUs): dense ÷ method latency, batch 1 summed over "
        f"{config.latency_examples} test images, batch 64 the first 64; {config.latency_reps} "
        "interleaved rounds, medians.",
        "",
        "| dataset | method | setting | seed | MAC ratio | b1 (row) | b1 (now) | b64 (row) "
        "| b64 (now) | b1 now ÷ MAC ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    arms: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
    for row in rows:
        if not (
            row.get("experiment") == "gating"
            and row["split"] == "test"
            and row["dataset"] in config.datasets
            and row["method"] in gating_runs.REMEASURABLE
        ):
            continue
        now = gating_runs.remeasure(config, row, data_dir=data_dir)
        setting = gating_runs.setting_label(row)
        arms.setdefault((row["dataset"], row["method"], setting), []).append(
            (row["mac_ratio"], now["speedup_b1"], now["speedup_b64"])
        )
        lines.append(
            f"| {row['dataset']} | {row['method']} | {setting} | {row['seed']} "
            f"| {row['mac_ratio']:.2f}x | {row['speedup_b1']:.2f}x | {now['speedup_b1']:.2f}x "
            f"| {row['speedup_b64']:.2f}x | {now['speedup_b64']:.2f}x "
            f"| {now['speedup_b1'] / row['mac_ratio']:.2f} |"
        )
        log.info("%s", lines[-1])
    for (dataset, method, setting), values in arms.items():
        macs, b1, b64 = np.mean(values, axis=0)
        lines.append(
            f"| {dataset} | {method} | {setting} | mean of {len(values)} | {macs:.2f}x |  "
            f"| {b1:.2f}x |  | {b64:.2f}x | {b1 / macs:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
