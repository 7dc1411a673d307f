#!/usr/bin/env bash
# The prepared run for a machine with an accelerator (no network, no TFDS installed): run from
# the repository root with the decoded MNIST cache carried along, e.g.
#   DYNPRUNE_CACHE_DIR=cache OUT=out bash experiments/device_check.sh
# It writes to $OUT the bench (per-step ratios, sweep compiles, vmapped throughput) and the main
# sweep run sequentially and vmapped (3 points per program) on $BACKEND (default gpu), with the
# last JSON line of each. BACKEND=cpu QUICK=--quick checks the script itself on a CPU.
set -euo pipefail
out="${OUT:?set OUT to the directory for the results}"
backend="${BACKEND:-gpu}"
quick="${QUICK:-}"
mkdir -p "$out"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}."

python -c "import jax; print(jax.__version__, jax.devices('$backend'))" | tee "$out/devices.txt"
python experiments/bench.py --json $quick | tail -n 1 > "$out/bench.json"
for mode in sequential vmapped; do
  extra=(); [[ $mode == vmapped ]] && extra=(--vmap 3)
  python experiments/sweep.py mnist-frontier --backend "$backend" "${extra[@]}" $quick \
    --out "$out/frontier-$mode.jsonl" --plot "$out/frontier-$mode.png" --no-progress \
    | tail -n 1 > "$out/frontier-$mode.json"
done
cat "$out"/*.json
