"""Experiment results as JSONL: one JSON object per run, appended so that a crash loses no row.

A row is written under an exclusive file lock, all its bytes, on a file opened with `O_APPEND`
and then fsynced, so earlier rows are never touched and concurrent writers never interleave; a
crash can at worst leave a torn last line, which `read_jsonl` skips and the next `append_jsonl`
starts after. `run_key` and `completed_keys` let a sweep skip the runs a previous, interrupted
invocation already finished.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np
import optax

log = logging.getLogger(__name__)


def _to_json(value: Any) -> Any:
    """Converts NumPy/JAX scalars and arrays (and paths) to JSON types."""
    if isinstance(value, np.generic | np.ndarray | jax.Array):
        return np.asarray(value).tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(row: dict[str, Any]) -> str:
    """Serializes a row to one line of strict JSON (no trailing newline), keys sorted.

    NumPy and JAX scalars and arrays become numbers and nested lists, paths become strings.

    Args:
      row: The row: a dict of JSON types, NumPy/JAX values and paths.

    Returns:
      The line.

    Raises:
      ValueError: naming the field, if the row holds NaN or an infinity (not JSON).
      TypeError: If the row holds a value of another type.

    Examples:
      >>> dumps({"b": np.float32(0.5), "a": np.arange(3)})
      '{"a": [0, 1, 2], "b": 0.5}'
      >>> dumps({"metrics": {"loss": float("nan")}})
      Traceback (most recent call last):
      ValueError: row field 'metrics.loss' is not finite: rows are strict JSON
    """
    try:
        return json.dumps(row, default=_to_json, sort_keys=True, allow_nan=False)
    except ValueError:
        raise ValueError(
            f"row field {_nonfinite(row)!r} is not finite: rows are strict JSON"
        ) from None


def _nonfinite(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinity in a row (None if there is none)."""
    if isinstance(value, dict):
        found = (_nonfinite(v, f"{path}.{k}" if path else str(k)) for k, v in value.items())
    elif isinstance(value, list | tuple):
        found = (_nonfinite(v, f"{path}[{i}]") for i, v in enumerate(value))
    elif isinstance(value, np.generic | np.ndarray | jax.Array):
        return _nonfinite(np.asarray(value).tolist(), path)
    else:
        return path if isinstance(value, float) and not np.isfinite(value) else None
    return next((p for p in found if p is not None), None)


