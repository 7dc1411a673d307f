"""Per-input channel gates: the saliency predictor's rules for which output channels run.

A gated layer computes a saliency s ∈ R^C_{≥0} per example (one value per output channel)
and a keep-mask m ∈ {0, 1}^C from it; its output is y ⊙ (s ⊙ m) broadcast over the
spatial axes. Three rules choose m, each a pure function of a traced knob, so a sweep of
the knob compiles once:

- ``"topk"`` (FBS, Gao et al. 2019): m keeps the k = ⌈d·C⌉ largest s_c, ties by lower
  channel index; exactly k channels per example.
- ``"threshold"`` (channel gating by a threshold, cf. Hua et al. 2019): m_c = [s_c > τ].
- ``"prefix"`` (dynamic width, cf. Li et al. 2021): m keeps the first w channels, w the
  narrowest prefix carrying a fraction d of the example's saliency mass, rounded up to
  an allowed width; the work can then be sliced (``kernel[..., :w]``) instead of masked.

References:
  Gao et al., "Dynamic Channel Pruning: Feature Boosting and Suppression", ICLR 2019;
  Hua et al., "Channel Gating Neural Networks", NeurIPS 2019;
  Li et al., "Dynamic Slimmable Network", CVPR 2021.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from dynprune import checks, select

__all__ = [
    "MODES",
    "Gates",
    "bucket_widths",
    "check_buckets",
    "check_density",
    "check_mode",
    "gate",
    "kept_count",
    "l1_penalty",
    "pool",
    "predict",
    "prefix_gate",
    "scale_channels",
    "threshold_gate",
    "topk_gate",
]

MODES = ("topk", "threshold", "prefix")
"""The gate rules a gated layer's ``mode`` may name."""

_REL_TOL = 1e-6  # d·C within this relative distance above an integer counts as that integer


class Gates(NamedTuple):
    """What a gated layer's predictor decided for a batch.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import gating
      >>> g = gating.Gates(jnp.array([[2.0, 1.0, 0.5]]), jnp.array([[True, False, True]]))
      >>> g.scale.tolist()
      [[2.0, 0.0, 0.5]]

    Attributes:
      saliency: s, float [B, C], s ≥ 0: the predictor's output, before the mask (the L1
        penalty and the gradients to the predictor go through it).
      kept: m, bool [B, C]: the channels that run for each example.
    """

    saliency: jax.Array
    kept: jax.Array

    @property
    def scale(self) -> jax.Array:
        """s ⊙ m, the per-example channel scale applied to the layer's output."""
        return self.saliency * self.kept.astype(self.saliency.dtype)


