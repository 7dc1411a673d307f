import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental import sparse as jsparse

import dynprune as dp
from dynprune.harness import models

BATCH = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))


@functools.cache
def linen(name):
    model = models.get_model(name)
    params = model.init(jax.random.key(0), BATCH[:1])["params"]
    return (lambda p, x: model.apply({"params": p}, x)), params


@functools.cache
def pruned(name, sparsity):
    """(apply_fn, params, w ⊙ m, masks) of layer-wise magnitude pruning, computed once."""
    apply_fn, params = linen(name)
    return apply_fn, params, *dp.prune_now(params, sparsity=sparsity)


def max_diff(a, b):
    return float(jnp.max(jnp.abs(a - b)))


@pytest.mark.parametrize(("sparsity", "format"), [(0.9, "bcoo"), (0.99, "bcoo"), (0.99, "csr")])
def test_lenet300_sparse_outputs_equal_dense_masked(sparsity, format):
    apply_fn, params, pruned_params, masks = pruned("lenet300", sparsity)
    exported = dp.sparse.export(params, masks, format=format)
    kind = {"bcoo": jsparse.BCOO, "csr": jsparse.CSR}[format]
    for layer, n_in, n_out in [("fc1", 784, 300), ("fc2", 300, 100), ("fc3", 100, 10)]:
        kernel = exported[layer]["kernel"]
        assert isinstance(kernel, kind) and kernel.shape == (n_in, n_out)
        assert kernel.nse == round((1 - sparsity) * n_in * n_out)  # only the nonzeros stored
        np.testing.assert_array_equal(kernel.todense(), pruned_params[layer]["kernel"])
        assert exported[layer]["bias"] is params[layer]["bias"]
    out = jax.jit(dp.sparse.sparse_apply(apply_fn))(exported, BATCH)
    assert max_diff(out, apply_fn(pruned_params, BATCH)) <= 1e-5


def test_conv_net_runs_sparse_fc_and_dense_conv():
    apply_fn, params, pruned_params, masks = pruned("lenet5", 0.9)
    exported = dp.sparse.export(params, masks)
    assert isinstance(exported["fc1"]["kernel"], jsparse.BCOO)
    assert isinstance(exported["fc2"]["kernel"], jsparse.BCOO)
    for conv in ["conv1", "conv2"]:  # kept dense, but masked
        np.testing.assert_array_equal(exported[conv]["kernel"], pruned_params[conv]["kernel"])
    out = jax.jit(dp.sparse.sparse_apply(apply_fn))(exported, BATCH)
    assert max_diff(out, apply_fn(pruned_params, BATCH)) <= 1e-5


def test_the_jaxpr_multiplies_sparse_and_never_densifies():
    apply_fn, params, _, masks = pruned("lenet300", 0.9)
    for format, product in [("bcoo", "bcoo_dot_general"), ("csr", "csr_matmat")]:
        exported = dp.sparse.export(params, masks, format=format)
        jaxpr = jax.make_jaxpr(dp.sparse.sparse_apply(apply_fn))(exported, BATCH)
        names = [eqn.primitive.name for eqn in jaxpr.eqns]
        assert names.count(product) == 3 and "dot_general" not in names
        assert not any("todense" in name for name in names)


def test_export_without_masks_stores_the_nonzeros_of_every_matrix():
    params = {"w": jnp.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]]), "b": jnp.ones(2)}
    exported = dp.sparse.export(params)
    assert exported["w"].nse == 2 and exported["b"] is params["b"]
    x = jnp.array([[1.0, 2.0, 3.0]])
    out = dp.sparse.sparse_apply(lambda p, x: x @ p["w"] + p["b"][None])(exported, x)
    np.testing.assert_array_equal(out, [[5.0, 2.0]])


