"""Surgery: rebuild a pruned model as a physically smaller one, with the same outputs.

Dependency-aware structural removal in the spirit of Torch-Pruning's DepGraph (Fang et al.,
CVPR 2023), read off the model itself rather than from a table of layer types:
``apply_fn(params, x)`` is traced to a jaxpr, every axis of every value (parameter leaves,
the input, intermediates) becomes a node, and the equations couple nodes into *groups* that
must shrink together — a Dense kernel's output axis, its bias, the BatchNorm scale, offset
and running statistics after it, the next kernel's input axis, both operands of a residual
``add``, and, across a channels-last flatten of an H×W×C map, the rows r of the next kernel
with r mod C = c (the flattened axis is a group of its own whose units are (h, w, c)).

Which units go. Let a group be contracted somewhere (``dot_general``, or the input-feature
axis of ``conv_general_dilated``) as y = Σ_u A_u · B_u. Unit u may leave that contraction
when its term is the same for every input: one factor is identically zero on the kept units
(a pruned row of the next kernel; a neuron whose incoming weights and bias are pruned), or
both are input-independent (a neuron whose incoming weights are pruned still emits act(b_u);
its term is folded into the output as the constant

    c = Σ_{u removed} A_u · B_u,   e.g. c = Σ_u act(b_u) · W_next[u, :] for a Dense layer,

evaluated exactly, borders of padded convolutions included). A unit is removed when some
contraction lets it go and no use of the group needs it: not the model's output, not a
residual partner on which it is alive (the group is coupled, so the kept set is the union of
what every side needs), not a window (convolution, pooling) or a reduction, sort, softmax or
other primitive acting across the axis. If the masks prune units that such a primitive keeps,
the surgery is refused with a ``ValueError`` naming the primitive and the leaf and axis; it
never builds a model that computes something else. Removing every unit of a group is refused.

The input is a group like any other: input features (pixels) whose rows in the first kernel
are all pruned are dropped. The reconstructed ``apply`` takes the *full* input and gathers
the kept features itself (their indices are in ``kept``), so it is a drop-in replacement.

``apply`` re-evaluates the traced equations one by one on the sliced parameters, with static
shapes (``reshape`` sizes, ``broadcast_in_dim`` shapes) set to the shrunk sizes; it is pure,
jitted and differentiable, so the smaller model can be retrained. It runs each example on
its own (``vmap`` over the batch), so it refuses models that mix examples, such as BatchNorm
with batch statistics: pass inference-mode functions. Call-like primitives (``jit``,
``custom_jvp``, ``custom_vjp``, ``remat``) are inlined, so custom derivative rules are not
kept (``relu``'s derivative at exactly 0 becomes ½).

References:
  Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023 (Torch-Pruning);
  Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np
from jax import lax

from dynprune import masks as masks_lib
from dynprune import tree as tree_lib

PyTree = Any

__all__ = ["Reconstruction", "reconstruct"]

_CALLS = {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call"}
_CALLS |= {"custom_vjp_call_jaxpr", "remat", "checkpoint"}
_ELEMENTWISE = set(
    """abs acos acosh add add_any and asin asinh atan atan2 atanh cbrt ceil clamp
    convert_element_type copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1
    floor ge gt integer_pow is_finite le lgamma log log1p logistic lt max min mul ne neg
    nextafter not or pow reduce_precision rem round rsqrt select_n sign sin sinh sqrt square
    stop_gradient sub tan tanh xor""".split()
)
_REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and"}
_REDUCTIONS |= {"reduce_or", "argmax", "argmin"}
_WINDOWS = {"reduce_window_max", "reduce_window_min", "reduce_window_sum"}
_ALONG_AXIS = {"sort", "concatenate", "cumsum", "cumprod", "cummax", "cummin"}
_ALONG_AXIS |= {"cumlogsumexp", "split"}
_LAYOUT = {"reshape", "transpose", "convert_element_type", "copy", "copy_p"}


class Reconstruction(NamedTuple):
    """A physically smaller model equivalent to a pruned one.

    Attributes:
      params: the parameter tree with the structure of the original, every leaf sliced to
        the kept units on each of its axes (leaves that lose nothing are the masked leaves
        themselves).
      apply: pure, jitted ``apply(params, x)`` taking the *full* original input ``x`` (any
        batch size) and returning what ``apply_fn`` returns for the masked model.
      kept: ``{position: kept indices}`` (sorted int arrays, original numbering) for each
        position of ``architecture``: ``"fc1"`` are the units of the layer whose kernel is
        ``fc1/kernel``, ``"fc1:in"`` its input features where they come from the model input
        or a flatten (for a flatten of H×W×C, index (h·W + w)·C + c).
      architecture: units kept per position, e.g. ``"97-71-33"`` for LeNet-300-100 (pixels,
        hidden 1, hidden 2) and conv1 channels-conv2 channels-fc1 inputs-fc1 units for
        LeNet-5. Positions of size 1 and the output are left out.

    Examples:
      Two of four hidden units pruned (their incoming weights masked) are removed:

      >>> import jax, jax.numpy as jnp, dynprune as dp
      >>> params = {"w1": jnp.arange(1.0, 13.0).reshape(3, 4), "w2": jnp.ones((4, 2))}
      >>> masks = {"w1": jnp.array([[True, False, True, False]] * 3), "w2": None}
      >>> apply_fn = lambda p, x: jax.nn.relu(x @ p["w1"]) @ p["w2"]
      >>> r = dp.surgery.reconstruct(apply_fn, params, masks, jnp.ones((1, 3)))
      >>> r.architecture, r.params["w1"].shape, r.params["w2"].shape, r.kept["w1"].tolist()
      ('3-2', (3, 2), (2, 2), [0, 2])
      >>> r.apply(r.params, jnp.ones((1, 3))).tolist()
      [[36.0, 36.0]]
    """

    params: PyTree
    apply: Callable[[PyTree, jax.Array], Any]
    kept: dict[str, np.ndarray]
    architecture: str


class _Eqn(NamedTuple):
    prim: Any
    ins: tuple  # value ids (int) or jcore.Literal
    outs: tuple[int, ...]
    params: dict


def _flatten(closed: jcore.ClosedJaxpr, avals: dict, consts: dict) -> tuple[list, list, list]:
    """Equations of ``closed`` with call-like primitives inlined, values renamed to ints."""
    counter, eqns = itertools.count(), []

    def fresh(var: Any) -> int:
        i = next(counter)
        avals[i] = var.aval
        return i

    def atom(env: dict, v: Any) -> Any:
        return v if isinstance(v, jcore.Literal) else env[v]

    def inline(jaxpr: jcore.Jaxpr, env: dict) -> None:
        for eqn in jaxpr.eqns:
            ins = tuple(atom(env, v) for v in eqn.invars)
            inner = next(
                (eqn.params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in eqn.params),
                None,
            )
            if eqn.primitive.name in _CALLS and inner is not None:
                body, body_consts = (
                    (inner.jaxpr, inner.consts) if hasattr(inner, "consts") else (inner, ())
                )
                sub = dict(zip(body.invars, ins, strict=True))
                for cv, c in zip(body.constvars, body_consts, strict=True):
                    sub[cv] = fresh(cv)
                    consts[sub[cv]] = c
                inline(body, sub)
                env.update(zip(eqn.outvars, (atom(sub, v) for v in body.outvars), strict=True))
            else:
                outs = tuple(fresh(v) for v in eqn.outvars)
                env.update(zip(eqn.outvars, outs, strict=True))
                eqns.append(_Eqn(eqn.primitive, ins, outs, dict(eqn.params)))

    env = {}
    for cv, c in zip(closed.jaxpr.constvars, closed.consts, strict=True):
        env[cv] = fresh(cv)
        consts[env[cv]] = c
    inputs = [fresh(v) for v in closed.jaxpr.invars]
    env.update(zip(closed.jaxpr.invars, inputs, strict=True))
    inline(closed.jaxpr, env)
    return eqns, inputs, [atom(env, v) for v in closed.jaxpr.outvars]


def _reshape_blocks(src: tuple, dst: tuple) -> list[tuple[list[int], list[int]]]:
    """Pairs (source axes, destination axes) of a row-major reshape: a common prefix and
    suffix of equal sizes axis by axis, the middle in blocks of equal product (size-1 axes
    left out)."""
    lo = 0
    while lo < min(len(src), len(dst)) and src[lo] == dst[lo]:
        lo += 1
    hi = 0
    while hi < min(len(src), len(dst)) - lo and src[-1 - hi] == dst[-1 - hi]:
        hi += 1
    ends = [([k], [k]) for k in range(lo)]
    ends += [([len(src) - 1 - k], [len(dst) - 1 - k]) for k in reversed(range(hi))]
    a = [k for k in range(lo, len(src) - hi) if src[k] != 1]
    b = [k for k in range(lo, len(dst) - hi) if dst[k] != 1]
    blocks, i, j = [], 0, 0
    while i < len(a):
        bi, bj, pi, pj = [a[i]], [b[j]], src[a[i]], dst[b[j]]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                bi.append(a[i])
                pi, i = pi * src[a[i]], i + 1
            else:
                bj.append(b[j])
                pj, j = pj * dst[b[j]], j + 1
        blocks.append((bi, bj))
    return ends + blocks


def _any_except(x: np.ndarray, axis: int, kept: list) -> np.ndarray:
    """any(x) over every axis but ``axis``, restricted to the kept indices of the others."""
    for ax, k in enumerate(kept):
        if ax != axis and k is not None:
            x = np.take(x, k, axis=ax)
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1).any(axis=1)


class _Graph:
    """The traced model: equations, probe values, input-independence, and coupled axes."""

    def __init__(self, apply_fn: Callable, params: PyTree, example: jax.Array) -> None:
        flat = jax.tree_util.tree_leaves_with_path(params)
        self.treedef = jax.tree.structure(params)
        closed, out_shape = jax.make_jaxpr(
            lambda ls, x: apply_fn(jax.tree.unflatten(self.treedef, ls), x), return_shape=True
        )([x for _, x in flat], example)
        self.out_tree = jax.tree.structure(out_shape)
        self.avals, self.consts = {}, {}
        self.eqns, inputs, self.outputs = _flatten(closed, self.avals, self.consts)
        self.param_ids, self.x_id = inputs[:-1], inputs[-1]
        self.parent: list[int] = []
        self.size: list[int] = []
        self.origin: list[str | None] = []
        self.nodes: dict[int, list[int]] = {}
        self.value: dict[int, Any] = {}
        self.const: dict[int, np.ndarray] = {}
        self.leaf_of: dict[int, str] = {}
        self.blocks: list[tuple[int, str]] = []  # (node, why the axis cannot shrink)
        self.mixes: list[tuple[int, str]] = []  # nodes summed, windowed or sorted over
        # (eqn index, [(lhs axis, rhs axis) contracted], (output id, the weight's output axes))
        self.contractions: list[tuple[int, list, tuple[int, list]]] = []
        self.merges: dict[int, list] = {}  # reshape eqn index -> [(out axis, [in axes])]
        self._zeros: dict[int, np.ndarray] = {}
        for id_, (kp, leaf) in zip(self.param_ids, flat, strict=True):
            self.leaf_of[id_] = tree_lib.leaf_path(kp)
            self._source(id_, leaf, True, f"{self.leaf_of[id_]} axis {{}}")
        for k, (id_, c) in enumerate(self.consts.items()):
            self._source(id_, c, True, f"constant #{k} axis {{}}")
        self._source(self.x_id, example, False, "input axis {}")
        probe = lambda env: {k: v for k, v in _run(self.eqns, dict(env)).items() if k not in env}
        self.value.update(jax.jit(probe)(self.value))  # every intermediate, in one compile
        for i, e in enumerate(self.eqns):
            self._step(i, e)

    # union-find over axis nodes
    def node(self, size: int, origin: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.origin.append(origin)
        return len(self.parent) - 1

    def find(self, n: int) -> int:
        while self.parent[n] != n:
            self.parent[n] = n = self.parent[self.parent[n]]
        return n

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        self.parent[max(a, b)] = min(a, b)

    def root(self, id_: int, axis: int) -> int:
        return self.find(self.nodes[id_][axis])

    def _source(self, id_: int, value: Any, const: bool, origin: str) -> None:
        shape = np.shape(value)
        self.nodes[id_] = [self.node(s, origin.format(a)) for a, s in enumerate(shape)]
        self.value[id_] = value
        self.const[id_] = np.full(shape, const)

    def zero(self, id_: int) -> np.ndarray:
        """Entries of value ``id_`` that are 0 for every input: constant, and 0 on the probe."""
        if id_ not in self._zeros:
            self._zeros[id_] = self.const[id_] & (np.asarray(self.value[id_]) == 0)
        return self._zeros[id_]

    def blocked(self) -> dict[int, str]:
        """{group: why it cannot shrink} (the first reason recorded)."""
        return {self.find(n): why for n, why in reversed(self.blocks)}

    def output_roots(self) -> set[int]:
        ids = [o for o in self.outputs if not isinstance(o, jcore.Literal)]
        return {self.root(o, ax) for o in ids for ax in range(len(self.nodes[o]))}

    def _const(self, atom: Any) -> np.ndarray:
        return np.asarray(True) if isinstance(atom, jcore.Literal) else self.const[atom]

    def _step(self, i: int, e: _Eqn) -> None:
        """Couples the axes of equation ``i`` and finds its input-independent outputs."""
        name, p = e.prim.name, e.params
        if not e.outs:
            return
        for o in e.outs:
            self.nodes[o] = [self.node(s) for s in self.avals[o].shape]
        ins = [a for a in e.ins if not isinstance(a, jcore.Literal)]
        node = lambda a, ax: self.nodes[a][ax]
        out, shape = e.outs[0], self.avals[e.outs[0]].shape
        consts = [self._const(a) for a in e.ins]
        if len(ins) == 1 and ins[0] in self.leaf_of and name in _LAYOUT:
            self.leaf_of[out] = self.leaf_of[ins[0]]
        if name in _ELEMENTWISE:
            self.const[out] = np.logical_and.reduce([np.broadcast_to(c, shape) for c in consts])
            for a in ins:
                for ax, n in enumerate(self.nodes[a]):
                    if len(self.nodes[a]) == len(shape) and self.size[n] == shape[ax]:
                        self.union(n, node(out, ax))
        elif name in ("broadcast_in_dim", "transpose", "squeeze", "reshape"):
            src = self.nodes[e.ins[0]]
            if name == "broadcast_in_dim":
                expanded = [1] * len(shape)  # broadcast_dimensions are increasing
                for d, od in enumerate(p["broadcast_dimensions"]):
                    expanded[od] = consts[0].shape[d]
                self.const[out] = np.broadcast_to(consts[0].reshape(expanded), shape)
            elif name == "transpose":
                self.const[out] = np.transpose(consts[0], p["permutation"])
            else:
                self.const[out] = consts[0].reshape(shape)
            if name == "broadcast_in_dim":
                pairs = [
                    (d, od)
                    for d, od in enumerate(p["broadcast_dimensions"])
                    if self.size[src[d]] == shape[od]
                ]
            elif name == "transpose":
                pairs = [(d, od) for od, d in enumerate(p["permutation"])]
            elif name == "squeeze":
                rest = [d for d in range(len(src)) if d not in p["dimensions"]]
                pairs = [(d, k) for k, d in enumerate(rest)]
            elif p.get("dimensions") is not None:
                return self._unknown(e, "a `reshape` with `dimensions`")
            else:
                pairs, merged = [], []
                for bi, bo in _reshape_blocks(self.avals[e.ins[0]].shape, shape):
                    if len(bi) == len(bo) == 1:
                        pairs.append((bi[0], bo[0]))
                    elif len(bo) == 1:
                        merged.append((bo[0], bi))
                    else:
                        for ax in bi:
                            self._block(src[ax], "a `reshape` splits or regroups {}", mixes=False)
                        for ax in bo:
                            self._block(node(out, ax), "a `reshape` splits {}", mixes=False)
                if merged:
                    self.merges[i] = merged
            for d, od in pairs:
                self.union(src[d], node(out, od))
        elif name in _REDUCTIONS:
            x = e.ins[0]
            self.const[out] = np.all(consts[0], axis=tuple(p["axes"]))
            rest = [ax for ax in range(len(self.nodes[x])) if ax not in p["axes"]]
            for ax in p["axes"]:
                self._block(node(x, ax), f"`{name}` reduces over {{}}")
            for k, ax in enumerate(rest):
                self.union(node(x, ax), node(out, k))
        elif name in _WINDOWS:
            flags = jnp.asarray(consts[0], jnp.float32)
            keys = ("window_dimensions", "window_strides", "padding")
            keys += ("base_dilation", "window_dilation")
            self.const[out] = np.asarray(
                lax.reduce_window(flags, np.inf, lax.min, *(p[k] for k in keys)) > 0.5
            )
            for ax, (w, s, pad, bd, wd) in enumerate(zip(*(p[k] for k in keys), strict=True)):
                if (w, s, tuple(pad), bd, wd) == (1, 1, (0, 0), 1, 1):
                    self.union(node(e.ins[0], ax), node(out, ax))
                else:
                    self._block(node(e.ins[0], ax), f"`{name}` slides a window over {{}}")
                    self._block(node(out, ax), f"`{name}` slides a window over {{}}", mixes=False)
        elif name in ("slice", "pad"):
            if name == "pad":
                flags = [jnp.asarray(c, jnp.float32) for c in consts]
                self.const[out] = np.asarray(lax.pad(*flags, p["padding_config"])) > 0.5
                trivial = [tuple(c) == (0, 0, 0) for c in p["padding_config"]]
            else:
                strides = p["strides"] or (1,) * len(shape)
                bounds = zip(p["start_indices"], p["limit_indices"], strides, strict=True)
                self.const[out] = consts[0][tuple(slice(*b) for b in bounds)]
                trivial = [
                    (a, b, s) == (0, n, 1)
                    for a, b, s, n in zip(
                        p["start_indices"],
                        p["limit_indices"],
                        strides,
                        self.avals[e.ins[0]].shape,
                        strict=True,
                    )
                ]
            for ax, ok in enumerate(trivial):
                if ok:
                    self.union(node(e.ins[0], ax), node(out, ax))
                else:
                    self._block(node(e.ins[0], ax), f"`{name}` changes {{}}")
                    self._block(node(out, ax), f"`{name}` changes {{}}", mixes=False)
        elif name in _ALONG_AXIS:
            along = p.get("dimension", p.get("axis"))
            every = all(self._const(a).all() for a in e.ins)
            for o in e.outs:
                self.const[o] = np.full(self.avals[o].shape, every)
                for a in ins:
                    if len(self.nodes[a]) == len(self.nodes[o]):
                        for ax, (n, m) in enumerate(zip(self.nodes[a], self.nodes[o], strict=True)):
                            if ax == along:
                                self._block(n, f"`{name}` acts along {{}}")
                                self._block(m, f"`{name}` acts along {{}}", mixes=False)
                            elif self.size[n] == self.size[m]:
                                self.union(n, m)
        elif name in ("dot_general", "conv_general_dilated"):
            self._contraction(i, e)
        else:
            self._unknown(e, f"`{name}`")

    def _block(self, n: int, why: str, mixes: bool = True) -> None:
        """Axis node ``n`` cannot shrink; ``why`` has a ``{}`` for the axis. ``mixes``: the
        equation combines entries along it (an error on the batch axis)."""
        self.blocks.append((n, why))
        if mixes:
            self.mixes.append((n, why))

    def _unknown(self, e: _Eqn, why: str) -> None:
        every = all(self._const(a).all() for a in e.ins)
        for o in e.outs:
            self.const[o] = np.full(self.avals[o].shape, every)
            for n in self.nodes[o]:
                self._block(n, f"{why}, not supported by surgery, produces {{}}", mixes=False)
        for a in e.ins:
            if not isinstance(a, jcore.Literal):
                for n in self.nodes[a]:
                    self._block(n, f"{why}, not supported by surgery, acts on {{}}")

    def _contraction(self, i: int, e: _Eqn) -> None:
        """dot_general / conv: couple axes, record the contracted pairs, and find which
        outputs are input-independent: a term A·B is constant iff A = 0, B = 0, or both
        are constant, so #non-constant terms = op(¬cA, B ≠ 0) + op(A ≠ 0, ¬cB)."""
        lhs, rhs = e.ins
        out, p = e.outs[0], e.params
        flag = lambda x: jnp.asarray(x, jnp.float32)
        q = {**p, "preferred_element_type": jnp.float32}
        nonconst = e.prim.bind(flag(~self.const[lhs]), flag(~self.zero(rhs)), **q)
        nonconst += e.prim.bind(flag(~self.zero(lhs)), flag(~self.const[rhs]), **q)
        self.const[out] = np.asarray(nonconst) == 0
        ln, rn, on = self.nodes[lhs], self.nodes[rhs], self.nodes[out]
        if e.prim.name == "dot_general":
            (lc, rc), (lb, rb) = p["dimension_numbers"]
            lf = [d for d in range(len(ln)) if d not in (*lc, *lb)]
            rf = [d for d in range(len(rn)) if d not in (*rc, *rb)]
            links = [(d, o) for o, d in enumerate([*lb, *lf])]  # (operand axis, out axis)
            rlinks = [(d, o) for o, d in enumerate(rb)]
            rlinks += [(d, len(lb) + len(lf) + k) for k, d in enumerate(rf)]
            pairs = list(zip(lc, rc, strict=True))
            weight_axes = []  # the output axes that a constant operand (the weight) brings
            if self.const[rhs].all():
                weight_axes = [o for _, o in rlinks[len(rb) :]]
            elif self.const[lhs].all():
                weight_axes = [o for _, o in links[len(lb) :]]
        else:
            dn = p["dimension_numbers"]
            links = [(dn.lhs_spec[0], dn.out_spec[0])]
            rlinks = [(dn.rhs_spec[0], dn.out_spec[1])]
            pairs = [(dn.lhs_spec[1], dn.rhs_spec[1])]
            weight_axes = [dn.out_spec[1]]
            for n in [ln[d] for d in dn.lhs_spec[2:]] + [rn[d] for d in dn.rhs_spec[2:]]:
                self._block(n, "`conv_general_dilated` slides a window over {}")
            for d in dn.out_spec[2:]:
                self._block(on[d], "`conv_general_dilated` slides a window over {}", mixes=False)
            if p["feature_group_count"] != 1 or p["batch_group_count"] != 1:
                for n in (ln[dn.lhs_spec[1]], rn[dn.rhs_spec[1]], rn[dn.rhs_spec[0]]):
                    self._block(n, "a grouped `conv_general_dilated` acts on {}")
                pairs = []
        for d, o in links:
            self.union(ln[d], on[o])
        for d, o in rlinks:
            self.union(rn[d], on[o])
        for a, b in pairs:
            self.union(ln[a], rn[b])
            self.mixes.append((ln[a], f"`{e.prim.name}` contracts {{}}"))
        self.contractions.append((i, pairs, (out, weight_axes)))

    def kept_axes(self, id_: int, removed: dict) -> list:
        """Per axis of value ``id_``: kept indices, or None where nothing is removed."""
        rem = [removed.get(self.root(id_, ax)) for ax in range(len(self.nodes[id_]))]
        return [None if r is None else np.flatnonzero(~r) for r in rem]

    def shrink(self, id_: int, x: Any, removed: dict) -> Any:
        """Value ``x`` of ``id_`` sliced to the kept units of each axis (``x`` if none go)."""
        kept = self.kept_axes(id_, removed)
        if all(k is None for k in kept):
            return x
        for ax, k in enumerate(kept):
            x = x if k is None else np.take(np.asarray(x), k, axis=ax)
        return jnp.asarray(x)

    def describe(self, root: int) -> str:
        names = [o for n, o in enumerate(self.origin) if o and self.find(n) == root]
        if not names:
            return f"an intermediate axis of size {self.size[root]}"
        return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def _merge_components(g: _Graph) -> dict[int, list[int]]:
    """{flattened group: its component groups}. Flattens feeding one group (a residual add
    of two flattened maps) have their components coupled pairwise."""
    while True:
        found: dict[int, list[int]] = {}
        changed = False
        for i, merged in g.merges.items():
            src = g.nodes[g.eqns[i].ins[0]]
            for ax, axes in merged:
                root, comps = g.root(g.eqns[i].outs[0], ax), [src[a] for a in axes]
                other = found.setdefault(root, comps)
                if [g.size[c] for c in other] != [g.size[c] for c in comps]:
                    g.blocks.append((root, "two `reshape`s flatten {} differently"))
                    continue
                for a, b in zip(other, comps, strict=True):
                    changed |= g.find(a) != g.find(b)
                    g.union(a, b)
        if not changed:
            return {r: [g.find(c) for c in comps] for r, comps in found.items()}


