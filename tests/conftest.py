"""Shared test set-up: strict JAX numerics, real TFDS data, a per-session decode cache."""

import os
from pathlib import Path

import jax
import pytest

from dynprune.harness import data

# Shape slips fail here instead of silently broadcasting. Dtype promotion stays "standard":
# under "strict", optax's Adam fails (its bias correction computes `decay ** count`, a float
# to the power of the int32 step count, in optax 0.2.8).
jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tfds_dir() -> Path:
    """The TFDS data directory: `$TFDS_DATA_DIR`, else `<repo>/../shared/data/tfds`."""
    path = Path(os.environ.get("TFDS_DATA_DIR") or REPO.parent / "shared" / "data" / "tfds")
    missing = [name for name in data.DATASETS if not list(path.glob(f"{name}/*/dataset_info.json"))]
    if missing:
        pytest.fail(
            f"TFDS data for {missing} not found under {path}; set TFDS_DATA_DIR to the prepared "
            "TFDS directory (../shared/data/tfds relative to the repo)."
        )
    return path


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Decoded arrays are cached in a fresh directory per session (never the user's cache)."""
    path = tmp_path_factory.mktemp("dynprune-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DYNPRUNE_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def mnist_train(tfds_dir: Path) -> data.Dataset:
    """All 60,000 MNIST training examples (decoded once per session)."""
    return data.load("mnist", "train", data_dir=tfds_dir)


@pytest.fixture(scope="session")
def mnist_test(tfds_dir: Path) -> data.Dataset:
    """The 10,000 MNIST test examples."""
    return data.load("mnist", "test", data_dir=tfds_dir)
