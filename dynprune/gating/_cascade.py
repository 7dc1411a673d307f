"""A confidence cascade over a slimmable :class:`GatedCNN`'s bucket widths: every input runs
at a narrow width first, and only the inputs the narrow network is unsure of run again wider.

With levels j_0 < j_1 < … < j_{K−1} (bucket indices; every gated layer of level i at
bucket j_i, :func:`width_gates`), f_{j_i}(x) that network's logits and
p_i(x) = max_k softmax(f_{j_i}(x))_k its confidence, an input x stops at

    i*(x) = min { i : p_i(x) ≥ t }   (K − 1 if there is none),

and its output is f_{j_{i*}}(x). The threshold t ∈ [0, 1] trades MACs for error: t = 0
stops every input at level 0, and t = 1 runs every input whose confidence is below 1 up to
the last level. The levels share the stem: h = ``GatedCNN.features_of(x)`` is computed
once, and each level runs only the trunk. An input that stops at level i has paid every
level up to i (:func:`cascade_macs`):

    MACs(x) = M_stem + Σ_{i ≤ i*(x)} (M_{j_i} − M_stem),

M_j the MACs per example at bucket j (:func:`bucket_macs`) and M_stem the stem's.

The levels' networks are nested prefixes of one set of weights (a slimmable supernet,
:func:`slimmable_loss`), so the cascade adds no parameters and no training: it is
Big/Little inference, or confidence-based early exit, along the width of one network.
:func:`cascade` is the masked reference, one traceable program (t may be traced);
:class:`CascadeRunner` skips the work the cascade does not do, running each level sliced
(:class:`BucketRunner`) on the inputs that reach it.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from dynprune import gating
  >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)
  >>> x = jnp.linspace(0, 1, 4 * 64).reshape(4, 8, 8, 1)
  >>> params = model.init(jax.random.key(0), x)["params"]
  >>> h = model.apply({"params": params}, x, method=gating.GatedCNN.features_of)
  >>> run = jax.jit(lambda t: gating.cascade(model, params, h, t))
  >>> logits, level = run(0.0)    # t = 0: every input stops at level 0, the narrowest
  >>> level.tolist(), gating.cascade_macs(model, params, level, example=x[:1]).tolist()
  ([0, 0, 0, 0], [7512.0, 7512.0, 7512.0, 7512.0])

References:
  Park et al., "Big/LITTLE Deep Neural Network for Ultra Low Power Inference",
  CODES+ISSS 2015; Teerapittayanon et al., "BranchyNet: Fast Inference via Early Exiting
  from Deep Neural Networks", ICPR 2016; Yu & Huang, "Universally Slimmable Networks and
  Improved Training Techniques", ICCV 2019.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dynprune import checks, stats
from dynprune.gating._buckets import BucketRunner, _padded_size, _run_trunk, _slice_params
from dynprune.gating._cnn import GatedCNN
from dynprune.gating._gates import Gates
from dynprune.gating._slimmable import _widths, bucket_macs, width_gates
from dynprune.pruner import PyTree

__all__ = [
    "CascadeRunner",
    "cascade",
    "cascade_levels",
    "cascade_macs",
    "check_confidence_threshold",
]


def cascade_levels(model: GatedCNN, levels: Sequence[int] | None = None) -> tuple[int, ...]:
    """The cascade's levels (bucket indices j_0 < … < j_{K−1}) after checking them.

    Args:
      model: a :class:`GatedCNN` with ``mode="prefix"`` and J ≥ 2 ``buckets``.
      levels: at least 2 strictly increasing integers in [0, J); default (0, J − 1), the
        narrowest width, then the full one.

    Returns:
      The levels as a tuple of ints.

    Raises:
      ValueError: for a model not in prefix mode or without buckets, or bad ``levels``,
        naming them.

    Examples:
      >>> from dynprune import gating
      >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)   # 4 buckets
      >>> gating.cascade_levels(model), gating.cascade_levels(model, [0, 1, 3])
      ((0, 3), (0, 1, 3))
      >>> gating.cascade_levels(model, (3, 1))
      Traceback (most recent call last):
      ...
      ValueError: levels must be at least 2 strictly increasing bucket indices in [0, 4), got (3, 1)
    """
    buckets = len(_widths(model)[0])
    given = (0, buckets - 1) if levels is None else tuple(levels)
    ok = (
        len(given) >= 2
        and all(isinstance(j, int | np.integer) and 0 <= j < buckets for j in given)
        and all(a < b for a, b in itertools.pairwise(given))
    )
    if not ok:
        raise ValueError(
            "levels must be at least 2 strictly increasing bucket indices in "
            f"[0, {buckets}), got {given if levels is None else levels!r}"
        )
    return tuple(int(j) for j in given)


def check_confidence_threshold(threshold: Any) -> float:
    """The cascade's threshold t as a float after checking it is a finite number in [0, 1].

    Args:
      threshold: t, the confidence (max softmax probability) at which an input stops.

    Returns:
      t as a float.

    Raises:
      TypeError: if ``threshold`` is not a real scalar.
      ValueError: if it is NaN or outside [0, 1], naming ``threshold`` and the value.

    Examples:
      >>> from dynprune import gating
      >>> gating.check_confidence_threshold(0.9)
      0.9
      >>> gating.check_confidence_threshold(1.5)
      Traceback (most recent call last):
      ...
      ValueError: threshold must be a finite number in [0, 1], got 1.5
    """
    return checks.real("threshold", threshold, 0.0, 1.0)


def _width_gates(model: GatedCNN, bucket: Any, batch: int) -> tuple[Gates, ...]:
    """Every example of a batch of ``batch`` at bucket ``bucket``."""
    return width_gates(model, jnp.full((batch,), bucket, jnp.int32))


def cascade(
    model: GatedCNN,
    params: PyTree,
    h: jax.Array,
    threshold: Any,
    levels: Sequence[int] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The cascade, masked: every level's logits, and per example the first level whose
    confidence reaches the threshold.

    With f_{j_i} the trunk at level i's bucket (``GatedCNN.trunk`` under
    :func:`width_gates`) and p_i = max softmax(f_{j_i}(h)),

        i* = min { i : p_i ≥ t }   (K − 1 if there is none),   output f_{j_{i*}}(h).

    Every level runs on every example (the reference :class:`CascadeRunner` is checked
    against; it does not save work). Traceable: under ``jit`` t may be traced, so a sweep
    over thresholds compiles once.

    Args:
      model: a :class:`GatedCNN` with ``mode="prefix"`` and ``buckets``.
      params: its parameters (the predictors', if present, are not read).
      h: stem features [B, ...] (``GatedCNN.features_of``).
      threshold: t ∈ [0, 1] (:func:`check_confidence_threshold`; a traced value is not checked).
      levels: bucket indices (:func:`cascade_levels`; default the narrowest, then the full
        width).

    Returns:
      The chosen level's logits, float [B, classes], and i*, int32 [B] (an index into
      ``levels``).

    Raises:
      ValueError: for a model not in prefix mode or without buckets, bad ``levels``, or a
        concrete threshold outside [0, 1].

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)
      >>> x = jnp.linspace(0, 1, 4 * 64).reshape(4, 8, 8, 1)
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> h = model.apply({"params": params}, x, method=gating.GatedCNN.features_of)
      >>> run = jax.jit(lambda t: gating.cascade(model, params, h, t, levels=(0, 1, 3)))
      >>> run(0.0)[1].tolist(), run(1.0)[1].tolist()
      ([0, 0, 0, 0], [2, 2, 2, 2])

    References:
      Park et al., "Big/LITTLE Deep Neural Network for Ultra Low Power Inference",
      CODES+ISSS 2015; Teerapittayanon et al., "BranchyNet", ICPR 2016.
    """
    levels = cascade_levels(model, levels)
    if not isinstance(threshold, jax.core.Tracer):
        check_confidence_threshold(threshold)
    variables = {"params": params}

    def logits_at(bucket: jax.Array) -> jax.Array:
        gates = _width_gates(model, bucket, h.shape[0])
        return model.apply(variables, h, gates, method=GatedCNN.trunk)

    logits = jax.vmap(logits_at)(jnp.asarray(levels, jnp.int32))  # [K, B, classes]
    stops = jax.nn.softmax(logits, axis=-1).max(axis=-1) >= threshold
    level = jnp.argmax(stops.at[-1].set(True), axis=0).astype(jnp.int32)
    return jnp.take_along_axis(logits, level[None, :, None], axis=0)[0], level


