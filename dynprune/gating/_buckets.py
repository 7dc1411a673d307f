"""Width buckets: run a prefix-gated CNN at the widths each input keeps, skipping the rest.

With prefix gates (``mode="prefix"``) gated layer l keeps its first w_l channels, w_l one
of the bucket widths W_{l,j} = ⌈f_j·C_l⌉. An input's bucket is the tuple
(j_1, …, j_L) of its layers' width indices. For each bucket that occurs, one program is
compiled (on first use; at most |buckets|^L of them) on a physically narrower network:
gated layer l keeps ``kernel[:, :, :w_{l-1}, :w_l]``, the head the input rows of the
first w_L channels, and the gates multiply the kept channels by their saliency as in the
masked computation, so the outputs are equal (up to float summation order) while the
MACs done are exactly the effective ones (:func:`dynprune.gating.effective_macs`).

A call is: (1) the cheap pass — stem and predictors — one compiled program, (2) the
buckets read back to the host (a device sync: the host chooses what runs next), (3) the
examples grouped by bucket and each group run through its bucket's program. A group of n
examples is padded to the next power of two up to 8, else to a multiple of 8, so a few
batch sizes are compiled rather than one per n; the padding rows are counted as work. At
batch 1 a call is the gate pass, the sync, then one sliced program. Measured times
include every step.

The compact path (``BucketRunner.compact``) keeps the choice on the device instead: one
program computes the gates and ``lax.switch``-es to the sliced program of the batch's
widest kept width per layer (a union of prefixes is a prefix). At batch 1 it runs the
example's own widths without a host round trip; at batch B every example runs at the
widest of its batch, so it saves less as B grows and inputs differ.

References:
  Li et al., "Dynamic Slimmable Network", CVPR 2021 (slicing instead of masking);
  Gao et al., "Dynamic Channel Pruning: Feature Boosting and Suppression", ICLR 2019.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dynprune import stats
from dynprune.gating._accounting import dense_macs, effective_macs
from dynprune.gating._cnn import GatedCNN, layer_macs
from dynprune.gating._gates import Gates, bucket_widths, check_buckets, check_density
from dynprune.pruner import PyTree

__all__ = [
    "BucketRunner",
    "SkippingLatency",
    "bucket_groups",
    "format_skipping",
    "measure_skipping",
]


def _padded_size(n: int, batch: int) -> int:
    size = 1 << (n - 1).bit_length() if n <= 8 else -(-n // 8) * 8
    return min(size, batch)


def bucket_groups(bucket: Any) -> list[tuple[tuple[int, ...], np.ndarray, int]]:
    """The examples of each bucket: ``[(bucket, indices, padded size)]``, buckets sorted.

    Args:
      bucket: int [B, L], each example's width index per gated layer.

    Examples:
      >>> from dynprune import gating
      >>> groups = gating.bucket_groups([[1, 0], [0, 0], [1, 0], [1, 0], [1, 2]])
      >>> [(b, idx.tolist(), n) for b, idx, n in groups]
      [((0, 0), [1], 1), ((1, 0), [0, 2, 3], 4), ((1, 2), [4], 1)]
    """
    bucket = np.asarray(bucket).reshape(len(bucket), -1)
    keys, inverse = np.unique(bucket, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return [
        (tuple(int(j) for j in key), idx, _padded_size(idx.size, bucket.shape[0]))
        for g, key in enumerate(keys)
        for idx in [np.flatnonzero(inverse == g)]
    ]


def _slice_params(params: PyTree, channels: Sequence[int], widths: Sequence[int]) -> PyTree:
    """The parameters of a :class:`GatedCNN` cut to widths[l] channels per gated layer
    (sliced in NumPy: no small programs compiled per shape)."""
    params = jax.tree.map(np.asarray, params)
    out = {"stem": params["stem"]}
    for i, w in enumerate(widths):
        layer = params[f"gated_{i}"]["layer"]
        kernel = layer["kernel"][..., :w]
        if i:
            kernel = kernel[..., : widths[i - 1], :]
        sliced = {"kernel": kernel}
        if "bias" in layer:
            sliced["bias"] = layer["bias"][:w]
        out[f"gated_{i}"] = {"layer": sliced}
    kernel = params["head"]["kernel"]
    positions = kernel.shape[0] // channels[-1]
    kernel = kernel.reshape(positions, channels[-1], -1)[:, : widths[-1]]
    out["head"] = {**params["head"], "kernel": kernel.reshape(positions * widths[-1], -1)}
    return jax.tree.map(lambda a: jnp.asarray(np.ascontiguousarray(a)), out)


def _run_trunk(
    narrow: GatedCNN,
    widths: tuple[int, ...],
    params: PyTree,
    h: jax.Array,
    gates: tuple[Gates, ...],
    index: jax.Array | None = None,
) -> jax.Array:
    gates = tuple(
        Gates(g.saliency[:, :w], g.kept[:, :w]) for g, w in zip(gates, widths, strict=True)
    )
    if index is not None:
        h = h[index]
        gates = tuple(Gates(g.saliency[index], g.kept[index]) for g in gates)
    return narrow.apply({"params": params}, h, gates, method=GatedCNN.trunk)


class BucketRunner:
    """Runs a prefix-mode :class:`GatedCNN` by width buckets, skipping the pruned work.

    Two paths, both with outputs equal to ``model.apply(..., density)[0]`` up to float
    summation order (the module docstring has the details):

    - ``runner(x, d)``: per example. The gates are computed first, the buckets go to the
      host, and each group of examples runs the program compiled for exactly its kept
      widths.
    - ``runner.compact(x, d)``: per batch. One jitted program computes the gates and
      ``lax.switch``-es, on the device, to the program of the batch's widest kept width
      per layer (the union of prefixes is a prefix): no host round trip, one dispatch.
      At batch 1 this is per example; at batch B every example runs the widest of its
      batch. It compiles all |buckets|^L widths into one program on first use.
    - ``runner.run(h, gates)``: the per-example path for gates computed elsewhere, e.g.
      a width gate's choice (:func:`dynprune.gating.width_gates`);
      ``runner.compact_run(h, gates)`` the compact path for them (traceable).

    Args:
      model: a :class:`GatedCNN` with ``mode="prefix"`` and ``buckets``.
      params: its parameters (sliced once per bucket, when the bucket first occurs).

    Attributes:
      widths: ``widths[l]``, the allowed widths of gated layer l (one per bucket fraction).

    Raises:
      ValueError: if the model is not in prefix mode or has no buckets.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)
      >>> x = jnp.linspace(0, 1, 4 * 64).reshape(4, 8, 8, 1)
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> runner = gating.BucketRunner(model, params)
      >>> logits, bucket = runner(x, density=0.3)
      >>> masked, _ = model.apply({"params": params}, x, 0.3)
      >>> bool(jnp.allclose(logits, masked, atol=1e-5)), bucket.shape
      (True, (4, 2))
    """

    def __init__(self, model: GatedCNN, params: PyTree) -> None:
        if model.mode != "prefix" or model.buckets is None:
            raise ValueError(
                "BucketRunner needs a GatedCNN with mode='prefix' and buckets, got "
                f"mode={model.mode!r}, buckets={model.buckets!r}"
            )
        self.model, self.params = model, params
        buckets = check_buckets(model.buckets)
        self.channels = tuple(model.features[1:])
        self.widths = tuple(bucket_widths(buckets, c) for c in self.channels)
        self._gates = jax.jit(self._gate_pass)
        self._programs: dict[tuple[int, ...], tuple[Callable[..., jax.Array], PyTree]] = {}
        self._compact: Callable[..., Any] | None = None

    def _gate_pass(
        self, params: PyTree, x: jax.Array, density: Any
    ) -> tuple[jax.Array, tuple[Gates, ...], jax.Array]:
        h, gates = self.model.apply({"params": params}, x, density, method=GatedCNN.gates)
        return h, gates, self._bucket_of(gates)

    def _bucket_of(self, gates: Sequence[Gates]) -> jax.Array:
        """Each example's width index per gated layer, int [B, L], traced."""
        bucket = [
            jnp.searchsorted(
                jnp.asarray(allowed), g.kept.sum(axis=-1, dtype=jnp.int32), method="compare_all"
            )
            for allowed, g in zip(self.widths, gates, strict=True)
        ]
        return jnp.stack(bucket, axis=-1).astype(jnp.int32)

    def _narrow(self, bucket: tuple[int, ...]) -> tuple[GatedCNN, tuple[int, ...]]:
        widths = tuple(allowed[j] for allowed, j in zip(self.widths, bucket, strict=True))
        return self.model.clone(features=(self.model.features[0], *widths)), widths

    def _program(self, bucket: tuple[int, ...]) -> tuple[Callable[..., jax.Array], PyTree]:
        if bucket not in self._programs:
            narrow, widths = self._narrow(bucket)
            self._programs[bucket] = (
                jax.jit(functools.partial(_run_trunk, narrow, widths)),
                _slice_params(self.params, self.channels, widths),
            )
        return self._programs[bucket]

    def gates(
        self, x: jax.Array, density: Any = 1.0
    ) -> tuple[jax.Array, tuple[Gates, ...], np.ndarray]:
        """The cheap pass: stem features, every layer's gates, and each example's bucket
        (int [B, L], read back to the host)."""
        check_density(density)
        h, gates, bucket = self._gates(self.params, x, np.float32(density))
        return h, gates, np.asarray(bucket)

    def __call__(self, x: jax.Array, density: Any = 1.0) -> tuple[jax.Array, np.ndarray]:
        """Logits [B, classes] computed bucket by bucket, and each example's bucket [B, L].

        Raises:
          ValueError: for a density outside (0, 1].
        """
        h, gates, bucket = self.gates(x, density)
        return self._run(h, gates, bucket), bucket

    def run(self, h: jax.Array, gates: Sequence[Gates]) -> tuple[jax.Array, np.ndarray]:
        """Logits [B, classes] of stem features ``h`` under gates computed elsewhere (e.g.
        :func:`dynprune.gating.width_gates` of a width gate's choice), bucket by bucket as
        ``runner(x, d)`` runs its own, and each example's bucket [B, L].

        Args:
          h: stem features [B, ...] (``GatedCNN.features_of``).
          gates: one :class:`Gates` per gated layer, each kept mask a prefix of one of the
            layer's allowed widths.

        Returns:
          The logits (equal to ``GatedCNN.trunk``'s up to float summation order) and the
          buckets, int [B, L].

        Raises:
          ValueError: if a kept mask is not a prefix of an allowed width.
        """
        gates = tuple(gates)
        kept = [np.asarray(g.kept) for g in gates]
        bucket = np.stack(
            [
                np.searchsorted(allowed, k.sum(axis=-1))
                for allowed, k in zip(self.widths, kept, strict=True)
            ],
            axis=-1,
        )
        bucket = np.minimum(bucket, len(self.widths[0]) - 1).astype(np.int32)
        masks = self.bucket_masks(bucket)
        if not all(np.array_equal(k, m) for k, m in zip(kept, masks, strict=True)):
            raise ValueError("every kept mask must be a prefix of one of its layer's widths")
        return self._run(h, gates, bucket), bucket

    def _run(self, h: jax.Array, gates: tuple[Gates, ...], bucket: np.ndarray) -> jax.Array:
        groups = (
            [(tuple(bucket[0].tolist()), None, 1)] if len(bucket) == 1 else bucket_groups(bucket)
        )
        if len(groups) == 1:
            fn, params = self._program(groups[0][0])
            return fn(params, h, gates)
        pending = []
        for key, idx, size in groups:
            padded = np.concatenate([idx, np.full(size - idx.size, idx[0])]).astype(np.int32)
            fn, params = self._program(key)
            pending.append((idx, fn(params, h, gates, padded)))
        out = np.empty((h.shape[0], pending[0][1].shape[-1]), pending[0][1].dtype)
        for idx, result in pending:
            out[idx] = np.asarray(result)[: idx.size]
        return jnp.asarray(out)

    def _compact_pass(
        self, params: PyTree, x: jax.Array, density: Any
    ) -> tuple[jax.Array, jax.Array]:
        h, gates = self.model.apply({"params": params}, x, density, method=GatedCNN.gates)
        return self.compact_run(h, gates)

    def compact_run(self, h: jax.Array, gates: Sequence[Gates]) -> tuple[jax.Array, jax.Array]:
        """The compact path for gates computed elsewhere (e.g. a width gate's choice,
        :func:`dynprune.gating.width_gates`): logits [B, classes] of the whole batch at its
        widest kept width per layer, and that width index per layer ([L]).

        Traceable: jit it together with the pass that computes the gates, and the batch
        runs in one dispatch, as :meth:`compact` does for the model's own gates.

        Args:
          h: stem features [B, ...] (``GatedCNN.features_of``).
          gates: one :class:`Gates` per gated layer, each kept mask a prefix of one of the
            layer's allowed widths.

        Returns:
          The logits (equal to ``GatedCNN.trunk``'s up to float summation order) and the
          widest width index per layer.

        Examples:
          >>> import jax, jax.numpy as jnp
          >>> from dynprune import gating
          >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)
          >>> x = jnp.linspace(0, 1, 4 * 64).reshape(4, 8, 8, 1)
          >>> params = model.init(jax.random.key(0), x)["params"]
          >>> runner = gating.BucketRunner(model, params)
          >>> h = model.apply({"params": params}, x, method=gating.GatedCNN.features_of)
          >>> gates = gating.width_gates(model, jnp.array([1, 0, 1, 0]))
          >>> logits, widest = jax.jit(runner.compact_run)(h, gates)
          >>> masked = model.apply({"params": params}, h, gates, method=gating.GatedCNN.trunk)
          >>> bool(jnp.allclose(logits, masked, atol=1e-5)), widest.tolist()
          (True, [1, 1])
        """
        gates = tuple(gates)
        widest = self._bucket_of(gates).max(axis=0)
        n = len(self.widths[0])
        index = sum(widest[i] * n ** (len(self.widths) - 1 - i) for i in range(len(self.widths)))

        # Each branch closes over its own sliced parameters (constants of the program):
        # passed as operands, all |buckets|^L sets went into the conditional on every call,
        # which cost XLA:CPU about as much as the narrow trunk itself at batch 1.
        def branch(key: tuple[int, ...]) -> Callable[..., jax.Array]:
            narrow, widths = self._narrow(key)
            sliced = _slice_params(self.params, self.channels, widths)
            return lambda ops: _run_trunk(narrow, widths, sliced, ops[0], ops[1])

        branches = [branch(key) for key in self._combos]
        return jax.lax.switch(index, branches, (h, gates)), widest

    @functools.cached_property
    def _combos(self) -> list[tuple[int, ...]]:
        return list(itertools.product(range(len(self.widths[0])), repeat=len(self.widths)))

    def compact(self, x: jax.Array, density: Any = 1.0) -> tuple[jax.Array, jax.Array]:
        """Logits [B, classes] of the whole batch at its widest kept width per layer, chosen
        on the device, and that width index per layer ([L], a device array).

        Raises:
          ValueError: for a density outside (0, 1].

        Examples:
          >>> import jax, jax.numpy as jnp
          >>> from dynprune import gating
          >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)
          >>> x = jnp.linspace(0, 1, 4 * 64).reshape(4, 8, 8, 1)
          >>> params = model.init(jax.random.key(0), x)["params"]
          >>> logits, widest = gating.BucketRunner(model, params).compact(x[:1], 0.3)
          >>> masked, _ = model.apply({"params": params}, x[:1], 0.3)
          >>> bool(jnp.allclose(logits, masked, atol=1e-5)), widest.shape
          (True, (2,))
        """
        check_density(density)
        if self._compact is None:
            self._compact = jax.jit(self._compact_pass)
        return self._compact(self.params, x, np.float32(density))

    def bucket_masks(self, bucket: Any) -> list[np.ndarray]:
        """Per gated layer, the bool [B, C_l] prefix masks of the widths the programs run."""
        bucket = np.asarray(bucket).reshape(len(bucket), -1)
        return [
            np.arange(c)[None, :] < np.asarray(allowed)[bucket[:, i]][:, None]
            for i, (c, allowed) in enumerate(zip(self.channels, self.widths, strict=True))
        ]


