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
    """An argparse type: an int >= 1 (else an argument error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def finite(text: str) -> float:
    """An argparse type: a finite float (``nan`` and ``inf`` are argument errors)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {value}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a float in [0, 1] (a target sparsity)."""
    value = finite(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint-dir``, ``--checkpoint-every`` and ``--keep-checkpoints``."""
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
    """The :class:`~dynprune.harness.checkpoint.Options` of parsed arguments (None: off)."""
    if args.checkpoint_dir is None:
        return None
    return checkpoint.Options(
        Path(args.checkpoint_dir), every=args.checkpoint_every, keep=args.keep_checkpoints
    )


@contextlib.contextmanager
def stops(
    script: str, argv: Sequence[str] | None, checkpoints: checkpoint.Options | None
) -> Iterator[None]:
    """Turn a refused input (``ValueError``, a foreign checkpoint) into ``script: error: …``
    and exit 1, and an interrupt of a checkpointing run into what was saved, how to resume
    (the same command) and exit 130."""
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
