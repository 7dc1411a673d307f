"""A small gated CNN (conv → gated convs → dense) and its per-example MAC accounting.

    x ─ stem conv 3×3, ReLU (, max-pool 2) ─ h ─┬─ [gated conv 3×3, ReLU, max-pool 2] × L
                                                 │   ─ flatten ─ dense
                                                 └─ every gated layer's predictor pools h

Every predictor reads the stem's features h (``gate_input``), as Dynamic Slimmable
Networks place their gate at the start of a stage, so all gates of an input are known
after the stem — before any gated layer runs. That is what lets
:class:`dynprune.gating.BucketRunner` pick a compiled width per example and then run
only that width.

References:
  Gao et al., "Dynamic Channel Pruning: Feature Boosting and Suppression", ICLR 2019;
  Li et al., "Dynamic Slimmable Network", CVPR 2021.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynprune import stats
from dynprune.gating._accounting import LayerMACs
from dynprune.gating._gates import Gates
from dynprune.gating._linen import GatedConv
from dynprune.pruner import PyTree

__all__ = ["DEFAULT_BUCKETS", "GatedCNN", "layer_macs"]

DEFAULT_BUCKETS = (0.25, 0.5, 0.75, 1.0)
"""Width fractions of the prefix-mode :class:`GatedCNN`: C/4, C/2, 3C/4, C."""


class GatedCNN(nn.Module):
    """stem conv (, max-pool 2) → L × (gated conv 3×3 SAME, ReLU, max-pool 2) → dense,
    channels last.

    Parameter paths: ``stem/kernel``, ``gated_{i}/layer/kernel``,
    ``gated_{i}/predictor/up/kernel``, ``head/kernel``. Max-pools are 2×2, stride 2,
    VALID: an odd height or width loses its last row or column.

    Attributes:
      features: (stem channels, gated layer 1 channels, …, gated layer L channels), L ≥ 1.
      classes: logits.
      mode: the gates' rule (``"topk"``, ``"threshold"``, ``"prefix"``); the width-bucket
        path needs ``"prefix"``.
      buckets: prefix mode: the width fractions every gated layer rounds up to (ignored
        by the other modes).
      predictor_rank: rank of the predictors' W_p (None: full, features[0]·C_l MACs).
      stem_pool: max-pool the stem's output, so the gated layers run at half the input's
        resolution. On CPU this moves the work from many small convolutions, whose cost
        hardly falls with their width, into fewer wider ones, whose cost does.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)
      >>> x = jnp.linspace(0, 1, 4 * 64).reshape(4, 8, 8, 1)
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> logits, gates = model.apply({"params": params}, x, 0.5)
      >>> logits.shape, [g.kept.shape for g in gates]
      ((4, 3), [(4, 8), (4, 8)])
    """

    features: Sequence[int] = (16, 32, 64)
    classes: int = 10
    mode: str = "prefix"
    buckets: Sequence[float] | None = DEFAULT_BUCKETS
    predictor_rank: int | None = None
    stem_pool: bool = False

    def setup(self) -> None:
        if len(self.features) < 2:
            raise ValueError(
                f"features must name the stem and at least one gated layer, got {self.features}"
            )
        buckets = self.buckets if self.mode == "prefix" else None
        self.stem = nn.Conv(self.features[0], (3, 3))
        self.gated = tuple(
            GatedConv(
                f, (3, 3), mode=self.mode, buckets=buckets, predictor_rank=self.predictor_rank
            )
            for f in self.features[1:]
        )
        self.head = nn.Dense(self.classes)

    def features_of(self, x: jax.Array) -> jax.Array:
        """The stem's features h (what every predictor pools)."""
        h = nn.relu(self.stem(x))
        return nn.max_pool(h, (2, 2), strides=(2, 2)) if self.stem_pool else h

    def gates(
        self, x: jax.Array, density: Any = 1.0, threshold: Any = 0.0
    ) -> tuple[jax.Array, tuple[Gates, ...]]:
        """The cheap pass: stem features h and every gated layer's :class:`Gates`."""
        h = self.features_of(x)
        return h, tuple(layer.gate(h, density, threshold) for layer in self.gated)

    def trunk(self, h: jax.Array, gates: Sequence[Gates | None]) -> jax.Array:
        """The gated layers and the head on stem features h, with the gates given
        (``None``: the layer runs ungated, every channel at scale 1)."""
        for layer, g in zip(self.gated, gates, strict=True):
            y = layer.layer(h) if g is None else layer.apply_gates(h, g)
            h = nn.max_pool(nn.relu(y), (2, 2), strides=(2, 2))
        return self.head(h.reshape(h.shape[0], -1))

    def dense(self, x: jax.Array) -> jax.Array:
        """The same network without gates: logits [B, classes], every channel computed at
        scale 1 and no predictor run (it reads no ``predictor`` parameters). The baseline a
        gated network is compared with (``model.apply(v, x, method=GatedCNN.dense)``)."""
        return self.trunk(self.features_of(x), (None,) * len(self.gated))

    def __call__(
        self, x: jax.Array, density: Any = 1.0, threshold: Any = 0.0
    ) -> tuple[jax.Array, tuple[Gates, ...]]:
        """The masked computation: logits [B, classes] and each gated layer's gates."""
        h, gates = self.gates(x, density, threshold)
        return self.trunk(h, gates), gates


def layer_macs(
    model: GatedCNN, params: PyTree, kept: Sequence[Any], example: jax.Array
) -> list[LayerMACs]:
    """The :class:`LayerMACs` of every layer of ``model`` for keep-masks ``kept``.

    Full-width MACs come from :func:`dynprune.stats.cost` on one example. Gated layer i
    is thinned by its own mask (outputs) and layer i−1's (inputs); the head by the last
    mask (its flattened inputs are the last layer's channels at every position);
    predictors are counted as they are.

    Args:
      model: the network.
      params: its parameters (without the predictors': the ungated network's layers).
      kept: one bool [B, C_l] mask per gated layer (``[g.kept for g in gates]``).
      example: one input with a batch axis of 1.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> model, x = gating.GatedCNN(features=(4, 8), classes=3), jnp.ones((1, 4, 4, 1))
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> kept = [jnp.arange(8)[None, :] < 2]           # 2 of 8 channels
      >>> layers = gating.layer_macs(model, params, kept, x)
      >>> # stem 16·4·9 + gated 16·8·36 · 2/8 + head 32·3 · 2/8 + predictor 4·8
      >>> gating.effective_macs(layers).tolist(), gating.dense_macs(layers)
      ([1784.0], 5280.0)
    """
    if all("predictor" in params[f"gated_{i}"] for i in range(len(model.features) - 1)):
        apply_fn = lambda p, x: model.apply({"params": p}, x)[0]
    else:  # the ungated network's parameters (e.g. statically pruned): no predictors run
        apply_fn = lambda p, x: model.apply({"params": p}, x, method=GatedCNN.dense)
    report = stats.cost(apply_fn, params, jnp.zeros((1, *example.shape[1:]), example.dtype))
    layers = []
    for path, row in report["layers"].items():
        top = path.split("/")[0]
        macs = row["macs_dense"]
        if "/predictor/" in path:
            layers.append(LayerMACs(macs, predictor=True))
        elif top.startswith("gated_"):
            i = int(top.removeprefix("gated_"))
            layers.append(LayerMACs(macs, kept[i], kept[i - 1] if i else None))
        elif top == "head":
            layers.append(LayerMACs(macs, kept_in=kept[-1]))
        else:
            layers.append(LayerMACs(macs))
    return layers
