"""Dynamic slimmable training: the sandwich rule trains every width, the width gate's choice
is one bucket per input and learns from both its terms, and its choices run through the
width-bucket path and the MAC accounting as they are."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynprune import gating

# RBG keys: Flax inits compile in a quarter of threefry's time
KEY = jax.random.key(0, impl="rbg")
MODEL = gating.GatedCNN(features=(4, 8, 8), classes=3)
WIDTHS = (2, 4, 6, 8)  # both gated layers: ⌈f·8⌉ for f = 0.25, 0.5, 0.75, 1
# per example at bucket j, w = WIDTHS[j]: stem 64·9·1·4; gated_0 64·9·4·w; gated_1 16·9·w·w;
# head (2·2·w)·3 — on 8×8 inputs, max-pooled to 4×4 and 2×2
HAND_MACS = [2304 + 64 * 9 * 4 * w + 16 * 9 * w * w + 4 * w * 3 for w in WIDTHS]
BUCKETS = len(WIDTHS)


def task(n=48, seed=0):
    """A separable 3-class task on 8×8 images: a bright 4×4 patch in the class's quadrant
    (top-left, top-right, bottom-left), plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(scale=0.3, size=(n, 8, 8, 1))
    for i, k in enumerate(y):
        r, c = divmod(int(k), 2)
        x[i, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 1.0
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)


X, Y = task()


@functools.cache
def init_params():
    return jax.jit(MODEL.init)(KEY, X)["params"]


@jax.jit
def width_logits(params, x):
    """Logits of the network at each bucket, [J, B, classes]."""
    h = MODEL.apply({"params": params}, x, method=gating.GatedCNN.features_of)

    def at(j):
        gates = gating.width_gates(MODEL, jnp.full(x.shape[:1], j))
        return MODEL.apply({"params": params}, h, gates, method=gating.GatedCNN.trunk)

    return jax.vmap(at)(jnp.arange(BUCKETS))


def width_losses(params):
    """CE on :func:`task` of the network at each bucket, [J]."""
    ce = optax.softmax_cross_entropy_with_integer_labels(width_logits(params, X), Y[None])
    return np.asarray(ce.mean(axis=-1))


@functools.partial(jax.jit, static_argnames=("widths_sampled", "distill"))
def slimmable(params, key, widths_sampled=2, distill=True):
    """:func:`gating.slimmable_loss` on :func:`task`, jitted."""
    return gating.slimmable_loss(
        MODEL, params, X, Y, key, widths_sampled=widths_sampled, distill=distill
    )


@functools.cache
def supernet(steps=40):
    """The trunk trained by the sandwich rule on :func:`task`."""
    tx = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state, key):
        grads = jax.grad(slimmable)(params, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    params = init_params()
    opt_state = tx.init(params)
    for i in range(steps):
        params, opt_state = step(params, opt_state, jax.random.fold_in(KEY, i))
    return params


def gate_step(gate, params, macs):
    """A jitted Adam step of the width gate on the frozen supernet; λ and τ are arguments.
    Counts its traces in ``step.traces``."""
    tx = optax.adam(5e-2)
    traces = []

    @jax.jit
    def step(gate_params, opt_state, key, mac_weight, temperature):
        traces.append(1)

        def loss(gp):
            return gating.width_gate_loss(
                gate,
                gp,
                MODEL,
                params,
                X,
                Y,
                key,
                macs=macs,
                mac_weight=mac_weight,
                temperature=temperature,
            )

        value, grads = jax.value_and_grad(loss)(gate_params)
        updates, opt_state = tx.update(grads, opt_state, gate_params)
        return optax.apply_updates(gate_params, updates), opt_state, value

    step.traces = traces
    return step, tx


def stem_features(params, x):
    return MODEL.apply({"params": params}, x, method=gating.GatedCNN.features_of)


# stage 1: the supernet


def test_sandwich_rule_trains_every_width():
    before, after = width_losses(init_params()), width_losses(supernet())
    assert (after < 0.5 * before).all(), (before, after)  # the narrowest included


def test_slimmable_loss_is_the_sandwich_formula():
    params = init_params()
    logits = width_logits(params, X)
    ce = optax.softmax_cross_entropy_with_integer_labels
    terms = ce(logits, Y[None]).mean(axis=-1)  # CE(f_j(x), y) per bucket
    distilled = optax.softmax_cross_entropy(logits[0], jax.nn.softmax(logits[-1])).mean()
    np.testing.assert_allclose(slimmable(params, KEY, 0), terms[-1] + distilled, rtol=1e-5)
    plain = slimmable(params, KEY, 0, distill=False)
    np.testing.assert_allclose(plain, terms[-1] + terms[0], rtol=1e-5)
    # n random widths add n terms, each between the narrowest's and the widest's
    extra = float(slimmable(params, KEY, 3, distill=False) - plain)
    assert 3 * float(terms.min()) - 1e-5 <= extra <= 3 * float(terms.max()) + 1e-5


def test_slimmable_loss_distils_from_the_widest_without_its_gradient():
    """The narrower terms' targets are constants: channels 6 and 7, which only the widest
    width runs, get their head gradient from CE(f_{J-1}(x), y) alone."""
    params = init_params()
    grads = jax.jit(jax.grad(slimmable))(params, KEY)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))

    def widest(p):
        logits = MODEL.apply({"params": p}, X, method=gating.GatedCNN.dense)
        return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

    expected = jax.jit(jax.grad(widest))(params)["head"]["kernel"]
    rows = np.asarray(grads["head"]["kernel"]).reshape(4, 8, 3)[:, 6:]
    np.testing.assert_allclose(
        rows, np.asarray(expected).reshape(4, 8, 3)[:, 6:], rtol=1e-4, atol=1e-6
    )
    assert np.abs(rows).max() > 0