def cascade_macs(
    model: GatedCNN,
    params: PyTree,
    level: Any,
    levels: Sequence[int] | None = None,
    *,
    example: jax.Array,
) -> np.ndarray:
    """MACs per example of the cascade: an example that stopped at level i paid every level
    up to i, the stem once.

        MACs = M_stem + Σ_{k ≤ i} (M_{j_k} − M_stem),

    M_j the MACs per example at bucket j (:func:`bucket_macs`: the stem, the gated layers
    and the head) and M_stem the stem's (:func:`dynprune.stats.cost` of
    ``GatedCNN.features_of``), which every level shares. Work that the run did not need
    (:class:`CascadeRunner`'s padding rows) is not counted.

    Args:
      model: a :class:`GatedCNN` with ``mode="prefix"`` and ``buckets``.
      params: its parameters (the predictors', if present, are ignored).
      level: int [B], each example's stopping level, an index into ``levels``.
      levels: bucket indices (:func:`cascade_levels`).
      example: one input with a batch axis of 1.

    Returns:
      float64 [B].

    Raises:
      ValueError: for a model not in prefix mode or without buckets, bad ``levels``, or a
        level outside [0, K).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> model, x = gating.GatedCNN(features=(4, 8, 8), classes=3), jnp.ones((1, 8, 8, 1))
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> # M = 7512 (bucket 0), 30048 (bucket 3), the stem 64·9·4 = 2304
      >>> gating.cascade_macs(model, params, [0, 1], example=x).tolist()  # 2304 + 5208 + 27744
      [7512.0, 35256.0]
    """
    levels = cascade_levels(model, levels)
    level = np.asarray(level)
    if level.ndim != 1 or not ((level >= 0) & (level < len(levels))).all():
        raise ValueError(f"level must be [B] indices in [0, {len(levels)}), got {level.tolist()}")
    features = lambda p, x: model.apply({"params": p}, x, method=GatedCNN.features_of)
    stem = float(stats.cost(features, {"stem": params["stem"]}, example)["total"]["macs_dense"])
    paid = np.cumsum(bucket_macs(model, params, example)[list(levels)] - stem) + stem
    return paid[level]


