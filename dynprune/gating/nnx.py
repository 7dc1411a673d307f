"""Gated Flax NNX layers: ``nnx.Linear`` / ``nnx.Conv`` with a per-input channel gate (FBS).

The same rule as the Linen layers (:class:`dynprune.gating.GatedConv`):
s = ReLU(W_p · pool(g) + b_p), m = gate(s; d or τ), y = layer(x) ⊙ (s ⊙ m). Density and
threshold are call arguments, so ``nnx.jit`` compiles once for every d.

References:
  Gao et al., "Dynamic Channel Pruning: Feature Boosting and Suppression", ICLR 2019.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from dynprune.gating import _gates
from dynprune.gating._gates import Gates

__all__ = ["GatedConv", "GatedLinear", "Predictor"]


class Predictor(nnx.Module):
    """s = ReLU(W_p · v + b_p) for a pooled input v ∈ R^G (see the Linen ``Predictor``).

    Args:
      in_features: G.
      out_features: C.
      rank: None for a full W_p (G·C MACs); r for W_p = U·V of rank r (r·(G + C) MACs).
      rngs: NNX random streams.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dynprune import gating
      >>> predictor = gating.nnx.Predictor(5, 3, rngs=nnx.Rngs(0))
      >>> s = predictor(jnp.ones((4, 5)))
      >>> s.shape, bool((s >= 0).all())
      ((4, 3), True)
    """

    def __init__(
        self, in_features: int, out_features: int, rank: int | None = None, *, rngs: nnx.Rngs
    ) -> None:
        self.down = (
            None if rank is None else nnx.Linear(in_features, rank, use_bias=False, rngs=rngs)
        )
        self.up = nnx.Linear(
            in_features if rank is None else rank,
            out_features,
            bias_init=nnx.initializers.ones,
            rngs=rngs,
        )

    def __call__(self, v: jax.Array) -> jax.Array:
        if self.down is not None:
            v = self.down(v)
        return nnx.relu(self.up(v))


class _Gated(nnx.Module):
    """The gate of :class:`GatedLinear` and :class:`GatedConv` (they set ``self.layer``)."""

    def _init_gate(
        self,
        gate_features: int,
        out_features: int,
        mode: str,
        buckets: Sequence[float] | None,
        predictor_rank: int | None,
        rngs: nnx.Rngs,
    ) -> None:
        self.mode = _gates.check_mode(mode)
        self.buckets = _gates.check_buckets(buckets)
        self.predictor = Predictor(gate_features, out_features, predictor_rank, rngs=rngs)

    def gate(self, gate_input: jax.Array, density: Any = 1.0, threshold: Any = 0.0) -> Gates:
        """The :class:`Gates` for a batch, from the tensor the predictor pools."""
        return _gates.predict(self, gate_input, density, threshold)

    def apply_gates(self, x: jax.Array, gates: Gates) -> jax.Array:
        """layer(x) ⊙ (s ⊙ m) for gates already computed."""
        return _gates.scale_channels(self.layer(x), gates.scale)

    def __call__(
        self,
        x: jax.Array,
        density: Any = 1.0,
        threshold: Any = 0.0,
        gate_input: jax.Array | None = None,
    ) -> tuple[jax.Array, Gates]:
        """Gated output and the :class:`Gates`.

        Args:
          x: [B, ..., C_in] input.
          density: d ∈ (0, 1] (``"topk"``, ``"prefix"``); traced values are clipped.
          threshold: τ (``"threshold"``).
          gate_input: the tensor the predictor pools (default ``x``; its channel count is
            the ``gate_features`` given at construction).

        Raises:
          ValueError: for a concrete density outside (0, 1].
        """
        gates = self.gate(x if gate_input is None else gate_input, density, threshold)
        return self.apply_gates(x, gates), gates


class GatedLinear(_Gated):
    """``nnx.Linear`` with a per-input output gate.

    Args:
      in_features: input features.
      out_features: C, output features.
      use_bias: whether the layer has a bias.
      mode: ``"topk"``, ``"threshold"`` or ``"prefix"`` (:data:`dynprune.gating.MODES`).
      buckets: prefix mode only: allowed width fractions, e.g. (0.25, 0.5, 0.75, 1.0).
      predictor_rank: rank of W_p (None: full, in_features·C MACs).
      gate_features: channels of ``gate_input`` when the predictor reads another tensor.
      rngs: NNX random streams.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from dynprune import gating
      >>> layer = gating.nnx.GatedLinear(16, 8, predictor_rank=2, rngs=nnx.Rngs(0))
      >>> y, gates = layer(jnp.ones((3, 16)), density=0.25)
      >>> y.shape, gates.kept.sum(axis=-1).tolist()
      ((3, 8), [2, 2, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        mode: str = "topk",
        buckets: Sequence[float] | None = None,
        predictor_rank: int | None = None,
        gate_features: int | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        self.layer = nnx.Linear(in_features, out_features, use_bias=use_bias, rngs=rngs)
        self._init_gate(
            gate_features or in_features, out_features, mode, buckets, predictor_rank, rngs
        )


class GatedConv(_Gated):
    """``nnx.Conv`` (channels last) with a per-input output-channel gate (FBS).

    Args:
      in_features: input channels.
      out_features: C, output channels.
      kernel_size: e.g. (3, 3).
      strides: as ``nnx.Conv``.
      padding: as ``nnx.Conv``.
      use_bias: whether the convolution has a bias.
      mode: ``"topk"``, ``"threshold"`` or ``"prefix"``.
      buckets: prefix mode only: allowed width fractions.
      predictor_rank: rank of W_p (None: full, in_features·C MACs).
      gate_features: channels of ``gate_input`` when the predictor reads another tensor.
      rngs: NNX random streams.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from dynprune import gating
      >>> layer = gating.nnx.GatedConv(4, 8, (3, 3), rngs=nnx.Rngs(0))
      >>> x = jnp.linspace(-1, 1, 288).reshape(2, 6, 6, 4)
      >>> apply = nnx.jit(lambda layer, x, d: layer(x, d)[1].kept.sum(axis=-1))
      >>> [apply(layer, x, d).tolist() for d in (0.25, 1.0)]
      [[2, 2], [8, 8]]
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        *,
        strides: int | Sequence[int] = 1,
        padding: Any = "SAME",
        use_bias: bool = True,
        mode: str = "topk",
        buckets: Sequence[float] | None = None,
        predictor_rank: int | None = None,
        gate_features: int | None = None,
        rngs: nnx.Rngs,
    ) -> None:
        self.layer = nnx.Conv(
            in_features,
            out_features,
            tuple(kernel_size),
            strides=strides,
            padding=padding,
            use_bias=use_bias,
            rngs=rngs,
        )
        self._init_gate(
            gate_features or in_features, out_features, mode, buckets, predictor_rank, rngs
        )
