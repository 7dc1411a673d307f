"""Tests for dynprune.harness.checkpoint: round trips, refusals, and runs that resume
bit-identically after a crash, SIGKILL or SIGINT."""

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import dynprune as dp
from dynprune.harness import checkpoint, config, experiment, models, results, train

ROOT = Path(__file__).resolve().parents[1]
KEY = "0123456789abcdef"

TINY = config.RunConfig(
    model="origin_mlp",
    examples=512,
    batch_size=64,
    pretrain=config.Phase(epochs=1, lr=1e-3),
    prune=config.Phase(
        epochs=2,
        lr=3e-3,
        pruner={"algorithm": "gmp", "target": 0.8, "begin": 0, "end": 0.75, "every": 3},
    ),
    finetune=config.Phase(epochs=1, lr=1e-3),
)
# What a resumed run may differ in: how long it took.
WALL = ("wall_s", "program_wall_s")


def pruned_state(model: str = "origin_mlp", seed: int = 0) -> train.TrainState:
    """A TrainState with a PruneState after one step: random bool masks on the kernels, an
    int count, dict hyperparams, a PRNG key, Adam's moments."""
    params = models.get_model(model).init(jax.random.key(seed), np.zeros((1, 28, 28, 1)))["params"]
    rng = np.random.default_rng(seed)
    masks = jax.tree.map(lambda w: rng.random(w.shape) < 0.5 if w.ndim == 2 else None, params)
    tx = dp.prune(optax.adam(1e-3), dp.algorithms.fixed(masks), seed=seed)
    state = train.init_state(params, tx)
    grads = jax.tree.map(np.ones_like, params)
    updates, opt_state = tx.update(grads, state.opt_state, params)
    return train.TrainState(optax.apply_updates(params, updates), opt_state, state.step + 1)


def test_a_train_state_round_trips_leaf_by_leaf(tmp_path):
    state = pruned_state()
    assert dp.masks_of(state.opt_state)["fc1"]["kernel"].dtype == bool
    checkpoint.save(tmp_path, 3, state, {"phase": "prune", "nan": float("nan")}, key=KEY)
    like = pruned_state(seed=1)  # same structure and shapes, other values
    restored, meta = checkpoint.restore(tmp_path, like, key=KEY)
    assert meta["phase"] == "prune" and meta["step"] == 3 and np.isnan(meta["nan"])
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    want = jax.tree_util.tree_leaves_with_path(state)
    for (path, a), b in zip(want, jax.tree.leaves(restored), strict=True):
        assert np.asarray(a).dtype == b.dtype and np.array_equal(a, b), jax.tree_util.keystr(path)
    assert isinstance(restored.opt_state, dp.PruneState)
    assert checkpoint.latest(tmp_path, key=KEY)["step"] == 3


def test_only_the_latest_checkpoint_is_kept_and_delete_removes_it(tmp_path):
    where = checkpoint.run_directory(tmp_path, [KEY])
    assert where == tmp_path / KEY and checkpoint.latest(where, key=KEY) is None
    for step in (4, 8):
        checkpoint.save(where, step, {"w": np.full(2, step)}, {}, key=KEY)
    state, meta = checkpoint.restore(where, {"w": np.zeros(2, int)}, key=KEY)
    assert meta["step"] == 8 and state["w"].tolist() == [8, 8]
    assert [p.name for p in where.iterdir() if p.name.isdigit()] == ["8"]
    checkpoint.delete(where)
    assert list(tmp_path.iterdir()) == []
    points = checkpoint.run_directory(tmp_path, [KEY, "fedcba9876543210"])
    assert points.name == results.run_key({"points": [KEY, "fedcba9876543210"]})


def test_a_checkpoint_of_another_config_is_refused_naming_both_keys(tmp_path):
    checkpoint.save(tmp_path, 1, pruned_state(), {}, key=KEY)
    with pytest.raises(checkpoint.MismatchError, match=f"belongs to run {KEY}, not to run other"):
        checkpoint.restore(tmp_path, pruned_state(), key="other")
    with pytest.raises(checkpoint.MismatchError, match="another configuration"):
        checkpoint.latest(tmp_path, key="other")


