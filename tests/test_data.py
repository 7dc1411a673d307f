"""Tests for dynprune.harness.data on the real TFDS MNIST / Fashion-MNIST."""

import logging
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dynprune.harness import data

pytestmark = pytest.mark.data


def _rows(d: data.Dataset) -> list[bytes]:
    """Each example as bytes (image + label), sorted: a multiset that is order-independent."""
    return sorted(
        img.tobytes() + lab.tobytes() for img, lab in zip(d.images, d.labels, strict=True)
    )


@pytest.mark.parametrize(("split", "n"), [("train", 60000), ("test", 10000)])
def test_mnist_shapes_dtypes_and_labels(mnist_train, mnist_test, split, n):
    d = mnist_train if split == "train" else mnist_test
    assert d.images.shape == (n, 28, 28, 1) and d.images.dtype == np.uint8
    assert d.labels.shape == (n,) and d.labels.dtype == np.int32
    assert set(np.unique(d.labels)) == set(range(10))
    assert d.images.max() == 255 and d.images.min() == 0


def test_fashion_mnist_test_split(tfds_dir, mnist_test):
    d = data.load("fashion_mnist", "test", data_dir=tfds_dir)
    assert d.images.shape == (10000, 28, 28, 1) and d.images.dtype == np.uint8
    assert set(np.unique(d.labels)) == set(range(10))
    assert not np.array_equal(d.images, mnist_test.images)


def test_decoded_pixels_match_tfds_decoder(tfds_dir, mnist_test):
    source = tfds.data_source("mnist", split="test", data_dir=str(tfds_dir), download=False)
    indices = list(range(0, 10000, 20))
    rows = source.__getitems__(indices)
    assert np.array_equal(mnist_test.images[indices], np.stack([r["image"] for r in rows]))
    assert np.array_equal(mnist_test.labels[indices], [r["label"] for r in rows])


def test_second_load_hits_cache(tfds_dir, mnist_train, cache_dir):
    assert list(cache_dir.glob("mnist-3.0.1-train.npz"))
    start = time.perf_counter()
    again = data.load("mnist", "train", data_dir=tfds_dir)
    assert time.perf_counter() - start < 1.0
    assert np.array_equal(again.images, mnist_train.images)
    assert np.array_equal(again.labels, mnist_train.labels)


def test_cache_dir_argument_and_env(tfds_dir, mnist_test, tmp_path, monkeypatch):
    explicit = data.load("mnist", "test", data_dir=tfds_dir, cache_dir=tmp_path / "arg")
    monkeypatch.setenv("DYNPRUNE_CACHE_DIR", str(tmp_path / "env"))
    from_env = data.load("mnist", "test", data_dir=tfds_dir)
    assert [p.name for p in (tmp_path / "arg").iterdir()] == ["mnist-3.0.1-test.npz"]
    assert [p.name for p in (tmp_path / "env").iterdir()] == ["mnist-3.0.1-test.npz"]
    assert np.array_equal(explicit.images, mnist_test.images)
    assert np.array_equal(from_env.labels, mnist_test.labels)


def test_validation_split_partitions_train(tfds_dir, mnist_train):
    train = data.load("mnist", "train", validation=5000, data_dir=tfds_dir)
    val = data.load("mnist", "validation", validation=5000, data_dir=tfds_dir)
    assert len(train.labels) == 55000 and train.images.shape == (55000, 28, 28, 1)
    assert len(val.labels) == 5000 and val.images.shape == (5000, 28, 28, 1)
    assert _rows(data.Dataset(*map(np.concatenate, zip(train, val, strict=True)))) == _rows(
        mnist_train
    )
    assert set(np.unique(val.labels)) == set(range(10))
    # Held out at random, not the last 5,000.
    assert not np.array_equal(val.labels, mnist_train.labels[-5000:])
    again = data.load("mnist", "validation", validation=5000, data_dir=tfds_dir)
    assert np.array_equal(again.images, val.images)


def test_bad_names_and_sizes(tfds_dir):
    with pytest.raises(ValueError, match="train, validation, test"):
        data.load("mnist", "training", data_dir=tfds_dir)
    with pytest.raises(ValueError, match="mnist, fashion_mnist"):
        data.load("cifar10", "train", data_dir=tfds_dir)
    with pytest.raises(ValueError, match="validation > 0"):
        data.load("mnist", "validation", data_dir=tfds_dir)
    with pytest.raises(ValueError, match=r"\[0, 60000\)"):
        data.load("mnist", "train", validation=60000, data_dir=tfds_dir)


def test_missing_dataset_explains_how_to_prepare(tmp_path, monkeypatch):
    data_dir, cache = tmp_path / "tfds", tmp_path / "cache"
    data_dir.mkdir()
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load("mnist", "test", data_dir=data_dir, cache_dir=cache)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for needed in (str(data_dir), "TFDS_DATA_DIR", "dynprune[prepare]", "download_and_prepare"):
        assert needed in message
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("DYNPRUNE_CACHE_DIR", str(cache))
    with pytest.raises(data.DatasetNotFoundError, match=str(tmp_path / "env")):
        data.load("fashion_mnist", "train")
    assert list(data_dir.iterdir()) == [] and list(cache.iterdir()) == []  # nothing downloaded


