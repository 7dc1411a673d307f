"""NumPy reference implementations the core is tested against (independent of dynprune.select)."""

from fractions import Fraction

import numpy as np


def order_keys(x: np.ndarray) -> np.ndarray:
    """Rank keys with NaN lowest and -0.0 == +0.0, as float64 (exact for float32 inputs)."""
    x = np.asarray(x, np.float64) + 0.0
    return np.where(np.isnan(x), -np.inf, x), np.isnan(x)


def drop_lowest(arrays: list[np.ndarray], k: int) -> list[np.ndarray]:
    """Keep-masks dropping the k lowest entries jointly; ties dropped in position order."""
    flat = np.concatenate([np.asarray(a, np.float32).ravel() for a in arrays])
    values, is_nan = order_keys(flat)
    # lexsort: last key is primary -> (NaN first, then value, then position)
    order = np.lexsort((np.arange(flat.size), values, ~is_nan))
    keep = np.ones(flat.size, bool)
    keep[order[:k]] = False
    out, start = [], 0
    for a in arrays:
        out.append(keep[start : start + a.size].reshape(np.shape(a)))
        start += a.size
    return out


def count_to_drop(s: float, n: int) -> int:
    """round(s₃₂ · n), half to even, exactly, for the float32 value s₃₂ of s: the rule of
    dynprune.masks.count_to_drop for a traced s (the transform's case: hyperparameters live
    in the state as float32)."""
    return round(Fraction(float(np.float32(s))) * n)