class SkippingLatency(NamedTuple):
    """Masked vs skipping execution of one batch (:func:`measure_skipping`).

    MACs are per example; predictors are included wherever they run.

    Attributes:
      batch: B.
      density: d.
      masked_s: median seconds of the masked computation (one jitted program).
      skipping_s: median seconds of the per-example bucket path ``runner(x, d)``
        (gates, host sync, one program per bucket).
      compact_s: median seconds of the per-batch path ``runner.compact(x, d)``.
      dense_s: median seconds of the same network without gates (``GatedCNN.dense``,
        one jitted program): the baseline a user of the ungated network would have.
      macs_dense: the ungated network.
      macs_masked: what the masked path executes: dense + predictors.
      macs_effective: mean of what the gates let through + predictors
        (:func:`dynprune.gating.effective_macs`).
      macs_skipping: mean of what the bucket path executes (padding rows included).
      macs_compact: what the compact path executes (the batch's widest widths).
      max_abs_diff: max |masked − skipping| and |masked − compact| over the logits.
      kept_fraction: per gated layer, the mean fraction of channels kept.
      groups: buckets in the batch (programs the bucket path ran).

    Examples:
      >>> from dynprune import gating
      >>> r = gating.SkippingLatency(1, 0.5, 2e-3, 1e-3, 1.2e-3, 1.8e-3, 100.0, 101.0, 40.0,
      ...                            40.0, 40.0, 0.0, (0.5,), 1)
      >>> round(r.speedup, 2), round(r.speedup_over_dense, 2), round(r.mac_ratio, 2)
      (2.0, 1.8, 2.52)
    """

    batch: int
    density: float
    masked_s: float
    skipping_s: float
    compact_s: float
    dense_s: float
    macs_dense: float
    macs_masked: float
    macs_effective: float
    macs_skipping: float
    macs_compact: float
    max_abs_diff: float
    kept_fraction: tuple[float, ...]
    groups: int

    @property
    def speedup(self) -> float:
        """Measured: masked_s / skipping_s."""
        return self.masked_s / self.skipping_s

    @property
    def speedup_over_dense(self) -> float:
        """Measured: dense_s / skipping_s (what gating saves against no gates at all)."""
        return self.dense_s / self.skipping_s

    @property
    def mac_ratio(self) -> float:
        """Counted: macs_masked / macs_skipping (the speedup an ideal kernel would give)."""
        return self.macs_masked / self.macs_skipping

    @property
    def compact_speedup(self) -> float:
        """Measured: masked_s / compact_s."""
        return self.masked_s / self.compact_s

    @property
    def compact_mac_ratio(self) -> float:
        """Counted: macs_masked / macs_compact."""
        return self.macs_masked / self.macs_compact


