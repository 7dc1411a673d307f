"""Tests for dynprune.harness.results."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynprune.harness import results


def test_append_then_read_roundtrip_with_array_values(tmp_path):
    path = tmp_path / "new" / "dir" / "runs.jsonl"
    row = {
        "np_scalar": np.float32(0.5),
        "np_int": np.int64(7),
        "jax_scalar": jnp.asarray(3, jnp.int32),
        "array": np.arange(3),
        "jax_array": jnp.ones((2, 2)),
        "path": tmp_path,
        "nested": {"b": [np.bool_(True)], "a": None},
    }
    results.append_jsonl(path, row)
    results.append_jsonl(path, {"second": 2})
    assert results.read_jsonl(path) == [
        {
            "np_scalar": 0.5,
            "np_int": 7,
            "jax_scalar": 3,
            "array": [0, 1, 2],
            "jax_array": [[1.0, 1.0], [1.0, 1.0]],
            "path": str(tmp_path),
            "nested": {"a": None, "b": [True]},
        },
        {"second": 2},
    ]
    assert path.read_text().count("\n") == 2


def test_unserializable_value_raises(tmp_path):
    with pytest.raises(TypeError, match="object"):
        results.append_jsonl(tmp_path / "runs.jsonl", {"x": object()})


def test_a_unique_append_without_a_key_is_refused_before_touching_the_file(tmp_path):
    path = tmp_path / "runs" / "runs.jsonl"
    with pytest.raises(ValueError, match="no 'key' field"):
        results.append_jsonl(path, {"accuracy": 0.9}, unique=True)
    assert not path.parent.exists()


def test_torn_last_line_is_skipped_and_next_append_starts_fresh(tmp_path, caplog):
    path = tmp_path / "runs.jsonl"
    results.append_jsonl(path, {"key": "a"})
    results.append_jsonl(path, {"key": "b"})
    with path.open("ab") as f:
        f.write(b'{"key": "c", "acc')  # a crash mid-write
    with caplog.at_level(logging.WARNING, logger="dynprune.harness.results"):
        assert results.read_jsonl(path) == [{"key": "a"}, {"key": "b"}]
    assert "line 3" in caplog.text
    results.append_jsonl(path, {"key": "d"})
    assert results.read_jsonl(path) == [{"key": "a"}, {"key": "b"}, {"key": "d"}]
    assert results.completed_keys(path) == {"a", "b", "d"}
    assert path.read_bytes().endswith(b'\n{"key": "d"}\n')


def test_missing_file_has_no_rows(tmp_path):
    assert results.read_jsonl(tmp_path / "none.jsonl") == []
    assert results.completed_keys(tmp_path / "none.jsonl") == set()


def test_run_key_is_stable_and_order_independent():
    key = results.run_key({"lr": 1e-3, "model": "lenet5", "seed": np.int64(0)})
    assert key == results.run_key({"seed": 0, "model": "lenet5", "lr": 0.001})
    assert key != results.run_key({"lr": 1e-3, "model": "lenet5", "seed": 1})
    assert len(key) == 16 and int(key, 16) >= 0


def test_run_metadata_describes_this_run():
    meta = results.run_metadata()
    assert meta["backend"] == jax.default_backend()
    assert meta["device_kind"] == jax.devices()[0].device_kind
    assert meta["device_count"] == jax.device_count()
    assert meta["versions"]["jax"] == jax.__version__
    assert set(meta["versions"]) == {"jax", "flax", "optax", "numpy", "python"}
    assert meta["timestamp"].endswith("+00:00")
    json.loads(results.dumps(meta))


def test_git_commit_of_repo_and_of_non_checkout(tmp_path):
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=Path(results.__file__).parent,
        capture_output=True,
        text=True,
    )
    commit = results.git_commit()
    if head.returncode:  # installed outside a git checkout
        assert commit is None
    else:
        assert commit["sha"] == head.stdout.strip() and isinstance(commit["dirty"], bool)
    assert results.git_commit(tmp_path) is None


def test_a_row_with_nan_or_inf_is_refused_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"row field 'history.loss\[1\]' is not finite"):
        results.append_jsonl(tmp_path / "r.jsonl", {"history": {"loss": [0.5, float("nan")]}})
    with pytest.raises(ValueError, match="row field 'compression' is not finite"):
        results.dumps({"compression": np.float32("inf")})
    assert not (tmp_path / "r.jsonl").exists() or results.read_jsonl(tmp_path / "r.jsonl") == []


SHORT_WRITE = """
import resource, signal, sys
from dynprune.harness import results
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (5000, 5000))
results.append_jsonl(sys.argv[1], {"key": "a", "blob": "x" * 3000})
results.append_jsonl(sys.argv[1], {"key": "b", "blob": "y" * 3000})  # only part of it fits
"""


def test_a_short_write_raises_instead_of_claiming_the_row(tmp_path):
    path = tmp_path / "rows.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", SHORT_WRITE, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "OSError" in done.stderr, done.stderr
    assert [r["key"] for r in results.read_jsonl(path)] == ["a"]  # the torn row is not a row
    results.append_jsonl(path, {"key": "c"})  # and the next append starts on a line of its own
    assert [r["key"] for r in results.read_jsonl(path)] == ["a", "c"]


WRITER = """
import sys
from dynprune.harness import results
for i in range(40):
    results.append_jsonl(sys.argv[1], {"key": f"k{i}", "writer": sys.argv[2]}, unique=True)
"""


def test_concurrent_writers_write_each_key_once(tmp_path):
    path = tmp_path / "rows.jsonl"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name]) for name in "ABC"]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    rows = results.read_jsonl(path)
    assert sorted(r["key"] for r in rows) == sorted(f"k{i}" for i in range(40))


def test_unique_rows_keeps_the_first_of_each_key():
    rows = [{"key": "a", "v": 1}, {"key": "b"}, {"key": "a", "v": 2}, {"no": "key"}]
    assert results.unique_rows(rows) == [{"key": "a", "v": 1}, {"key": "b"}, {"no": "key"}]
