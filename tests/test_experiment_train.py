"""Smoke test of experiments/train.py on real MNIST."""

import importlib.util
from pathlib import Path

import pytest

from dynprune.harness import config, results

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "train.py"


@pytest.fixture(scope="module")
def job():
    spec = importlib.util.spec_from_file_location("experiments_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_run_trains_evaluates_appends_a_row_and_is_not_run_twice(job, tfds_dir, tmp_path, capsys):
    out = tmp_path / "results" / "train.jsonl"
    argv = ["--model", "origin_mlp", "--epochs", "1", "--data-dir", str(tfds_dir), "--test"]
    job.main([*argv, "--out", str(out), "--no-progress"])

    (row,) = results.read_jsonl(out)
    assert row["model"] == "origin_mlp" and row["seed"] == 0 and row["method"] == "dense"
    assert row["steps"] == 55000 // 128
    assert row["params"] == row["nonzeros"] == 101_770 and row["sparsity"] == 0.0
    assert 0.0 < row["test_error"] < 0.1 and 0.0 < row["val_error"] < 0.1
    assert row["flops_dense"] > 2 * 101_000  # at least one multiply-add per weight
    run = config.from_dict(row["config"])
    assert row["backend"] and row["key"] == config.run_key(run, 0, test=True)
    assert "origin_mlp" in capsys.readouterr().out

    assert job.main([*argv, "--out", str(out), "--no-progress"]) == row
    assert len(results.read_jsonl(out)) == 1


@pytest.mark.parametrize(
    "bad", [["--epochs", "0"], ["--batch-size", "0"], ["--lr", "nan"], ["--prune", "magic"]]
)
def test_bad_arguments_are_argument_errors(job, bad, capsys):
    with pytest.raises(SystemExit) as exit:
        job.parse_args(bad)
    assert exit.value.code == 2 and "error: argument" in capsys.readouterr().err


def test_the_baselines_are_keyed_by_their_config_data():
    root = Path(__file__).resolve().parents[1]
    for row in results.read_jsonl(root / "experiments/results/baselines.jsonl"):
        run = config.from_dict(row["config"])
        assert row["key"] == config.run_key(run, row["seed"], test=True)
