"""Command-line pieces the experiment scripts share: argument types, checkpoint flags, and how
a script stops when interrupted or refused (scripts import the library, never each other)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from dynprune.harness import checkpoint

__all__ = [
    "add_checkpoint_arguments",
    "checkpoint_options",
    "finite",
    "fraction",
    "positive",
    "stops",
]


def positive(text: str) -> int:
    """An argparse type: an int >= 1 (a number of steps, epochs or seeds).

    Args:
      text: The argument as given on the command line.

    Returns:
      ``int(text)``.

    Raises:
      argparse.ArgumentTypeError: If the value is below 1.
      ValueError: If ``text`` is not an integer (argparse reports it as an invalid value).

    Examples:
      >>> import argparse
      >>> parser = argparse.ArgumentParser()
      >>> _ = parser.add_argument("--epochs", type=positive)
      >>> parser.parse_args(["--epochs", "3"]).epochs
      3
      >>> positive("0")
      Traceback (most recent call last):
      argparse.ArgumentTypeError: must be >= 1, got 0
    """
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def finite(text: str) -> float:
    """An argparse type: a finite float (``nan`` and ``inf`` are argument errors).

    Args:
      text: The argument as given on the command line.

    Returns:
      ``float(text)``.

    Raises:
      argparse.ArgumentTypeError: If the value is NaN or ±inf.
      ValueError: If ``text`` is not a number (argparse reports it as an invalid value).

    Examples:
      >>> finite("1e-3")
      0.001
      >>> finite("inf")
      Traceback (most recent call last):
      argparse.ArgumentTypeError: must be finite, got inf
    """
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {value}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a float in [0, 1] (a target sparsity).

    Args:
      text: The argument as given on the command line.

    Returns:
      ``float(text)``.

    Raises:
      argparse.ArgumentTypeError: If the value is not finite or lies outside [0, 1].
      ValueError: If ``text`` is not a number (argparse reports it as an invalid value).

    Examples:
      >>> fraction("0.9")
      0.9
      >>> fraction("1.5")
      Traceback (most recent call last):
      argparse.ArgumentTypeError: must be in [0, 1], got 1.5
    """
    value = finite(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the checkpoint flags every experiment script shares to ``parser``.

    ``--checkpoint-dir DIR`` (default: off) saves each run's state in ``DIR/<run key>/`` and
    resumes from it; ``--checkpoint-every N`` (a :func:`positive` int; default: once per
    epoch) sets the steps between checkpoints; ``--keep-checkpoints`` keeps finished runs'
    checkpoints instead of deleting them. Read them back with :func:`checkpoint_options`.

    Args:
      parser: The script's parser; modified in place.

    Examples:
      >>> import argparse
      >>> parser = argparse.ArgumentParser()
      >>> add_checkpoint_arguments(parser)
      >>> args = parser.parse_args(["--checkpoint-dir", "ckpt", "--checkpoint-every", "50"])
      >>> args.checkpoint_dir, args.checkpoint_every, args.keep_checkpoints
      ('ckpt', 50, False)
    """
    parser.add_argument(
        "--checkpoint-dir",
        default=None,
        metavar="DIR",
        help="save each run's state in DIR/<run key>/ and resume from it (default: off)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=positive,
        default=None,
        metavar="N",
        help="steps between checkpoints (default: once per epoch)",
    )
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep finished runs' checkpoints (their final states) instead of deleting them",
    )


def checkpoint_options(args: argparse.Namespace) -> checkpoint.Options | None:
    """The :class:`~dynprune.harness.checkpoint.Options` of parsed arguments.

    Args:
      args: Arguments parsed by a parser that went through :func:`add_checkpoint_arguments`.

    Returns:
      The options, or ``None`` when ``--checkpoint-dir`` was not given (checkpointing off).

    Examples:
      >>> import argparse
      >>> parser = argparse.ArgumentParser()
      >>> add_checkpoint_arguments(parser)
      >>> checkpoint_options(parser.parse_args([])) is None
      True
      >>> checkpoint_options(parser.parse_args(["--checkpoint-dir", "ckpt", "--keep-checkpoints"]))
      Options(root=PosixPath('ckpt'), every=None, keep=True)
    """
    if args.checkpoint_dir is None:
        return None
    return checkpoint.Options(
        Path(args.checkpoint_dir), every=args.checkpoint_every, keep=args.keep_checkpoints
    )


@contextlib.contextmanager
def stops(
    script: str, argv: Sequence[str] | None, checkpoints: checkpoint.Options | None
) -> Iterator[None]:
    """A context in which a script's refusals and interrupts end it the way a CLI should.

    Inside, a ``ValueError`` (a refused input, or a
    :class:`~dynprune.harness.checkpoint.MismatchError`: a foreign checkpoint) becomes
    ``<script name>: error: <message>`` on stderr and exit status 1. A ``KeyboardInterrupt``
    (e.g. :class:`~dynprune.harness.checkpoint.Interrupted`) of a checkpointing run prints what
    was saved and how to resume (:func:`~dynprune.harness.checkpoint.resume_hint`: the same
    command) and exits with status 130; without checkpointing it propagates unchanged.

    Args:
      script: The script's path (``__file__``); its name prefixes the messages and its path,
        relative to the working directory, starts the resume command.
      argv: The arguments the script parsed; ``None`` means ``sys.argv[1:]``.
      checkpoints: The run's checkpoint options (:func:`checkpoint_options`); ``None`` when
        checkpointing is off.

    Yields:
      Nothing; wrap the script's body in the ``with`` block.

    Raises:
      SystemExit: With the error message (status 1) or status 130, as above.

    Examples:
      >>> try:
      ...     with stops("experiments/prune.py", ["--seed", "0"], None):
      ...         raise ValueError("unknown model 'lenet7'")
      ... except SystemExit as exit:
      ...     print(exit.code)
      prune.py: error: unknown model 'lenet7'
    """
    try:
        yield
    except ValueError as err:
        sys.exit(f"{Path(script).name}: error: {err}")
    except KeyboardInterrupt as err:
        if checkpoints is None:
            raise
        command = [os.path.relpath(script), *(sys.argv[1:] if argv is None else argv)]
        print(f"{Path(script).name}: {checkpoint.resume_hint(err, command)}", file=sys.stderr)
        sys.exit(130)
