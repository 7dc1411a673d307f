"""Gated Flax Linen layers: ``nn.Dense`` / ``nn.Conv`` with a per-input channel gate (FBS).

For an input x (channels last) the layer computes

    s = ReLU(W_p · pool(g) + b_p)          (g = x, or an earlier tensor: ``gate_input``)
    m = gate(s; d or τ)                    (:func:`dynprune.gating.gate`, by ``mode``)
    y = layer(x) ⊙ (s ⊙ m)                 (broadcast over the spatial axes)

pool is the global average over the spatial axes (the identity for a [B, F] input). The
density d and threshold τ are call arguments, not module attributes, so
``jax.jit(apply)`` with d as an argument compiles once for every d. ``b_p`` starts at 1 so
every channel starts open with s ≈ 1.

References:
  Gao et al., "Dynamic Channel Pruning: Feature Boosting and Suppression", ICLR 2019.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from dynprune.gating import _gates
from dynprune.gating._gates import Gates

__all__ = ["GatedConv", "GatedDense", "Predictor"]


class Predictor(nn.Module):
    """The saliency predictor s = ReLU(W_p · v + b_p) of a pooled input v ∈ R^G.

    Attributes:
      features: C, the gated layer's output channels.
      rank: None for a full W_p (G·C MACs per example); r for W_p = U·V of rank r
        (r·(G + C) MACs), for when G·C would rival the layer itself (a Dense layer on a
        flat input, whose pool is the identity).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> predictor = gating.Predictor(features=3, rank=2)
      >>> v = jnp.ones((4, 5))
      >>> params = predictor.init(jax.random.key(0), v)["params"]
      >>> s = predictor.apply({"params": params}, v)
      >>> s.shape, bool((s >= 0).all()), sorted(params)
      ((4, 3), True, ['down', 'up'])
    """

    features: int
    rank: int | None = None

    @nn.compact
    def __call__(self, v: jax.Array) -> jax.Array:
        if self.rank is not None:
            v = nn.Dense(self.rank, use_bias=False, name="down")(v)
        return nn.relu(nn.Dense(self.features, bias_init=nn.initializers.ones, name="up")(v))


class _Gated(nn.Module):
    """What every gated Linen layer does around the layer its :meth:`_layer` builds."""

    def _layer(self) -> nn.Module:
        raise NotImplementedError

    def setup(self) -> None:
        _gates.check_mode(self.mode)
        _gates.check_buckets(self.buckets)
        self.layer = self._layer()
        self.predictor = Predictor(self.features, self.predictor_rank)

    def gate(self, gate_input: jax.Array, density: Any = 1.0, threshold: Any = 0.0) -> Gates:
        """The :class:`Gates` for a batch, from the tensor the predictor pools."""
        return _gates.predict(self, gate_input, density, threshold)

    def apply_gates(self, x: jax.Array, gates: Gates) -> jax.Array:
        """layer(x) ⊙ (s ⊙ m) for gates already computed (e.g. sliced to a width); the layer
        is the Dense or the convolution."""
        return _gates.scale_channels(self.layer(x), gates.scale)

    def __call__(
        self,
        x: jax.Array,
        density: Any = 1.0,
        threshold: Any = 0.0,
        gate_input: jax.Array | None = None,
    ) -> tuple[jax.Array, Gates]:
        """Gated output and the :class:`Gates` (add λ · ``l1_penalty(gates)`` to the loss).

        Args:
          x: [B, ..., F] input (channels last).
          density: d ∈ (0, 1] (``"topk"``, ``"prefix"``); traced values are clipped.
          threshold: τ (``"threshold"``).
          gate_input: the tensor the predictor pools (default ``x``).

        Raises:
          ValueError: for a concrete density outside (0, 1].
        """
        gates = self.gate(x if gate_input is None else gate_input, density, threshold)
        return self.apply_gates(x, gates), gates


class GatedDense(_Gated):
    """``nn.Dense`` with a per-input output gate (see the module docstring).

    Attributes:
      features: C, output features.
      use_bias: whether the Dense layer has a bias.
      mode: ``"topk"`` (exactly ⌈d·C⌉ per example), ``"threshold"`` (s > τ) or
        ``"prefix"`` (a dynamic width); see :data:`dynprune.gating.MODES`.
      buckets: prefix mode only: allowed width fractions, e.g. (0.25, 0.5, 0.75, 1.0).
      predictor_rank: rank of the predictor's W_p (None: full; see :class:`Predictor`).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> layer = gating.GatedDense(8, predictor_rank=2)
      >>> x = jnp.ones((3, 16))
      >>> params = layer.init(jax.random.key(0), x)["params"]
      >>> y, gates = layer.apply({"params": params}, x, density=0.25)
      >>> y.shape, gates.kept.sum(axis=-1).tolist()
      ((3, 8), [2, 2, 2])
    """

    features: int
    use_bias: bool = True
    mode: str = "topk"
    buckets: Sequence[float] | None = None
    predictor_rank: int | None = None

    def _layer(self) -> nn.Module:
        return nn.Dense(self.features, use_bias=self.use_bias)


class GatedConv(_Gated):
    """``nn.Conv`` (channels last) with a per-input output-channel gate (FBS).

    Attributes:
      features: C, output channels.
      kernel_size: e.g. (3, 3).
      strides: as ``nn.Conv``.
      padding: as ``nn.Conv``.
      use_bias: whether the convolution has a bias.
      mode: ``"topk"``, ``"threshold"`` or ``"prefix"``; see :class:`GatedDense`.
      buckets: prefix mode only: allowed width fractions.
      predictor_rank: rank of the predictor's W_p (None: full, C_in·C MACs).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> layer = gating.GatedConv(8, (3, 3))
      >>> x = jnp.linspace(-1, 1, 288).reshape(2, 6, 6, 4)
      >>> params = layer.init(jax.random.key(0), x)["params"]
      >>> apply = jax.jit(lambda p, x, d: layer.apply({"params": p}, x, d))
      >>> [apply(params, x, d)[1].kept.sum(axis=-1).tolist() for d in (0.25, 0.5)]
      [[2, 2], [4, 4]]
    """

    features: int
    kernel_size: Sequence[int]
    strides: int | Sequence[int] = 1
    padding: Any = "SAME"
    use_bias: bool = True
    mode: str = "topk"
    buckets: Sequence[float] | None = None
    predictor_rank: int | None = None

    def _layer(self) -> nn.Module:
        return nn.Conv(
            self.features,
            tuple(self.kernel_size),
            strides=self.strides,
            padding=self.padding,
            use_bias=self.use_bias,
        )
