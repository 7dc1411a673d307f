"""A :class:`GatedCNN`'s trunk as a slimmable supernet over its bucket widths, and a
per-input width gate trained on it (the two stages of Dynamic Slimmable Networks).

Bucket index j ∈ {0, …, J−1} runs every gated layer l at width W_{l,j} = ⌈f_j·C_l⌉ (f the
model's ``buckets``, J = len(f)): one width fraction shared by all layers.

Stage 1, the supernet (:func:`slimmable_loss`): every step trains the widest width, the
narrowest and n random ones (the sandwich rule), the narrower ones distilled in place
from the widest's soft predictions,

    L = CE(f_{J−1}(x), y) + Σ_{j ∈ {0} ∪ S} CE(f_j(x), sg(softmax(f_{J−1}(x)))),

S n indices drawn uniformly from {0, …, J−1}, sg the stop-gradient. Every width then works
on its own, so a gate choosing among them has something to choose between.

Stage 2, the gate (:class:`WidthGate`, :func:`width_gate_loss`): the supernet frozen, a
small gate reads the pooled stem features and picks one bucket c per example (the argmax
of its logits at inference; a relaxed Gumbel-softmax sample in training, each channel at
the probability that the sampled width covers it), trained with

    L = CE(f_c(x), y) + λ · (c · M) / M_{J−1},    M_j the MACs per example at bucket j

(:func:`bucket_macs`). Unlike FBS's L1 penalty on saliencies, which lets every input
settle on the same widths, the gate is charged per example for the width it picks.

Width j is run by masking, not slicing: :func:`width_gates` turns a choice into
:class:`Gates` with saliency 1 on the kept prefix, which ``GatedCNN.trunk`` applies. One
program then serves every width and every choice (no compilation per width; the choice,
λ and the temperature are traced), gradients reach the gate through the channel scales,
and one batch can mix widths, which one sliced program cannot. The masked trunk equals
the sliced one: a cut channel is multiplied by 0, stays 0 through ReLU and max-pool, and
the next layer and the head read it as a zero input. So at inference the same :class:`Gates` run
through :meth:`BucketRunner.run` (each example at its chosen widths, sliced) and count in
:func:`effective_macs` (via :func:`layer_macs`) unchanged. :class:`GatedCNN` has no
batch normalisation, so no per-width statistics need recalibrating (as US-Nets' do).

Examples:
  The gate's choice at inference, run masked and sliced:

  >>> import jax, jax.numpy as jnp
  >>> from dynprune import gating
  >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)
  >>> x = jnp.linspace(0, 1, 4 * 64).reshape(4, 8, 8, 1)
  >>> params = model.init(jax.random.key(0), x)["params"]
  >>> h = model.apply({"params": params}, x, method=gating.GatedCNN.features_of)
  >>> gate = gating.WidthGate(choices=len(model.buckets))
  >>> gate_params = gate.init(jax.random.key(1), h)["params"]
  >>> choice = gate.apply({"params": gate_params}, h).argmax(-1)      # int [B]
  >>> gates = gating.width_gates(model, choice)
  >>> masked = model.apply({"params": params}, h, gates, method=gating.GatedCNN.trunk)
  >>> sliced, bucket = gating.BucketRunner(model, params).run(h, gates)
  >>> bool(jnp.allclose(sliced, masked, atol=1e-5)), bool((bucket == choice[:, None]).all())
  (True, True)

References:
  Li et al., "Dynamic Slimmable Network", CVPR 2021;
  Yu & Huang, "Universally Slimmable Networks and Improved Training Techniques", ICCV 2019
  (the sandwich rule, in-place distillation);
  Jang et al., "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dynprune.gating._accounting import effective_macs
from dynprune.gating._cnn import GatedCNN, layer_macs
from dynprune.gating._gates import Gates, bucket_widths, check_buckets, pool
from dynprune.pruner import PyTree

__all__ = [
    "WidthGate",
    "bucket_macs",
    "gumbel_straight_through",
    "slimmable_loss",
    "width_gate_loss",
    "width_gates",
]


def _widths(model: GatedCNN) -> tuple[tuple[int, ...], ...]:
    """W_{l,j}: per gated layer, its width at each bucket."""
    if model.mode != "prefix" or model.buckets is None:
        raise ValueError(
            "a slimmable GatedCNN needs mode='prefix' and buckets, got "
            f"mode={model.mode!r}, buckets={model.buckets!r}"
        )
    buckets = check_buckets(model.buckets)
    return tuple(bucket_widths(buckets, c) for c in model.features[1:])


def width_gates(model: GatedCNN, choice: Any) -> tuple[Gates, ...]:
    """The :class:`Gates` that run each example of a batch at its chosen bucket's widths.

    With P_l[j, c] = [c < W_{l,j}] the prefix masks of gated layer l's bucket widths and
    c_b the choice of example b (a one-hot row over the J buckets),

        saliency_l = c · P_l,    kept_l = P_l[argmax c]:

    saliency 1 on the chosen prefix, 0 after it. A straight-through sample (forward
    one-hot, backward soft) passes its gradient through the saliency, so a loss on
    ``GatedCNN.trunk``'s output reaches whatever produced ``choice``.

    Args:
      model: a :class:`GatedCNN` with ``mode="prefix"`` and ``buckets``.
      choice: int [B], each example's bucket index in [0, J); or float [B, J], one-hot
        rows (e.g. :func:`gumbel_straight_through`'s), the bucket their argmax.

    Returns:
      One :class:`Gates` per gated layer, saliency float [B, C_l], kept bool [B, C_l].

    Raises:
      ValueError: for a model not in prefix mode or without buckets, a ``choice`` of
        another shape, or concrete indices outside [0, J).

    Examples:
      >>> import jax.numpy as jnp
      >>> from dynprune import gating
      >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)   # widths 2, 4, 6, 8
      >>> gates = gating.width_gates(model, jnp.array([0, 2]))
      >>> gates[0].kept.sum(-1).tolist(), gates[1].saliency.tolist()[0]
      ([2, 6], [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])

    References:
      Li et al., "Dynamic Slimmable Network", CVPR 2021.
    """
    widths = _widths(model)
    buckets = len(widths[0])
    choice = jnp.asarray(choice)
    if jnp.issubdtype(choice.dtype, jnp.integer):
        if choice.ndim != 1:
            raise ValueError(f"integer choice must be [B] bucket indices, got {choice.shape}")
        if (
            not isinstance(choice, jax.core.Tracer)
            and not ((choice >= 0) & (choice < buckets)).all()
        ):
            raise ValueError(f"choice must lie in [0, {buckets}), got {choice.tolist()}")
        index, weights = choice, jax.nn.one_hot(choice, buckets)
    else:
        if choice.ndim != 2 or choice.shape[-1] != buckets:
            raise ValueError(f"float choice must be [B, {buckets}] rows, got {choice.shape}")
        index, weights = jnp.argmax(choice, axis=-1), choice
    gates = []
    for channels, allowed in zip(model.features[1:], widths, strict=True):
        prefix = jnp.arange(channels)[None, :] < jnp.asarray(allowed)[:, None]  # P_l [J, C_l]
        gates.append(Gates(weights @ prefix.astype(weights.dtype), prefix[index]))
    return tuple(gates)


def _trunk_params(params: PyTree) -> PyTree:
    """The parameters the trunk reads: every layer but the predictors."""
    return {
        name: ({"layer": sub["layer"]} if name.startswith("gated_") else sub)
        for name, sub in params.items()
    }


def bucket_macs(model: GatedCNN, params: PyTree, example: jax.Array) -> np.ndarray:
    """M_j, the MACs per example of the network with every gated layer at bucket j.

    M_j = :func:`effective_macs` of :func:`layer_macs` with the prefix masks of bucket j
    (predictors not counted: the width gate's own MACs are the caller's to add); M_{J−1}
    is the dense network's MACs.

    Args:
      model: a :class:`GatedCNN` with ``mode="prefix"`` and ``buckets``.
      params: its parameters (the predictors', if present, are ignored).
      example: one input with a batch axis of 1.

    Returns:
      float64 [J], increasing.

    Raises:
      ValueError: for a model not in prefix mode or without buckets.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> model, x = gating.GatedCNN(features=(4, 8, 8), classes=3), jnp.ones((1, 8, 8, 1))
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> # bucket 0 (widths 2, 2): stem 64·9·4 + 64·9·4·2 + 16·9·2·2 + 4·2·3
      >>> gating.bucket_macs(model, params, x).tolist()
      [7512.0, 13872.0, 21384.0, 30048.0]

    References:
      Li et al., "Dynamic Slimmable Network", CVPR 2021.
    """
    buckets = len(_widths(model)[0])
    kept = [np.asarray(g.kept) for g in width_gates(model, np.arange(buckets))]
    return effective_macs(layer_macs(model, _trunk_params(params), kept, example))


def slimmable_loss(
    model: GatedCNN,
    params: PyTree,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    *,
    widths_sampled: int = 2,
    distill: bool = True,
) -> jax.Array:
    """The sandwich-rule loss of the trunk as a slimmable supernet over its bucket widths.

    With f_j the network at bucket j (:func:`width_gates`, every example and layer at j),
    S ``widths_sampled`` indices drawn uniformly from {0, …, J−1} with ``key``, and
    t = sg(softmax(f_{J−1}(x))) (in-place distillation; t = y with ``distill=False``),

        L = CE(f_{J−1}(x), y) + Σ_{j ∈ {0} ∪ S} CE(f_j(x), t),

    summed, as the sandwich rule accumulates every width's gradient into one step. The
    stem runs once; the 2 + n widths run as one vmapped masked trunk, so the program is
    the same whichever widths are drawn. The predictors are not read (their gradients are
    zero if ``params`` holds them).

    Args:
      model: a :class:`GatedCNN` with ``mode="prefix"`` and ``buckets``.
      params: its parameters (with or without the predictors').
      x: a batch [B, H, W, C_in].
      y: int [B] labels.
      key: a PRNG key, for the random widths.
      widths_sampled: n ≥ 0, random widths beside the widest and the narrowest.
      distill: the narrower widths learn the widest's soft predictions (else the labels).

    Returns:
      float32 scalar.

    Raises:
      ValueError: for a model not in prefix mode or without buckets, or n < 0.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)
      >>> x, y = jnp.linspace(0, 1, 4 * 64).reshape(4, 8, 8, 1), jnp.array([0, 1, 2, 0])
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> loss = lambda p, key: gating.slimmable_loss(model, p, x, y, key)
      >>> grads = jax.jit(jax.grad(loss))(params, jax.random.key(1))
      >>> bool(jnp.abs(grads["gated_1"]["layer"]["kernel"]).max() > 0)
      True

    References:
      Yu & Huang, "Universally Slimmable Networks and Improved Training Techniques",
      ICCV 2019; Li et al., "Dynamic Slimmable Network", CVPR 2021.
    """
    if widths_sampled < 0:
        raise ValueError(f"widths_sampled must be >= 0, got {widths_sampled}")
    buckets = len(_widths(model)[0])
    sampled = jax.random.randint(key, (widths_sampled,), 0, buckets)
    index = jnp.concatenate([jnp.array([buckets - 1, 0]), sampled])
    variables = {"params": params}
    h = model.apply(variables, x, method=GatedCNN.features_of)

    def logits_at(j: jax.Array) -> jax.Array:
        gates = width_gates(model, jnp.full(x.shape[:1], j))
        return model.apply(variables, h, gates, method=GatedCNN.trunk)

    logits = jax.vmap(logits_at)(index)  # [2 + n, B, classes], the widest first
    loss = optax.softmax_cross_entropy_with_integer_labels(logits[0], y).mean()
    if distill:
        target = lax.stop_gradient(jax.nn.softmax(logits[:1]))
    else:
        target = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)[None]
    narrower = optax.softmax_cross_entropy(logits[1:], jnp.broadcast_to(target, logits[1:].shape))
    return loss + narrower.mean(axis=-1).sum()


def gumbel_straight_through(logits: jax.Array, key: jax.Array, temperature: Any = 1.0) -> jax.Array:
    """A one-hot sample per row from softmax(logits), with the Gumbel-softmax's gradient.

    With g ~ Gumbel(0, 1) i.i.d., y = softmax((logits + g) / τ) and h = onehot(argmax y)
    (a sample of the categorical softmax(logits)), the result is

        y + sg(h − y):

    h in the forward pass (zeros exactly, the one up to float rounding), ∂y in the
    backward pass (the straight-through estimator). τ may be traced.

    Args:
      logits: float [..., J].
      key: a PRNG key.
      temperature: τ > 0; lower is closer to the hard sample's gradient, with more variance.

    Returns:
      float [..., J], one-hot rows.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> c = gating.gumbel_straight_through(jnp.array([[0.0, 50.0, 0.0]]), jax.random.key(0))
      >>> c.round(6).tolist()
      [[0.0, 1.0, 0.0]]

    References:
      Jang et al., "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017.
    """
    g = jax.random.gumbel(key, logits.shape, logits.dtype)
    soft = jax.nn.softmax((logits + g) / temperature, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
    return soft + lax.stop_gradient(hard - soft)


class WidthGate(nn.Module):
    """Logits over the J buckets from the pooled stem features: Dense(pool(h)), or with a
    hidden layer Dense(ReLU(Dense(pool(h)))).

    It reads what :meth:`GatedCNN.features_of` returns, so an input's widths are known
    after the stem, before any gated layer runs. Its MACs per example are G·J (G the stem's
    channels), or G·H + H·J with a hidden layer of H.

    Attributes:
      choices: J, the number of buckets (``len(model.buckets)``).
      hidden: H, the hidden layer's width (None: a single linear layer).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> gate, h = gating.WidthGate(choices=4, hidden=8), jnp.ones((2, 8, 8, 16))
      >>> params = gate.init(jax.random.key(0), h)["params"]
      >>> gate.apply({"params": params}, h).shape, sorted(params)
      ((2, 4), ['hidden', 'logits'])

    References:
      Li et al., "Dynamic Slimmable Network", CVPR 2021.
    """

    choices: int
    hidden: int | None = None

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """Logits [B, J] of stem features h [B, ..., G]."""
        v = pool(h)
        if self.hidden is not None:
            v = nn.relu(nn.Dense(self.hidden, name="hidden")(v))
        return nn.Dense(self.choices, name="logits")(v)


def width_gate_loss(
    gate: WidthGate,
    gate_params: PyTree,
    model: GatedCNN,
    params: PyTree,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    *,
    macs: Any,
    mac_weight: Any,
    temperature: Any = 1.0,
) -> jax.Array:
    """The width gate's loss on a frozen supernet: cross-entropy plus λ times the relative
    MACs of the widths it picks.

    With c = softmax((z + g)/τ) the relaxed Gumbel-softmax sample (g ~ Gumbel(0, 1)) of the
    gate's logits z on the stem features, and f_c the trunk with channel k of gated layer l
    at scale s_{l,k} = Σ_j c_j · [k < W_{l,j}] (the probability that the sampled width
    covers it),

        L = mean_b [ CE(f_{c_b}(x_b), y_b) + λ · (c_b · M) / M_{J−1} ].

    Both terms reach the gate: the first through the channel scales, the second directly.
    The sample is relaxed, not straight through (:func:`gumbel_straight_through`): with a
    hard sample the channels past the chosen width sit at scale 0 before a ReLU, whose
    derivative there is 0, so every bucket would get the same cross-entropy gradient and
    the MAC term alone would drive the gate to the narrowest width. Lower τ brings f_c
    closer to the hard widths run at inference (the argmax of z).
    ``params`` is held fixed (a stop-gradient): differentiate with respect to
    ``gate_params``. ``macs``, λ and τ are arrays, not constants of the program: a sweep
    over λ compiles once.

    Args:
      gate: the :class:`WidthGate`, ``choices`` = J.
      gate_params: its parameters.
      model: the supernet, a :class:`GatedCNN` with ``mode="prefix"`` and ``buckets``.
      params: its parameters (trained by :func:`slimmable_loss`).
      x: a batch [B, H, W, C_in].
      y: int [B] labels.
      key: a PRNG key, for the Gumbel noise.
      macs: M, float [J], the MACs per example at each bucket (:func:`bucket_macs`).
      mac_weight: λ ≥ 0.
      temperature: τ > 0 of the Gumbel-softmax.

    Returns:
      float32 scalar.

    Raises:
      ValueError: for a model not in prefix mode or without buckets, or ``macs`` or the
        gate's ``choices`` not of length J.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dynprune import gating
      >>> model = gating.GatedCNN(features=(4, 8, 8), classes=3)
      >>> x, y = jnp.linspace(0, 1, 4 * 64).reshape(4, 8, 8, 1), jnp.array([0, 1, 2, 0])
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> gate = gating.WidthGate(choices=4)
      >>> h = model.apply({"params": params}, x, method=gating.GatedCNN.features_of)
      >>> gate_params = gate.init(jax.random.key(1), h)["params"]
      >>> macs = gating.bucket_macs(model, params, x[:1])
      >>> loss = lambda gp, key: gating.width_gate_loss(gate, gp, model, params, x, y, key,
      ...                                               macs=macs, mac_weight=0.1)
      >>> grads = jax.jit(jax.grad(loss))(gate_params, jax.random.key(2))
      >>> bool(jnp.abs(grads["logits"]["kernel"]).max() > 0)
      True

    References:
      Li et al., "Dynamic Slimmable Network", CVPR 2021; Jang et al., "Categorical
      Reparameterization with Gumbel-Softmax", ICLR 2017.
    """
    buckets = len(_widths(model)[0])
    if np.shape(macs) != (buckets,) or gate.choices != buckets:
        raise ValueError(
            f"macs and the gate's choices must cover the {buckets} buckets, got macs of "
            f"shape {np.shape(macs)} and choices={gate.choices}"
        )
    variables = {"params": lax.stop_gradient(params)}
    h = model.apply(variables, x, method=GatedCNN.features_of)
    g = jax.random.gumbel(key, (x.shape[0], buckets), jnp.float32)
    choice = jax.nn.softmax((gate.apply({"params": gate_params}, h) + g) / temperature, axis=-1)
    # Relaxed, not straight through: with a hard sample the channels past the chosen width
    # are at scale 0 before a ReLU, whose derivative at 0 is 0, so every bucket would get the
    # same CE gradient and only the MAC term would move the gate (to the narrowest, for good).
    soft = [Gates(g.saliency, jnp.ones_like(g.kept)) for g in width_gates(model, choice)]
    logits = model.apply(variables, h, soft, method=GatedCNN.trunk)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    macs = jnp.asarray(macs, choice.dtype)
    return jnp.mean(ce + mac_weight * (choice @ macs) / macs[-1])