@functools.cache
def _reference_programs(model: GatedCNN) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Jitted masked and dense logits of ``model`` (one pair per model, reused across
    calls, so measuring many batches compiles each shape once)."""
    masked = jax.jit(lambda p, x, d: model.apply({"params": p}, x, d)[0])
    dense = jax.jit(lambda p, x: model.apply({"params": p}, x, method=GatedCNN.dense))
    return masked, dense


def measure_skipping(
    model: GatedCNN,
    params: PyTree,
    x: jax.Array,
    density: float,
    *,
    reps: int = 20,
    warmup: int = 3,
    runner: BucketRunner | None = None,
) -> SkippingLatency:
    """Wall-clock and MACs of the masked computation vs the two skipping paths on batch x.

    The masked path is ``jax.jit(model.apply)`` (all channels computed, then multiplied
    by s ⊙ m), the dense path the network without gates (``GatedCNN.dense``); the skipping
    paths are ``runner(x, density)`` (per-example buckets, chosen
    on the host) and ``runner.compact(x, density)`` (the batch's widest widths, chosen on
    the device). Compilation is excluded (warm-up calls compile every program this batch
    needs); the four are timed interleaved, each call up to ``block_until_ready``.
    The host-driven path cannot be jitted, so the timing is
    :func:`dynprune.stats.interleaved_medians` (what ``compare_latency`` times jitted calls with).

    Args:
      model: a prefix-mode :class:`GatedCNN`.
      params: its parameters.
      x: a batch [B, H, W, C_in].
      density: d ∈ (0, 1].
      reps: timed rounds.
      warmup: untimed calls of each path first (≥ 1: it compiles).
      runner: a :class:`BucketRunner` to reuse (default: a new one).

    Returns:
      A :class:`SkippingLatency`.

    Raises:
      ValueError: for a density outside (0, 1] or a model not in prefix mode.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)
      >>> x = jnp.linspace(0, 1, 4 * 64).reshape(4, 8, 8, 1)
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> r = gating.measure_skipping(model, params, x, 0.3, reps=2, warmup=1)
      >>> r.max_abs_diff < 1e-5, r.macs_skipping <= r.macs_masked, len(r.kept_fraction)
      (True, True, 2)
    """
    check_density(density)
    runner = BucketRunner(model, params) if runner is None else runner
    d = np.float32(density)
    masked_fn, dense_fn = _reference_programs(model)
    reference = masked_fn(params, x, d)
    out, bucket = runner(x, density)
    compact, widest = runner.compact(x, density)
    _, gates, _ = runner.gates(x, density)
    example = x[:1]
    layers = layer_macs(model, params, [g.kept for g in gates], example)
    predictors = sum(layer.macs for layer in layers if layer.predictor)

    def macs_at(key: Any) -> float:
        masks = runner.bucket_masks(np.asarray([key]))
        return float(effective_macs(layer_macs(model, params, masks, example))[0])

    executed = sum(size * macs_at(key) for key, _, size in bucket_groups(bucket))
    medians = stats.interleaved_medians(
        {
            "masked": lambda: masked_fn(params, x, d),
            "dense": lambda: dense_fn(params, x),
            "skipping": lambda: runner(x, density)[0],
            "compact": lambda: runner.compact(x, density)[0],
        },
        reps=reps,
        warmup=max(warmup, 1),
    )
    return SkippingLatency(
        batch=int(x.shape[0]),
        density=float(density),
        masked_s=medians["masked"],
        skipping_s=medians["skipping"],
        compact_s=medians["compact"],
        dense_s=medians["dense"],
        macs_dense=dense_macs(layers),
        macs_masked=dense_macs(layers) + predictors,
        macs_effective=float(effective_macs(layers).mean()),
        macs_skipping=executed / x.shape[0],
        macs_compact=macs_at(np.asarray(widest)),
        max_abs_diff=float(
            jnp.maximum(jnp.max(jnp.abs(out - reference)), jnp.max(jnp.abs(compact - reference)))
        ),
        kept_fraction=tuple(float(np.asarray(g.kept).mean()) for g in gates),
        groups=len(bucket_groups(bucket)),
    )


def format_skipping(results: Sequence[SkippingLatency]) -> str:
    """A table of :func:`measure_skipping` results: measured speedups with MAC ratios beside.

    For each path, "speedup" is measured (masked / path seconds) and "MACs" counted
    (masked / path MACs executed, padding rows included); "eff." is masked / effective
    MACs; "vs dense" is dense / bucket seconds; "kept" the mean kept fraction per gated
    layer.

    Args:
      results: :class:`SkippingLatency` rows, one per line.

    Returns:
      The table as text.

    Examples:
      >>> from dynprune import gating
      >>> r = gating.SkippingLatency(64, 0.3, 2e-3, 1e-3, 1.6e-3, 1.9e-3, 100.0, 101.0, 30.0,
      ...                            40.0, 80.0, 0.0, (0.25, 0.5), 3)
      >>> print(gating.format_skipping([r]))  # doctest: +NORMALIZE_WHITESPACE
      batch density masked ms bucket ms speedup MACs compact ms speedup MACs eff. vs dense
        groups kept
         64    0.30     2.000     1.000   2.00x 2.52x      1.600   1.25x 1.26x 3.37x 1.90x
        3 0.25 0.50
    """
    lines = [
        f"{'batch':>5} {'density':>7} {'masked ms':>9} {'bucket ms':>9} {'speedup':>7} "
        f"{'MACs':>6} {'compact ms':>10} {'speedup':>7} {'MACs':>6} {'eff.':>6} {'vs dense':>8} "
        f"{'groups':>6} kept"
    ]
    for r in results:
        kept = " ".join(f"{f:.2f}" for f in r.kept_fraction)
        lines.append(
            f"{r.batch:>5} {r.density:>7.2f} {1e3 * r.masked_s:>9.3f} {1e3 * r.skipping_s:>9.3f} "
            f"{r.speedup:>6.2f}x {r.mac_ratio:>5.2f}x {1e3 * r.compact_s:>10.3f} "
            f"{r.compact_speedup:>6.2f}x {r.compact_mac_ratio:>5.2f}x "
            f"{r.macs_masked / r.macs_effective:>5.2f}x {r.speedup_over_dense:>7.2f}x "
            f"{r.groups:>6} {kept}"
        )
    return "\n".join(lines)