# the choice and its gates


def test_gates_of_a_choice_are_the_prefix_masks_of_its_widths():
    choice = np.array([0, 1, 2, 3, 1])
    gates = gating.width_gates(MODEL, choice)
    expected = np.arange(8)[None, :] < np.array(WIDTHS)[choice][:, None]
    runner = gating.BucketRunner(MODEL, init_params())
    for g, runs in zip(gates, runner.bucket_masks(np.stack([choice] * 2, -1)), strict=True):
        np.testing.assert_array_equal(g.kept, expected)
        np.testing.assert_array_equal(g.saliency, expected.astype(np.float32))
        np.testing.assert_array_equal(runs, expected)
    one_hot = gating.width_gates(MODEL, jax.nn.one_hot(choice, BUCKETS))
    for a, b in zip(gates, one_hot, strict=True):
        np.testing.assert_array_equal(a.kept, b.kept)
        np.testing.assert_array_equal(a.saliency, b.saliency)


def test_hard_choice_is_one_bucket_per_example_and_inputs_can_differ():
    """A gate set by hand to send a bright input to the narrowest bucket and a dark one to
    the widest: each Gumbel sample is one-hot, and the two examples run different widths."""
    params = init_params()
    x = jnp.stack([X[0] + 2.0, X[0] - 2.0])
    pooled = np.asarray(gating.pool(stem_features(params, x)), np.float64)
    d, mid = pooled[0] - pooled[1], pooled.mean(axis=0)
    assert np.linalg.norm(d) > 0.1  # the stem tells them apart
    kernel = np.zeros((4, BUCKETS))
    kernel[:, 0], kernel[:, -1] = 100 * d / (d @ d), -100 * d / (d @ d)
    bias = np.zeros(BUCKETS)
    bias[0], bias[-1] = -kernel[:, 0] @ mid, -kernel[:, -1] @ mid  # logits ±50 and ∓50
    gate = gating.WidthGate(choices=BUCKETS)
    gate_params = {"logits": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}
    logits = gate.apply({"params": gate_params}, stem_features(params, x))
    for i in range(5):
        c = np.asarray(gating.gumbel_straight_through(logits, jax.random.fold_in(KEY, i), 0.5))
        np.testing.assert_allclose(c, np.eye(BUCKETS)[[0, BUCKETS - 1]], atol=1e-6)
        assert (np.count_nonzero(c, axis=-1) == 1).all()
        gates = gating.width_gates(MODEL, jnp.asarray(c))
        assert [g.kept.sum(-1).tolist() for g in gates] == [[2, 8], [2, 8]]


def test_gumbel_samples_follow_the_softmax():
    logits = jnp.log(jnp.array([0.1, 0.2, 0.7]))
    keys = jax.random.split(KEY, 2000)
    samples = jax.vmap(lambda k: gating.gumbel_straight_through(logits, k))(keys)
    np.testing.assert_allclose(samples.mean(axis=0), [0.1, 0.2, 0.7], atol=0.04)