def check_mode(mode: str) -> str:
    """``mode`` after checking it is one of :data:`MODES`.

    Raises:
      ValueError: naming the valid modes.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    return mode


def check_density(density: Any) -> Any:
    """``density`` after checking a concrete value is a scalar in (0, 1].

    A value traced inside ``jit`` cannot raise; it is returned unchanged and the gates
    clip it (see :func:`kept_count`).

    Args:
      density: d, the fraction of channels (or of saliency mass) kept.

    Returns:
      ``density`` unchanged.

    Raises:
      TypeError: if a concrete ``density`` is not a real scalar.
      ValueError: if it is NaN, infinite, ≤ 0 or > 1, naming ``density`` and the value.

    Examples:
      >>> from dynprune import gating
      >>> gating.check_density(0.5)
      0.5
      >>> gating.check_density(0.0)
      Traceback (most recent call last):
      ...
      ValueError: density must be a finite number in (0, 1], got 0.0
    """
    if isinstance(density, jax.core.Tracer):
        return density
    what = f"density must be a finite number in (0, 1], got {density!r}"
    try:
        value = checks.real("density", density, 0.0, 1.0)
    except ValueError:
        raise ValueError(what) from None
    except TypeError:
        raise TypeError(what) from None
    if value <= 0.0:
        raise ValueError(what)
    return density


def check_threshold(threshold: Any) -> Any:
    """``threshold`` after checking a concrete value is a finite real scalar (traced: as is)."""
    if not isinstance(threshold, jax.core.Tracer):
        checks.real("threshold", threshold)
    return threshold


def check_buckets(buckets: Sequence[float] | None) -> tuple[float, ...] | None:
    """``buckets`` as a tuple after checking they are increasing fractions in (0, 1] ending at 1.

    Args:
      buckets: the width fractions of a prefix gate, e.g. (0.25, 0.5, 0.75, 1.0), or None
        (every width allowed).

    Returns:
      The fractions as a tuple of floats (None for None).

    Raises:
      ValueError: naming ``buckets`` and the value.

    Examples:
      >>> from dynprune import gating
      >>> gating.check_buckets([0.5, 1])
      (0.5, 1.0)
      >>> gating.check_buckets([0.5, 0.75])
      Traceback (most recent call last):
      ...
      ValueError: buckets must be increasing fractions in (0, 1] ending at 1.0, got [0.5, 0.75]
    """
    if buckets is None:
        return None
    values = tuple(float(b) for b in buckets)
    ok = (
        len(values) > 0
        and all(0.0 < b <= 1.0 for b in values)
        and all(a < b for a, b in itertools.pairwise(values))
        and values[-1] == 1.0
    )
    if not ok:
        raise ValueError(
            f"buckets must be increasing fractions in (0, 1] ending at 1.0, got {buckets!r}"
        )
    return values


def kept_count(density: Any, channels: int) -> jax.Array:
    """k = ⌈d·C⌉, clipped to [1, C], as an int32 scalar; ``density`` may be traced.

    d·C is computed in float32 and a value within a relative 10⁻⁶ above an integer counts
    as that integer, so float rounding never adds a channel (0.3·10 keeps 3, not 4). A
    traced d outside (0, 1] is clipped: d ≤ 0 or NaN keeps 1 channel, d > 1 keeps C.

    Args:
      density: d, a scalar (concrete or traced).
      channels: C ≥ 1.

    Returns:
      int32 scalar k.

    Examples:
      >>> from dynprune import gating
      >>> [int(gating.kept_count(d, 10)) for d in (0.01, 0.3, 0.31, 1.0)]
      [1, 3, 4, 10]
    """
    x = jnp.asarray(density, jnp.float32) * channels
    k = jnp.ceil(x * (1.0 - _REL_TOL))
    k = jnp.where(jnp.isnan(k), 1.0, k)
    return jnp.clip(k, 1, channels).astype(jnp.int32)


def bucket_widths(buckets: Sequence[float], channels: int) -> tuple[int, ...]:
    """The allowed prefix widths ⌈f·C⌉ (clipped to [1, C]) of width fractions ``buckets``.

    Args:
      buckets: increasing width fractions f ∈ (0, 1].
      channels: C, the layer's width.

    Returns:
      One width per fraction.

    Examples:
      >>> from dynprune import gating
      >>> gating.bucket_widths((0.25, 0.5, 0.75, 1.0), 10)
      (3, 5, 8, 10)
    """
    return tuple(min(channels, max(1, math.ceil(f * channels * (1.0 - _REL_TOL)))) for f in buckets)


def topk_gate(saliency: jax.Array, density: Any) -> jax.Array:
    """FBS winner-take-all: keep the k = ⌈d·C⌉ largest saliencies of each example.

    Exactly k channels per example (:func:`kept_count`), ties broken by lower channel
    index, NaN ranked lowest. The rank comes from a stable argsort along the channel axis
    only (C is a layer's width, small); k is traced, so changing d does not recompile.

    Args:
      saliency: s, float [..., C].
      density: d ∈ (0, 1], a scalar (traced or concrete).

    Returns:
      bool [..., C], exactly k True per row.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import gating
      >>> s = jnp.array([[0.1, 0.9, 0.5, 0.5], [2.0, 0.0, 0.0, 0.0]])
      >>> gating.topk_gate(s, 0.5).astype(int).tolist()
      [[0, 1, 1, 0], [1, 1, 0, 0]]
    """
    channels = saliency.shape[-1]
    k = kept_count(density, channels)
    keys = select.order_keys(lax.stop_gradient(saliency))
    order = jnp.argsort(~keys, axis=-1, stable=True)  # descending saliency, ties by index
    rank = jnp.argsort(order, axis=-1)
    return rank < k


def threshold_gate(saliency: jax.Array, threshold: Any) -> jax.Array:
    """Keep m_c = [s_c > τ]; τ may be traced; NaN saliencies are dropped.

    The number kept varies per example (from 0 to C), which makes the work data-dependent
    in size: a threshold gate saves MACs on paper, a prefix gate can also save time.

    Args:
      saliency: s, float [..., C].
      threshold: τ, a real scalar (traced or concrete).

    Returns:
      bool [..., C].

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import gating
      >>> gating.threshold_gate(jnp.array([[0.1, 0.9, 0.5]]), 0.4).tolist()
      [[False, True, True]]
    """
    return lax.stop_gradient(saliency) > threshold


def prefix_gate(
    saliency: jax.Array, density: Any, buckets: Sequence[float] | None = None
) -> jax.Array:
    """Dynamic width: keep the first w channels of each example.

    With S_j = Σ_{c<j} s_c the cumulative saliency (s clamped at 0) and T = S_C, the raw
    width is the narrowest prefix carrying a fraction d of the saliency mass,

        w = min{ j ∈ [1, C] : S_j ≥ d · T },

    then rounded up to the smallest allowed width ⌈f·C⌉, f ∈ ``buckets`` (all widths 1..C
    when ``buckets`` is None). Channel order is the importance order: channel 0 is the
    most important by construction, so training with this gate teaches the network to
    put what matters first (as slimmable networks do). The kept fraction equals d when
    saliency is spread evenly; it is smaller for inputs whose saliency sits in the first
    channels, larger when it sits in the last. At d = 1 the prefix ends at the last
    channel with s > 0 (the channels cut all have s = 0, so output zero anyway). An
    all-zero s keeps one channel. d is traced; a traced d > 1 acts as 1.

    Args:
      saliency: s, float [..., C].
      density: d ∈ (0, 1], a scalar.
      buckets: increasing width fractions ending at 1.0, e.g. (0.25, 0.5, 0.75, 1.0).

    Returns:
      bool [..., C], a prefix of ones per row.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import gating
      >>> s = jnp.array([[4.0, 2.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
      >>> gating.prefix_gate(s, 0.5).astype(int).tolist()
      [[1, 0, 0, 0], [1, 1, 0, 0]]
      >>> gating.prefix_gate(s, 0.5, buckets=(0.5, 1.0)).astype(int).tolist()
      [[1, 1, 0, 0], [1, 1, 0, 0]]
    """
    channels = saliency.shape[-1]
    s = lax.stop_gradient(saliency)
    s = jnp.where(jnp.isnan(s), 0.0, jnp.maximum(s, 0.0))
    cum = jnp.cumsum(s, axis=-1)
    d = jnp.minimum(jnp.asarray(density, cum.dtype), 1.0)
    width = jnp.sum(cum < d * cum[..., -1:], axis=-1) + 1
    width = jnp.clip(width, 1, channels)
    if buckets is not None:
        allowed = jnp.asarray(bucket_widths(check_buckets(buckets), channels), width.dtype)
        width = allowed[jnp.searchsorted(allowed, width, method="compare_all")]
    index = jnp.arange(channels).reshape((1,) * (saliency.ndim - 1) + (channels,))
    return index < width[..., None]


def gate(
    saliency: jax.Array,
    mode: str,
    density: Any = 1.0,
    threshold: Any = 0.0,
    buckets: Sequence[float] | None = None,
) -> jax.Array:
    """The keep-mask of ``mode`` (:data:`MODES`): :func:`topk_gate`, :func:`threshold_gate`
    or :func:`prefix_gate`. Concrete ``density`` / ``threshold`` are checked here.

    Args:
      saliency: s, float [..., C].
      mode: ``"topk"``, ``"threshold"`` or ``"prefix"``.
      density: d ∈ (0, 1] (``"topk"``, ``"prefix"``); default 1.0.
      threshold: τ (``"threshold"``); default 0.0.
      buckets: ``"prefix"`` only: the allowed width fractions (None: every width).

    Returns:
      bool [..., C], the channels kept per example.

    Raises:
      ValueError: for an unknown mode, a concrete density outside (0, 1], a non-finite
        threshold, or ``buckets`` with a mode other than ``"prefix"``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import gating
      >>> s = jnp.array([[3.0, 0.0, 1.0, 2.0]])
      >>> [gating.gate(s, m, 0.5, 1.5).astype(int).tolist() for m in gating.MODES]
      [[[1, 0, 0, 1]], [[1, 0, 0, 1]], [[1, 0, 0, 0]]]
    """
    check_mode(mode)
    if buckets is not None and mode != "prefix":
        raise ValueError(f"buckets apply to mode='prefix' only, got mode={mode!r}")
    if mode == "threshold":
        return threshold_gate(saliency, check_threshold(threshold))
    check_density(density)
    if mode == "topk":
        return topk_gate(saliency, density)
    return prefix_gate(saliency, density, buckets)


def predict(layer: Any, gate_input: jax.Array, density: Any, threshold: Any) -> Gates:
    """The :class:`Gates` of a gated layer (Linen or NNX: it has ``predictor``, ``mode`` and
    ``buckets``) for a batch: s = ``layer.predictor(pool(gate_input))`` and its :func:`gate`."""
    s = layer.predictor(pool(gate_input))
    return Gates(s, gate(s, layer.mode, density, threshold, layer.buckets))


def pool(x: jax.Array) -> jax.Array:
    """Global average over the axes between batch and channels (FBS's pool(x)): [B, ..., C]
    → [B, C]; a [B, C] input is returned as is.

    Args:
      x: [B, ..., C], at least 2 axes.

    Returns:
      [B, C].

    Raises:
      ValueError: for fewer than 2 axes.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import gating
      >>> gating.pool(jnp.arange(8.0).reshape(1, 2, 2, 2)).tolist()
      [[3.0, 4.0]]
    """
    if x.ndim < 2:
        raise ValueError(f"a gated layer needs a batch axis and a channel axis, got {x.shape}")
    return x.mean(axis=tuple(range(1, x.ndim - 1))) if x.ndim > 2 else x


def scale_channels(y: jax.Array, scale: jax.Array) -> jax.Array:
    """y ⊙ scale with ``scale`` [B, C] broadcast over y's axes between batch and channels."""
    shape = (scale.shape[0],) + (1,) * (y.ndim - 2) + (scale.shape[-1],)
    return y * scale.reshape(shape).astype(y.dtype)


def l1_penalty(gates: Any) -> jax.Array:
    """FBS's sparsity penalty Σ_layers mean_batch ‖s‖₁ over every :class:`Gates` in a pytree.

    Add λ times it to the task loss; it pushes saliencies, and so the kept channels'
    scales, towards zero.

    Args:
      gates: a pytree whose :class:`Gates` leaves are summed (other leaves are ignored).

    Returns:
      float32 scalar.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import gating
      >>> g = gating.Gates(jnp.array([[1.0, 2.0], [3.0, 0.0]]), jnp.ones((2, 2), bool))
      >>> float(gating.l1_penalty({"a": g, "b": g}))
      6.0
    """
    leaves = jax.tree.leaves(gates, is_leaf=lambda g: isinstance(g, Gates))
    terms = [
        jnp.abs(g.saliency).reshape(g.saliency.shape[0], -1).sum(-1).mean()
        for g in leaves
        if isinstance(g, Gates)
    ]
    return sum(terms, jnp.zeros([], jnp.float32))