def test_a_cached_split_loads_without_tfds_or_prepared_data(
    tfds_dir, mnist_test, tmp_path, monkeypatch
):
    """The GPU machine's case: only the decoded cache, and no TFDS installed."""
    cache = tmp_path / "cache"
    data.load("mnist", "test", data_dir=tfds_dir, cache_dir=cache)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    loaded = data.load("mnist", "test", data_dir=tmp_path / "nothing", cache_dir=cache)
    np.testing.assert_array_equal(loaded.images, mnist_test.images)
    with pytest.raises(ImportError):
        data.load("mnist", "train", data_dir=tfds_dir, cache_dir=cache)  # would need decoding


def test_a_corrupt_cache_entry_is_named_discarded_and_rebuilt(
    tfds_dir, mnist_test, tmp_path, caplog
):
    cache = tmp_path / "cache"
    data.load("mnist", "test", data_dir=tfds_dir, cache_dir=cache)
    (entry,) = cache.glob("mnist-*-test.npz")
    entry.write_bytes(entry.read_bytes()[:1000])  # truncated, as by a full disk or a kill
    with caplog.at_level(logging.WARNING):
        loaded = data.load("mnist", "test", data_dir=tfds_dir, cache_dir=cache)
    assert str(entry) in caplog.text and "rebuilding" in caplog.text
    np.testing.assert_array_equal(loaded.labels, mnist_test.labels)
    assert data.load("mnist", "test", data_dir=tfds_dir, cache_dir=cache).images.shape == (
        10_000,
        28,
        28,
        1,
    )


def _ids(n: int) -> data.Dataset:
    """A synthetic dataset whose labels are example ids and whose pixels encode them."""
    images = (np.arange(n)[:, None, None, None] % 256 * np.ones((1, 28, 28, 1))).astype(np.uint8)
    return data.Dataset(images, np.arange(n, dtype=np.int32))


def test_batches_are_full_shuffled_and_reproducible():
    d = _ids(1000)
    epoch = list(data.batches(d, 128, seed=3, epoch=0))
    assert len(epoch) == 1000 // 128
    for images, labels in epoch:
        assert images.shape == (128, 28, 28, 1) and images.dtype == np.float32
        assert labels.shape == (128,) and labels.dtype == np.int32
        np.testing.assert_array_equal(np.round(images[:, 0, 0, 0] * 255), labels % 256)
    ids = np.concatenate([labels for _, labels in epoch])
    assert len(np.unique(ids)) == len(ids)  # no example twice in an epoch
    assert not np.array_equal(ids, np.sort(ids))

    def order(seed, e):
        return np.concatenate([labels for _, labels in data.batches(d, 128, seed=seed, epoch=e)])

    assert np.array_equal(order(3, 0), ids)
    assert not np.array_equal(order(4, 0), ids)
    assert not np.array_equal(order(3, 1), ids)


def test_eval_batches_cover_every_example_once():
    d = _ids(1000)
    got = list(data.eval_batches(d, 128))
    assert len(got) == 8
    assert all(x.shape == (128, 28, 28, 1) and y.shape == w.shape == (128,) for x, y, w in got)
    weights = np.concatenate([w for *_, w in got])
    labels = np.concatenate([y for _, y, _ in got])
    assert weights.sum() == 1000 and set(np.unique(weights)) == {0.0, 1.0}
    assert np.array_equal(labels[weights == 1], np.arange(1000))
    assert np.all(got[-1][0][weights[-128:] == 0] == 0)


def test_preprocess_scales_to_unit_interval():
    x = data.preprocess(np.array([0, 51, 255], np.uint8))
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, np.array([0.0, 0.2, 1.0], np.float32))


def test_translate_moves_pixels_and_fills_with_zero():
    image = np.zeros((1, 5, 5, 1), np.uint8)
    image[0, 2, 2, 0] = 7
    moved = data.translate(np.repeat(image, 3, 0), np.array([[1, 0], [0, -2], [0, 0]]))
    assert moved[0, 3, 2, 0] == 7 and moved[0].sum() == 7
    assert moved[1, 2, 0, 0] == 7 and moved[1].sum() == 7
    np.testing.assert_array_equal(moved[2], image[0])
    edge = np.full((1, 3, 3, 1), 5, np.uint8)
    shifted = data.translate(edge, np.array([[0, 2]]))
    np.testing.assert_array_equal(shifted[0, :, :, 0], [[0, 0, 5], [0, 0, 5], [0, 0, 5]])


def test_augmented_batches_are_seeded_and_keep_labels(mnist_train):
    d = data.Dataset(mnist_train.images[:512], mnist_train.labels[:512])
    a = list(data.batches(d, 128, seed=1, epoch=0, shift=2))
    b = list(data.batches(d, 128, seed=1, epoch=0, shift=2))
    plain = list(data.batches(d, 128, seed=1, epoch=0))
    for (xa, ya), (xb, _), (xp, yp) in zip(a, b, plain, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yp)
        assert xa.shape == xp.shape and not np.array_equal(xa, xp)