def _removed_units(g: _Graph, merges: dict) -> tuple[dict, dict]:
    """Fixed point of the removal rule.

    Returns ``({group: removed bool[n]}, {group: asked bool[n]})``; *asked* are the units
    the masks prune: a constant term in some contraction, or a layer output that is constant.
    Removing units only makes more terms vanish on the kept units, so the votes are monotone
    and the iteration stops.
    """
    blocked, outputs = g.blocked(), g.output_roots()
    removed: dict[int, np.ndarray] = {}
    while True:
        allow: dict[int, np.ndarray] = {}
        keep: dict[int, np.ndarray] = {}
        asked: dict[int, np.ndarray] = {}

        def vote(table: dict, root: int, units: np.ndarray) -> None:
            table[root] = table.get(root, np.zeros(g.size[root], bool)) | units

        for i, pairs, _ in g.contractions:
            lhs, rhs = g.eqns[i].ins
            ka, kb = g.kept_axes(lhs, removed), g.kept_axes(rhs, removed)
            for a, b in pairs:
                live = (_any_except(~g.const[lhs], a, ka) & _any_except(~g.zero(rhs), b, kb)) | (
                    _any_except(~g.const[rhs], b, kb) & _any_except(~g.zero(lhs), a, ka)
                )
                for table, units in ((allow, ~live), (asked, ~live), (keep, live)):
                    vote(table, g.root(lhs, a), units)
        for _, _, (out, axes) in g.contractions:
            for ax in axes:
                everything = [None] * g.const[out].ndim
                vote(asked, g.root(out, ax), ~_any_except(~g.const[out], ax, everything))
        for root, comps in merges.items():
            grid = removed.get(root, np.zeros(g.size[root], bool)).reshape(
                [g.size[c] for c in comps]
            )
            for k, c in enumerate(comps):
                gone = np.moveaxis(grid, k, 0).reshape(g.size[c], -1).all(axis=1)
                vote(allow, c, gone)
                vote(keep, c, ~gone)
        new = {}
        for r, units in allow.items():
            units = units & ~keep.get(r, np.zeros_like(units))
            if r not in blocked and r not in outputs and units.any():
                new[r] = units
        for root, comps in merges.items():
            implied = np.zeros([g.size[c] for c in comps], bool)
            for k, c in enumerate(comps):
                if c in new:
                    implied |= np.expand_dims(new[c], [d for d in range(len(comps)) if d != k])
            if implied.any():
                new[root] = new.get(root, False) | implied.reshape(-1)
        empty = [f"{g.describe(r)} ({u.size} units)" for r, u in new.items() if u.all()]
        if empty:
            raise ValueError(
                f"surgery would remove every unit of {'; and of '.join(empty)}: "
                "a layer cannot be empty"
            )
        if new.keys() == removed.keys() and all(np.array_equal(new[r], removed[r]) for r in new):
            return removed, asked
        removed = new


