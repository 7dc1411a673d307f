"""Smoke tests of experiments/bench.py: structure only, never timing targets (shared CPUs drift)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("experiments_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_compiles_once_and_ends_exactly_at_each_target(bench):
    result = bench.bench_sweep(bench.SWEEP_TARGETS, steps=6, every=2)

    assert result["compiles_across_sweep"] == 1
    assert result["sweep_step_cache_size"] == 1
    assert result["sweep_final_sparsities"] == pytest.approx(list(bench.SWEEP_TARGETS), abs=1e-4)
    assert len(result["sweep_leaves"]) == len(bench.SWEEP_TARGETS)
    for s, leaves in zip(bench.SWEEP_TARGETS, result["sweep_leaves"], strict=True):
        assert set(leaves) == {"fc1/kernel", "fc2/kernel", "fc3/kernel"}
        for leaf in leaves.values():
            assert leaf["mask_zeros"] == leaf["param_zeros"] == round(s * leaf["size"])
    assert result["sweep_exact"]


def test_vmapped_program_compiles_once_and_matches_sequential_sparsities(bench):
    k = 3
    result = bench.bench_vmap_throughput(k, steps=4, every=2, reps=1)  # raises if they differ

    assert result["sweep_compiles"] == 1
    assert result["vmap_program_compiles"] == {"sequential/prune": 1, "vmapped/prune": 1}
    assert result["vmap_points"] == k
    assert result["vmap_final_sparsities"] == result["sequential_final_sparsities"]
    assert result["vmap_final_sparsities"] == pytest.approx(result["vmap_targets"], abs=1e-4)
    for key in ("vmap_throughput_ratio", "vmap_model_steps_per_s", "sequential_model_steps_per_s"):
        assert math.isfinite(result[key]) and result[key] > 0, key


def test_selection_agrees_with_argsort_baseline(bench):
    result = bench.bench_selection(((64, 48), (48, 10)), reps=2)  # raises if masks differ

    assert result["weights"] == 64 * 48 + 48 * 10
    assert result["sparsity"] == pytest.approx(round(0.9 * result["weights"]) / result["weights"])
    for key in ("speedup", "ours_ms", "sort_ms"):
        assert math.isfinite(result[key]) and result[key] > 0


def test_idle_pruner_never_fires_and_every_step_pruner_always_does(bench):
    assert bench.updates_in_window(bench.idle_pruner(), 0, 10_000) == 0
    assert bench.updates_in_window(bench.every_step_pruner(), 0, 50) == 50
    assert bench.updates_in_window(bench.gmp_pruner(1900, 100), 0, 2000) == 20


@pytest.mark.slow
def test_quick_json_has_every_key_and_sane_values(bench, monkeypatch, capsys):
    monkeypatch.setattr(bench, "MLP4M_SHAPES", ((784, 64), (64, 10)))
    bench.main(["--quick", "--json", "--reps", "2"])

    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(bench.REQUIRED_KEYS) <= set(result)
    for key in bench.RATIO_KEYS:
        values = result[key].values() if isinstance(result[key], dict) else [result[key]]
        assert all(math.isfinite(v) and v > 0 for v in values), key
    assert set(result["step_overhead_ratio"]) == set(bench.MODELS)
    assert set(result["step_overhead_ratio_one_program"]) == set(bench.MODELS)
    assert set(result["mask_update_ratio"]) == {
        "lenet300/global",
        "lenet300/layer",
        "mlp4m/global",
        "mlp4m/layer",
    }
    assert result["compiles_across_sweep"] == 1 and result["sweep_exact"]
    assert result["sweep_final_sparsities"] == pytest.approx(list(bench.SWEEP_TARGETS), abs=1e-4)
    assert result["sweep_compiles"] == 1 and result["vmap_points"] == bench.VMAP_POINTS
    assert math.isfinite(result["vmap_throughput_ratio"]) and result["vmap_throughput_ratio"] > 0
    assert set(result["update_step_sparsity"]) == set(result["mask_update_ratio"])
    assert all(v == pytest.approx(0.9, abs=1e-5) for v in result["update_step_sparsity"].values())
    assert result["gmp_run_updates"] == 3 and result["gmp_run_final_sparsity"] == pytest.approx(0.9)
    assert result["select_weights_4m"] == 784 * 64 + 64 * 10
    relative = {"reconstruct_speedup", "gating_speedup_b1", "cascade_speedup_b1"}  # vs MACs
    assert set(result["targets_met"]) == {*bench.TARGETS, *relative}
    assert result["reconstruct_architecture"] == "784-16"  # 75% of the 64 hidden units gone
    # t at the confidences' 10% quantile: 6 or 7 of 64 inputs also run the full width
    assert 0.05 < result["cascade_escalated"] < 0.15 and result["cascade_mac_ratio"] > 1
    assert result["backend"] == "cpu" and result["reps"] == 2 and result["quick"] is True
