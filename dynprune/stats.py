"""Compute and memory accounting read off the jaxpr, and measured latency.

For every ``dot_general`` / ``conv_general_dilated`` whose weight operand is a parameter
leaf, MACs = (output elements) × (contraction length) for one example, and
FLOPs = 2 · MACs. The *effective* MACs of a pruned layer are its dense MACs times its
density (nonzeros / size): the count Han et al. (2015) and Guo et al. (2016) report, i.e.
what an ideal sparse kernel would do. :func:`cost` adds parameters, nonzeros and the bytes
of the weights in dense, bitmask, CSR and BCOO storage; :func:`latency` and
:func:`compare_latency` measure what a real kernel does (``dynprune.sparse.benchmark``).

References:
  Han et al., "Learning both Weights and Connections for Efficient Neural Networks", 2015;
  Guo et al., "Dynamic Network Surgery for Efficient DNNs", 2016.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from dynprune import checks
from dynprune import masks as masks_lib
from dynprune import tree as tree_lib
from dynprune.pruner import PyTree

__all__ = [
    "INDEX_BYTES",
    "LatencyComparison",
    "LayerCost",
    "compare_latency",
    "cost",
    "flops",
    "format_cost",
    "interleaved_medians",
    "latency",
    "leaf_cost",
    "per_image_medians",
]

INDEX_BYTES = 4
"""Bytes per index: int32 indices and row pointers, as ``jax.experimental.sparse`` stores them."""


def _layer_macs(apply_fn: Callable[[PyTree, jax.Array], Any], params: PyTree, example: Any) -> dict:
    """{leaf path: MACs for one example} for every weight used by a matmul or convolution."""
    flat = jax.tree_util.tree_leaves_with_path(params)
    leaves = [x for _, x in flat]
    treedef = jax.tree.structure(params)
    closed = jax.make_jaxpr(lambda ls, x: apply_fn(jax.tree.unflatten(treedef, ls), x))(
        leaves, example
    )
    jaxpr = closed.jaxpr
    owner = {v: tree_lib.leaf_path(kp) for v, (kp, _) in zip(jaxpr.invars, flat, strict=False)}
    macs: dict[str, int] = {}

    def visit(jaxpr: Any, owner: dict) -> None:
        for eqn in jaxpr.eqns:
            inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            if inner is not None:
                inner = getattr(inner, "jaxpr", inner)
                visit(
                    inner,
                    {
                        iv: owner[v]
                        for v, iv in zip(eqn.invars, inner.invars, strict=False)
                        if not isinstance(v, jcore.Literal) and v in owner
                    },
                )
                continue
            if eqn.primitive.name not in ("dot_general", "conv_general_dilated"):
                continue
            weight = next((v for v in eqn.invars[1:] if v in owner), None)
            if weight is None:
                continue
            out = math.prod(eqn.outvars[0].aval.shape)
            w_shape = weight.aval.shape
            if eqn.primitive.name == "dot_general":
                (_, rhs_contract), _ = eqn.params["dimension_numbers"]
                contraction = math.prod(w_shape[d] for d in rhs_contract)
            else:
                out_axis = eqn.params["dimension_numbers"].rhs_spec[0]
                contraction = math.prod(d for i, d in enumerate(w_shape) if i != out_axis)
            macs[owner[weight]] = macs.get(owner[weight], 0) + out * contraction

    visit(jaxpr, owner)
    return macs


def _check_single_example(example: Any) -> None:
    if np.shape(example)[:1] != (1,):
        raise ValueError(f"example must have a batch axis of size 1, got shape {np.shape(example)}")


def flops(
    apply_fn: Callable[[PyTree, jax.Array], Any],
    params: PyTree,
    example: Any,
    masks: PyTree | None = None,
) -> dict[str, Any]:
    """Dense and effective FLOPs of one forward pass on one example.

    Per layer (a parameter leaf that is the weight operand of a ``dot_general`` or
    ``conv_general_dilated``), with density d = nonzeros(w ⊙ m) / size:

        FLOPs_dense = 2 · MACs,   FLOPs_effective = 2 · MACs · d

    (see :func:`cost`, which also counts bytes). Bias adds and activations are not counted.

    Args:
      apply_fn: pure ``apply_fn(params, x)``.
      params: parameter tree (concrete arrays: the nonzeros are counted).
      example: one input with a batch axis of 1, e.g. ``jnp.zeros((1, 28, 28, 1))``.
      masks: optional masks (``None`` on unpruned leaves); nonzeros are counted on w ⊙ m.
        Default ``None``: the nonzeros of ``params`` themselves.

    Returns:
      ``{"dense": F, "effective": F_eff, "layers": {path: {"dense", "effective", "density"}}}``;
      the dense counts are Python ints, effective counts and densities Python floats (a
      zero-size leaf has density 0.0).

    Raises:
      ValueError: if ``example`` does not have a batch axis of 1, or masks do not match.

    Examples:
      A 3 → 4 Dense kernel does 12 MACs, 24 FLOPs; with half its weights pruned, 12:

      >>> import jax.numpy as jnp, dynprune as dp
      >>> params = {"w": jnp.ones((3, 4)).at[:, :2].set(0.0)}
      >>> report = dp.stats.flops(lambda p, x: x @ p["w"], params, jnp.ones((1, 3)))
      >>> report["dense"], report["effective"], report["layers"]["w"]["density"]
      (24, 12.0, 0.5)

    References:
      Han et al., "Learning both Weights and Connections for Efficient Neural Networks",
      NeurIPS 2015; Guo et al., "Dynamic Network Surgery for Efficient DNNs", NeurIPS 2016.
    """
    _check_single_example(example)
    macs = _layer_macs(apply_fn, params, example)
    effective = params if masks is None else masks_lib.apply_masks(params, masks)
    weights = dict(tree_lib.scored_leaves(effective))
    layers = {}
    for path, m in macs.items():
        w = np.asarray(weights[path])
        density = int(np.count_nonzero(w)) / w.size if w.size else 0.0
        layers[path] = {"dense": 2 * m, "effective": 2 * m * density, "density": density}
    return {
        "dense": sum(v["dense"] for v in layers.values()),
        "effective": sum((v["effective"] for v in layers.values()), 0.0),
        "layers": layers,
    }


class LayerCost(NamedTuple):
    """Cost of one weight leaf (or of a group of leaves, summed), for one example.

    With n = size, z = nonzeros of w ⊙ m, b = bytes per value (4 for float32), and the
    2-D view of the leaf as (rows, cols) = (∏ shape[:-1], shape[-1]) — a Dense kernel's
    (in, out), a conv kernel's (h·w·in, out):

    Attributes:
      params: n.
      nonzeros: z.
      macs_dense: multiply-accumulates of the layer's matmul/convolution for one example.
      macs_effective: macs_dense · z / n (Han et al. 2015; Guo et al. 2016).
      bytes_dense: b · n.
      bytes_bitmask: ⌈n / 8⌉ + b · z (one bit per entry, then the nonzero values).
      bytes_csr: b · z + 4 · z + 4 · (rows + 1) (values, int32 column indices, row pointers).
      bytes_bcoo: b · z + 4 · ndim · z (values, int32 coordinates of every axis).

    Examples:
      >>> import numpy as np, dynprune as dp
      >>> cost = dp.stats.leaf_cost(np.eye(4, dtype=np.float32), macs_dense=16)
      >>> cost.params, cost.nonzeros, cost.macs_effective, cost.bytes_dense, cost.bytes_csr
      (16, 4, 4.0, 64, 52)
    """

    params: int
    nonzeros: int
    macs_dense: int
    macs_effective: float
    bytes_dense: int
    bytes_bitmask: int
    bytes_csr: int
    bytes_bcoo: int


def leaf_cost(w: Any, macs_dense: int = 0) -> LayerCost:
    """:class:`LayerCost` of one (already masked) leaf ``w`` that does ``macs_dense`` MACs.

    The formulas are those of :class:`LayerCost`, with b = ``w.dtype.itemsize``.

    Args:
      w: the leaf, masked (w ⊙ m): its zeros are the pruned entries. Any shape and dtype
        (NumPy or JAX array, concrete).
      macs_dense: the layer's MACs for one example (>= 0; default 0, a leaf that is no
        layer's weight).

    Returns:
      Its :class:`LayerCost` (Python numbers; ``macs_effective`` is 0.0 for an empty leaf).

    Examples:
      A 3×4 kernel with 5 nonzeros: dense 4·12 = 48 bytes; bitmask ⌈12/8⌉ + 4·5 = 22;
      CSR 4·5 + 4·5 + 4·(3+1) = 56; BCOO 4·5 + 4·2·5 = 60.

      >>> import numpy as np, dynprune as dp
      >>> w = np.zeros((3, 4), np.float32); w.flat[[0, 3, 5, 6, 11]] = 1.0
      >>> c = dp.stats.leaf_cost(w, macs_dense=12)
      >>> c.bytes_dense, c.bytes_bitmask, c.bytes_csr, c.bytes_bcoo, c.macs_effective
      (48, 22, 56, 60, 5.0)
    """
    w = np.asarray(w)
    n = int(w.size)
    z = int(np.count_nonzero(w))
    b = int(w.dtype.itemsize)
    rows = math.prod(w.shape[:-1])
    return LayerCost(
        params=n,
        nonzeros=z,
        macs_dense=int(macs_dense),
        macs_effective=macs_dense * z / n if n else 0.0,
        bytes_dense=b * n,
        bytes_bitmask=-(-n // 8) + b * z,
        bytes_csr=b * z + INDEX_BYTES * z + INDEX_BYTES * (rows + 1),
        bytes_bcoo=b * z + INDEX_BYTES * max(w.ndim, 1) * z,
    )


def _sum(rows: Sequence[LayerCost]) -> LayerCost:
    return LayerCost(*(sum(column) for column in zip(*rows, strict=True))) if rows else _ZERO


_ZERO = LayerCost(0, 0, 0, 0.0, 0, 0, 0, 0)


def cost(
    apply_fn: Callable[[PyTree, jax.Array], Any],
    params: PyTree,
    example: Any,
    masks: PyTree | None = None,
) -> dict[str, Any]:
    """Parameters, nonzeros, MACs and storage bytes, per layer and in total.

    A *layer* is a parameter leaf that is the weight operand of a ``dot_general`` or
    ``conv_general_dilated`` in ``apply_fn``'s jaxpr; its MACs for one example are
    (output elements) × (contraction length), e.g. a Dense kernel (in, out) does in · out
    and a conv kernel (h, w, c_in, c_out) does h · w · c_in per output element
    (c_out · H_out · W_out of them). Effective MACs = dense MACs × density, density =
    nonzeros(w ⊙ m) / size (the Han/Guo counting). Byte formulas are those of
    :class:`LayerCost`; values take the leaf's dtype size, indices are int32.

    Leaves that are no layer's weight (biases, norm scales) are summed into one
    ``"other"`` row, stored dense in every format (all its byte columns are b · n) and
    doing no MACs (bias adds and activations are not counted). ``"total"`` is the sum of
    the layers and ``"other"``: the whole model.

    Args:
      apply_fn: pure ``apply_fn(params, x)``.
      params: Linen params dict or NNX ``nnx.State``.
      example: one input with a batch axis of 1, e.g. ``jnp.zeros((1, 28, 28, 1))``.
      masks: optional masks; nonzeros are counted on w ⊙ m.

    Returns:
      ``{"layers": {path: row}, "other": row, "total": row}``, each row a dict with the
      keys of :class:`LayerCost` (``params``, ``nonzeros``, ``macs_dense``,
      ``macs_effective``, ``bytes_dense``, ``bytes_bitmask``, ``bytes_csr``,
      ``bytes_bcoo``), Python numbers (JSON-ready). Render it with :func:`format_cost`.

    Raises:
      ValueError: if ``example`` does not have a batch axis of 1, or masks do not match.

    Examples:
      LeNet-300-100 does 784·300 + 300·100 + 100·10 = 266,200 MACs per example:

      >>> import jax, jax.numpy as jnp, dynprune as dp
      >>> from dynprune.harness import models
      >>> model, x = models.get_model("lenet300"), jnp.zeros((1, 28, 28, 1))
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> report = dp.stats.cost(lambda p, x: model.apply({"params": p}, x), params, x)
      >>> report["total"]["macs_dense"], report["layers"]["fc1/kernel"]["bytes_dense"]
      (266200, 940800)
    """
    _check_single_example(example)
    macs = _layer_macs(apply_fn, params, example)
    effective = params if masks is None else masks_lib.apply_masks(params, masks)
    weights = dict(tree_lib.scored_leaves(effective))
    layers = {path: leaf_cost(weights[path], m) for path, m in macs.items()}
    other = _sum([leaf_cost(w) for path, w in weights.items() if path not in macs])
    other = other._replace(
        bytes_bitmask=other.bytes_dense, bytes_csr=other.bytes_dense, bytes_bcoo=other.bytes_dense
    )
    total = _sum([*layers.values(), other])
    return {
        "layers": {path: row._asdict() for path, row in layers.items()},
        "other": other._asdict(),
        "total": total._asdict(),
    }


def format_cost(report: dict[str, Any]) -> str:
    """A fixed-width table of :func:`cost`'s report, with compression ratios of the bytes.

    One row per layer, one for the other leaves, the total, then the compression of each
    sparse format over dense storage (``bytes_dense / bytes_format``) and the MAC reduction
    (``macs_dense / macs_effective``; ``inf`` when nothing is left).

    Args:
      report: what :func:`cost` returns.

    Returns:
      The table as one string (lines joined by newlines).

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> report = dp.stats.cost(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 4))}, jnp.ones((1, 3)))
      >>> print(dp.stats.format_cost(report))  # doctest: +NORMALIZE_WHITESPACE +ELLIPSIS
      layer         params nonzeros MACs eff. MACs dense B bitmask B CSR B BCOO B
      -----...
      w                 12       12   12      12.0      48        50   112    144
      other (dense)      0        0    0       0.0       0         0     0      0
      -----...
      total             12       12   12      12.0      48        50   112    144
      compression over dense float bytes: bitmask 1.0x, CSR 0.4x, BCOO 0.3x; MAC reduction 1.0x
    """
    columns = [
        ("params", "params", ","),
        ("nonzeros", "nonzeros", ","),
        ("macs_dense", "MACs", ","),
        ("macs_effective", "eff. MACs", ",.1f"),
        ("bytes_dense", "dense B", ","),
        ("bytes_bitmask", "bitmask B", ","),
        ("bytes_csr", "CSR B", ","),
        ("bytes_bcoo", "BCOO B", ","),
    ]
    width = max([len("other (dense)"), *(len(p) for p in report["layers"])])

    def line(name: str, row: dict[str, Any]) -> str:
        cells = " ".join(f"{row[key]:>{max(len(title), 10)}{fmt}}" for key, title, fmt in columns)
        return f"{name:<{width}} {cells}"

    header = f"{'layer':<{width}} " + " ".join(
        f"{title:>{max(len(title), 10)}}" for _, title, _ in columns
    )
    rule = "-" * len(header)
    lines = [header, rule]
    lines.extend(line(path, row) for path, row in report["layers"].items())
    lines.append(line("other (dense)", report["other"]))
    lines.extend([rule, line("total", report["total"])])
    total = report["total"]
    ratios = ", ".join(
        f"{name} {total['bytes_dense'] / total[key]:.1f}x" if total[key] else f"{name} inf"
        for key, name in [
            ("bytes_bitmask", "bitmask"),
            ("bytes_csr", "CSR"),
            ("bytes_bcoo", "BCOO"),
        ]
    )
    macs = total["macs_dense"] / total["macs_effective"] if total["macs_effective"] else math.inf
    lines.append(f"compression over dense float bytes: {ratios}; MAC reduction {macs:.1f}x")
    return "\n".join(lines)


class LatencyComparison(NamedTuple):
    """Result of :func:`compare_latency`.

    Attributes:
      medians: ``{name: median seconds per call}``.
      speedups: ``{name: medians[baseline] / medians[name]}`` (> 1: faster than baseline).
      baseline: the name the speedups are relative to.

    Examples:
      >>> import dynprune as dp
      >>> result = dp.stats.LatencyComparison(
      ...     medians={"dense": 2e-3, "sparse": 1e-3}, speedups={"dense": 1.0, "sparse": 2.0},
      ...     baseline="dense")
      >>> result.speedups["sparse"], result._asdict()["baseline"]
      (2.0, 'dense')
    """

    medians: dict[str, float]
    speedups: dict[str, float]
    baseline: str


def interleaved_medians(
    calls: Mapping[str, Callable[[], Any]], *, reps: int, warmup: int
) -> dict[str, float]:
    """Median seconds of zero-argument calls, timed interleaved.

    Each call is made ``warmup`` times untimed, then the calls are timed in ``reps``
    rounds; round r calls them in the order rotated by r, so drift in the machine's load
    and clock falls on all of them alike. One call is timed from dispatch to
    ``jax.block_until_ready`` of its outputs. The calls need not be jitted (e.g. a path
    that syncs with the host and dispatches several programs).

    Args:
      calls: ``{name: fn}``; ``fn()`` is one call.
      reps: timed rounds (>= 1).
      warmup: untimed calls per candidate first (>= 0).

    Returns:
      ``{name: median seconds per call}``.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> x = jnp.ones((64, 64))
      >>> medians = dp.stats.interleaved_medians({"a": lambda: x + 1, "b": lambda: x @ x},
      ...                                        reps=3, warmup=1)
      >>> sorted(medians), all(m > 0 for m in medians.values())
      (['a', 'b'], True)
    """
    for fn in calls.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            jax.block_until_ready(calls[name]())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def per_image_medians(
    calls: Mapping[str, Callable[[jax.Array], Any]], images: Any, *, reps: int, warmup: int = 1
) -> dict[str, float]:
    """Batch-1 latency over a set of images: per call, the sum over images of its median.

    With m_f(x) the median seconds of ``f(x[None])`` over ``reps`` rounds
    (:func:`interleaved_medians`, the calls timed interleaved on each image in turn),

        T_f = Σ_{x ∈ images} m_f(x),

    so a path whose work depends on the input (a cascade, a gated network) is timed on
    each image it meets, and T_dense / T_f is its batch-1 speedup on those images.

    Args:
      calls: ``{name: fn}``; ``fn(x)`` runs one batch of one image, x of shape [1, ...].
      images: array [N, ...] of images, each timed alone.
      reps: timed rounds per image (>= 1).
      warmup: untimed calls per image and call first (>= 0).

    Returns:
      ``{name: T_f seconds}``.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> images = jnp.ones((3, 8, 8))
      >>> totals = dp.stats.per_image_medians({"sum": jnp.sum, "mm": lambda x: x @ x},
      ...                                     images, reps=2)
      >>> sorted(totals), all(t > 0 for t in totals.values())
      (['mm', 'sum'], True)
    """
    totals = dict.fromkeys(calls, 0.0)
    for image in images:
        x = jnp.asarray(image[None])
        bound = {name: functools.partial(fn, x) for name, fn in calls.items()}
        for name, median in interleaved_medians(bound, reps=reps, warmup=warmup).items():
            totals[name] += median
    return totals


def compare_latency(
    calls: Mapping[str, tuple[Callable[..., Any], Sequence[Any]]],
    *,
    reps: int = 20,
    warmup: int = 3,
    baseline: str | None = None,
) -> LatencyComparison:
    """Median latencies of several jitted functions, timed interleaved.

    Each ``fn`` is compiled for its ``args`` (``jax.jit(fn).lower(*args).compile()``,
    untimed), called ``warmup`` times untimed, then the candidates are timed in ``reps``
    rounds; round r calls them in the order rotated by r, so drift in the machine's load
    and clock falls on all of them alike. One call is timed from dispatch to
    ``jax.block_until_ready`` of its outputs.

    Args:
      calls: ``{name: (fn, args)}``; ``fn(*args)`` is one call.
      reps: timed rounds (>= 1).
      warmup: untimed calls per candidate after compilation (>= 0).
      baseline: name the speedups refer to (default: the first).

    Returns:
      A :class:`LatencyComparison` of medians (seconds) and speedups.

    Raises:
      ValueError: for no calls, an unknown baseline, or reps/warmup out of range.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> x = jnp.ones((64, 64))
      >>> calls = {"mm": (jnp.dot, (x, x)), "add": (jnp.add, (x, x))}
      >>> result = dp.stats.compare_latency(calls, reps=3)
      >>> result.speedups["mm"], result.medians["add"] > 0
      (1.0, True)
    """
    reps = checks.steps("reps", reps, minimum=1)
    warmup = checks.steps("warmup", warmup, minimum=0)
    names = list(calls)
    if not names:
        raise ValueError("compare_latency needs at least one call")
    baseline = names[0] if baseline is None else baseline
    if baseline not in calls:
        raise ValueError(f"baseline {baseline!r} is not one of the calls {names}")
    compiled = {}
    for name, (fn, args) in calls.items():
        args = tuple(args)
        compiled[name] = functools.partial(jax.jit(fn).lower(*args).compile(), *args)
    medians = interleaved_medians(compiled, reps=reps, warmup=warmup)
    speedups = {name: medians[baseline] / m for name, m in medians.items()}
    return LatencyComparison(medians=medians, speedups=speedups, baseline=baseline)


def latency(fn: Callable[..., Any], *args: Any, reps: int = 20, warmup: int = 3) -> float:
    """Median seconds of one jitted call ``fn(*args)``, up to ``block_until_ready``.

    Compilation is excluded; see :func:`compare_latency` (this is its one-candidate case).

    Args:
      fn: the function to time; it is jitted.
      *args: its arguments (arrays or pytrees of them).
      reps: timed calls (>= 1; default 20).
      warmup: untimed calls after compilation (>= 0; default 3).

    Returns:
      The median seconds of one call.

    Raises:
      ValueError: if ``reps`` or ``warmup`` is out of range.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> x = jnp.ones((256, 784))
      >>> 0 < dp.stats.latency(lambda x: x @ x.T, x, reps=3) < 10
      True
    """
    return compare_latency({"fn": (fn, args)}, reps=reps, warmup=warmup).medians["fn"]