def _check_per_example(g: _Graph) -> None:
    """Refuses models that mix examples across the batch, or outputs without a batch axis."""
    batch = g.root(g.x_id, 0)
    for n, why in g.mixes:
        if g.find(n) == batch:
            raise ValueError(
                "surgery runs the model one example at a time, but "
                f"{why.format('the batch axis (input axis 0)')}; pass an inference-mode "
                "apply_fn (e.g. BatchNorm(use_running_average=True))"
            )
    for o in g.outputs:
        if isinstance(o, jcore.Literal) or not g.nodes[o] or g.root(o, 0) != batch:
            raise ValueError("surgery needs every output of apply_fn to have the batch axis first")


def _check_blocked(g: _Graph, asked: dict) -> None:
    """Refuses pruned units that a use surgery cannot shrink keeps alive."""
    blocked, outputs = g.blocked(), g.output_roots()
    for r, units in asked.items():
        if r in blocked and r not in outputs and units.any():
            which = np.flatnonzero(units)
            raise ValueError(
                f"cannot remove the {len(which)} pruned unit(s) {which[:8].tolist()} of "
                f"{g.describe(r)}: {blocked[r].format('that axis')}, so removing them would "
                "change the outputs; unprune them or change the model"
            )


def _positions(g: _Graph, merges: dict, removed: dict) -> dict[str, np.ndarray]:
    """Kept indices of each layer's input features (from the input or a flatten) and units."""
    inputs = {g.root(g.x_id, ax) for ax in range(len(g.nodes[g.x_id]))} | set(merges)
    outputs, found = g.output_roots(), {}
    for i, pairs, (out, axes) in g.contractions:
        e = g.eqns[i]
        for w in (1, 0):
            x = e.ins[1 - w]
            if e.ins[w] in g.leaf_of and x not in g.leaf_of:
                path = g.leaf_of[e.ins[w]]
                layer = path.rpartition("/")[0] or path
                for pair in pairs:
                    if g.root(x, pair[1 - w]) in inputs:
                        found.setdefault(g.root(x, pair[1 - w]), f"{layer}:in")
                for ax in axes:
                    if g.root(out, ax) not in outputs:
                        found.setdefault(g.root(out, ax), layer)
                break
    return {
        name: np.flatnonzero(~removed.get(r, np.zeros(g.size[r], bool)))
        for r, name in found.items()
        if g.size[r] > 1
    }


