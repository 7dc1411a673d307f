"""Per-input (runtime) channel pruning: gated Flax layers, their accounting, and a path
that skips the pruned work.

A gated layer predicts a saliency per output channel from its (pooled) input and keeps a
per-example subset of channels (Feature Boosting and Suppression):

    s = ReLU(W_p · pool(x) + b_p),   y = layer(x) ⊙ (s ⊙ m),   loss += λ ‖s‖₁

with m chosen by ``mode``: ``"topk"`` keeps exactly ⌈d·C⌉ channels per example,
``"threshold"`` keeps s > τ, ``"prefix"`` keeps a per-example prefix of channels (a dynamic
width). The density d and threshold τ are call arguments, traced under ``jit``: a sweep
over d, or a change of d at inference, compiles once.

- Layers: :class:`GatedDense`, :class:`GatedConv` (Linen); ``gating.nnx.GatedLinear``,
  ``gating.nnx.GatedConv`` (NNX). Each returns ``(y, Gates(saliency, kept))``.
- Gate rules as pure functions: :func:`topk_gate`, :func:`threshold_gate`,
  :func:`prefix_gate`, :func:`gate`, :func:`kept_count`, :func:`l1_penalty`.
- Accounting per input: :func:`effective_macs` (gated MACs + predictors), :func:`dense_macs`,
  :func:`summarize_macs` (mean, p50, p95), :func:`mean_pairwise_jaccard`,
  :func:`class_jaccard`, :func:`density_per_class`.
- Real savings: :class:`GatedCNN` (conv → gated convs → dense) in prefix mode runs
  through :class:`BucketRunner`, each example on a program compiled for its kept widths
  (buckets chosen on the host), or ``BucketRunner.compact``, a batch at its widest kept
  widths (chosen on the device by ``lax.switch``), with outputs equal to the masked
  computation; :func:`measure_skipping` times both against the masked computation,
  MAC ratios beside (:func:`format_skipping`).
- Dynamic slimmable training (two stages): :func:`slimmable_loss` trains the trunk as a
  supernet over its bucket widths (sandwich rule, in-place distillation);
  :class:`WidthGate` picks one bucket per input from the stem features, trained on the
  frozen supernet by :func:`width_gate_loss` (a relaxed Gumbel-softmax sample, MACs of
  the chosen widths from :func:`bucket_macs` penalised; :func:`gumbel_straight_through`
  gives the hard sample with the relaxed gradient); :func:`width_gates` turns a choice
  into :class:`Gates` that ``GatedCNN.trunk``, ``BucketRunner.run`` and the accounting
  take as they are.
- A confidence cascade over the supernet's widths (Big/Little inference): :func:`cascade`
  runs every input at a narrow width and again wider only while its max softmax
  probability is below a threshold (:func:`check_confidence_threshold`; levels from
  :func:`cascade_levels`), :func:`cascade_macs` counts every level an input visited, and
  :class:`CascadeRunner` runs each level sliced on the inputs that reach it.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from dynprune import gating
  >>> layer = gating.GatedConv(16, (3, 3))
  >>> x = jnp.ones((2, 8, 8, 3))
  >>> params = layer.init(jax.random.key(0), x)["params"]
  >>> y, gates = layer.apply({"params": params}, x, density=0.25)
  >>> gates.kept.sum(axis=-1).tolist(), float(gating.l1_penalty(gates)) > 0
  ([4, 4], True)

References:
  Gao et al., "Dynamic Channel Pruning: Feature Boosting and Suppression", ICLR 2019;
  Hua et al., "Channel Gating Neural Networks", NeurIPS 2019;
  Li et al., "Dynamic Slimmable Network", CVPR 2021;
  Park et al., "Big/LITTLE Deep Neural Network for Ultra Low Power Inference",
  CODES+ISSS 2015.
"""

from dynprune.gating import nnx
from dynprune.gating._accounting import (
    LayerMACs,
    MACSummary,
    class_jaccard,
    dense_macs,
    density_per_class,
    effective_macs,
    mean_pairwise_jaccard,
    summarize_macs,
)
from dynprune.gating._buckets import (
    BucketRunner,
    SkippingLatency,
    bucket_groups,
    format_skipping,
    measure_skipping,
)
from dynprune.gating._cascade import (
    CascadeRunner,
    cascade,
    cascade_levels,
    cascade_macs,
    check_confidence_threshold,
)
from dynprune.gating._cnn import DEFAULT_BUCKETS, GatedCNN, layer_macs
from dynprune.gating._gates import (
    MODES,
    Gates,
    bucket_widths,
    check_buckets,
    check_density,
    gate,
    kept_count,
    l1_penalty,
    pool,
    prefix_gate,
    threshold_gate,
    topk_gate,
)
from dynprune.gating._linen import GatedConv, GatedDense, Predictor
from dynprune.gating._slimmable import (
    WidthGate,
    bucket_macs,
    gumbel_straight_through,
    slimmable_loss,
    width_gate_loss,
    width_gates,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "MODES",
    "BucketRunner",
    "CascadeRunner",
    "GatedCNN",
    "GatedConv",
    "GatedDense",
    "Gates",
    "LayerMACs",
    "MACSummary",
    "Predictor",
    "SkippingLatency",
    "WidthGate",
    "bucket_groups",
    "bucket_macs",
    "bucket_widths",
    "cascade",
    "cascade_levels",
    "cascade_macs",
    "check_buckets",
    "check_confidence_threshold",
    "check_density",
    "class_jaccard",
    "dense_macs",
    "density_per_class",
    "effective_macs",
    "format_skipping",
    "gate",
    "gumbel_straight_through",
    "kept_count",
    "l1_penalty",
    "layer_macs",
    "mean_pairwise_jaccard",
    "measure_skipping",
    "nnx",
    "pool",
    "prefix_gate",
    "slimmable_loss",
    "summarize_macs",
    "threshold_gate",
    "topk_gate",
    "width_gate_loss",
    "width_gates",
]
