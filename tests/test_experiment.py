"""Tests for dynprune.harness.experiment: one run's row, divergence, the pretrained cache."""

import dataclasses
import json
import logging

import jax.numpy as jnp
import numpy as np
import pytest

from dynprune.harness import config, experiment, results

TINY = config.RunConfig(
    model="origin_mlp",
    examples=512,
    batch_size=64,
    prune=config.Phase(epochs=1, lr=3e-3, pruner={"algorithm": "one_shot", "target": 0.5}),
)


@pytest.fixture(scope="module")
def splits(tfds_dir):
    return experiment.load_splits(TINY, tfds_dir)


def test_a_diverging_run_stops_and_says_so_in_strict_json(splits):
    exploding = dataclasses.replace(
        TINY, prune=config.Phase(epochs=5, lr=1e12, optimizer="sgd", pruner=None)
    )
    row = experiment.run(exploding, 0, splits=splits)
    assert row["status"] == "diverged"
    assert row["diverged_at"]["phase"] == "prune" and 0 <= row["diverged_at"]["step"] < 8
    assert row["train_loss"]["prune"] == [None]  # stopped after the first epoch of 5
    json.loads(results.dumps(row))  # strict JSON: no bare NaN


def test_a_healthy_run_is_ok_and_exact(splits):
    row = experiment.run(TINY, 0, splits=splits)
    assert row["status"] == "ok" and "diverged_at" not in row
    assert row["layers"]["fc1/kernel"]["nonzeros"] == 128 * 784 // 2
    # a bias has no mask: stored rows tell it from a layer pruned at 0%
    assert row["layers"]["fc1/kernel"]["pruned"] is True
    assert row["layers"]["fc1/bias"]["pruned"] is False
    assert row["trace"] == [
        {"phase": "prune", "step": 0, "kept": (100_352 + 1280) // 2, "pruned": 50_816, "regrown": 0}
    ]
    assert "test_error" not in row and 0 < row["val_error"] < 1


def test_points_of_different_groups_are_refused(splits):
    other = dataclasses.replace(TINY, batch_size=32)
    with pytest.raises(ValueError, match="differ only in pruner state values"):
        experiment.run_points([TINY, other], [0, 0], splits=splits)
    with pytest.raises(ValueError, match="as many seeds as configs"):
        experiment.run_points([TINY], [0, 1], splits=splits)


@pytest.mark.slow
def test_a_corrupt_pretrained_cache_is_named_and_retrained(splits, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DYNPRUNE_CACHE_DIR", str(tmp_path))
    pretrained = dataclasses.replace(TINY, pretrain=config.Phase(epochs=1, lr=1e-3))
    first = experiment.run(pretrained, 3, splits=splits)
    (entry,) = (tmp_path / "pretrained").glob("origin_mlp-*.msgpack")
    entry.write_bytes(entry.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        again = experiment.run(pretrained, 3, splits=splits)
    assert str(entry) in caplog.text and "retraining" in caplog.text
    assert again["dense_val_error"] == first["dense_val_error"]
    assert again["val_error"] == first["val_error"]


def test_a_hyperparameter_gone_bad_inside_jit_writes_no_row(splits, monkeypatch):
    """A value set in the state without the host-side checks (as code inside jit would) is
    caught at the next host sync: the run raises instead of returning a row."""
    initial_states = experiment._Points.initial_states

    def corrupted(self, phase, params, pruners, seeds):
        states = initial_states(self, phase, params, pruners, seeds)
        for i, s in enumerate(states):
            hp = {**s.opt_state.hyperparams, "target": jnp.float32(1.5)}
            states[i] = s._replace(opt_state=s.opt_state._replace(hyperparams=hp))
        return states

    monkeypatch.setattr(experiment._Points, "initial_states", corrupted)
    with pytest.raises(ValueError, match=r"out of range or NaN inside the jitted step.*1\.5"):
        experiment.run(TINY, 0, splits=splits)


def test_a_wrong_schedule_is_caught_not_trained_through(splits, monkeypatch):
    """The step that keeps the masks checks the cadence itself: if the schedule it was chosen
    by missed an update, the run stops with an error naming the step (no row)."""
    gmp = dataclasses.replace(
        TINY,
        prune=config.Phase(
            epochs=1,
            lr=3e-3,
            pruner={"algorithm": "gmp", "target": 0.5, "begin": 3, "end": 6, "every": 1},
        ),
    )
    # The cadence fires at 3 … 6; the ramp starts from 0, so the masks first change at 4.
    assert [e["step"] for e in experiment.run(gmp, 0, splits=splits)["trace"]] == [4, 5, 6]
    monkeypatch.setattr(
        experiment.dp, "update_schedule", lambda pruner, state, steps: np.zeros(steps, bool)
    )
    with pytest.raises(RuntimeError, match="cadence fired at step 3"):
        experiment.run(gmp, 0, splits=splits)