def test_a_checkpoint_of_other_shapes_is_refused_naming_the_leaf(tmp_path):
    checkpoint.save(tmp_path, 1, pruned_state("origin_mlp"), {}, key=KEY)
    with pytest.raises(checkpoint.MismatchError, match=r"leaf \.params\['fc1'\]\['bias'\]"):
        checkpoint.restore(tmp_path, pruned_state("lenet300"), key=KEY)
    dtype = pruned_state()._replace(step=np.zeros([], np.float32))
    with pytest.raises(checkpoint.MismatchError, match=r"leaf \.step .*int32\[\], this run"):
        checkpoint.restore(tmp_path, dtype, key=KEY)


@pytest.fixture(scope="module")
def splits(tfds_dir):
    return experiment.load_splits(TINY, tfds_dir)


class Crash(Exception):
    """Stands for a kill right after a checkpoint was written."""


def run_crashing(monkeypatch, crash_after: int, *args, **kwargs) -> int:
    """Run, and crash right after the ``crash_after``-th checkpoint is saved; its step."""
    real, saved = checkpoint.save, []

    def save(*a, **k):
        real(*a, **k)
        saved.append(a[1])
        if len(saved) == crash_after:
            raise Crash

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", save)
        with pytest.raises(Crash):
            experiment.run_points(*args, **kwargs)
    return saved[-1]


def kept_leaves(root: Path) -> list[np.ndarray]:
    """The leaves of the one kept checkpoint under ``root``, as saved on disk."""
    (where,) = root.iterdir()
    meta = checkpoint.latest(where, key=where.name)
    manager = ocp.CheckpointManager(where.absolute())
    try:
        restore = ocp.args.Composite(state=ocp.args.StandardRestore())
        return jax.tree.leaves(manager.restore(meta["step"], args=restore)["state"])
    finally:
        manager.close()


@pytest.mark.parametrize(
    ("points", "crash_after"),
    [
        (1, 1),  # mid-epoch of the prune phase: 4 of 8 steps
        (1, 5),  # in the fine-tune, after the prune phase's rows were recorded
        (2, 3),  # two vmapped points, one checkpoint of the stacked states
    ],
)
def test_a_crashed_run_resumes_to_the_uninterrupted_row_and_state(
    splits, tmp_path, monkeypatch, points, crash_after
):
    configs = [
        dataclasses.replace(
            TINY, prune=dataclasses.replace(TINY.prune, pruner={**TINY.prune.pruner, "target": t})
        )
        for t in (0.8, 0.6)[:points]
    ]
    seeds = [0, 1][:points]
    common = {"splits": splits, "programs": experiment.Programs()}
    straight = tmp_path / "straight"
    keep = lambda root: checkpoint.Options(root, every=4, keep=True)
    want = experiment.run_points(configs, seeds, checkpoints=keep(straight), **common)
    off = experiment.run_points(configs, seeds, **common)
    resumed = tmp_path / "resumed"
    crashed_at = run_crashing(
        monkeypatch, crash_after, configs, seeds, checkpoints=keep(resumed), **common
    )
    real, restored = checkpoint.restore, []

    def restore(*a, **k):
        restored.append(real(*a, **k))
        return restored[-1]

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "restore", restore)
        got = experiment.run_points(configs, seeds, checkpoints=keep(resumed), **common)
    assert [meta["step"] for _, meta in restored] == [crashed_at]
    for a, b, c in zip(want, got, off, strict=True):
        for name in WALL:
            del a[name], b[name], c[name]
        assert a == b == c
        assert a["trace"] and a["train_loss"]["finetune"]
        assert "dense_val_error" in a and "before_finetune_val_error" in a
    for a, b in zip(kept_leaves(straight), kept_leaves(resumed), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)  # bit-identical params, masks, ...


def test_a_resumed_runs_wall_time_adds_the_time_before_the_kill(splits, tmp_path, monkeypatch):
    options = checkpoint.Options(tmp_path, every=4)
    common = {"splits": splits, "programs": experiment.Programs(), "checkpoints": options}
    run_crashing(monkeypatch, 2, [TINY], [0], **common)
    (where,) = tmp_path.iterdir()
    before = checkpoint.latest(where, key=where.name)["wall_s"]
    assert before > 0
    # As if the segment before the kill had taken 1000 s more: the row must carry them.
    real = checkpoint.latest
    late = lambda *a, **k: {**real(*a, **k), "wall_s": before + 1000.0}
    monkeypatch.setattr(checkpoint, "latest", late)
    start = time.perf_counter()
    (row,) = experiment.run_points([TINY], [0], **common)
    resumed = time.perf_counter() - start
    assert before + 1000.0 < row["program_wall_s"] <= before + 1000.0 + resumed
    assert row["wall_s"] == row["program_wall_s"]