@pytest.mark.parametrize("format", dp.sparse.FORMATS)
def test_batch_axes_and_other_uses_of_a_sparse_kernel(format):
    # x has two leading axes; w is also read outside the matmul (densified there).
    w = jnp.where(jnp.arange(20).reshape(5, 4) % 3 == 0, jnp.arange(20.0).reshape(5, 4), 0.0)
    apply_fn = lambda p, x: jax.nn.relu(x @ p["w"]) + jnp.sum(p["w"], axis=0)[None, None]
    x = jax.random.normal(jax.random.key(0), (2, 3, 5))
    out = jax.jit(dp.sparse.sparse_apply(apply_fn))(dp.sparse.export({"w": w}, format=format), x)
    assert max_diff(out, apply_fn({"w": w}, x)) <= 1e-5


def test_matmuls_inside_jit_checkpoint_and_custom_vjp_stay_sparse():
    @jax.custom_vjp
    def matmul(x, w):
        return x @ w

    matmul.defvjp(lambda x, w: (matmul(x, w), (x, w)), lambda r, g: (g @ r[1].T, r[0].T @ g))
    body = jax.jit(jax.checkpoint(lambda x, w: matmul(x, w) + 1.0))
    apply_fn = lambda p, x: body(x, p["w"])
    w = jnp.where(jnp.arange(12.0).reshape(3, 4) > 5, 1.0, 0.0)
    exported, x = dp.sparse.export({"w": w}), jnp.ones((2, 3))
    names = [
        e.primitive.name for e in jax.make_jaxpr(dp.sparse.sparse_apply(apply_fn))(exported, x).eqns
    ]
    assert "bcoo_dot_general" in names and "bcoo_todense" not in names
    out = dp.sparse.sparse_apply(apply_fn)(exported, x)
    assert max_diff(out, apply_fn({"w": w}, x)) == 0.0


def test_an_all_zero_kernel_exports_empty():
    exported = dp.sparse.export({"w": jnp.zeros((5, 3))}, format="csr")
    assert exported["w"].nse == 0
    out = dp.sparse.sparse_apply(lambda p, x: x @ p["w"])(exported, jnp.ones((2, 5)))
    np.testing.assert_array_equal(out, jnp.zeros((2, 3)))


def test_nnx_state_exports_and_runs_sparse():
    model = nnx.Sequential(
        nnx.Linear(16, 8, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(8, 4, rngs=nnx.Rngs(1))
    )
    graphdef, params = nnx.split(model, nnx.Param)
    apply_fn = lambda p, x: nnx.merge(graphdef, p)(x)
    masks = dp.masks.threshold(dp.scores.magnitude(params), 0.2)
    pruned_params = dp.apply_masks(params, masks)
    exported = dp.sparse.export(params, masks)
    kernels = [x for x in jax.tree.leaves(exported, is_leaf=dp.sparse.is_sparse) if x.ndim == 2]
    assert len(kernels) == 2 and all(dp.sparse.is_sparse(k) for k in kernels)
    assert all(0 < k.nse < k.size for k in kernels)
    x = jax.random.normal(jax.random.key(0), (3, 16))
    out = jax.jit(dp.sparse.sparse_apply(apply_fn))(exported, x)
    assert max_diff(out, apply_fn(pruned_params, x)) <= 1e-5


def test_unknown_format_fails():
    with pytest.raises(ValueError, match="format"):
        dp.sparse.export({"w": jnp.ones((2, 2))}, format="coo")


def test_benchmark_returns_positive_finite_timings():
    params = {"w1": jax.random.normal(jax.random.key(0), (32, 16)), "w2": jnp.ones((16, 4))}
    apply_fn = lambda p, x: jax.nn.relu(x @ p["w1"]) @ p["w2"]
    rows = dp.sparse.benchmark(
        apply_fn, params, jnp.zeros((1, 32)), sparsities=[0.5], batch_sizes=[8], reps=2, warmup=0
    )
    assert [(r.sparsity, r.batch_size, r.format) for r in rows] == [
        (0.5, 8, "bcoo"),
        (0.5, 8, "csr"),
    ]
    for r in rows:
        assert r.nonzeros == 256 + 32
        assert all(math.isfinite(t) and t > 0 for t in (r.dense_s, r.sparse_s))
        assert r.speedup == pytest.approx(r.dense_s / r.sparse_s)
    assert "speedup" in dp.sparse.format_benchmark(rows)
