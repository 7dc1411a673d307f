"""Where dynprune caches derived files: one rule for decoded datasets and pre-trained weights."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str, base: str | os.PathLike | None = None) -> Path:
    """The cache directory ``base / parts``, created if missing.

    One rule for every cached file: the root is ``base``, else ``$DYNPRUNE_CACHE_DIR``, else
    ``~/.cache/dynprune``; ``parts`` name a subdirectory of it.

    Args:
      *parts: Path components below the root (none: the root itself).
      base: The cache root; ``None`` (the default) or an empty string falls back to
        ``$DYNPRUNE_CACHE_DIR``, then to ``~/.cache/dynprune``.

    Returns:
      The directory, which exists on return.

    Examples:
      >>> import tempfile
      >>> root = tempfile.mkdtemp()
      >>> path = cache_dir("pretrained", "lenet300", base=root)
      >>> path.relative_to(root).as_posix(), path.is_dir()
      ('pretrained/lenet300', True)
    """
    root = base or os.environ.get("DYNPRUNE_CACHE_DIR") or Path.home() / ".cache" / "dynprune"
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
