"""Tests for dynprune.harness.png against PIL's encoder and decoder."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dynprune.harness import png


def _encode(image: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def _with_filters(image: np.ndarray, kinds: np.ndarray) -> bytes:
    """A PNG whose row i uses filter `kinds[i]` (PNG spec §9), built by hand."""
    x = image.astype(np.int16)
    left = np.pad(x, ((0, 0), (1, 0)))[:, :-1]
    up = np.pad(x, ((1, 0), (0, 0)))[:-1]
    upleft = np.pad(x, ((1, 0), (1, 0)))[:-1, :-1]
    p = left + up - upleft
    da, db, dc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    paeth = np.where((da <= db) & (da <= dc), left, np.where(db <= dc, up, upleft))
    preds = np.stack([np.zeros_like(x), left, up, (left + up) // 2, paeth])
    pred = preds[kinds, np.arange(len(x))]
    rows = np.concatenate([kinds[:, None], (x - pred) & 0xFF], axis=1)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    header = struct.pack(">IIBBBBB", x.shape[1], x.shape[0], 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.astype(np.uint8).tobytes()))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(0, 20, (8, 28, 28)), axis=2) % 256
    return np.concatenate([rng.integers(0, 256, (8, 28, 28)), smooth]).astype(np.uint8)


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4, "mixed"])
def test_filter_types_roundtrip(images, kind):
    rng = np.random.default_rng(1)
    kinds = [rng.integers(0, 5, 28) if kind == "mixed" else np.full(28, kind) for _ in images]
    blobs = [_with_filters(x, k) for x, k in zip(images, kinds, strict=True)]
    decoded = png.decode_grayscale(blobs, 28, 28)
    np.testing.assert_array_equal(decoded, images)


def test_matches_pil_on_pil_encoded_images(images):
    blobs = [_encode(x, optimize=i % 2 == 0) for i, x in enumerate(images)]
    decoded = png.decode_grayscale(blobs, 28, 28)
    assert decoded.dtype == np.uint8 and decoded.shape == (16, 28, 28)
    np.testing.assert_array_equal(decoded, [np.asarray(Image.open(io.BytesIO(b))) for b in blobs])


def test_rejects_other_layouts(images):
    with pytest.raises(ValueError, match="8-bit grayscale"):
        png.decode_grayscale([_encode(images[0])], 27, 28)
    rgb = np.repeat(images[0][..., None], 3, axis=2)
    with pytest.raises(ValueError, match="8-bit grayscale"):
        png.decode_grayscale([_encode(rgb)], 28, 28)
