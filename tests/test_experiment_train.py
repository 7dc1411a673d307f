"""Smoke test of the main job, experiments/train.py, on real MNIST."""

import importlib.util
from pathlib import Path

import pytest

from dynprune.harness import results

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "train.py"


@pytest.mark.slow
def test_main_job_trains_evaluates_and_appends_a_row(tfds_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("experiments_train", SCRIPT)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    out = tmp_path / "results" / "train.jsonl"
    argv = ["--model", "origin_mlp", "--epochs", "1", "--data-dir", str(tfds_dir)]
    job.main([*argv, "--out", str(out), "--no-progress"])

    (row,) = results.read_jsonl(out)
    assert row["model"] == "origin_mlp" and row["dataset"] == "mnist" and row["seed"] == 0
    assert row["steps"] == 55000 // 128
    assert row["params"] == row["nonzeros"] == 101_770 and row["sparsity"] == 0.0
    assert 0.0 < row["test_error"] < 0.1 and row["test_accuracy"] == pytest.approx(
        1.0 - row["test_error"]
    )
    assert row["flops_dense"] > 2 * 101_000  # at least one multiply-add per weight
    assert row["backend"] and row["key"] == results.run_key(row["config"])
    assert "origin_mlp" in capsys.readouterr().out