def _confidence(logits: np.ndarray) -> np.ndarray:
    """max softmax per row: 1 / Σ_k exp(z_k − max z)."""
    return 1.0 / np.exp(logits - logits.max(axis=-1, keepdims=True)).sum(axis=-1)


class CascadeRunner:
    """Runs :func:`cascade` skipping the work it does not do: each level sliced, on the
    examples that reach it.

    Two paths, both equal to the masked :func:`cascade` up to float summation order:

    - ``run(h, t)``: per example. Level 0's sliced program (:class:`BucketRunner`) runs on
      every example, the logits come back to the host, and only the examples whose
      confidence is below t go on to level 1 (their rows of h gathered), and so on; each
      example's logits are those of the level it stopped at. A level's subset of n
      examples is padded to the size :class:`BucketRunner` pads a group to (a power of two
      up to 8, else a multiple of 8), so a few batch sizes are compiled rather than one per
      n. A call is a sliced program and a host sync per level visited.
    - ``compact(x, t)``: per batch, from the images. One jitted program runs the stem and
      level 0 sliced, and each next level sliced on the whole batch only if some example
      is still unsure (``lax.cond``: XLA runs the taken branch only), keeping for each
      example the logits of the level it stopped at: no host round trip, one dispatch. At
      batch 1 this is exactly the cascade's work; at batch B every example pays for the
      levels its batch's least sure example needed.

    Args:
      model: a :class:`GatedCNN` with ``mode="prefix"`` and ``buckets``.
      params: its parameters (a slimmable supernet's, :func:`slimmable_loss`).
      levels: bucket indices (:func:`cascade_levels`; default the narrowest, then the full
        width).

    Attributes:
      levels: the checked levels.
      runner: the :class:`BucketRunner` whose sliced programs run the levels.

    Raises:
      ValueError: for a model not in prefix mode or without buckets, or bad ``levels``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)
      >>> x = jnp.linspace(0, 1, 4 * 64).reshape(4, 8, 8, 1)
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> h = model.apply({"params": params}, x, method=gating.GatedCNN.features_of)
      >>> runner = gating.CascadeRunner(model, params)
      >>> logits, level = runner.run(h, 0.5)
      >>> masked, expected = gating.cascade(model, params, h, 0.5)
      >>> bool(jnp.allclose(logits, masked, atol=1e-5)), level.tolist() == expected.tolist()
      (True, True)
      >>> bool(jnp.allclose(runner.compact(x[:1], 0.5), masked[:1], atol=1e-5))
      True

    References:
      Park et al., "Big/LITTLE Deep Neural Network for Ultra Low Power Inference",
      CODES+ISSS 2015; Teerapittayanon et al., "BranchyNet", ICPR 2016.
    """

    def __init__(self, model: GatedCNN, params: PyTree, levels: Sequence[int] | None = None):
        self.levels = cascade_levels(model, levels)
        self.model = model
        self.runner = BucketRunner(model, params)
        self._gates: dict[tuple[int, int], tuple[Gates, ...]] = {}
        layers = len(self.runner.widths)
        self._sliced = []  # per level: the narrow model, its widths, its parameters
        for bucket in self.levels:
            narrow, widths = self.runner._narrow((bucket,) * layers)
            self._sliced.append(
                (narrow, widths, _slice_params(self.runner.params, self.runner.channels, widths))
            )
        self._compact = jax.jit(self._compact_pass)

    def _compact_pass(self, x: jax.Array, threshold: jax.Array) -> jax.Array:
        # parameters are closed over (constants to XLA), as in the dense program timed against
        h = self.model.apply({"params": self.runner.params}, x, method=GatedCNN.features_of)

        def from_level(i: int) -> jax.Array:
            narrow, widths, params = self._sliced[i]
            gates = _width_gates(self.model, self.levels[i], x.shape[0])
            logits = _run_trunk(narrow, widths, params, h, gates)
            if i == len(self.levels) - 1:
                return logits
            stop = jax.nn.softmax(logits, axis=-1).max(axis=-1) >= threshold  # as in cascade
            later = jax.lax.cond(stop.all(), lambda: logits, lambda: from_level(i + 1))
            return jnp.where(stop[:, None], logits, later)

        return from_level(0)

    def compact(self, x: jax.Array, threshold: Any) -> jax.Array:
        """Logits [B, classes] of the cascade on images ``x`` in one dispatch (the class
        docstring's second path; t is an argument of the program, so changing it does not
        recompile).

        Args:
          x: images [B, H, W, C].
          threshold: t ∈ [0, 1].

        Returns:
          The logits, equal to :func:`cascade`'s on ``GatedCNN.features_of(x)`` up to float
          summation order.

        Raises:
          ValueError: for a threshold outside [0, 1].
        """
        return self._compact(x, np.float32(check_confidence_threshold(threshold)))

    def _level_gates(self, bucket: int, batch: int) -> tuple[Gates, ...]:
        """Every example at ``bucket``: the same arrays for every call of this size."""
        if (bucket, batch) not in self._gates:
            self._gates[bucket, batch] = _width_gates(self.model, bucket, batch)
        return self._gates[bucket, batch]

    def run(self, h: jax.Array, threshold: Any) -> tuple[jax.Array, np.ndarray]:
        """Logits [B, classes] of the cascade on stem features ``h``, level by level, and
        each example's stopping level, int32 [B] (an index into ``levels``).

        Args:
          h: stem features [B, ...] (``GatedCNN.features_of``).
          threshold: t ∈ [0, 1].

        Returns:
          The logits (equal to :func:`cascade`'s up to float summation order) and the
          levels (equal to its, but where a confidence lies within rounding of t).

        Raises:
          ValueError: for a threshold outside [0, 1].
        """
        threshold = check_confidence_threshold(threshold)
        batch = h.shape[0]
        index = np.arange(batch)  # the examples still running
        level = np.zeros(batch, np.int32)
        ran = []  # (examples, their logits) per level run
        for i, bucket in enumerate(self.levels):
            size = _padded_size(index.size, batch)
            if index.size == batch:
                rows = h
            else:
                rows = h[np.concatenate([index, np.full(size - index.size, index[0])])]
            logits, _ = self.runner.run(rows, self._level_gates(bucket, size))
            ran.append((index, logits))
            level[index] = i
            if i == len(self.levels) - 1:
                break
            confidence = _confidence(np.asarray(logits)[: index.size])
            unsure = confidence < np.asarray(threshold, confidence.dtype)  # as in cascade
            if not unsure.any():
                break
            index = index[unsure]
        if ran[-1][0].size == batch:  # every example stopped at the last level run
            return ran[-1][1], level
        out = np.empty((batch, ran[0][1].shape[-1]), ran[0][1].dtype)
        for index, logits in ran:
            out[index] = np.asarray(logits)[: index.size]
        return jnp.asarray(out), level
