"""Per-input accounting of gated networks: effective MACs, their distribution, and how the
kept sets vary across inputs and classes. Pure NumPy functions over arrays of keep-masks.

A layer doing M MACs per example at full width, whose output channels are gated by
m_out ∈ {0,1}^{C_out} and whose input channels by m_in ∈ {0,1}^{C_in} (the previous gated
layer's mask: its pruned channels are zeros), does for example b

    MACs_b = M · (|m_out,b| / C_out) · (|m_in,b| / C_in),

exactly, since MACs = output elements × contraction length and the first scales with the
kept outputs, the second with the kept inputs. Effective MACs per example sum this over
the layers plus the predictors' own MACs; dense MACs are the layers' M without predictors.

References:
  Gao et al., "Dynamic Channel Pruning: Feature Boosting and Suppression", ICLR 2019
  (MAC reduction counted over both the gated outputs and the next layer's inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "LayerMACs",
    "MACSummary",
    "class_jaccard",
    "dense_macs",
    "density_per_class",
    "effective_macs",
    "mean_pairwise_jaccard",
    "summarize_macs",
]


class LayerMACs(NamedTuple):
    """One layer's full-width MACs per example and the gates that thin it.

    Attributes:
      macs: M, MACs per example at full width (e.g. from :func:`dynprune.stats.cost`).
      kept_out: bool [B, C_out] keep-mask of its output channels, or None (not gated).
      kept_in: bool [B, C_in] keep-mask of its input channels, or None (not gated).
      predictor: True for a gate predictor: counted in effective MACs, not in dense.

    Examples:
      >>> import numpy as np
      >>> from dynprune import gating
      >>> layer = gating.LayerMACs(100.0, kept_out=np.array([[1, 0, 0, 0]], bool))
      >>> gating.effective_macs([layer]).tolist()
      [25.0]
    """

    macs: float
    kept_out: Any = None
    kept_in: Any = None
    predictor: bool = False


def _fraction(kept: Any) -> np.ndarray | float:
    if kept is None:
        return 1.0
    kept = np.asarray(kept, bool)
    return kept.reshape(kept.shape[0], -1).mean(axis=-1)


def effective_macs(layers: Sequence[LayerMACs]) -> np.ndarray:
    """Effective MACs per example: Σ_layers M · (kept out fraction) · (kept in fraction).

    Args:
      layers: every layer of the network, predictors included (``predictor=True``).

    Returns:
      float64 [B] (B from the masks; 1 when no layer is gated).

    Examples:
      A gated 2→4 Dense (8 MACs) keeping 1 and 3 channels, its 4→3 successor (12 MACs)
      and a 2→4 predictor (8 MACs): 8·1/4 + 12·1/4 + 8 = 13 and 8·3/4 + 12·3/4 + 8 = 23.

      >>> import numpy as np
      >>> from dynprune import gating
      >>> m = np.array([[1, 0, 0, 0], [1, 1, 1, 0]], bool)
      >>> layers = [gating.LayerMACs(8, kept_out=m), gating.LayerMACs(12, kept_in=m),
      ...           gating.LayerMACs(8, predictor=True)]
      >>> gating.effective_macs(layers).tolist(), gating.dense_macs(layers)
      ([13.0, 23.0], 20.0)
    """
    masks = [k for layer in layers for k in (layer.kept_out, layer.kept_in) if k is not None]
    batch = np.shape(masks[0])[0] if masks else 1
    total = np.zeros(batch)
    for layer in layers:
        total = total + layer.macs * _fraction(layer.kept_out) * _fraction(layer.kept_in)
    return total


def dense_macs(layers: Sequence[LayerMACs]) -> float:
    """MACs per example of the ungated network: Σ M over the layers that are not predictors.

    Args:
      layers: every layer of the network (:class:`LayerMACs`), predictors included.

    Returns:
      float.

    Examples:
      >>> from dynprune import gating
      >>> gating.dense_macs([gating.LayerMACs(8.0), gating.LayerMACs(2.0, predictor=True)])
      8.0
    """
    return float(sum(layer.macs for layer in layers if not layer.predictor))


class MACSummary(NamedTuple):
    """Distribution of effective MACs per example over a dataset.

    Attributes:
      dense: MACs per example of the ungated network.
      mean: mean effective MACs per example.
      p50: median.
      p95: 95th percentile.
      reduction: dense / mean.

    Examples:
      >>> from dynprune import gating
      >>> gating.summarize_macs([10.0, 30.0], dense=40.0).reduction
      2.0
    """

    dense: float
    mean: float
    p50: float
    p95: float
    reduction: float


def summarize_macs(effective: Any, dense: float) -> MACSummary:
    """:class:`MACSummary` of per-example effective MACs (linear-interpolated percentiles).

    Args:
      effective: effective MACs per example, [B] (:func:`effective_macs`).
      dense: MACs per example of the ungated network (:func:`dense_macs`).

    Returns:
      :class:`MACSummary`; ``reduction`` is inf when every example costs 0.

    Examples:
      >>> from dynprune import gating
      >>> gating.summarize_macs([10.0, 20.0, 30.0, 40.0], dense=50.0)
      MACSummary(dense=50.0, mean=25.0, p50=25.0, p95=38.5, reduction=2.0)
    """
    x = np.asarray(effective, np.float64)
    mean = float(x.mean())
    return MACSummary(
        dense=float(dense),
        mean=mean,
        p50=float(np.percentile(x, 50)),
        p95=float(np.percentile(x, 95)),
        reduction=float(dense) / mean if mean else float("inf"),
    )


def _kept_matrix(kept: Any) -> np.ndarray:
    """[B, C] bool from one mask array or a sequence of per-layer masks (concatenated)."""
    if isinstance(kept, list | tuple):
        kept = np.concatenate([np.asarray(k, bool).reshape(np.shape(k)[0], -1) for k in kept], -1)
    kept = np.asarray(kept, bool)
    return kept.reshape(kept.shape[0], -1)


def _jaccard_rows(kept: np.ndarray, start: int, stop: int) -> np.ndarray:
    """J[i, j] = |A_i ∩ A_j| / |A_i ∪ A_j| for rows start..stop against all (∅ vs ∅: 1)."""
    k = kept.astype(np.float32)
    inter = k[start:stop] @ k.T
    sizes = k.sum(axis=1)
    union = sizes[start:stop, None] + sizes[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _jaccard_sums(kept: np.ndarray, labels: np.ndarray, classes: int, block: int = 512):
    """Σ J over ordered pairs i ≠ j, by (class_i, class_j): [K, K] sums and pair counts."""
    onehot = np.eye(classes, dtype=np.float64)[labels]
    sums = np.zeros((classes, classes))
    for start in range(0, kept.shape[0], block):
        stop = min(start + block, kept.shape[0])
        rows = _jaccard_rows(kept, start, stop).astype(np.float64)
        rows[np.arange(stop - start), np.arange(start, stop)] = 0.0  # drop self-pairs
        sums += onehot[start:stop].T @ rows @ onehot
    n = onehot.sum(axis=0)
    pairs = np.outer(n, n) - np.diag(n)
    return sums, pairs


def mean_pairwise_jaccard(kept: Any) -> float:
    """Mean Jaccard similarity |A ∩ B| / |A ∪ B| of the kept sets over all pairs of examples.

    1.0 means every input keeps the same channels (a static pruning); lower values mean the
    gates adapt to the input. Computed in row blocks, O(B²·C) time and O(block·B) memory.

    Args:
      kept: bool [B, C], or a sequence of per-layer [B, C_l] masks (their union of
        channel positions is one set per example).

    Examples:
      >>> import numpy as np
      >>> from dynprune import gating
      >>> kept = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], bool)
      >>> round(gating.mean_pairwise_jaccard(kept), 4)  # (1 + 0 + 0) / 3
      0.3333
    """
    kept = _kept_matrix(kept)
    if kept.shape[0] < 2:
        raise ValueError(f"mean_pairwise_jaccard needs at least 2 examples, got {kept.shape[0]}")
    sums, pairs = _jaccard_sums(kept, np.zeros(kept.shape[0], int), 1)
    return float(sums.sum() / pairs.sum())


def _labels(labels: Any, batch: int, num_classes: int | None) -> tuple[np.ndarray, int]:
    labels = np.asarray(labels)
    if labels.shape != (batch,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape ({batch},), got {labels.shape}")
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must lie in [0, {classes}), got [{labels.min()}, {labels.max()}]")
    return labels, classes


def class_jaccard(kept: Any, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """Mean Jaccard of kept sets between examples of class a and class b, [K, K].

    The diagonal is the within-class similarity (self-pairs excluded); when it is above the
    off-diagonal, the gates pick channels by class. NaN where a class has too few examples.

    Args:
      kept: bool [B, C], or a sequence of per-layer [B, C_l] masks (one set per example).
      labels: int [B], the examples' classes in [0, K).
      num_classes: K (default: max label + 1).

    Returns:
      float64 [K, K].

    Examples:
      >>> import numpy as np
      >>> from dynprune import gating
      >>> kept = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1], [0, 1, 1]], bool)
      >>> gating.class_jaccard(kept, [0, 0, 1, 1]).round(3).tolist()
      [[1.0, 0.333], [0.333, 1.0]]
    """
    kept = _kept_matrix(kept)
    labels, classes = _labels(labels, kept.shape[0], num_classes)
    sums, pairs = _jaccard_sums(kept, labels, classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, sums / np.maximum(pairs, 1), np.nan)


def density_per_class(kept: Any, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """Mean kept fraction of the examples of each class, [K] (NaN for an absent class).

    Args:
      kept: bool [B, C], or a sequence of per-layer [B, C_l] masks (concatenated: the
        fraction is over all their channels).
      labels: int [B], the examples' classes in [0, K).
      num_classes: K (default: max label + 1).

    Returns:
      float64 [K].

    Examples:
      >>> import numpy as np
      >>> from dynprune import gating
      >>> kept = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
      >>> gating.density_per_class(kept, [0, 0, 1]).tolist()
      [0.375, 1.0]
    """
    kept = _kept_matrix(kept)
    labels, classes = _labels(labels, kept.shape[0], num_classes)
    fraction = kept.mean(axis=1)
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    sums = np.bincount(labels, weights=fraction, minlength=classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
