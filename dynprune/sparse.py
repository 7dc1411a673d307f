"""Sparse inference: masked kernels exported to ``jax.experimental.sparse``, run as sparse matmuls.

:func:`export` turns every masked 2-D kernel W ⊙ M into a sparse matrix that stores only its
nonzeros — BCOO (coordinate list, any rank) or CSR (compressed rows of the (in, out)
matrix). :func:`sparse_apply` runs an unchanged ``apply_fn(params, x)`` on such a tree: it
reads the function's jaxpr and evaluates it equation by equation, replacing each
``dot_general`` whose weight operand is a sparse leaf by a sparse–dense product

    y = x · W_sparse   (BCOO: ``bcoo_dot_general``; CSR: ``csr_matmat`` on the transpose),

so every model whose kernels reach ``dot_general`` directly (Flax ``nn.Dense``,
``nnx.Linear``, ``x @ w``) runs sparse without a line of model code changed. Everything
else is evaluated as it was traced. Convolution kernels stay dense (masked):
``jax.experimental.sparse`` has a sparse convolution only for 1-D inputs with unit batch and
feature sizes (``bcoo_conv_general_dilated``), so a conv net runs with sparse fully connected
layers and dense convolutions.

On CPU both formats are lowered to gather + scatter-add (segment sum) over the nonzeros;
there is no sparse BLAS. Whether that beats a dense matmul depends on the density and the
batch size: :func:`benchmark` measures it (``dynprune.stats.compare_latency``), it is not
assumed. ``jax.experimental.sparse.sparsify`` would be the general tool, but in JAX 0.10
it fails on Flax's ``custom_jvp_call`` (ReLU) with ``KeyError: 'subfuns'``.

References:
  Han et al., "Learning both Weights and Connections for Efficient Neural Networks", 2015
  (sparse storage of pruned networks); ``jax.experimental.sparse`` documentation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse
from jax.extend import core as jcore

from dynprune import masks as masks_lib
from dynprune import stats
from dynprune import tree as tree_lib
from dynprune.prune_now import prune_now
from dynprune.pruner import PyTree

__all__ = [
    "FORMATS",
    "SpeedRow",
    "benchmark",
    "export",
    "format_benchmark",
    "is_sparse",
    "sparse_apply",
]

Format = Literal["bcoo", "csr"]
FORMATS: tuple[str, ...] = ("bcoo", "csr")
"""The sparse formats :func:`export` writes: BCOO (coordinates) and CSR (compressed rows)."""

# Call-like primitives whose body sees the caller's arguments one to one: a sparse argument
# is followed inside (the call boundary, and a custom derivative rule, are dropped; this is
# inference). Loops and conditionals are not inlined: a sparse operand there is densified.
_CALLS = frozenset(
    {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "remat2"}
)


def is_sparse(x: Any) -> bool:
    """Whether ``x`` is a ``jax.experimental.sparse`` matrix (BCOO, CSR, ...).

    Use it as ``is_leaf`` to keep sparse matrices whole when flattening an exported tree:
    ``jax.tree.leaves(tree, is_leaf=dp.sparse.is_sparse)``.

    Args:
      x: anything.

    Returns:
      True for an instance of ``jax.experimental.sparse.JAXSparse``, else False.

    Examples:
      >>> import jax.numpy as jnp, dynprune as dp
      >>> exported = dp.sparse.export({"w": jnp.eye(2), "b": jnp.zeros(2)})
      >>> dp.sparse.is_sparse(exported["w"]), dp.sparse.is_sparse(exported["b"])
      (True, False)
    """
    return isinstance(x, jsparse.JAXSparse)


def export(params: PyTree, masks: PyTree | None = None, *, format: Format = "bcoo") -> PyTree:
    """Masked 2-D kernels as sparse matrices that store only the nonzeros of W ⊙ M.

    A leaf becomes sparse if it is 2-D and has a mask (``masks=None``: every 2-D floating
    leaf, the Dense kernels). Other masked leaves — conv kernels — become W ⊙ M, still
    dense; unmasked leaves are returned unchanged. The stored entries are exactly the
    nonzeros of W ⊙ M (nse = nnz), with int32 indices:

    * ``"bcoo"``: ``BCOO((values[nnz], indices[nnz, 2]), shape=(in, out))``;
    * ``"csr"``: ``CSR((values[nnz], col[nnz], row_ptr[in + 1]), shape=(in, out))``.

    Sizes are counted by :func:`dynprune.stats.cost` (``bytes_bcoo``, ``bytes_csr``).
    Export runs eagerly on concrete arrays (nnz fixes the shapes), not under ``jit``.

    Args:
      params: Linen params dict or NNX ``nnx.State``.
      masks: mask tree (``None`` leaves: not pruned), or ``None``.
      format: ``"bcoo"`` (default) or ``"csr"``.

    Returns:
      A tree of the structure of ``params`` with sparse matrices on the exported leaves; run
      it with :func:`sparse_apply`.

    Raises:
      ValueError: for an unknown format, or masks that do not match ``params``.

    Examples:
      >>> import jax, jax.numpy as jnp, dynprune as dp
      >>> params = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0]]), "b": jnp.zeros(2)}
      >>> exported = dp.sparse.export(params)
      >>> type(exported["w"]).__name__, int(exported["w"].nse)
      ('BCOO', 2)
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if masks is None:
        masks = tree_lib.map_scored(lambda p, w: True, tree_lib.select(params))
    effective = masks_lib.apply_masks(params, masks)
    chosen = {p for p, _ in tree_lib.scored_leaves(masks)}

    def convert(path: str, w: Any) -> Any:
        if path not in chosen or np.ndim(w) != 2:
            return w
        dense = np.asarray(w)
        rows, cols = np.nonzero(dense)  # row-major: sorted, unique coordinates
        values = jnp.asarray(dense[rows, cols])
        if format == "csr":
            row_ptr = np.zeros(dense.shape[0] + 1, np.int32)
            np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=row_ptr[1:])
            return jsparse.CSR(
                (values, jnp.asarray(cols, jnp.int32), jnp.asarray(row_ptr)), shape=dense.shape
            )
        indices = jnp.asarray(np.stack([rows, cols], axis=1), jnp.int32)
        return jsparse.BCOO(
            (values, indices), shape=dense.shape, indices_sorted=True, unique_indices=True
        )

    return tree_lib.map_with_path(convert, effective)