def _program(g: _Graph, removed: dict) -> Callable:
    """The shrunk model: each equation with static shapes set to the kept sizes, flattened
    groups gathered after their reshape, and removed constant terms added back."""

    def rsize(n: int) -> int:
        return g.size[n] - int(removed.get(g.find(n), np.zeros(0, bool)).sum())

    def kept(n: int) -> np.ndarray:
        return np.flatnonzero(~removed.get(g.find(n), np.zeros(g.size[n], bool)))

    plan, folds = [], {i: pairs for i, pairs, _ in g.contractions}
    for i, e in enumerate(g.eqns):
        params, gathers, fold = e.params, [], None
        outs = [rsize(n) for n in g.nodes[e.outs[0]]] if e.outs else []
        if e.prim.name == "broadcast_in_dim":
            params = {**params, "shape": tuple(outs)}
        elif e.prim.name == "slice":
            src = g.nodes[e.ins[0]]  # an axis that shrinks is sliced whole
            limits = zip(params["limit_indices"], src, strict=True)
            params = {**params, "limit_indices": tuple(k - g.size[n] + rsize(n) for k, n in limits)}
        elif e.prim.name == "reshape" and params.get("dimensions") is None:
            src = g.nodes[e.ins[0]]
            for ax, axes in g.merges.get(i, []):
                comps = [kept(src[a]) for a in axes]
                outs[ax] = math.prod(len(c) for c in comps)
                units = np.unravel_index(
                    kept(g.nodes[e.outs[0]][ax]), [g.size[src[a]] for a in axes]
                )
                at = [np.searchsorted(c, u) for c, u in zip(comps, units, strict=True)]
                flat = np.ravel_multi_index(at, [len(c) for c in comps])
                if not np.array_equal(flat, np.arange(outs[ax])):
                    gathers.append((ax, flat))
            params = {**params, "new_sizes": tuple(outs)}
        if i in folds:
            lhs, rhs = e.ins
            gone = np.zeros(np.shape(g.value[lhs]), bool)
            for a, _ in folds[i]:
                units = removed.get(g.root(lhs, a))
                if units is not None:
                    gone |= np.expand_dims(units, [d for d in range(gone.ndim) if d != a])
            if gone.any():
                c = e.prim.bind(np.where(gone, g.value[lhs], 0), g.value[rhs], **e.params)
                c = g.shrink(e.outs[0], np.asarray(c), removed)
                fold = jnp.asarray(c) if np.any(c != 0) else None
        plan.append((params, gathers, fold))
    consts = {i: g.shrink(i, c, removed) for i, c in g.consts.items()}
    x_kept = g.kept_axes(g.x_id, removed)
    eqns, param_ids, x_id, outputs = g.eqns, g.param_ids, g.x_id, g.outputs

    def one(leaves: list, x: jax.Array) -> list:
        for ax, k in enumerate(x_kept):
            if k is not None:
                x = jnp.take(x, k, axis=ax)
        env = _run(eqns, {**consts, **dict(zip(param_ids, leaves, strict=True)), x_id: x}, plan)
        return [o.val if isinstance(o, jcore.Literal) else env[o][0] for o in outputs]

    return one


