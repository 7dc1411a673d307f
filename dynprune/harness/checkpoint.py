"""Checkpoints of a run's whole state, so that a killed or interrupted run resumes bit-identically.

A run's checkpoints live in ``ROOT/<run key>/`` (:func:`run_directory`; for a vmapped program of
K points, the key is the hash of the K run keys). It holds the latest checkpoint only: one
Orbax (``orbax.checkpoint``) ``CheckpointManager`` step, written to a temporary directory and
renamed when complete, so a process killed while saving leaves the previous one intact. A
checkpoint has two items:

- ``state``: a pytree of host arrays, e.g. a ``TrainState`` whose optimizer state is a
  :class:`dynprune.PruneState` (params, the inner optimizer's moments, bool masks, step
  count, hyperparameters, PRNG key, the pruner's aux);
- ``meta``: JSON: the run key, the path, shape and dtype of every leaf of ``state``, and
  whatever the caller records with it (the harness: phase, position in the data order,
  records so far).

Orbax restores an array into a target of another shape or dtype without a word, so
:func:`restore` checks the run key and every leaf against the state it is asked to fill and
refuses, with a :class:`MismatchError` naming the keys or the leaf, a checkpoint of another
configuration or model.

:func:`deferred_sigint` turns SIGINT (Ctrl-C) into a request that the caller honours between
steps: it finishes the step, saves, and raises :class:`Interrupted`.

Examples:
  >>> import tempfile, numpy as np
  >>> root = tempfile.mkdtemp()
  >>> where = run_directory(root, ["0123456789abcdef"])
  >>> save(where, 8, {"w": np.ones(3, np.float32)}, {"phase": "prune"}, key="0123456789abcdef")
  >>> state, meta = restore(where, {"w": np.zeros(3, np.float32)}, key="0123456789abcdef")
  >>> state["w"], meta["phase"], meta["step"]
  (array([1., 1., 1.], dtype=float32), 'prune', 8)
  >>> delete(where)
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import shutil
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from dynprune.harness import results

__all__ = [
    "Interrupted",
    "MismatchError",
    "Options",
    "deferred_sigint",
    "delete",
    "latest",
    "restore",
    "resume_hint",
    "run_directory",
    "save",
]


@dataclasses.dataclass(frozen=True)
class Options:
    """How runs checkpoint (the scripts' ``--checkpoint-dir``, ``--checkpoint-every`` and
    ``--keep-checkpoints``; see :func:`dynprune.harness.cli.checkpoint_options`).

    Attributes:
      root: the directory that holds one subdirectory per run (``root/<run key>/``).
      every: save every this many steps of a phase, >= 1 (``None``, the default: at the end of
        every epoch).
      keep: keep the checkpoint of a finished run (its final state) instead of deleting it
        (default ``False``).

    Raises:
      ValueError: ``every`` is below 1.

    Examples:
      >>> Options(Path("ckpt"), every=100)
      Options(root=PosixPath('ckpt'), every=100, keep=False)
      >>> Options(Path("ckpt"), every=0)
      Traceback (most recent call last):
      ValueError: checkpoint every must be >= 1 steps, got 0
    """

    root: Path
    every: int | None = None
    keep: bool = False

    def __post_init__(self) -> None:
        if self.every is not None and self.every < 1:
            raise ValueError(f"checkpoint every must be >= 1 steps, got {self.every}")


class MismatchError(ValueError):
    """A checkpoint that belongs to another run, or whose arrays do not fit the state.

    Raised by :func:`latest` and :func:`restore`; a ``ValueError``, so a script's
    :func:`dynprune.harness.cli.stops` reports it as a refused input.

    Args:
      *args: the message, naming the run keys or the leaf that differ.

    Examples:
      >>> import tempfile, numpy as np
      >>> where = run_directory(tempfile.mkdtemp(), ["0123456789abcdef"])
      >>> save(where, 1, {"w": np.ones(3, np.float32)}, {}, key="0123456789abcdef")
      >>> try:
      ...     restore(where, {"w": np.zeros(4, np.float32)}, key="0123456789abcdef")
      ... except MismatchError as err:
      ...     print(err)
      leaf ['w'] of the checkpoint in ... is float32[3], this run expects float32[4]: ...
    """


class Interrupted(KeyboardInterrupt):
    """SIGINT arrived: the step in progress finished and a checkpoint was saved.

    A ``KeyboardInterrupt``, so code that does not know it stops as on Ctrl-C; raised by the
    training loop after :func:`deferred_sigint` reported the signal.

    Attributes:
      directory: the run's checkpoint directory.
      phase: the phase that was interrupted.
      step: steps of that phase done (and saved).

    Examples:
      >>> err = Interrupted(Path("ckpt/0123456789abcdef"), "prune", 40)
      >>> print(err)
      interrupted after step 40 of prune; checkpoint saved in ckpt/0123456789abcdef
      >>> isinstance(err, KeyboardInterrupt), err.step
      (True, 40)
    """

    def __init__(self, directory: Path, phase: str, step: int):
        super().__init__(
            f"interrupted after step {step} of {phase}; checkpoint saved in {directory}"
        )
        self.directory, self.phase, self.step = directory, phase, step

    def __str__(self) -> str:
        return str(self.args[0])


def resume_hint(interrupt: KeyboardInterrupt, command: Sequence[str]) -> str:
    """What a script says when a checkpointing run is interrupted: what was saved, and how
    to resume (the same command).

    Args:
      interrupt: the :class:`Interrupted` (or a plain ``KeyboardInterrupt``, which arrived
        outside a step: the last checkpoint saved stands).
      command: the script and its arguments.

    Returns:
      A message of three lines: what was saved, then how to resume, then the command.

    Examples:
      >>> err = Interrupted(Path("ckpt/0123456789abcdef"), "prune", 40)
      >>> print(resume_hint(err, ["experiments/prune.py", "--seed", "0"]))
      interrupted after step 40 of prune; checkpoint saved in ckpt/0123456789abcdef
      to resume, run the same command again:
        python experiments/prune.py --seed 0
      >>> print(resume_hint(KeyboardInterrupt(), ["run.py"]).splitlines()[0])
      interrupted; its last checkpoint stands
    """
    said = str(interrupt) or "interrupted; its last checkpoint stands"
    return f"{said}\nto resume, run the same command again:\n  python {shlex.join(command)}"


def run_directory(root: str | Path, keys: Sequence[str]) -> Path:
    """The checkpoint directory of a run: ``root/<run key>``.

    Args:
      root: the checkpoint root (``--checkpoint-dir``).
      keys: the run keys (:func:`dynprune.harness.config.run_key`) of the points trained
        together: one for a single run, K for a vmapped program of K points.

    Returns:
      ``root/<key>`` for one key; for K > 1 ``root/<hash of the K keys, in order>``.

    Raises:
      ValueError: no keys.

    Examples:
      >>> run_directory("ckpt", ["0123456789abcdef"]).as_posix()
      'ckpt/0123456789abcdef'
      >>> len(run_directory("ckpt", ["0123456789abcdef", "fedcba9876543210"]).name)
      16
    """
    if not keys:
        raise ValueError("a checkpoint belongs to at least one run key")
    name = keys[0] if len(keys) == 1 else results.run_key({"points": list(keys)})
    return Path(root) / name


def save(
    directory: str | Path, step: int, state: Any, meta: Mapping[str, Any], *, key: str
) -> None:
    """Save ``state`` and ``meta`` as the latest checkpoint in ``directory`` (older ones go).

    Args:
      directory: the run's checkpoint directory (:func:`run_directory`); created if missing.
      step: the checkpoint's number, larger than any saved before in ``directory`` (e.g. the
        steps taken since the run began). A step already saved is left as it is.
      state: a pytree of arrays (``None`` and empty nodes allowed). Device arrays are copied
        to the host.
      meta: JSON-ready data saved with it (NaN and ±inf allowed); the keys ``key``, ``step``
        and ``leaves`` are set here.
      key: the run key, checked by :func:`latest` and :func:`restore`.

    Examples:
      >>> import tempfile, numpy as np
      >>> where = run_directory(tempfile.mkdtemp(), ["0123456789abcdef"])
      >>> save(where, 10, {"w": np.ones(2, np.float32), "n": None}, {}, key="0123456789abcdef")
      >>> save(where, 20, {"w": np.ones(2, np.float32), "n": None}, {}, key="0123456789abcdef")
      >>> latest(where, key="0123456789abcdef")["step"]  # only the latest is kept
      20
    """
    state = jax.device_get(state)
    meta = {**meta, "key": key, "step": step, "leaves": _leaf_specs(state)}
    ocp = _orbax()
    with _manager(directory, create=True) as manager:
        if step in manager.all_steps():
            return
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
        )


def latest(directory: str | Path, *, key: str) -> dict[str, Any] | None:
    """The ``meta`` of the latest checkpoint in ``directory``, or ``None`` if there is none.

    Args:
      directory: the run's checkpoint directory.
      key: the run key the checkpoint must have.

    Returns:
      The meta saved with the checkpoint (with ``key``, ``step`` and ``leaves``), or ``None``.

    Raises:
      MismatchError: the checkpoint belongs to another run key (another configuration).

    Examples:
      >>> import tempfile, numpy as np
      >>> where = run_directory(tempfile.mkdtemp(), ["0123456789abcdef"])
      >>> latest(where, key="0123456789abcdef") is None
      True
      >>> save(where, 3, {"w": np.ones(2, np.float32)}, {"epoch": 1}, key="0123456789abcdef")
      >>> meta = latest(where, key="0123456789abcdef")
      >>> meta["epoch"], meta["step"], meta["leaves"]
      (1, 3, [["['w']", [2], 'float32']])
      >>> try:
      ...     latest(where, key="fedcba9876543210")
      ... except MismatchError as err:
      ...     print(err)
      the checkpoint in ... belongs to run 0123456789abcdef, not to run fedcba9876543210: ...
    """
    if not Path(directory).is_dir():
        return None
    ocp = _orbax()
    with _manager(directory) as manager:
        step = manager.latest_step()
        if step is None:
            return None
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if meta.get("key") != key:
        raise MismatchError(
            f"the checkpoint in {directory} belongs to run {meta.get('key')}, not to run {key}: "
            "another configuration. Delete it, or use another checkpoint directory."
        )
    return meta


def restore(directory: str | Path, like: Any, *, key: str) -> tuple[Any, dict[str, Any]]:
    """The state and meta of the latest checkpoint in ``directory``, checked against ``like``.

    Args:
      directory: the run's checkpoint directory.
      like: a state of the expected structure, leaf shapes and dtypes (e.g. the freshly
        initialised one); only its structure, shapes and dtypes are used.
      key: the run key the checkpoint must have.

    Returns:
      ``(state, meta)``: ``state`` with the structure of ``like`` and host (NumPy) leaves.

    Raises:
      FileNotFoundError: ``directory`` holds no checkpoint.
      MismatchError: the checkpoint belongs to another run key, or a leaf is missing, extra,
        or of another shape or dtype (the message names the leaf).

    Examples:
      >>> import tempfile, numpy as np
      >>> where = run_directory(tempfile.mkdtemp(), ["0123456789abcdef"])
      >>> state = {"w": np.arange(3, dtype=np.float32), "mask": np.array([True, False, True])}
      >>> save(where, 5, state, {"phase": "prune"}, key="0123456789abcdef")
      >>> like = {"w": np.zeros(3, np.float32), "mask": np.zeros(3, bool)}
      >>> restored, meta = restore(where, like, key="0123456789abcdef")
      >>> restored["w"], restored["mask"], meta["phase"]
      (array([0., 1., 2.], dtype=float32), array([ True, False,  True]), 'prune')
    """
    meta = latest(directory, key=key)
    if meta is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    like = jax.device_get(like)
    _check_leaves(directory, meta["leaves"], _leaf_specs(like))
    ocp = _orbax()
    with _manager(directory) as manager:
        restored = manager.restore(
            meta["step"], args=ocp.args.Composite(state=ocp.args.StandardRestore(like))
        )["state"]
    _check_leaves(directory, _leaf_specs(restored), _leaf_specs(like))
    return restored, meta


def delete(directory: str | Path) -> None:
    """Delete a run's checkpoint directory and everything in it (nothing if it is missing).

    Args:
      directory: the run's checkpoint directory (:func:`run_directory`).

    Examples:
      >>> import tempfile, numpy as np
      >>> where = run_directory(tempfile.mkdtemp(), ["0123456789abcdef"])
      >>> save(where, 1, {"w": np.ones(2, np.float32)}, {}, key="0123456789abcdef")
      >>> delete(where)
      >>> where.exists(), latest(where, key="0123456789abcdef")
      (False, None)
      >>> delete(where)  # already gone: nothing happens
    """
    shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def deferred_sigint() -> Iterator[threading.Event]:
    """Defer SIGINT while inside: it sets the event instead of raising ``KeyboardInterrupt``.

    The caller checks the event between steps, saves, and raises :class:`Interrupted`. A
    second SIGINT interrupts at once (the previous handler is back after the first), and one
    that arrived too late to be honoured inside raises ``KeyboardInterrupt`` on leaving. Off
    the main thread (where Python delivers no signals) nothing is installed.

    Yields:
      The event, set once SIGINT arrived.

    Raises:
      KeyboardInterrupt: on leaving, if SIGINT arrived and the caller did not raise.

    Examples:
      >>> import signal
      >>> try:
      ...     with deferred_sigint() as requested:
      ...         for step in range(1, 4):
      ...             if step == 2:  # Ctrl-C during step 2, delivered as Python would
      ...                 signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
      ...             if requested.is_set():  # between steps: save, then stop
      ...                 raise Interrupted(Path("ckpt"), "prune", step)
      ... except Interrupted as err:
      ...     print(err)
      interrupted after step 2 of prune; checkpoint saved in ckpt
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # installed outside Python: fall back to Python's own
        previous = signal.default_int_handler

    def handler(signum: int, frame: Any) -> None:
        del signum, frame
        requested.set()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)
    if requested.is_set():
        raise KeyboardInterrupt