def test_a_finished_run_deletes_its_checkpoint(splits, tmp_path, monkeypatch):
    saved = []
    real = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda *a, **k: (saved.append(a[1]), real(*a, **k)))
    options = checkpoint.Options(tmp_path, every=4)
    experiment.run(TINY, 0, splits=splits, checkpoints=options)
    assert saved == [4, 8, 12, 20] and list(tmp_path.iterdir()) == []  # not at a phase's end


def test_a_checkpoint_of_another_run_is_refused_by_the_run(splits, tmp_path):
    key = config.run_key(TINY, 0, test=False)
    checkpoint.save(tmp_path / key, 4, {"w": np.zeros(1)}, {"phase": "prune"}, key="other")
    with pytest.raises(checkpoint.MismatchError, match=f"belongs to run other, not to run {key}"):
        experiment.run(TINY, 0, splits=splits, checkpoints=checkpoint.Options(tmp_path))


# --- the scripts, killed for real -------------------------------------------------------------

SWEEP = {
    "description": "checkpoint test sweep",
    "seeds": 1,
    "run": {
        "model": "origin_mlp",
        "examples": 512,
        "batch_size": 64,
        "prune": {"epochs": 12, "lr": 0.003},
    },
    "methods": {
        "gmp": {
            "pruner": {"algorithm": "gmp", "begin": 0, "end": 0.5, "every": 3},
            "knob": "target",
            "values": [0.7],
        }
    },
}
COMPARED = ("val_error", "nonzeros", "layers", "trace", "train_loss", "status", "steps")


def script(name: str, *args: str, tfds_dir: Path) -> list[str]:
    path = ROOT / "experiments" / name
    return [sys.executable, str(path), *args, "--data-dir", str(tfds_dir), "--no-progress"]


def wait_for_checkpoint(process: subprocess.Popen, root: Path) -> None:
    deadline = time.monotonic() + 300
    while not any(p.name.isdigit() for d in root.glob("*") for p in d.glob("*")):
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in 300 s"
        time.sleep(0.01)


def only_row(out: Path) -> dict:
    (row,) = results.read_jsonl(out)
    return row


@pytest.mark.slow
def test_a_sweep_killed_after_a_checkpoint_resumes_to_the_uninterrupted_row(tmp_path, tfds_dir):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(SWEEP))
    ckpt = tmp_path / "checkpoints"
    common = [str(path), "--checkpoint-dir", str(ckpt), "--checkpoint-every", "4"]
    straight, killed = tmp_path / "straight.jsonl", tmp_path / "killed.jsonl"
    subprocess.run(
        script("sweep.py", *common, "--out", str(straight), tfds_dir=tfds_dir),
        capture_output=True,
        timeout=600,
        check=True,
    )
    assert list(ckpt.iterdir()) == []

    command = script("sweep.py", *common, "--out", str(killed), tfds_dir=tfds_dir)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_checkpoint(process, ckpt)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not killed.exists() and any(ckpt.iterdir()), "the kill must land mid-run"

    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1])["runs"] == 1
    assert "resuming prune at step" in done.stderr
    want, got = only_row(straight), only_row(killed)
    assert {k: got[k] for k in COMPARED} == {k: want[k] for k in COMPARED}
    assert list(ckpt.iterdir()) == []


@pytest.mark.slow
def test_sigint_saves_exits_130_and_the_rerun_finishes_the_same_row(tmp_path, tfds_dir):
    ckpt = tmp_path / "checkpoints"
    argv = ["--model", "origin_mlp", "--epochs", "2", "--batch-size", "512", "--prune", "gmp"]
    common = [*argv, "--checkpoint-dir", str(ckpt), "--checkpoint-every", "4"]
    straight, stopped = tmp_path / "straight.jsonl", tmp_path / "stopped.jsonl"
    subprocess.run(
        script("train.py", *argv, "--out", str(straight), tfds_dir=tfds_dir),
        capture_output=True,
        timeout=600,
        check=True,
    )

    command = script("train.py", *common, "--out", str(stopped), tfds_dir=tfds_dir)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(process, ckpt)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130, err
    assert "interrupted after step" in err and "run the same command again" in err
    assert "experiments/train.py --model origin_mlp" in err
    assert not stopped.exists() and any(ckpt.iterdir())

    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    assert "resuming prune at step" in done.stderr
    want, got = only_row(straight), only_row(stopped)
    assert {k: got[k] for k in COMPARED} == {k: want[k] for k in COMPARED}
    assert list(ckpt.iterdir()) == []