def append_jsonl(path: str | os.PathLike, row: dict[str, Any], *, unique: bool = False) -> bool:
    """Appends `row` as one line to the JSONL file at `path`, creating it and its parents.

    The append holds an exclusive `flock` on the file, so concurrent writers never interleave.
    With `unique=True` the file is re-read under the lock and the row is written only if no row
    with its `key` is there yet: whichever processes run, a key is written once. If the file
    does not end with a newline (a torn line from an interrupted write), the row starts on a
    new line, so it stays readable. Every byte is written, or `OSError` is raised.

    Args:
      path: The JSONL file; it and its parent directories are created if missing.
      row: The row, serialized by `dumps`; with `unique=True` it must have a `key` field.
      unique: Write the row only if no row with its `key` is in the file yet (default False).

    Returns:
      Whether the row was written (False: `unique` and its key was already there).

    Raises:
      ValueError: If the row holds NaN or an infinity (see `dumps`), or `unique` is set and the
        row has no `key`; nothing is written.
      OSError: If the row could not be written whole.

    Examples:
      >>> import tempfile
      >>> path = Path(tempfile.mkdtemp()) / "runs" / "results.jsonl"
      >>> append_jsonl(path, {"key": "a1", "accuracy": 0.98}, unique=True)
      True
      >>> append_jsonl(path, {"key": "a1", "accuracy": 0.97}, unique=True)
      False
      >>> print(path.read_text(), end="")
      {"accuracy": 0.98, "key": "a1"}
    """
    if unique and "key" not in row:
        raise ValueError("append_jsonl(unique=True): the row has no 'key' field to check")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (dumps(row) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if unique and row["key"] in completed_keys(path):
            return False
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            written = os.write(fd, view)
            if written <= 0:
                raise OSError(f"could not append a row to {path}: wrote {written} bytes")
            view = view[written:]
        os.fsync(fd)
        return True
    finally:
        os.close(fd)  # releases the lock


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Returns the rows of a JSONL file; lines that do not parse are skipped with a warning.

    The warning goes through `logging`, naming the line. A missing file has no rows; blank
    lines are skipped silently.

    Args:
      path: The JSONL file.

    Returns:
      The parsed rows, in file order.

    Examples:
      >>> import tempfile
      >>> path = Path(tempfile.mkdtemp()) / "results.jsonl"
      >>> read_jsonl(path)
      []
      >>> for row in ({"key": "a1"}, {"key": "b2"}):
      ...     _ = append_jsonl(path, row)
      >>> with path.open("a") as f:  # a write torn by a crash
      ...     _ = f.write('{"key": "c')
      >>> read_jsonl(path)
      [{'key': 'a1'}, {'key': 'b2'}]
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("Skipping unreadable line %d of %s (torn write?)", number, path)
    return rows


def run_key(config: dict[str, Any]) -> str:
    """Returns a stable 16-hex-digit key of a run's config (independent of key order).

    The key is the first 16 hex digits of the SHA-256 of the config's `dumps` line.

    Args:
      config: The run's canonical data (see `dumps` for the types allowed).

    Returns:
      16 hex digits.

    Examples:
      >>> key = run_key({"lr": 0.1, "seed": 0})
      >>> len(key), key == run_key({"seed": 0, "lr": 0.1}), key == run_key({"lr": 0.1, "seed": 1})
      (16, True, False)
    """
    return hashlib.sha256(dumps(config).encode()).hexdigest()[:16]


def completed_keys(path: str | os.PathLike) -> set[str]:
    """Returns the `key` fields of the rows already in the JSONL file at `path`.

    Args:
      path: The JSONL file (missing: no keys).

    Returns:
      The keys; rows without a `key` are ignored.

    Examples:
      >>> import tempfile
      >>> path = Path(tempfile.mkdtemp()) / "results.jsonl"
      >>> for row in ({"key": "a1"}, {"note": "no key"}, {"key": "b2"}):
      ...     _ = append_jsonl(path, row)
      >>> sorted(completed_keys(path))
      ['a1', 'b2']
    """
    return {row["key"] for row in read_jsonl(path) if "key" in row}


def unique_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first row of each `key` (rows without a key are kept), in file order.

    Args:
      rows: Rows, e.g. from `read_jsonl`.

    Returns:
      A new list without the later rows of a repeated key.

    Examples:
      >>> unique_rows([{"key": "a", "n": 1}, {"n": 2}, {"key": "a", "n": 3}, {"n": 4}])
      [{'key': 'a', 'n': 1}, {'n': 2}, {'n': 4}]
    """
    seen: set[str] = set()
    out = []
    for row in rows:
        key = row.get("key")
        if key is None or key not in seen:
            out.append(row)
            if key is not None:
                seen.add(key)
    return out


def git_commit(repo: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """Returns `{"sha": short sha, "dirty": bool}` of the git checkout holding `repo`.

    Args:
      repo: A directory inside the checkout; defaults to this package's directory.

    Returns:
      The short SHA of `HEAD` and whether tracked files differ from it (untracked files do not
      count), or None outside a git checkout (e.g. an installed wheel) or without git.

    Examples:
      >>> import tempfile
      >>> git_commit(tempfile.mkdtemp()) is None  # not a git checkout
      True
    """
    cwd = Path(repo) if repo is not None else Path(__file__).parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        sha = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"sha": sha, "dirty": dirty}


def run_metadata() -> dict[str, Any]:
    """Returns where and with what a run ran: backend, device, versions, git commit, host, time.

    Returns:
      A JSON-ready dict: `backend`, `device_kind` and `device_count` (JAX's), `versions` of
      jax, flax, optax, numpy and Python, `git` (`git_commit`), `hostname`, and `timestamp`
      (UTC, ISO 8601, seconds).

    Examples:
      >>> meta = run_metadata()
      >>> sorted(meta)
      ['backend', 'device_count', 'device_kind', 'git', 'hostname', 'timestamp', 'versions']
      >>> sorted(meta["versions"])
      ['flax', 'jax', 'numpy', 'optax', 'python']
    """
    return {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "versions": {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "git": git_commit(),
        "hostname": socket.gethostname(),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
