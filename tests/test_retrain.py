"""Tests for the retrain phase: reconstruct the pruned model smaller, retrain it, measure it."""

import dataclasses
import json
import math

import pytest

from dynprune.harness import config, experiment, results

PRUNE = config.Phase(epochs=1, lr=3e-3)
RETRAIN = config.Phase(epochs=1, lr=1e-3)
TINY = config.RunConfig(model="origin_mlp", examples=512, batch_size=64, prune=PRUNE)


def neurons(target: float) -> config.RunConfig:
    """Sensitivity pruning of the hidden layer's neurons (origin doc §4.1), the logits kept."""
    spec = {"algorithm": "sensitivity", "target": target, "overrides": {"fc2": 0.0}}
    return dataclasses.replace(TINY, prune=dataclasses.replace(PRUNE, pruner=spec), retrain=RETRAIN)


@pytest.fixture(scope="module")
def splits(tfds_dir):
    return experiment.load_splits(TINY, tfds_dir)


def test_a_config_without_retrain_keeps_its_data_and_key():
    old = dataclasses.replace(
        TINY,
        prune=dataclasses.replace(PRUNE, pruner={"algorithm": "one_shot", "target": 0.5}),
        finetune=config.Phase(epochs=1, lr=1e-4),
    )
    values = config.to_dict(old)
    assert "retrain" not in values
    assert config.from_dict({**values, "retrain": None}) == old
    # Keys computed by the code before the retrain field existed.
    assert config.run_key(old, 0, test=False) == "e82af033b445faf4"
    assert config.run_key(old, 3, test=True, mode="final") == "ba111ec2023e22fc"
    assert config.run_key(old, 0, test=False) == results.run_key(
        {"config": values, "seed": 0, "test": False}
    )


def test_a_config_with_retrain_round_trips_and_has_its_own_key():
    run = neurons(0.5)
    values = json.loads(json.dumps(config.to_dict(run)))
    assert values["retrain"] == config.phase_dict(RETRAIN) and "distill" not in values["retrain"]
    assert config.from_dict(values) == run
    assert [name for name, _ in run.phases()] == ["prune", "retrain"]
    without = dataclasses.replace(run, retrain=None)
    assert config.run_key(run, 0, test=False) != config.run_key(without, 0, test=False)
    with pytest.raises(ValueError, match="retrain trains the reconstructed model densely"):
        dataclasses.replace(run, retrain=dataclasses.replace(RETRAIN, pruner=run.prune.pruner))


def test_vmapped_points_each_retrain_their_own_smaller_model(splits):
    targets = (0.25, 0.5)
    rows = experiment.run_points([neurons(t) for t in targets], [0, 0], splits=splits)
    validation = len(splits["validation"].labels)
    for target, row in zip(targets, rows, strict=True):
        kept = 128 - round(target * 128)
        assert row["layers"]["fc1/kernel"]["nonzeros"] == 784 * kept  # whole columns went
        assert row["architecture"] == f"784-{kept}"
        assert row["dense_architecture"] == "784-128"
        assert row["reconstructed_params"] == 784 * kept + kept + kept * 10 + 10
        assert row["reconstructed_macs"] == 784 * kept + kept * 10
        assert row["points_in_program"] == 2
        # Surgery is exact: the smaller model classifies the validation split as w ⊙ m did.
        assert row["reconstructed_val_error"] == pytest.approx(
            row["pruned_val_error"], abs=1.01 / validation
        )
        assert 0 <= row["val_error"] < 1
        # The retrain starts from the pruned weights, not from a fresh initialisation.
        assert row["train_loss"]["retrain"][0] < row["train_loss"]["prune"][0]
        assert row["phase_steps"] == {"prune": 8, "retrain": 8} and row["steps"] == 16
        assert row["retrain_speedup"] > 0
        assert set(row["inference_speedup"]) == {"1", "256"}
        assert all(math.isfinite(s) and s > 0 for s in row["inference_speedup"].values())
        assert "test_error" not in row and "pruned_test_error" not in row
        json.loads(results.dumps(row))


def test_nothing_to_remove_retrains_the_same_size_model(splits):
    dense = dataclasses.replace(TINY, retrain=RETRAIN)
    row = experiment.run(dense, 1, splits=splits, test=True)
    assert row["architecture"] == row["dense_architecture"] == "784-128"
    assert row["reconstructed_params"] == row["params"] == 101_770
    assert row["reconstructed_val_error"] == pytest.approx(row["pruned_val_error"], abs=1e-9)
    assert 0 <= row["test_error"] < 1 and 0 <= row["pruned_test_error"] < 1
    assert row["status"] == "ok" and len(row["train_loss"]["retrain"]) == 1


DISTILL = config.Phase(epochs=1, lr=1e-3, distill={"alpha": 0.7, "temperature": 3.0})


def test_distill_is_checked_and_keyed_and_only_retrain_with_a_teacher_takes_it():
    run = dataclasses.replace(neurons(0.5), pretrain=PRUNE, retrain=DISTILL)
    values = json.loads(json.dumps(config.to_dict(run)))
    assert values["retrain"]["distill"] == {"alpha": 0.7, "temperature": 3.0}
    assert config.from_dict(values) == run
    plain = dataclasses.replace(run, retrain=RETRAIN)
    assert config.run_key(run, 0, test=False) != config.run_key(plain, 0, test=False)
    with pytest.raises(ValueError, match=r"distill alpha must be a finite number in \[0, 1\]"):
        config.Phase(epochs=1, lr=1e-3, distill={"alpha": 1.5, "temperature": 3.0})
    with pytest.raises(ValueError, match="distill takes"):
        config.Phase(epochs=1, lr=1e-3, distill={"alpha": 0.5})
    with pytest.raises(ValueError, match=r"distill \(in retrain\) applies to .* pretrain"):
        dataclasses.replace(neurons(0.5), retrain=DISTILL)
    with pytest.raises(ValueError, match=r"distill \(in prune\)"):
        dataclasses.replace(run, prune=dataclasses.replace(DISTILL, pruner=run.prune.pruner))


def test_a_distilled_retrain_trains_on_the_teachers_soft_targets(splits):
    """Same pruned model, same data order: only the retrain's loss differs."""
    run = dataclasses.replace(neurons(0.5), pretrain=PRUNE, retrain=DISTILL)
    plain = dataclasses.replace(run, retrain=RETRAIN)
    distilled, reference = (experiment.run(r, 0, splits=splits) for r in (run, plain))
    assert distilled["pruned_val_error"] == reference["pruned_val_error"]
    assert distilled["train_loss"]["prune"] == reference["train_loss"]["prune"]
    assert distilled["train_loss"]["retrain"] != reference["train_loss"]["retrain"]
    assert distilled["status"] == "ok" and 0 <= distilled["val_error"] < 1