def _run(eqns: list[_Eqn], env: dict, plan: list | None = None) -> dict:
    """Evaluates ``eqns`` into ``env`` ({value id: array}); ``plan`` gives each equation
    its shrunk static parameters, the gathers after a flatten, and the constant to add."""
    read = lambda a: a.val if isinstance(a, jcore.Literal) else env[a]
    for k, e in enumerate(eqns):
        params, gathers, fold = plan[k] if plan else (e.params, (), None)
        outs = e.prim.bind(*map(read, e.ins), **params)
        outs = list(outs) if e.prim.multiple_results else [outs]
        for ax, flat in gathers:
            outs[0] = jnp.take(outs[0], flat, axis=ax)
        if fold is not None:
            outs[0] = outs[0] + fold
        env.update(zip(e.outs, outs, strict=True))
    return env


def reconstruct(
    apply_fn: Callable[[PyTree, jax.Array], Any],
    params: PyTree,
    masks: PyTree | None,
    example: jax.Array,
) -> Reconstruction:
    """Rebuilds a pruned model as a physically smaller one with the same outputs.

    The units removed are those the masks leave dead (see the module docstring): whole
    output neurons or conv channels (:func:`dynprune.masks.structured` masks, extended to
    biases by :func:`dynprune.masks.with_bias`), units whose incoming weights are all pruned
    (their constant output act(b_u) is folded into the next layer: b' = b + act(b_u) ·
    W_next[u]), units whose outgoing weights are all pruned, and input features whose rows in
    the first kernel are all pruned. For each removed unit the coupled group shrinks
    together: kernels on both sides, biases, normalisation scales, offsets and running
    statistics, and the rows r ≡ c (mod C) of a Dense kernel after a channels-last flatten.

    Args:
      apply_fn: pure ``apply_fn(params, x)`` in inference mode, e.g.
        ``lambda v, x: model.apply(v, x)`` with ``v = {"params": ..., "batch_stats": ...}``,
        or ``lambda s, x: nnx.merge(graphdef, s, rest)(x)`` for Flax NNX. Parameters it
        closes over are constants: they are sliced too, but only ``params`` is returned.
      params: the tree passed to ``apply_fn`` (masked or not; the masks are applied).
      masks: bool mask tree for ``params`` (``None`` leaves and ``masks=None``: unpruned).
      example: an input batch; its first example ``example[:1]`` is traced (any values).

    Returns:
      A :class:`Reconstruction` ``(params, apply, kept, architecture)``; ``apply(params, x)``
      equals ``apply_fn(dp.apply_masks(params, masks), x)`` up to float rounding. If no
      unit can be removed, ``params`` is the masked tree and ``apply`` is ``jit(apply_fn)``.

    Raises:
      ValueError: if pruned units reach a primitive that acts across their axis (softmax,
        a reduction or sort over it, a grouped convolution, a reshape that splits it, any
        primitive not known here) — naming the primitive and the leaf and axis; if every
        unit of a group would go (naming the layer); if the model mixes examples across the
        batch axis; or if an output lacks a leading batch axis.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, dynprune as dp
      >>> class MLP(nn.Module):
      ...   @nn.compact
      ...   def __call__(self, x):
      ...     x = nn.relu(nn.Dense(8, name="fc1")(x.reshape(x.shape[0], -1)))
      ...     return nn.Dense(3, name="fc2")(x)
      >>> model, x = MLP(), jax.random.normal(jax.random.key(0), (5, 4, 4, 1))
      >>> params = model.init(jax.random.key(1), x)["params"]
      >>> apply_fn = lambda p, x: model.apply({"params": p}, x)
      >>> fc1 = dp.tree.select(params, dp.tree.named("fc1/kernel"))
      >>> masks = dp.masks.with_bias(dp.masks.structured(dp.scores.magnitude(fc1), 0.5), params)
      >>> r = dp.surgery.reconstruct(apply_fn, params, masks, x)
      >>> r.architecture, r.params["fc1"]["kernel"].shape, r.params["fc2"]["kernel"].shape
      ('16-4', (16, 4), (4, 3))
      >>> bool(jnp.allclose(r.apply(r.params, x), apply_fn(dp.apply_masks(params, masks), x)))
      True

    References:
      Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023.
    """
    masked = params if masks is None else masks_lib.apply_masks(params, masks)
    if np.ndim(example) == 0 or np.shape(example)[0] < 1:
        raise ValueError(f"example needs a leading batch axis, got shape {np.shape(example)}")
    g = _Graph(apply_fn, masked, jnp.asarray(example)[:1])
    _check_per_example(g)
    merges = _merge_components(g)
    removed, asked = _removed_units(g, merges)
    _check_blocked(g, asked)
    kept = _positions(g, merges, removed)
    architecture = "-".join(str(len(k)) for k in kept.values())
    if not removed:
        return Reconstruction(masked, jax.jit(apply_fn), kept, architecture)
    small = jax.tree.unflatten(g.treedef, [g.shrink(i, g.value[i], removed) for i in g.param_ids])
    one, out_tree, shape = _program(g, removed), g.out_tree, np.shape(example)[1:]

    @jax.jit
    def apply(params: PyTree, x: jax.Array) -> Any:
        if x.shape[1:] != shape:
            raise ValueError(f"apply expects inputs of shape (batch, *{shape}), got {x.shape}")
        leaves = jax.tree.leaves(params)
        return jax.tree.unflatten(out_tree, jax.vmap(lambda xi: one(leaves, xi[None]))(x))

    return Reconstruction(small, apply, kept, architecture)