def sparse_apply(apply_fn: Callable[..., Any]) -> Callable[..., Any]:
    """``apply_fn`` made to run on an :func:`export`-ed tree with sparse matmuls.

    The returned ``fn(sparse_params, *args)`` traces ``apply_fn(params, *args)`` with each
    sparse leaf standing in as a dense array of its shape, then evaluates that jaxpr: a
    ``dot_general`` with a sparse operand becomes a sparse–dense product (BCOO:
    ``bcoo_dot_general`` for any dimension numbers; CSR: x · W for a weight contracted on
    its first axis, as in ``nn.Dense``), calls (``jit``, ``jax.checkpoint``, custom derivatives
    such as ``nn.relu``) are followed inside, and any other use of a sparse leaf (a reshape, a
    ``scan`` body, a sparse conv kernel) gets its dense value: the result is always that
    of the dense model, only the speed differs. ``args`` must be arrays (pytrees of them).
    Wrap it in ``jax.jit`` for speed: the interpretation happens once, at trace time.

    Args:
      apply_fn: pure ``apply_fn(params, *args)``, e.g.
        ``lambda p, x: model.apply({"params": p}, x)``.

    Returns:
      ``fn(sparse_params, *args)`` with the outputs of ``apply_fn(apply_masks(params,
      masks), *args)`` up to floating-point summation order.

    Examples:
      >>> import jax, jax.numpy as jnp, dynprune as dp
      >>> params = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0]])}
      >>> fn = jax.jit(dp.sparse.sparse_apply(lambda p, x: jax.nn.relu(x @ p["w"])))
      >>> fn(dp.sparse.export(params), jnp.array([[3.0, -1.0]]))
      Array([[3., 0.]], dtype=float32)
    """

    def run(sparse_params: PyTree, *args: Any) -> Any:
        leaves, treedef = jax.tree.flatten((sparse_params, args), is_leaf=is_sparse)
        stand_ins = [jax.ShapeDtypeStruct(x.shape, x.dtype) if is_sparse(x) else x for x in leaves]

        def dense_fn(*flat: Any) -> Any:
            p, a = jax.tree.unflatten(treedef, flat)
            return apply_fn(p, *a)

        closed, out_shape = jax.make_jaxpr(dense_fn, return_shape=True)(*stand_ins)
        outs = _evaluate(closed.jaxpr, closed.consts, leaves)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return run


