"""Smoke test of experiments/reproduce.py (quick mode: 1 epoch per phase on 2k images)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from dynprune.harness import config, recipes, results

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "reproduce.py"


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("experiments_reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.slow
def test_quick_recipe_appends_rows_resumes_and_prints_summary(
    reproduce, tfds_dir, tmp_path, capsys
):
    out = tmp_path / "repro.jsonl"
    foreign = {"key": "0123456789abcdef", "sweep": "mnist-frontier", "method": "gmp"}
    results.append_jsonl(out, foreign)  # another script's row in the same file is left alone
    argv = ["origin-example", "--quick", "--seeds", "2", "--out", str(out)]
    summary = reproduce.main([*argv, "--data-dir", str(tfds_dir)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == summary
    assert set(last) >= {"recipe", "test_error", "test_error_std", "compression", "seeds", "wall_s"}
    foreign_row, *rows = results.read_jsonl(out)
    assert foreign_row == foreign
    assert [r["seed"] for r in rows] == [0, 1] and last["seeds"] == 2
    for row in rows:
        assert row["key"] == config.run_key(config.from_dict(row["config"]), row["seed"], test=True)
        assert row["compression"] == pytest.approx(row["params"] / row["nonzeros"])
        kernels = [v for k, v in row["layers"].items() if k.endswith("kernel")]
        assert row["weights_compression"] == pytest.approx(
            sum(v["size"] for v in kernels) / sum(v["nonzeros"] for v in kernels)
        )
        assert row["params"] == 101_770 and 0 < row["nonzeros"] < row["params"]
        assert row["flops_effective"] < row["flops_dense"]
        assert "before_finetune_test_error" in row and "dense_test_error" in row
    table = out.with_suffix(".md").read_text()
    assert "| recipe |" in table

    # A rerun finds both seeds done and trains nothing; a third seed is added.
    reproduce.main([*argv, "--data-dir", str(tfds_dir)])
    assert len(results.read_jsonl(out)) == 3
    reproduce.main([*argv[:-3], "3", "--out", str(out), "--data-dir", str(tfds_dir)])
    assert [r.get("seed") for r in results.read_jsonl(out)] == [None, 0, 1, 2]


def test_every_recipe_is_listed(reproduce, capsys):
    reproduce.main(["--list"])
    listed = capsys.readouterr().out
    for name, recipe in recipes.load(reproduce.RECIPES).items():
        assert name in listed
        assert recipe.description in listed


def test_the_committed_rows_are_keyed_by_their_config_data():
    """Every committed row's key is the hash of the config data it carries, and the rows of
    each recipe's current configuration are found (the README table is built from them)."""
    root = Path(__file__).resolve().parents[1]
    rows = results.read_jsonl(root / "experiments/results/reproductions.jsonl")
    for row in rows:
        run = config.from_dict(row["config"])
        assert row["key"] == config.run_key(run, row["seed"], test=True)
    loaded = recipes.load(root / "experiments/recipes.json")
    for name, recipe in loaded.items():
        assert len(recipes.rows_of(rows, name, recipe)) == recipe.seeds, name
    table = recipes.format_table(rows, loaded)
    assert table == (root / "experiments/results/reproductions.md").read_text()
