"""Tests for Sparse Variational Dropout: dynprune.algorithms.variational_dropout, its local
reparameterisation (dynprune.algorithms.reparameterization) and its harness runs."""

import dataclasses
import json
import math
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import dynprune as dp
from dynprune.algorithms import variational_dropout as svd_module
from dynprune.harness import checkpoint, config, experiment, recipes, results, train

ROOT = Path(__file__).resolve().parents[1]
svd = dp.algorithms.sparse_vd


def neg_kl_reference(log_alpha: np.ndarray) -> np.ndarray:
    """The paper's eq. 14 in float64: k1·sigmoid(k2 + k3·log α) − ½·log1p(1/α) − k1, with
    log α clipped to [−8, 8] as the authors' code does."""
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    la = np.clip(np.asarray(log_alpha, np.float64), -8.0, 8.0)
    return k1 / (1.0 + np.exp(-(k2 + k3 * la))) - 0.5 * np.log1p(np.exp(-la)) - k1


def linen_params(model: nn.Module, shape: tuple[int, ...], seed: int = 0):
    return model.init(jax.random.key(seed), jnp.zeros(shape))["params"]


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, name="out")(nn.relu(nn.Dense(5, name="hidden")(x)))


class Conv(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Conv(3, (3, 3), strides=(2, 1), padding="SAME", name="conv")(x)


class OwnLayer(nn.Module):
    """A kernel used by a plain matmul, not by nn.Dense: the LRT cannot reach it."""

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.ones, (x.shape[-1], 2))
        return x @ kernel


def test_the_kl_approximation_is_the_papers_at_every_alpha():
    alphas = np.array([1e-3, 0.05, 1.0, 3.0, 20.0, 1e3])
    got = np.asarray(svd_module.neg_kl(jnp.log(jnp.asarray(alphas, jnp.float32))))
    np.testing.assert_allclose(got, neg_kl_reference(np.log(alphas)), rtol=1e-5, atol=1e-6)
    # −KL rises with α towards 0 (the prior is log-uniform: α → ∞ costs nothing)
    assert np.all(np.diff(got) > 0) and got[-1] > -0.01 and got[0] < -3
    clipped = svd_module.neg_kl(jnp.array([-30.0, 12.0]))
    np.testing.assert_allclose(clipped, svd_module.neg_kl(jnp.array([-8.0, 8.0])))
    vp = dp.algorithms.VariationalParams(
        {"w": jnp.asarray([1.0, 2.0]), "b": jnp.ones(1)},
        {"w": jnp.log(jnp.asarray([0.5, 80.0])), "b": None},
    )  # α = 0.5 and 80 / 4 = 20
    want = -neg_kl_reference(np.log([0.5, 20.0])).sum()
    assert float(dp.algorithms.kl_divergence(vp)) == pytest.approx(want, rel=1e-5)


def test_log_alpha_masks_and_the_sparse_model_match_numpy():
    rng = np.random.default_rng(0)
    theta = {
        "fc1": {"kernel": rng.normal(0, 0.1, (30, 20)), "bias": rng.normal(size=20)},
        "fc2": {"kernel": rng.normal(0, 0.1, (20, 10)), "bias": rng.normal(size=10)},
    }
    theta = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), theta)
    vp = dp.algorithms.variational_params(theta, -8.0)
    vp = vp._replace(
        log_sigma2=jax.tree.map(lambda s: s + rng.normal(0, 3, s.shape), vp.log_sigma2)
    )
    params, masks = dp.algorithms.sparsify(vp, 3.0)
    for layer in ("fc1", "fc2"):
        w = np.asarray(theta[layer]["kernel"], np.float64)
        ls2 = np.asarray(vp.log_sigma2[layer]["kernel"], np.float64)
        want = ls2 - np.log(w**2 + 1e-8)
        np.testing.assert_allclose(
            dp.algorithms.log_alpha(vp)[layer]["kernel"], want, rtol=1e-5, atol=1e-4
        )
        kept = np.asarray(masks[layer]["kernel"])
        near = np.abs(want - 3.0) < 1e-3  # float32 rounding may fall either side of t
        np.testing.assert_array_equal(kept[~near], (want < 3.0)[~near])
        assert 0 < kept.mean() < 1, layer  # both sides are exercised
        out = np.asarray(params[layer]["kernel"])
        assert np.all(out[~kept] == 0.0) and np.array_equal(
            out[kept], np.asarray(w, np.float32)[kept]
        )
        np.testing.assert_array_equal(params[layer]["bias"], theta[layer]["bias"])
        assert masks[layer]["bias"] is None and vp.log_sigma2[layer]["bias"] is None
    # a NaN weight is pruned, never kept
    broken = vp._replace(
        theta={**theta, "fc2": {**theta["fc2"], "kernel": jnp.full((20, 10), jnp.nan)}}
    )
    assert not dp.algorithms.keep_masks(broken, 3.0)["fc2"]["kernel"].any()