def _evaluate(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    """``jax.core.eval_jaxpr`` whose variables may hold sparse matrices."""
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if any(is_sparse(x) for x in ins):
            outs = _evaluate_sparse(eqn, ins)
        else:
            outs = _bind(eqn, ins)
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def _bind(eqn: Any, ins: Sequence[Any]) -> list[Any]:
    # As jax.core.eval_jaxpr binds an equation in JAX 0.10 (get_bind_params returns the
    # params alone; before 0.5 it also returned sub-functions).
    out = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(eqn.params))
    return list(out) if eqn.primitive.multiple_results else [out]


def _evaluate_sparse(eqn: Any, ins: Sequence[Any]) -> list[Any]:
    name = eqn.primitive.name
    if name == "dot_general":
        out = _sparse_dot_general(ins[0], ins[1], eqn.params)
        if out is not None:
            return [out.astype(eqn.outvars[0].aval.dtype)]
    if name in _CALLS:
        body = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        if body is not None:
            inner, consts = getattr(body, "jaxpr", body), getattr(body, "consts", ())
            if len(inner.invars) == len(ins) and len(inner.constvars) == len(consts):
                return _evaluate(inner, consts, ins)
    return _bind(eqn, [x.todense() if is_sparse(x) else x for x in ins])


def _sparse_dot_general(lhs: Any, rhs: Any, params: dict) -> jax.Array | None:
    """The sparse–dense product for a ``dot_general``, or None where there is none."""
    if is_sparse(lhs) and is_sparse(rhs):
        return None
    dimension_numbers = params["dimension_numbers"]
    if isinstance(lhs, jsparse.BCOO) or isinstance(rhs, jsparse.BCOO):
        return jsparse.bcoo_dot_general(
            lhs,
            rhs,
            dimension_numbers=dimension_numbers,
            precision=params.get("precision"),
            preferred_element_type=params.get("preferred_element_type"),
        )
    (lhs_contract, rhs_contract), batch = dimension_numbers
    if (
        isinstance(rhs, jsparse.CSR)
        and tuple(lhs_contract) == (np.ndim(lhs) - 1,)
        and tuple(rhs_contract) == (0,)
        and batch == ((), ())
    ):
        n_in, n_out = rhs.shape
        x = jnp.reshape(lhs, (-1, n_in))
        # y = x W = (Wᵀ xᵀ)ᵀ; csr_matmat(transpose=True) multiplies by Wᵀ.
        y = jsparse.csr_matmat(rhs, x.T.astype(rhs.dtype), transpose=True).T
        return jnp.reshape(y, (*np.shape(lhs)[:-1], n_out))
    return None


class SpeedRow(NamedTuple):
    """One measurement of :func:`benchmark`.

    Attributes:
      sparsity: fraction of each kernel's entries pruned (layer-wise magnitude pruning).
      batch_size: examples per call.
      format: ``"bcoo"`` or ``"csr"``.
      nonzeros: nonzeros stored in the exported (sparse) kernels.
      dense_s: median seconds of the jitted dense model on W ⊙ M.
      sparse_s: median seconds of the jitted :func:`sparse_apply` model.
      speedup: ``dense_s / sparse_s`` (> 1: sparse is faster).

    Examples:
      >>> import dynprune as dp
      >>> row = dp.sparse.SpeedRow(sparsity=0.9, batch_size=1, format="csr", nonzeros=205,
      ...                          dense_s=4e-6, sparse_s=2e-6, speedup=2.0)
      >>> row.speedup, row._asdict()["format"]
      (2.0, 'csr')
    """

    sparsity: float
    batch_size: int
    format: str
    nonzeros: int
    dense_s: float
    sparse_s: float
    speedup: float