def test_bucket_runner_runs_a_width_gates_choice_sliced():
    params = supernet()
    runner = gating.BucketRunner(MODEL, params)
    h = stem_features(params, X[:8])
    choice = jnp.array([0, 3, 1, 1, 2, 0, 3, 2])
    gates = gating.width_gates(MODEL, choice)
    masked = MODEL.apply({"params": params}, h, gates, method=gating.GatedCNN.trunk)
    sliced, bucket = runner.run(h, gates)
    np.testing.assert_allclose(sliced, masked, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(bucket, np.stack([choice] * 2, -1))
    one, bucket = runner.run(h[:1], [gating.Gates(g.saliency[:1], g.kept[:1]) for g in gates])
    np.testing.assert_allclose(one, masked[:1], atol=1e-5, rtol=1e-5)
    bad = gates[0]._replace(kept=jnp.arange(8)[None, :] < jnp.full((8, 1), 3))  # 3: no width
    with pytest.raises(ValueError, match="prefix of one of its layer's widths"):
        runner.run(h, (bad, gates[1]))


# accounting


def test_effective_macs_of_chosen_widths_by_hand():
    params = init_params()
    choice = np.array([0, 1, 2, 3, 0])
    kept = [g.kept for g in gating.width_gates(MODEL, choice)]
    layers = gating.layer_macs(MODEL, params, kept, X[:1])
    predictors = sum(layer.macs for layer in layers if layer.predictor)
    assert predictors == 2 * 4 * 8  # the unused FBS predictors, counted when params hold them
    np.testing.assert_allclose(
        gating.effective_macs(layers) - predictors, np.array(HAND_MACS)[choice]
    )
    np.testing.assert_allclose(gating.bucket_macs(MODEL, params, X[:1]), HAND_MACS)
    assert gating.dense_macs(layers) == HAND_MACS[-1]


# stage 2: the gate


def test_gradients_reach_the_width_gate_from_both_terms_and_not_the_supernet():
    params = supernet()
    gate = gating.WidthGate(choices=BUCKETS, hidden=4)
    gate_params = jax.jit(gate.init)(KEY, stem_features(params, X))["params"]
    macs = gating.bucket_macs(MODEL, params, X[:1])

    def loss(gp, p, mac_weight):
        return gating.width_gate_loss(
            gate, gp, MODEL, p, X, Y, KEY, macs=macs, mac_weight=mac_weight
        )

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    for mac_weight in (0.0, 1.0):  # through the channel scales alone, and with the MACs
        to_gate, to_supernet = grad(gate_params, params, mac_weight)
        for leaf in jax.tree.leaves(to_gate):
            assert np.isfinite(leaf).all() and np.abs(leaf).max() > 0
        assert all((np.asarray(leaf) == 0).all() for leaf in jax.tree.leaves(to_supernet))
    mac_only = jax.jit(jax.grad(lambda gp: loss(gp, params, 1.0) - loss(gp, params, 0.0)))(
        gate_params
    )
    assert np.abs(mac_only["logits"]["bias"]).max() > 0


def test_a_gate_at_the_narrowest_width_still_learns_what_wider_ones_would_give():
    """Without a MAC charge, a gate that picks the narrowest bucket for every input gets a
    cross-entropy gradient that tells the buckets apart (the channels it leaves off pass
    back their value); a straight-through sample once made it the same for every bucket.
    At the initial weights, where the widths' losses differ."""
    params = init_params()
    gate = gating.WidthGate(choices=BUCKETS, hidden=4)
    gate_params = jax.jit(gate.init)(KEY, stem_features(params, X))["params"]
    bias = np.zeros(BUCKETS, np.float32)
    bias[0] = 50.0  # every input, every Gumbel draw: bucket 0
    gate_params = {**gate_params, "logits": {**gate_params["logits"], "bias": jnp.asarray(bias)}}
    macs = gating.bucket_macs(MODEL, params, X[:1])
    grads = jax.jit(
        jax.grad(
            lambda gp: gating.width_gate_loss(
                gate, gp, MODEL, params, X, Y, KEY, macs=macs, mac_weight=0.0, temperature=50.0
            )
        )
    )(gate_params)
    assert np.abs(grads["logits"]["bias"]).max() > 1e-6


def test_changing_lambda_or_temperature_does_not_recompile_and_lambda_narrows():
    params = supernet()
    gate = gating.WidthGate(choices=BUCKETS)
    init = jax.jit(gate.init)(KEY, stem_features(params, X))["params"]
    macs = gating.bucket_macs(MODEL, params, X[:1])
    step, tx = gate_step(gate, params, macs)
    chosen = {}
    for mac_weight, temperature in [(0.0, 1.0), (5.0, 0.5)]:
        gate_params, opt_state = init, tx.init(init)
        for i in range(30):
            gate_params, opt_state, _ = step(
                gate_params,
                opt_state,
                jax.random.fold_in(KEY, i),
                np.float32(mac_weight),
                np.float32(temperature),
            )
        logits = gate.apply({"params": gate_params}, stem_features(params, X))
        chosen[mac_weight] = np.asarray(logits.argmax(-1))
    assert len(step.traces) == 1
    assert (chosen[5.0] == 0).all()  # a high price on MACs: the narrowest for every input
    assert macs[chosen[0.0]].mean() > macs[0]


# errors


def test_slimmable_functions_refuse_a_model_without_prefix_buckets_and_bad_arguments():
    topk = gating.GatedCNN(features=(4, 8, 8), classes=3, mode="topk")
    with pytest.raises(ValueError, match="mode='prefix' and buckets"):
        gating.width_gates(topk, np.array([0]))
    with pytest.raises(ValueError, match="mode='prefix' and buckets"):
        gating.slimmable_loss(topk, None, X, Y, KEY)
    with pytest.raises(ValueError, match="widths_sampled must be >= 0"):
        gating.slimmable_loss(MODEL, None, X, Y, KEY, widths_sampled=-1)
    with pytest.raises(ValueError, match=r"choice must lie in \[0, 4\)"):
        gating.width_gates(MODEL, np.array([0, 4]))
    with pytest.raises(ValueError, match=r"float choice must be \[B, 4\]"):
        gating.width_gates(MODEL, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="cover the 4 buckets"):
        gating.width_gate_loss(
            gating.WidthGate(choices=3),
            None,
            MODEL,
            None,
            X,
            Y,
            KEY,
            macs=HAND_MACS,
            mac_weight=0.1,
        )