def _orbax() -> Any:
    # Imported on first use: a run that does not checkpoint does not pay for importing Orbax.
    import orbax.checkpoint as ocp

    return ocp


@contextlib.contextmanager
def _manager(directory: str | Path, *, create: bool = False) -> Iterator[Any]:
    ocp = _orbax()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1,
        create=create,
        cleanup_tmp_directories=True,  # partial saves of a killed process
        enable_async_checkpointing=False,  # saved means on disk: the next line may be a kill
    )
    manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)
    try:
        yield manager
    finally:
        manager.close()


def _leaf_specs(state: Any) -> list[list[Any]]:
    """``[[path, shape, dtype], ...]`` of the array leaves of ``state`` (JSON-ready)."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return [[jax.tree_util.keystr(path), list(np.shape(x)), str(_dtype(x))] for path, x in leaves]


def _dtype(x: Any) -> Any:
    dtype = getattr(x, "dtype", None)
    return np.asarray(x).dtype if dtype is None else dtype


def _check_leaves(
    directory: str | Path, saved: Sequence[Sequence[Any]], expected: Sequence[Sequence[Any]]
) -> None:
    have = {path: (tuple(shape), dtype) for path, shape, dtype in saved}
    want = {path: (tuple(shape), dtype) for path, shape, dtype in expected}
    show = lambda spec: f"{spec[1]}{list(spec[0])}"
    for path, spec in want.items():
        if path not in have:
            raise MismatchError(
                f"the checkpoint in {directory} has no leaf {path} ({show(spec)}): "
                "it is of another model or configuration"
            )
        if have[path] != spec:
            raise MismatchError(
                f"leaf {path} of the checkpoint in {directory} is {show(have[path])}, this run "
                f"expects {show(spec)}: the checkpoint is of another model or configuration"
            )
    extra = sorted(set(have) - set(want))
    if extra:
        raise MismatchError(
            f"the checkpoint in {directory} has leaves this run does not ({', '.join(extra)}): "
            "it is of another model or configuration"
        )