def benchmark(
    apply_fn: Callable[[PyTree, jax.Array], Any],
    params: PyTree,
    example: Any,
    *,
    sparsities: Sequence[float] = (0.9, 0.95, 0.98, 0.99),
    batch_sizes: Sequence[int] = (1, 256),
    formats: Sequence[str] = FORMATS,
    reps: int = 30,
    warmup: int = 3,
    seed: int = 0,
) -> list[SpeedRow]:
    """Measured latency of sparse against dense inference, per sparsity and batch size.

    For each sparsity s, every kernel is magnitude-pruned to s (layer-wise,
    :func:`dynprune.prune_now`); the dense model runs on W ⊙ M and the sparse one on
    :func:`export` (W, M) through :func:`sparse_apply`, both jitted, on the same uniform
    random batch of ``example``'s shape. Within one (s, batch) the candidates are timed
    interleaved (:func:`dynprune.stats.compare_latency`): medians of ``reps`` calls.
    The effective-MAC ratio (1 − s) is what an ideal kernel would gain; this is what the
    CPU/accelerator at hand gains.

    Args:
      apply_fn: pure ``apply_fn(params, x)``.
      params: dense parameters (their own zeros count as pruned).
      example: one input with a batch axis of 1; the batch is drawn in its shape.
      sparsities: fractions in [0, 1] to prune per kernel (default 0.9, 0.95, 0.98, 0.99).
      batch_sizes: batch sizes to time (default 1 and 256).
      formats: sparse formats to time (subset of :data:`FORMATS`; default both).
      reps: timed calls per candidate (>= 1; default 30).
      warmup: untimed calls per candidate after compilation (>= 0; default 3).
      seed: for the random batch (default 0).

    Returns:
      One :class:`SpeedRow` per (sparsity, batch size, format); render them with
      :func:`format_benchmark`.

    Raises:
      ValueError: for a format not in :data:`FORMATS`, a sparsity outside [0, 1], or
        ``reps`` / ``warmup`` out of range.

    Examples:
      >>> import jax, jax.numpy as jnp, dynprune as dp
      >>> params = {"w": jax.random.normal(jax.random.key(0), (64, 32))}
      >>> rows = dp.sparse.benchmark(lambda p, x: x @ p["w"], params, jnp.zeros((1, 64)),
      ...                            sparsities=[0.9], batch_sizes=[1], formats=["bcoo"], reps=3)
      >>> rows[0].nonzeros, rows[0].speedup > 0
      (205, True)
    """
    for name in formats:
        if name not in FORMATS:
            raise ValueError(f"formats must be among {FORMATS}, got {name!r}")
    dense_fn = jax.jit(apply_fn)
    sparse_fn = jax.jit(sparse_apply(apply_fn))
    rows = []
    for s in sparsities:
        pruned, masks = prune_now(params, sparsity=s)
        exported = {name: export(params, masks, format=name) for name in formats}
        nonzeros = {
            name: sum(int(x.nse) for x in jax.tree.leaves(tree, is_leaf=is_sparse) if is_sparse(x))
            for name, tree in exported.items()
        }
        for batch_size in batch_sizes:
            x = jax.random.uniform(
                jax.random.key(seed), (batch_size, *np.shape(example)[1:]), jnp.float32
            )
            calls = {"dense": (dense_fn, (pruned, x))}
            calls.update({name: (sparse_fn, (tree, x)) for name, tree in exported.items()})
            timing = stats.compare_latency(calls, reps=reps, warmup=warmup)
            rows.extend(
                SpeedRow(
                    sparsity=float(s),
                    batch_size=int(batch_size),
                    format=name,
                    nonzeros=nonzeros[name],
                    dense_s=timing.medians["dense"],
                    sparse_s=timing.medians[name],
                    speedup=timing.speedups[name],
                )
                for name in formats
            )
    return rows


def format_benchmark(rows: Sequence[SpeedRow]) -> str:
    """A fixed-width table of :func:`benchmark`'s rows (times in microseconds).

    Args:
      rows: a sequence of :class:`SpeedRow`, e.g. what :func:`benchmark` returns.

    Returns:
      The table as one string: a header, a rule, one line per row.

    Examples:
      >>> import dynprune as dp
      >>> row = dp.sparse.SpeedRow(sparsity=0.9, batch_size=1, format="csr", nonzeros=205,
      ...                          dense_s=4e-6, sparse_s=2e-6, speedup=2.0)
      >>> print(dp.sparse.format_benchmark([row]))
      sparsity  batch format  nonzeros   dense µs  sparse µs  speedup
      ---------------------------------------------------------------
           90%      1    csr       205        4.0        2.0    2.00x
    """
    header = (
        f"{'sparsity':>8} {'batch':>6} {'format':>6} {'nonzeros':>9} "
        f"{'dense µs':>10} {'sparse µs':>10} {'speedup':>8}"
    )
    lines = [header, "-" * len(header)]
    lines.extend(
        f"{r.sparsity:>8.0%} {r.batch_size:>6} {r.format:>6} {r.nonzeros:>9,} "
        f"{r.dense_s * 1e6:>10.1f} {r.sparse_s * 1e6:>10.1f} {r.speedup:>7.2f}x"
        for r in rows
    )
    return "\n".join(lines)
