"""Smoke test of experiments/train.py on real MNIST."""

import importlib.util
import subprocess
import sys
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
    forced = job.main([*argv, "--out", str(out), "--no-progress", "--force"])
    assert forced["key"] == f"{row['key']}-1" and forced["repeat_of"] == row["key"]
    assert [r["key"] for r in results.read_jsonl(out)] == [row["key"], forced["key"]]
    assert forced["val_error"] == row["val_error"]  # deterministic on one machine


@pytest.mark.parametrize(
    "bad",
    [
        ["--epochs", "0"],
        ["--batch-size", "0"],
        ["--lr", "nan"],
        ["--weight-decay", "inf"],
        ["--target", "1.5"],
        ["--target", "nan"],
        ["--prune", "magic"],
    ],
)
def test_bad_arguments_are_argument_errors(job, bad, capsys):
    with pytest.raises(SystemExit) as exit:
        job.parse_args(bad)
    assert exit.value.code == 2 and "error: argument" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["sweep.py", "reproduce.py"])
@pytest.mark.parametrize("bad", [["--seeds", "0"], ["--seeds", "-2"]])
def test_other_scripts_refuse_bad_counts(script, bad):
    path = SCRIPT.parent / script
    first = "mnist-frontier" if script == "sweep.py" else "origin-example"
    done = subprocess.run(
        [sys.executable, str(path), first, *bad], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "argument --seeds: must be >= 1" in done.stderr


def test_the_baselines_are_keyed_by_their_config_data():
    root = Path(__file__).resolve().parents[1]
    for row in results.read_jsonl(root / "experiments/results/baselines.jsonl"):
        run = config.from_dict(row["config"])
        assert row["key"] == config.run_key(run, row["seed"], test=True)