def test_the_functions_over_parameters_work_on_nnx_states_too():
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    _, state = nnx.split(model, nnx.Param)
    vp = dp.algorithms.variational_params(state, 0.0)
    masks = dp.algorithms.keep_masks(vp, 3.0)
    leaves = dict(dp.tree.scored_leaves(masks))
    assert list(leaves) == ["kernel"] and leaves["kernel"].shape == (4, 3)
    w = np.asarray(state["kernel"][...])
    np.testing.assert_array_equal(leaves["kernel"], -np.log(w**2 + 1e-8) < 3.0)
    assert np.isfinite(float(dp.algorithms.kl_divergence(vp)))


def test_the_lrt_forward_has_the_layers_mean_and_variance_x2_sigma2():
    """Dense and conv: over 2,000 draws of ε the outputs' mean is the deterministic layer's
    and their variance per example and unit is x²·σ² (conv: conv(x², σ²), with the layer's
    strides and padding)."""
    rng = np.random.default_rng(1)
    keys = jax.random.split(jax.random.key(2), 2000)
    x2_sigma2 = {
        "dense": lambda x, s2: x**2 @ s2["kernel"],
        "conv": lambda x, s2: nn.Conv(
            3, (3, 3), strides=(2, 1), padding="SAME", use_bias=False
        ).apply({"params": {"kernel": s2["conv"]["kernel"]}}, x**2),
    }
    for name, model, shape in (("dense", nn.Dense(4), (3, 6)), ("conv", Conv(), (2, 6, 5, 2))):
        theta = linen_params(model, shape)
        vp = dp.algorithms.variational_params(theta, 0.0)
        vp = vp._replace(
            log_sigma2=jax.tree.map(lambda s: s + rng.normal(0, 1, s.shape), vp.log_sigma2)
        )
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        noisy = dp.algorithms.local_reparameterization(
            lambda p, x, m=model: m.apply({"params": p}, x)
        )
        sample = lambda k, vp=vp, x=x, noisy=noisy: noisy(vp.theta, vp.log_sigma2, x, k)
        out = jax.jit(jax.vmap(sample))(keys)
        mean = np.asarray(model.apply({"params": theta}, x), np.float64)
        sigma2 = jax.tree.map(jnp.exp, vp.log_sigma2)
        var = np.asarray(x2_sigma2[name](x, sigma2), np.float64) + 1e-8
        z = (np.asarray(out, np.float64) - mean) / np.sqrt(var)
        assert abs(z.mean()) < 0.02 and abs(z.var() - 1.0) < 0.02, name
        per_unit = z.var(axis=0)  # one estimate per example and unit, from 2,000 draws
        assert np.all(np.abs(per_unit - 1.0) < 0.2), name
        assert np.all(np.abs(z.mean(axis=0)) < 0.1), name  # each unit's mean is the layer's


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.max_pool(nn.Conv(4, (3, 3), name="conv")(x), (2, 2), strides=(2, 2))
        return nn.Dense(3, name="fc")(nn.relu(x.reshape(x.shape[0], -1)))


def test_with_a_vanishing_variance_the_lrt_forward_is_the_deterministic_one():
    model = ConvNet()
    theta = linen_params(model, (1, 8, 8, 1))
    vp = dp.algorithms.variational_params(theta, -60.0)
    x = jnp.asarray(np.random.default_rng(0).random((2, 8, 8, 1)), jnp.float32)
    noisy = dp.algorithms.local_reparameterization(lambda p, x: model.apply({"params": p}, x))
    got = jax.jit(noisy)(vp.theta, vp.log_sigma2, x, jax.random.key(0))
    np.testing.assert_allclose(got, model.apply({"params": theta}, x), atol=2e-3)


