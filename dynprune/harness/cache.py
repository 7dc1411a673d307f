"""Where dynprune caches derived files: one rule for decoded datasets and pre-trained weights."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str, base: str | os.PathLike | None = None) -> Path:
    """The cache directory ``base / parts`` (created), ``base`` defaulting to
    ``$DYNPRUNE_CACHE_DIR``, else ``~/.cache/dynprune``.

    Examples:
      >>> cache_dir("pretrained", base="/tmp/dynprune-doctest").as_posix()
      '/tmp/dynprune-doctest/pretrained'
    """
    root = base or os.environ.get("DYNPRUNE_CACHE_DIR") or Path.home() / ".cache" / "dynprune"
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
