"""Offline MNIST / Fashion-MNIST from prepared TFDS directories, cached as decoded arrays.

`load` reads a split through `tfds.data_source` (array_record, no TensorFlow needed), decodes the
PNG bytes once in bulk (`dynprune.harness.png`), and caches the uint8 arrays as `.npz` so the next
load takes well under a second. It never downloads. `batches` and `eval_batches` turn arrays into
fixed-shape float32 batches: the train iterator shuffles by `(seed, epoch)` and drops the
remainder, the eval iterator pads the last batch and marks padding with weight 0, so a jitted step
compiles once per shape.

Images stay uint8 in [0, 255] in a `Dataset`; the batch iterators convert them with `preprocess`
to float32 in [0, 1]. Models see no further normalisation.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dynprune.harness import cache as cache_lib
from dynprune.harness import png

log = logging.getLogger(__name__)

DATASETS = ("mnist", "fashion_mnist")
SPLITS = ("train", "validation", "test")
# The held-out validation examples are a fixed random subset of the TFDS train split; this seed
# fixes which ones, independently of any training seed.
VALIDATION_SEED = 0
DEFAULT_TFDS_DIR = "~/tensorflow_datasets"  # TFDS's own default data directory


class DatasetNotFoundError(FileNotFoundError):
    """The dataset has not been prepared under the TFDS data directory.

    A ``FileNotFoundError``; the message says where it looked and how to prepare the data
    (dynprune never downloads).

    Args:
      *args: the message.

    Examples:
      >>> import tempfile
      >>> empty = tempfile.mkdtemp()
      >>> load("mnist", "test", data_dir=empty, cache_dir=empty)
      Traceback (most recent call last):
      dynprune.harness.data.DatasetNotFoundError: TFDS dataset 'mnist' is not prepared under ...
    """


class Dataset(NamedTuple):
    """Images and labels of one split, as NumPy arrays.

    Attributes:
      images: uint8 [N, 28, 28, 1], values in [0, 255].
      labels: int32 [N], values in [0, 9].

    Examples:
      >>> data = Dataset(np.zeros((4, 28, 28, 1), np.uint8), np.arange(4, dtype=np.int32))
      >>> data.images.shape, data.labels.tolist()
      ((4, 28, 28, 1), [0, 1, 2, 3])
    """

    images: np.ndarray
    labels: np.ndarray


def load(
    name: str,
    split: str,
    *,
    validation: int = 0,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Loads a split of a prepared TFDS dataset as NumPy arrays.

    The TFDS `train` split is divided into `"train"` and `"validation"`: a fixed random subset of
    `validation` examples (chosen by `VALIDATION_SEED`, the same for every call) is held out as
    `"validation"`, and `"train"` is the rest, in TFDS order. With `validation=0` (the default)
    `"train"` is the whole TFDS train split. `"test"` is the TFDS test split.

    Args:
      name: One of `DATASETS`.
      split: One of `SPLITS`.
      validation: Number of training examples held out for validation, in [0, N) for the N
        examples of the TFDS train split (default 0; must be > 0 for `"validation"`). Ignored
        for `"test"`.
      data_dir: TFDS data directory holding `<name>/<version>/`; defaults to `$TFDS_DATA_DIR`,
        else `~/tensorflow_datasets` (`DEFAULT_TFDS_DIR`).
      cache_dir: Where decoded arrays are cached; defaults to `$DYNPRUNE_CACHE_DIR`, else
        `~/.cache/dynprune`.

    Returns:
      The split's images and labels.

    Raises:
      ValueError: On an unknown name or split, or a validation size that does not fit.
      DatasetNotFoundError: If the dataset is not prepared under `data_dir` and no decoded
        copy is cached.

    Examples:
      Splits come from the prepared TFDS directory, or from decoded arrays already in the cache
      (``<name>-<version>-<split>.npz``); here a tiny cached "train" split of 10 examples:

      >>> import tempfile
      >>> cache = tempfile.mkdtemp()
      >>> labels = np.arange(10, dtype=np.int32)
      >>> np.savez(f"{cache}/mnist-3.0.1-train.npz", images=np.zeros((10, 28, 28, 1), np.uint8),
      ...          labels=labels)
      >>> no_tfds = tempfile.mkdtemp()
      >>> train = load("mnist", "train", validation=3, data_dir=no_tfds, cache_dir=cache)
      >>> held_out = load("mnist", "validation", validation=3, data_dir=no_tfds, cache_dir=cache)
      >>> train.images.shape, len(held_out.labels)
      ((7, 28, 28, 1), 3)
      >>> sorted(train.labels.tolist() + held_out.labels.tolist()) == labels.tolist()
      True
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(DATASETS)}.")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid names: {', '.join(SPLITS)}.")
    if split == "validation" and validation <= 0:
        raise ValueError("split='validation' needs validation > 0 held-out examples.")
    data = _load_tfds_split(name, "test" if split == "test" else "train", data_dir, cache_dir)
    if split == "test":
        return data
    n = len(data.labels)
    if not 0 <= validation < n:
        raise ValueError(f"validation={validation} must be in [0, {n}) for {name}.")
    held_out = np.zeros(n, bool)
    held_out[np.random.default_rng(VALIDATION_SEED).permutation(n)[:validation]] = True
    keep = held_out if split == "validation" else ~held_out
    return Dataset(data.images[keep], data.labels[keep])


def preprocess(images: np.ndarray) -> np.ndarray:
    """Converts uint8 images in [0, 255] to float32 in [0, 1]: x / 255.

    Args:
      images: uint8 images of any shape.

    Returns:
      float32 images of the same shape.

    Examples:
      >>> preprocess(np.array([0, 51, 255], np.uint8))
      array([0. , 0.2, 1. ], dtype=float32)
    """
    return images.astype(np.float32) / np.float32(255)


def batches(
    data: Dataset, batch_size: int, *, seed: int, epoch: int, shift: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields one epoch of shuffled, full training batches.

    The order (and any augmentation) depends only on `(seed, epoch)`. The last
    `len(data) % batch_size` examples of the shuffled order are dropped, so every batch has the
    same shape.

    Args:
      data: Training examples.
      batch_size: Examples per batch.
      seed: Shuffling seed.
      epoch: Epoch number; each epoch gets its own order.
      shift: Augmentation: translate each image by a random whole number of pixels in
        [-shift, shift] along each axis, filling with 0 (0: no augmentation).

    Yields:
      `(images, labels)`: float32 [batch_size, 28, 28, 1] in [0, 1] and int32 [batch_size].

    Raises:
      ValueError: If `batch_size` exceeds the number of examples (raised on the first `next`).

    Examples:
      >>> data = Dataset(np.zeros((10, 28, 28, 1), np.uint8), np.arange(10, dtype=np.int32))
      >>> epoch = list(batches(data, 4, seed=0, epoch=0))
      >>> len(epoch), epoch[0][0].shape, epoch[0][0].dtype  # 10 = 2·4 + 2 dropped
      (2, (4, 28, 28, 1), dtype('float32'))
      >>> again = list(batches(data, 4, seed=0, epoch=0))
      >>> all((a[1] == b[1]).all() for a, b in zip(epoch, again))  # same (seed, epoch), same order
      True
    """
    n = len(data.labels)
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} training examples.")
    rng = np.random.default_rng((seed, epoch))
    order = rng.permutation(n)
    for start in range(0, n - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        images = data.images[idx]
        if shift:
            images = translate(images, rng.integers(-shift, shift + 1, size=(batch_size, 2)))
        yield preprocess(images), data.labels[idx]


def translate(images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Shifts each image by its own whole-pixel offset, filling with 0.

    out[n, y, x] = images[n, y − dy_n, x − dx_n] where that lies inside the image, else 0:
    positive dy moves the content down, positive dx to the right.

    Args:
      images: [N, H, W, C], any dtype.
      offsets: int [N, 2], each image's (dy, dx); any magnitude (beyond H or W: all zeros).

    Returns:
      The shifted images, [N, H, W, C], contiguous, of the dtype of ``images``.

    Examples:
      >>> image = np.arange(1, 10, dtype=np.uint8).reshape(1, 3, 3, 1)
      >>> translate(image, np.array([[1, -1]]))[0, :, :, 0]  # down 1, left 1
      array([[0, 0, 0],
             [2, 3, 0],
             [5, 6, 0]], dtype=uint8)
    """
    s = int(np.abs(offsets).max(initial=0))
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (s, s), (s, s), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(1, 2))
    picked = windows[np.arange(n), s - offsets[:, 0], s - offsets[:, 1]]  # [N, C, H, W]
    return np.ascontiguousarray(np.moveaxis(picked, 1, -1))


def eval_batches(
    data: Dataset, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yields every example once, in order, in batches of one fixed shape.

    The last batch is padded with zero images; their weights are 0.

    Args:
      data: Examples to evaluate.
      batch_size: Examples per batch.

    Yields:
      `(images, labels, weights)`: float32 [batch_size, 28, 28, 1], int32 [batch_size] and
      float32 [batch_size], with weight 1 for real examples and 0 for padding.

    Examples:
      >>> data = Dataset(np.zeros((5, 28, 28, 1), np.uint8), np.arange(5, dtype=np.int32))
      >>> [(images.shape[0], weights.tolist()) for images, _, weights in eval_batches(data, 3)]
      [(3, [1.0, 1.0, 1.0]), (3, [1.0, 1.0, 0.0])]
    """
    n = len(data.labels)
    for start in range(0, n, batch_size):
        batch = slice(start, start + batch_size)
        images, labels = data.images[batch], data.labels[batch]
        pad = batch_size - len(labels)
        weights = np.ones(batch_size, np.float32)
        if pad:
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
            weights[-pad:] = 0
        yield preprocess(images), labels, weights


def _load_tfds_split(
    name: str, split: str, data_dir: str | os.PathLike | None, cache_dir: str | os.PathLike | None
) -> Dataset:
    """Returns a whole TFDS split, from the cache if present, else decoded and cached.

    The version is read from the prepared directory's layout (`<name>/<version>/`), so a
    cached split loads without importing TFDS; without a prepared directory, the newest cached
    version is used (a machine that only has the decoded cache). A cache file that cannot be
    read is named in a warning, deleted and rebuilt.
    """
    data_dir = Path(data_dir or os.environ.get("TFDS_DATA_DIR") or DEFAULT_TFDS_DIR).expanduser()
    prepared = sorted(p.parent.name for p in data_dir.glob(f"{name}/*/dataset_info.json"))
    root = cache_lib.cache_dir(base=cache_dir)
    cached = sorted(
        p.name[len(name) + 1 : -len(f"-{split}.npz")] for p in root.glob(f"{name}-*-{split}.npz")
    )
    if not prepared and not cached:
        raise DatasetNotFoundError(_not_found_message(name, data_dir))
    version = (prepared or cached)[-1]
    cache = root / f"{name}-{version}-{split}.npz"
    data = _read_cache(cache)
    if data is not None:
        return data
    if not prepared:
        raise DatasetNotFoundError(_not_found_message(name, data_dir))
    import tensorflow_datasets as tfds  # only to decode: cached splits need no TFDS

    source = tfds.data_source(
        name,
        split=split,
        data_dir=os.fspath(data_dir),
        download=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    log.info("Decoding %s %s %s from %s; caching in %s", name, version, split, data_dir, cache)
    rows = source.__getitems__(range(len(source)))
    images = png.decode_grayscale([row["image"] for row in rows], height=28, width=28)
    data = Dataset(images[..., None], np.array([row["label"] for row in rows], np.int32))
    _save_atomically(cache, data)
    return data


def _read_cache(path: Path) -> Dataset | None:
    """The cached split at `path`; None if there is none, or if it cannot be read (then it is
    named in a warning and deleted, so the caller rebuilds it)."""
    if not path.exists():
        return None
    try:
        with path.open("rb") as f, np.load(f) as arrays:
            return Dataset(arrays["images"], arrays["labels"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        log.warning("Cached split %s is unreadable (%s); deleting and rebuilding it", path, err)
        path.unlink(missing_ok=True)
        return None


def _save_atomically(path: Path, data: Dataset) -> None:
    """Writes `data` to `path` so that readers see either no file or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=data.images, labels=data.labels)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _not_found_message(name: str, data_dir: Path) -> str:
    return (
        f"TFDS dataset {name!r} is not prepared under {data_dir} (looked for "
        f"{data_dir / name / '<version>' / 'dataset_info.json'}); dynprune never downloads. "
        f"Point TFDS_DATA_DIR (or data_dir=) at a directory holding prepared data, or prepare it "
        f"once, which needs TensorFlow and network access: pip install 'dynprune[prepare]', then "
        f'python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder('{name}', data_dir='{data_dir}').download_and_prepare()\"."
    )