def test_gradients_reach_theta_and_log_sigma2_through_the_noise_and_the_kl():
    model = MLP()
    theta = linen_params(model, (1, 6))
    vp = dp.algorithms.variational_params(theta, -4.0)
    objective = dp.algorithms.sgvb(lambda p, x: model.apply({"params": p}, x), n=100)
    state = dp.prune(optax.adam(1e-3), svd(warmup=0)).init(vp)
    x, y = jnp.ones((8, 6)), jnp.arange(8) % 3

    def ce(vp):
        logits = objective.apply_fn(objective.forward_params(vp, state), x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    penalty = lambda vp: objective.penalty(vp, state)
    for grads in jax.jit(lambda vp: (jax.grad(ce)(vp), jax.grad(penalty)(vp)))(vp):
        for path, g in dp.tree.scored_leaves(grads.log_sigma2):
            assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0, path
        assert np.abs(grads.theta["hidden"]["kernel"]).sum() > 0


def test_the_train_step_compiles_once_for_any_threshold_or_warmup():
    model = MLP()
    theta = linen_params(model, (1, 6))
    tx = dp.prune(optax.adam(1e-2), svd(threshold=3.0, warmup=4))
    objective = dp.algorithms.sgvb(lambda p, x: model.apply({"params": p}, x), n=8)
    traces = []

    def counted(state, x, y):
        traces.append(1)
        return train.train_step(
            objective.apply_fn,
            tx,
            forward_params=objective.forward_params,
            penalty=objective.penalty,
        )(state, x, y)

    step = jax.jit(counted)
    state = train.init_state(dp.algorithms.variational_params(theta), tx)
    x, y = jnp.ones((8, 6)), jnp.arange(8) % 3
    losses = []
    for threshold, warmup in ((3.0, 4), (1.0, 4), (3.0, 0), (2.0, 100)):
        opt_state = dp.set_hyperparams(state.opt_state, threshold=threshold, warmup=warmup)
        state, metrics = step(state._replace(opt_state=opt_state), x, y)
        losses.append(float(metrics["loss"]))
    assert len(traces) == 1 and all(np.isfinite(losses))
    assert int(state.step) == 4 and isinstance(state.params, dp.algorithms.VariationalParams)


def test_bad_arguments_are_named():
    for value, error in ((math.nan, ValueError), (math.inf, ValueError), (-1.0, ValueError)):
        with pytest.raises(error, match="threshold"):
            svd(threshold=value)
    with pytest.raises(ValueError, match="log_sigma2_init"):
        svd(log_sigma2_init=math.inf)
    with pytest.raises(TypeError, match="warmup"):
        svd(warmup=0.5)
    with pytest.raises(ValueError, match="threshold"):
        config.Phase(epochs=1, lr=1e-3, pruner={"algorithm": "sparse_vd", "threshold": math.nan})
    with pytest.raises(ValueError, match="weight_decay"):
        config.Phase(epochs=1, lr=1e-3, weight_decay=1e-4, pruner={"algorithm": "sparse_vd"})

    params = {"fc": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}, "step": jnp.int32(0)}
    with pytest.raises(ValueError, match="leaf 'step' has dtype int32"):
        dp.algorithms.variational_params(params, filter=lambda path, leaf: True)
    with pytest.raises(ValueError, match="selects no leaf"):
        dp.algorithms.variational_params(params, filter=dp.tree.named("fc9"))
    vp = dp.algorithms.variational_params(params)
    extra = vp._replace(log_sigma2={**vp.log_sigma2, "fc9": {"kernel": jnp.zeros((2, 2))}})
    with pytest.raises(ValueError, match="unexpected leaf path 'fc9/kernel'"):
        dp.algorithms.log_alpha(extra)
    wrong = vp._replace(log_sigma2={**vp.log_sigma2, "fc": {"kernel": jnp.zeros(2), "bias": None}})
    with pytest.raises(ValueError, match="'fc/kernel' has shape"):
        dp.algorithms.keep_masks(wrong, 3.0)
    with pytest.raises(ValueError, match="takes VariationalParams"):
        dp.prune(optax.sgd(0.1), svd()).init(params)

    x = jnp.ones((2, 4))
    own = OwnLayer()
    noisy = dp.algorithms.local_reparameterization(lambda p, x: own.apply({"params": p}, x))
    vp = dp.algorithms.variational_params(linen_params(own, (1, 4)))
    with pytest.raises(
        ValueError, match=r"no flax\.linen Dense or Conv call used the kernel 'kernel'"
    ):
        noisy(vp.theta, vp.log_sigma2, x, jax.random.key(0))
    linear = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(linear, nnx.Param)
    noisy = dp.algorithms.local_reparameterization(lambda p, x: nnx.merge(graphdef, p)(x))
    vp = dp.algorithms.variational_params(state)
    with pytest.raises(ValueError, match="NNX"):
        noisy(vp.theta, vp.log_sigma2, x, jax.random.key(0))


TINY = config.RunConfig(
    model="origin_mlp",
    examples=128,
    batch_size=32,
    prune=config.Phase(
        epochs=2,
        lr=1e-3,
        pruner={"algorithm": "sparse_vd", "threshold": 3.0, "warmup": 0.5},
    ),
)


@pytest.fixture(scope="module")
def splits(tfds_dir):
    return experiment.load_splits(TINY, tfds_dir)


