"""Exact, O(n) selection of the k lowest-ranked entries of one or more arrays (traced k).

Scores are mapped to order-preserving ``uint32`` keys (:func:`order_keys`: NaN ranks
lowest, ``-0.0 == +0.0``). The k-th smallest key T is found by a two-pass radix select:
a 65,536-bin histogram of the high 16 bits (scatter-add), then one of the low 16 bits
restricted to the chosen bin. Entries with key < T are dropped; entries equal to T are
dropped in position order (earlier arrays first, then lower flat index) until exactly k
are dropped. So for every k in [0, n] exactly k entries are dropped, with all-equal
scores too, and k may be a traced integer (sweeps compile once; ``vmap`` works).

Cost: two scatter passes and one compare pass over the data, plus a third scatter pass
only when T is tied across the cut — versus O(n log n) for ``jnp.argsort``
(``experiments/bench.py`` measures the ratio).

References:
  Radix select: e.g. Alabi et al., "Fast k-Selection Algorithms for Graphics Processing
  Units", ACM JEA 2012.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["drop_lowest", "order_keys"]

_DIGIT_BITS = 16
_BINS = 1 << _DIGIT_BITS
_BLOCK = 256


def order_keys(x: jax.Array) -> jax.Array:
    """Order-preserving ``uint32`` keys of floating ``x``: ``a < b  ⇔  key(a) < key(b)``.

    NaN maps to 0, below ``-inf``, so NaN scores always rank lowest. ``-0.0`` and ``+0.0``
    share a key. Half-precision inputs are widened exactly; float64 rounds to float32.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"order_keys needs floating scores, got dtype {x.dtype}")
    x32 = x.astype(jnp.float32)
    x32 = jnp.where(x32 == 0, jnp.float32(0.0), x32)  # -0.0 -> +0.0
    bits = lax.bitcast_convert_type(x32, jnp.uint32)
    negative = (bits >> 31) == 1
    keys = jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))
    return jnp.where(jnp.isnan(x32), jnp.uint32(0), keys)


def _locate(hist: jax.Array, rank: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Smallest bin b with cumsum(hist)[b] >= rank (rank >= 1), and the count before b."""
    rows = hist.reshape(_BLOCK, -1)
    row_totals = rows.sum(axis=1)
    row_cum = jnp.cumsum(row_totals)
    row = jnp.minimum(jnp.sum(row_cum < rank), _BLOCK - 1)
    before_row = row_cum[row] - row_totals[row]
    within = lax.dynamic_index_in_dim(rows, row, keepdims=False)
    within_cum = jnp.cumsum(within) + before_row
    col = jnp.minimum(jnp.sum(within_cum < rank), within.shape[0] - 1)
    return row * within.shape[0] + col, within_cum[col] - within[col]


def _kth_key(keys: Sequence[jax.Array], k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The k-th smallest key T over all ``keys`` (k >= 1), #keys < T and #keys == T."""
    high = [(key >> _DIGIT_BITS).astype(jnp.int32) for key in keys]
    hist = jnp.zeros(_BINS, jnp.int32)
    for h in high:
        hist = hist.at[h].add(1)
    hi_bin, before_hi = _locate(hist, k)
    hist = jnp.zeros(_BINS, jnp.int32)
    for key, h in zip(keys, high, strict=True):
        low = (key & jnp.uint32(_BINS - 1)).astype(jnp.int32)
        hist = hist.at[jnp.where(h == hi_bin, low, _BINS)].add(1, mode="drop")
    lo_bin, before_lo = _locate(hist, k - before_hi)
    threshold = (hi_bin.astype(jnp.uint32) << _DIGIT_BITS) | lo_bin.astype(jnp.uint32)
    return threshold, before_hi + before_lo, hist[lo_bin]


def _drop_first_ties(equal: Sequence[jax.Array], need: jax.Array) -> list[jax.Array]:
    """Flag the first ``need`` True entries of ``equal`` in (array, flat index) order.

    Blocks of 256 positions are histogrammed to find the block holding the cut, then
    only that block is prefix-summed: O(n) work, no full-length scan.
    """
    n_blocks = [-(-e.size // _BLOCK) for e in equal]
    offsets = [sum(n_blocks[:i]) for i in range(len(equal))]
    total_blocks = sum(n_blocks)
    padded_bins = -(-total_blocks // _BLOCK) * _BLOCK
    hist = jnp.zeros(padded_bins, jnp.int32)
    for e, offset in zip(equal, offsets, strict=True):
        block_of = offset + jnp.arange(e.size, dtype=jnp.int32) // _BLOCK
        hist = hist.at[block_of].add(e.astype(jnp.int32))
    cut_block, before = _locate(hist, need)
    remaining = need - before
    dropped = []
    for e, offset, nb in zip(equal, offsets, n_blocks, strict=True):
        padded = jnp.pad(e, (0, nb * _BLOCK - e.size))
        local = jnp.clip(cut_block - offset, 0, nb - 1)
        block = lax.dynamic_slice_in_dim(padded, local * _BLOCK, _BLOCK)
        last = jnp.sum(jnp.cumsum(block.astype(jnp.int32)) < remaining)
        position = jnp.arange(e.size, dtype=jnp.int32)
        global_block = offset + position // _BLOCK
        in_cut_block = (global_block == cut_block) & (position % _BLOCK <= last)
        dropped.append(e & ((global_block < cut_block) | in_cut_block))
    return dropped


def drop_lowest(scores: Sequence[jax.Array], k: jax.Array | int) -> list[jax.Array]:
    """Keep-masks that drop exactly the ``k`` lowest-scored entries across all ``scores``.

    Args:
      scores: floating arrays of any shapes; ranked jointly (global selection when several).
      k: number of entries to drop, a Python or traced integer; clipped to [0, n].

    Returns:
      One bool array per input, of the same shape: True = kept. Exactly ``k`` are False.
      Ties at the cut are dropped in position order: earlier arrays first, then lower
      flat (C-order) index.

    Examples:
      >>> import jax.numpy as jnp
      >>> [m] = drop_lowest([jnp.array([3.0, 1.0, 2.0, 1.0])], 2)
      >>> m.tolist()
      [True, False, True, False]
    """
    if not scores:
        return []
    shapes = [jnp.shape(s) for s in scores]
    keys = [order_keys(s).reshape(-1) for s in scores]
    n = sum(key.size for key in keys)
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, n)
    rank = jnp.maximum(k, 1)
    threshold, n_below, n_equal = _kth_key(keys, rank)
    need = jnp.where(k > 0, k - n_below, 0)
    below = [key < threshold for key in keys]
    equal = [key == threshold for key in keys]
    tied = lax.cond(
        (need > 0) & (need < n_equal),
        lambda: _drop_first_ties(equal, need),
        lambda: [e & (need > 0) for e in equal],
    )
    return [~(b | t).reshape(shape) for b, t, shape in zip(below, tied, shapes, strict=True)]