def test_two_thresholds_run_as_one_program_and_give_rows_like_any_pruned_run(splits):
    looser = dataclasses.replace(
        TINY, prune=dataclasses.replace(TINY.prune, pruner={**TINY.prune.pruner, "threshold": 1.0})
    )
    programs = experiment.Programs()
    rows = experiment.run_points([TINY, looser], [0, 0], splits=splits, programs=programs)
    assert programs.max_compiles == 1
    for row in rows:
        assert row["status"] == "ok" and row["method"] == "sparse_vd"
        assert 0 < row["val_error"] < 1 and "test_error" not in row
        assert row["steps"] == 8 and 0 < row["sparsity"] < 1
        layers = row["layers"]
        assert layers["fc1/kernel"]["pruned"] and not layers["fc1/bias"]["pruned"]
        assert layers["fc1/kernel"]["sparsity"] > 0 and layers["fc1/bias"]["sparsity"] == 0
        assert row["nonzeros"] == sum(v["nonzeros"] for v in layers.values())
        assert row["compression"] == pytest.approx(row["params"] / row["nonzeros"])
        kernels = [v for k, v in layers.items() if k.endswith("kernel")]
        assert row["weights_compression"] == pytest.approx(
            sum(v["size"] for v in kernels) / sum(v["nonzeros"] for v in kernels)
        )
        assert row["flops_effective"] < row["flops_dense"]
        # the state's masks at every step, then the final masks at the phase's end
        assert [e["step"] for e in row["trace"]][-1] == 8
        assert row["trace"][-1]["kept"] == sum(v["nonzeros"] for v in kernels)
        assert len(row["train_loss"]["prune"]) == 2
        json.loads(results.dumps(row))
    # a lower threshold on log α prunes more of the same trained weights
    assert rows[1]["sparsity"] > rows[0]["sparsity"]


def test_a_sparse_vd_run_crashed_in_each_phase_resumes_to_the_uninterrupted_row(
    splits, tmp_path, monkeypatch
):
    """Crashed in the Sparse VD phase (its θ and log σ² restored), then in the fine-tune
    (which starts from the sparse model the phase left): the row is an uninterrupted run's."""
    run = dataclasses.replace(TINY, finetune=config.Phase(epochs=1, lr=1e-4))
    common = {"splits": splits, "programs": experiment.Programs()}
    keep = lambda root: checkpoint.Options(root, every=3, keep=True)
    want = experiment.run(run, 0, checkpoints=keep(tmp_path / "straight"), **common)
    real, saved = checkpoint.save, []

    def crash(*a, **k):
        real(*a, **k)
        saved.append(a[1])
        if len(saved) % 2 == 0:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", crash)
        for _ in range(2):
            with pytest.raises(KeyboardInterrupt):
                experiment.run(run, 0, checkpoints=keep(tmp_path / "resumed"), **common)
    got = experiment.run(run, 0, checkpoints=keep(tmp_path / "resumed"), **common)
    for row in (want, got):
        del row["wall_s"], row["program_wall_s"]
    # steps 3 and 6 of the phase's 8; then 8 (its end, kept) and 8 + 3 of the fine-tune
    assert saved == [3, 6, 8, 11] and want == got
    assert "before_finetune_val_error" in got and got["train_loss"]["finetune"]


def test_existing_configs_keep_their_keys():
    """The keys of the committed reproduction rows are the hashes of their recipes' current
    data, computed now: adding Sparse VD changed no existing config's canonical data."""
    rows = results.read_jsonl(ROOT / "experiments/results/reproductions.jsonl")
    loaded = recipes.load(ROOT / "experiments/recipes.json")
    checked = 0
    for name, recipe in loaded.items():
        for row in recipes.rows_of(rows, name, recipe):
            assert row["key"] == config.run_key(recipe.run, row["seed"], test=True, mode="final")
            checked += 1
    assert checked >= 10
    assert "distill" not in config.to_dict(loaded["lenet300-dns-paper"].run)["prune"]


def test_the_recipe_follows_the_papers_protocol():
    loaded = recipes.load(ROOT / "experiments/recipes.json")
    recipe = loaded["lenet300-svd-paper"]
    run = recipe.run
    assert recipes.protocol(recipe) == "paper" and recipe.seeds == 5
    assert run.pretrain is None and run.finetune is None and run.batch_size == 100
    assert (run.prune.epochs, run.prune.lr, run.prune.optimizer) == (200, 1e-3, "adam")
    assert run.prune.weight_decay == 0 and run.prune.pruner["threshold"] == 3.0
    assert recipe.baseline in loaded and recipe.published_compression == 68.0
    rows = results.read_jsonl(ROOT / "experiments/results/reproductions.jsonl")
    tested = [r for r in rows if r.get("recipe") == "lenet300-svd-paper" and "test_error" in r]
    assert all(r["mode"] == "final" and r["seed"] < recipe.seeds for r in tested)  # locked
