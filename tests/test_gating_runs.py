"""The gating experiment: config checks, the selection rule, static widths and masks, a
whole (tiny) validation → test pass on real MNIST whose rows exist once, and the dynamic
slimmable method's runs (one supernet + gate, its static arm) and a confidence cascade on
the same supernet on real MNIST."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynprune as dp
from dynprune import gating
from dynprune.harness import data, gating_runs, results

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**changes):
    return gating_runs.Config.from_dict({**gating_runs.SMALL, **changes})


def test_config_refuses_unknown_and_missing_fields_and_bad_values_by_name():
    with pytest.raises(
        ValueError, match=r"unknown fields \['epoch'\], missing fields \['epochs'\]"
    ):
        gating_runs.Config.from_dict(
            {**{k: v for k, v in gating_runs.SMALL.items() if k != "epochs"}, "epoch": 1}
        )
    with pytest.raises(ValueError, match=r"density must be a finite number in \(0, 1\], got 1.5"):
        tiny_config(densities=[0.5, 1.5])
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'"):
        tiny_config(datasets=["cifar10"])
    with pytest.raises(ValueError, match=r"mac_weight must be a finite number >= 0, got -1"):
        tiny_config(mac_weights=[0.1, -1])
    with pytest.raises(ValueError, match=r"threshold must be a finite number in \[0, 1\], got 1.5"):
        tiny_config(thresholds=[0.9, 1.5])
    with pytest.raises(ValueError, match=r"levels must be .* in \[0, 4\), got \(0, 4\)"):
        tiny_config(thresholds=[0.9], cascade_levels=[0, 4])
    with pytest.raises(ValueError, match="no densities, mac_weights or thresholds"):
        tiny_config(densities=[])
    with pytest.raises(ValueError, match=r"schedule must be one of .*, got 'linear'"):
        tiny_config(schedule="linear")


def test_a_cosine_schedule_decays_each_stage_to_zero_and_enters_the_keys(monkeypatch):
    """T = epochs · (examples // batch): SMALL's one epoch of 256 images in batches of 64 is
    4 steps, so η_0 = η and η_4 = 0; a constant schedule stays out of the keys."""
    constant, cosine = tiny_config(), tiny_config(schedule="cosine")
    assert "schedule" not in constant.training() and cosine.training()["schedule"] == "cosine"
    assert gating_runs.run_key(constant, "mnist", "dense", 0, "validation", None) != (
        gating_runs.run_key(cosine, "mnist", "dense", 0, "validation", None)
    )
    rates = []
    adam = optax.adam
    monkeypatch.setattr(optax, "adam", lambda lr: rates.append(lr) or adam(lr))
    images = np.random.default_rng(0).integers(0, 255, (256, 28, 28, 1), np.uint8)
    tiny = data.Dataset(images, np.arange(256) % 10)
    gating_runs.train(constant, "dense", tiny, seed=0)
    gating_runs.train(cosine, "dense", tiny, seed=0)
    assert rates[0] == constant.learning_rate
    assert np.isclose(rates[1](0), cosine.learning_rate) and rates[1](4) == 0
    assert np.isclose(rates[1](2), cosine.learning_rate / 2)


def test_the_committed_gating_rows_keep_their_keys():
    """The slimmable fields have defaults and stay out of keys without a MAC weight: the
    FBS experiment's config loads unchanged and every row it wrote keeps its key."""
    config = gating_runs.load_config(ROOT / "experiments" / "gating.json")
    assert config.mac_weights == ()
    rows = results.read_jsonl(ROOT / "experiments" / "results" / "gating.jsonl")
    assert rows and all(
        r["key"]
        == gating_runs.run_key(
            config, r["dataset"], r["method"], r["seed"], r["split"], r["density"]
        )
        for r in rows
    )
    dsnet = gating_runs.load_config(ROOT / "experiments" / "gating-dsnet.json")
    assert dsnet.densities == () and len(dsnet.mac_weights) == 3
    assert [r["method"] for r in gating_runs.plan(dsnet, [], "validation")[:4]] == [
        "dense", "slimmable", "slimmable", "slimmable",
    ]  # fmt: skip


def validation_row(
    config, method, density, error, mac_ratio, dataset="mnist", mac_weight=None, threshold=None
):
    seed = config.selection_seed
    key = gating_runs.run_key(
        config, dataset, method, seed, "validation", density, mac_weight, threshold
    )
    return {
        "key": key, "experiment": "gating", "dataset": dataset, "method": method, "seed": seed,
        "split": "validation", "density": density, "mac_weight": mac_weight,
        "threshold": threshold, "error": error, "mac_ratio": mac_ratio,
    }  # fmt: skip


def test_choose_takes_the_largest_mac_ratio_within_the_allowed_loss():
    config = tiny_config(densities=[0.5, 0.4, 0.3], max_loss=0.003)
    dense = validation_row(config, "dense", None, 0.010, 1.0)
    rows = [
        dense,
        validation_row(config, "gated", 0.5, 0.011, 2.0),
        validation_row(config, "gated", 0.4, 0.013, 2.6),  # exactly at the allowed loss
        validation_row(config, "gated", 0.3, 0.0131, 3.5),  # past it
    ]
    assert gating_runs.choose(rows, config, "mnist") == 0.4
    # exactly at the allowed loss where the float sum falls short (0.0116 + 0.003 < 0.0146)
    rows = [
        validation_row(config, "dense", None, 0.0116, 1.0),
        validation_row(config, "gated", 0.5, 0.0146, 2.0),
        validation_row(config, "gated", 0.4, 0.0147, 2.6),
        validation_row(config, "gated", 0.3, 0.0148, 3.5),
    ]
    assert 0.0116 + 0.003 < 0.0146 and gating_runs.choose(rows, config, "mnist") == 0.5
    # none within the loss: the lowest validation error
    rows = [dense] + [
        validation_row(config, "gated", d, 0.05 - d / 100, 2.0) for d in (0.5, 0.4, 0.3)
    ]
    assert gating_runs.choose(rows, config, "mnist") == 0.5
    # rows of another configuration (a key that does not match) do not count
    other = dataclasses.replace(config, epochs=9)
    foreign = [validation_row(other, "gated", d, 0.0, 9.0) for d in (0.5, 0.4, 0.3)]
    with pytest.raises(ValueError, match=r"mnist: the validation runs are not finished"):
        gating_runs.choose([dense, *foreign], config, "mnist")


def test_choose_a_mac_weight_by_the_same_rule_and_plan_both_methods():
    config = tiny_config(densities=[0.5], mac_weights=[0.01, 0.1, 1.0], max_loss=0.003)
    dense = validation_row(config, "dense", None, 0.010, 1.0)

    def slim(mac_weight, error, mac_ratio, config=config):
        return validation_row(config, "slimmable", None, error, mac_ratio, mac_weight=mac_weight)

    rows = [dense, slim(0.01, 0.010, 1.5), slim(0.1, 0.012, 3.0), slim(1.0, 0.02, 7.0)]
    assert gating_runs.choose(rows, config, "mnist", "slimmable") == 0.1
    # a gate trained at another temperature is another run: its row does not count
    other = dataclasses.replace(config, temperature=0.5)
    rows = [*rows[:2], slim(0.1, 0.012, 3.0, config=other), rows[3]]
    with pytest.raises(ValueError, match=r"slimmable runs missing: mac_weight in \[0.1\]"):
        gating_runs.choose(rows, config, "mnist", "slimmable")
    rows[2] = slim(0.1, 0.012, 3.0)
    rows.append(validation_row(config, "gated", 0.5, 0.011, 2.0))
    tests = gating_runs.plan(config, rows, "test")
    assert [(r["method"], r.get("density"), r.get("mac_weight")) for r in tests[:5]] == [
        ("dense", None, None), ("gated", 0.5, None), ("static", 0.5, None),
        ("slimmable", None, 0.1), ("static", None, 0.1),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="method must be one of"):
        gating_runs.choose(rows, config, "mnist", "static")


def test_choose_a_threshold_by_the_same_rule_plan_and_show_its_cascade_and_static_arm():
    config = tiny_config(densities=[], thresholds=[0.5, 0.9, 0.99], max_loss=0.003)
    # candidates stay out of the keys: every run without a threshold keeps its key
    assert gating_runs.run_key(config, "mnist", "dense", 0, "test", None) == (
        gating_runs.run_key(tiny_config(), "mnist", "dense", 0, "test", None)
    )
    key = gating_runs.run_key(config, "mnist", "cascade", 0, "test", None, None, 0.9)
    assert key != gating_runs.run_key(config, "mnist", "cascade", 0, "test", None, None, 0.5)
    # the levels enter a cascade's key, resolved: the default is (0, J − 1)
    three = dataclasses.replace(config, cascade_levels=(0, 1, 3))
    assert key != gating_runs.run_key(three, "mnist", "cascade", 0, "test", None, None, 0.9)
    assert key == gating_runs.run_key(
        dataclasses.replace(config, cascade_levels=(0, 3)), "mnist", "cascade", 0, "test",
        None, None, 0.9,
    )  # fmt: skip

    def cascade(threshold, error, mac_ratio):
        return validation_row(config, "cascade", None, error, mac_ratio, threshold=threshold)

    dense = validation_row(config, "dense", None, 0.010, 1.0)
    rows = [dense, cascade(0.5, 0.02, 6.0), cascade(0.9, 0.012, 4.0), cascade(0.99, 0.010, 2.0)]
    assert gating_runs.choose(rows, config, "mnist", "cascade") == 0.9
    plan = gating_runs.plan(config, rows, "validation")
    assert [(r["method"], r.get("threshold")) for r in plan] == [
        ("dense", None), ("cascade", 0.5), ("cascade", 0.9), ("cascade", 0.99),
    ]  # fmt: skip
    plan = gating_runs.plan(config, rows, "test")
    assert [(r["method"], r.get("threshold")) for r in plan[:3]] == [
        ("dense", None), ("cascade", 0.9), ("static", 0.9),
    ]  # fmt: skip
    table = gating_runs.format_table(
        [{**r, "split": "test", "speedup_b1": 1.0, "speedup_b64": 1.0} for r in rows[:3]], config
    )
    assert "| d / λ / t |" in table and "| mnist | cascade | t=0.9 | 1 | 1.20 |" in table


def test_static_widths_are_the_closest_uniform_fraction_by_stats_cost():
    config = tiny_config(features=[4, 8, 16])
    model = config.model()
    params = gating_runs._dense_params(
        model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    )
    dense_fn = lambda p, x: model.apply({"params": p}, x, method=gating.GatedCNN.dense)
    x = jnp.zeros((1, 28, 28, 1))
    full = float(dp.stats.cost(dense_fn, params, x)["total"]["macs_dense"])
    brute = {}
    for k in range(1, 9):
        widths = (k, 2 * k)
        rebuilt = dp.surgery.reconstruct(
            dense_fn, params, gating_runs._channel_masks(params, widths), x
        )
        brute[widths] = float(
            dp.stats.cost(rebuilt.apply, rebuilt.params, x)["total"]["macs_dense"]
        )
    for target in (0.2 * full, 0.5 * full, 0.77 * full):
        fraction, widths, macs = gating_runs.static_widths(model, params, target)
        assert macs == brute[widths]  # the counted MACs are what the rebuilt network runs
        assert abs(macs - target) == min(abs(m - target) for m in brute.values())
        assert widths == (round(8 * fraction), round(16 * fraction))


def test_channel_masks_keep_the_largest_l1_filters_and_their_biases():
    rng = np.random.default_rng(3)
    params = {
        "stem": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 1, 4)))},
        "gated_0": {"layer": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 4, 6))),
                              "bias": jnp.zeros(6)}},
    }  # fmt: skip
    masks = gating_runs._channel_masks(params, (2,))
    norms = np.abs(np.asarray(params["gated_0"]["layer"]["kernel"])).sum(axis=(0, 1, 2))
    expected = np.zeros(6, bool)
    expected[np.argsort(-norms)[:2]] = True
    np.testing.assert_array_equal(
        np.asarray(masks["gated_0"]["layer"]["kernel"]).reshape(-1), expected
    )
    np.testing.assert_array_equal(np.asarray(masks["gated_0"]["layer"]["bias"]), expected)
    assert masks["stem"]["kernel"] is None


def test_a_static_run_needs_its_dense_and_gated_runs(tmp_path):
    config = tiny_config()
    store = gating_runs.Store(tmp_path / "store")
    with pytest.raises(ValueError, match="needs its dense run first"):
        gating_runs.run(
            config, "mnist", "static", 0, "test", density=0.5, out=tmp_path / "r.jsonl", store=store
        )
    with pytest.raises(ValueError, match="a gated run needs a density"):
        gating_runs.run(config, "mnist", "gated", 0, "test", out=tmp_path / "r.jsonl", store=store)
    with pytest.raises(ValueError, match="method must be one of"):
        gating_runs.run(config, "mnist", "pruned", 0, "test", out=tmp_path / "r.jsonl")


def test_validation_then_test_on_real_mnist_rows_once(tmp_path, monkeypatch):
    """The whole experiment through its command line on 256 training images: the test stage
    reads the density the validation rows chose, every row exists once, and running a stage
    again adds nothing."""
    config_path = tmp_path / "gating.json"
    config_path.write_text(json.dumps({**gating_runs.SMALL, "seeds": [1]}))
    out = tmp_path / "gating.jsonl"
    command = [sys.executable, str(ROOT / "experiments" / "gating.py")]
    env = {"DYNPRUNE_CACHE_DIR": str(tmp_path / "cache")}
    args = ["--config", str(config_path), "--out", str(out)]

    def stage(name):
        return subprocess.run(
            [*command, name, *args], env={**dict(__import__("os").environ), **env},
            capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip

    with pytest.raises(subprocess.CalledProcessError) as failed:
        stage("test")  # no validation rows yet: the density cannot be chosen
    assert "the validation runs are not finished" in failed.value.stderr
    stage("validation")
    rows = results.read_jsonl(out)
    assert [(r["method"], r["density"], r["split"]) for r in rows] == [
        ("dense", None, "validation"), ("gated", 0.5, "validation"), ("gated", 0.3, "validation"),
    ]  # fmt: skip
    config = gating_runs.load_config(config_path)
    chosen = gating_runs.choose(rows, config, "mnist")
    printed = stage("test").stdout
    rows = results.read_jsonl(out)
    test_rows = [r for r in rows if r["split"] == "test"]
    assert sorted((r["seed"], r["method"]) for r in test_rows) == [
        (1, m) for m in ("dense", "gated", "static")
    ]
    assert {r["density"] for r in test_rows if r["method"] != "dense"} == {chosen}
    for r in test_rows:
        assert 0 <= r["error"] <= 1 and r["mac_ratio"] >= 1 and r["speedup_b1"] > 0
    gated = [r for r in test_rows if r["method"] == "gated"]
    static = [r for r in test_rows if r["method"] == "static"]
    for g in gated:
        assert g["max_abs_diff"] <= 1e-4  # the bucket path computes the masked network
        assert (
            g["macs_p50"] <= g["macs_p95"] <= g["macs_dense"] and len(g["density_per_class"]) == 10
        )
    for s, g in zip(static, gated, strict=True):
        assert s["macs_budget"] == g["validation_macs"]
        assert s["macs"] < s["macs_dense"] and s["architecture"].startswith("4-")
    assert "| mnist | static |" in printed
    stage("test")  # a second run of a finished stage writes nothing
    assert len(results.read_jsonl(out)) == len(rows) == len(results.unique_rows(rows))
    # timing again: the static row (the gated network is not stored), no row written
    timed = stage("latency").stdout
    assert f"| mnist | static | {chosen:g} | 1 | {static[0]['mac_ratio']:.2f}x |" in timed
    assert (tmp_path / "gating-latency.md").read_text().strip() == timed.strip()
    assert len(results.read_jsonl(out)) == len(rows)


@pytest.fixture(scope="module")
def slimmable_runs(tmp_path_factory, tfds_dir):
    """On 256 MNIST images, validated on 200, with two buckets (half and full width, to
    compile few programs): one slimmable run (supernet, then a width gate at λ = 0.05) and
    the static run at its MACs, then a cascade run on the same supernet, in one results
    file; the dense run's weights are stored untrained (the slimmable and cascade runs time
    against them, the static run prunes them). ``net``: the supernet and the gate the run
    stored; ``threshold``: the cascade's, the median confidence of the half width on the
    validation images, so that about half of them are escalated."""
    tmp = tmp_path_factory.mktemp("slimmable")
    config = tiny_config(
        buckets=[0.5, 1.0], densities=[], mac_weights=[0.05], gate_hidden=8, validation=200,
        latency_examples=1, latency_reps=1,
    )  # fmt: skip
    model, store = config.model(), gating_runs.Store(tmp / "store")
    init = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    dense_key = gating_runs.run_key(config, "mnist", "dense", 0, "validation", None)
    store.save(dense_key, gating_runs._dense_params(init))
    kw = {"out": tmp / "r.jsonl", "store": store, "data_dir": tfds_dir}
    rows = {
        method: gating_runs.run(config, "mnist", method, 0, "validation", mac_weight=0.05, **kw)
        for method in ("slimmable", "static")
    }
    gate = gating.WidthGate(choices=2, hidden=8)
    h = jnp.zeros((1, 14, 14, 4))  # the stem's pooled features
    gate_params = store.load(rows["slimmable"]["key"], gate.init(jax.random.key(0), h)["params"])
    supernet = store.load(rows["slimmable"]["supernet_key"], gating_runs._dense_params(init))
    net = gating_runs.DynamicNet.slimmable(model, supernet, gate, gate_params)
    val = data.load("mnist", "validation", validation=200, data_dir=tfds_dir)
    h = model.apply(
        {"params": supernet}, data.preprocess(val.images), method=gating.GatedCNN.features_of
    )
    half = model.apply(
        {"params": supernet},
        h,
        gating.width_gates(model, np.zeros(200, int)),
        method=gating.GatedCNN.trunk,
    )
    threshold = round(float(np.median(jax.nn.softmax(half).max(-1))), 3)
    rows["cascade"] = gating_runs.run(
        config, "mnist", "cascade", 0, "validation", threshold=threshold, **kw
    )
    return SimpleNamespace(config=config, kw=kw, rows=rows, net=net, threshold=threshold)


def test_a_slimmable_run_writes_one_row_of_per_input_accounting(slimmable_runs):
    config, row, net = slimmable_runs.config, slimmable_runs.rows["slimmable"], slimmable_runs.net
    key = gating_runs.run_key(config, "mnist", "slimmable", 0, "validation", None, 0.05)
    assert row["key"] == key and row["mac_weight"] == 0.05 and row["density"] is None
    for field in (
        "error", "macs", "macs_p50", "macs_p95", "mac_ratio", "kept_fraction", "jaccard",
        "density_per_class", "validation_macs", "speedup_b1", "speedup_b64", "bucket_fraction",
    ):  # fmt: skip
        assert field in row, field
    assert 0 <= row["error"] <= 1 and row["speedup_b1"] > 0 and row["speedup_b64"] > 0
    assert row["validation_macs"] == row["macs"] and len(row["density_per_class"]) == 10
    # one bucket per example, every layer at it: each layer's histogram sums to 1, all equal
    fractions = np.array(row["bucket_fraction"])
    assert fractions.shape == (2, 2) and fractions[0].tolist() == fractions[1].tolist()
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0)
    # the mean MACs: the histogram's mean of the buckets' MACs plus the gate's 4·8 + 8·2
    per_bucket = gating.bucket_macs(config.model(), net.params, jnp.zeros((1, 28, 28, 1)))
    assert net.gate_macs == 48
    assert row["macs"] == pytest.approx(fractions[0] @ per_bucket + 48)
    # at the full width an example pays the gate on top of the dense network
    assert row["macs_p50"] <= row["macs_p95"] <= row["macs_dense"] + 48
    assert row["macs_dense"] == per_bucket[-1]
    assert row["mac_ratio"] == pytest.approx(per_bucket[-1] / row["macs"])


def test_the_slimmable_gates_keep_bucket_prefixes_and_skipping_equals_masking(slimmable_runs):
    """The run's supernet and gate (as stored): each example keeps a prefix of one bucket
    width in every layer, and both skipping paths compute the masked network."""
    row, net = slimmable_runs.rows["slimmable"], slimmable_runs.net
    assert row["max_abs_diff"] <= 1e-4  # measured by the run, batch 64
    val = data.load("mnist", "validation", validation=200, data_dir=slimmable_runs.kw["data_dir"])
    x = jnp.asarray(data.preprocess(val.images[:64]))
    h, gates = jax.jit(net.gates)(x)
    choice = np.searchsorted(net.runner.widths[0], np.asarray(gates[0].kept).sum(-1))
    for g, channels, widths in zip(gates, net.model.features[1:], net.runner.widths, strict=True):
        prefix = np.arange(channels)[None, :] < np.asarray(widths)[choice][:, None]
        np.testing.assert_array_equal(np.asarray(g.kept), prefix)
    masked, _ = net.logits(x)
    skipped, bucket = net.runner.run(h, gates)
    compact, _ = jax.jit(net.runner.compact_run)(h, gates)
    assert (bucket == choice[:, None]).all()
    np.testing.assert_allclose(skipped, masked, atol=1e-4)
    np.testing.assert_allclose(compact, masked, atol=1e-4)
    # the stored gate is the run's: the same histogram on the validation images
    fractions = gating_runs.accounting(net, val)["bucket_fraction"]
    np.testing.assert_allclose(fractions, row["bucket_fraction"])


def test_the_static_arm_matches_a_slimmable_budget_and_rows_exist_once(slimmable_runs):
    config, kw, rows = slimmable_runs.config, slimmable_runs.kw, slimmable_runs.rows
    static = rows["static"]
    assert static["macs_budget"] == rows["slimmable"]["validation_macs"]
    assert static["budget_method"] == "slimmable" and static["mac_weight"] == 0.05
    key = gating_runs.run_key(config, "mnist", "static", 0, "validation", None, 0.05)
    assert static["key"] == key
    assert static["macs"] < static["macs_dense"] and static["architecture"].startswith("4-")
    with pytest.raises(ValueError, match="needs its slimmable run first"):
        gating_runs.run(config, "mnist", "static", 0, "validation", mac_weight=0.25, **kw)
    with pytest.raises(ValueError, match=r"a static run needs one of a density .* or a threshold"):
        gating_runs.run(
            config, "mnist", "static", 0, "validation", density=0.5, mac_weight=0.05, **kw
        )
    with pytest.raises(ValueError, match="a slimmable run needs a mac_weight"):
        gating_runs.run(config, "mnist", "slimmable", 0, "validation", density=0.5, **kw)
    # running a finished key again returns its row and writes nothing
    again = gating_runs.run(config, "mnist", "slimmable", 0, "validation", mac_weight=0.05, **kw)
    assert again == rows["slimmable"]
    assert [r["method"] for r in results.read_jsonl(kw["out"])] == [
        "slimmable", "static", "cascade",
    ]  # fmt: skip


def test_a_cascade_run_escalates_the_unsure_images_on_the_stored_supernet(slimmable_runs):
    """The row of a cascade run on the slimmable run's supernet (levels: the half width,
    then the full): its MACs pay both levels for each escalated image, and a second run
    writes nothing."""
    config, kw, rows = slimmable_runs.config, slimmable_runs.kw, slimmable_runs.rows
    row, threshold = rows["cascade"], slimmable_runs.threshold
    key = gating_runs.run_key(config, "mnist", "cascade", 0, "validation", None, None, threshold)
    assert row["key"] == key and row["threshold"] == threshold and row["mac_weight"] is None
    assert row["supernet_key"] == rows["slimmable"]["supernet_key"]  # no training of its own
    for field in (
        "error", "macs", "macs_dense", "macs_p50", "macs_p95", "mac_ratio", "bucket_fraction",
        "kept_fraction", "jaccard", "density_per_class", "speedup_b1", "speedup_b64",
        "max_abs_diff", "validation_macs", "escalated",
    ):  # fmt: skip
        assert field in row, field
    assert 0 < row["escalated"] < 1 and 0 <= row["error"] <= 1
    assert row["max_abs_diff"] <= 1e-4  # the runner computes the masked cascade, batch 64
    assert row["speedup_b1"] > 0 and row["speedup_b64"] > 0
    # an image ends at the full width in every layer iff it was escalated
    np.testing.assert_allclose(
        row["bucket_fraction"], [[1 - row["escalated"], row["escalated"]]] * 2
    )
    # M_0, M_1 of the two buckets; the stem 28·28 · 9 · 1 · 4 = 28224 runs once: an escalated
    # image pays M_0 + (M_1 − 28224), the others M_0
    supernet = slimmable_runs.net.params
    m0, m1 = gating.bucket_macs(config.model(), supernet, jnp.zeros((1, 28, 28, 1)))
    assert row["macs"] == pytest.approx(m0 + row["escalated"] * (m1 - 28224))
    assert row["macs_p95"] == m0 + m1 - 28224 and row["macs_dense"] == m1
    assert row["mac_ratio"] == pytest.approx(m1 / row["macs"])
    assert row["validation_macs"] == row["macs"]
    with pytest.raises(ValueError, match="needs its cascade run first"):
        gating_runs.run(config, "mnist", "static", 0, "validation", threshold=1.0, **kw)
    again = gating_runs.run(config, "mnist", "cascade", 0, "validation", threshold=threshold, **kw)
    assert again == row
    assert [r["method"] for r in results.read_jsonl(kw["out"])].count("cascade") == 1


def test_a_dense_run_already_in_the_store_is_evaluated_not_trained_again(slimmable_runs, tmp_path):
    """The fixture stored untrained dense weights under the dense key: a dense run with that
    key (here into another results file, as another config with the same training fields
    would) leaves them as they are and reports their error."""
    config, kw = slimmable_runs.config, {**slimmable_runs.kw, "out": tmp_path / "other.jsonl"}
    store, model = kw["store"], config.model()
    key = gating_runs.run_key(config, "mnist", "dense", 0, "validation", None)
    like = gating_runs._dense_params(gating_runs._init(model))
    before = store.load(key, like)
    row = gating_runs.run(config, "mnist", "dense", 0, "validation", **kw)
    after = store.load(key, like)
    assert row["key"] == key
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, before, after)))
    val = data.load("mnist", "validation", validation=200, data_dir=kw["data_dir"])
    logits = model.apply(
        {"params": before}, data.preprocess(val.images), method=gating.GatedCNN.dense
    )
    assert row["error"] == pytest.approx(float(np.mean(np.argmax(logits, -1) != val.labels)))


def test_remeasure_times_the_stored_networks_of_finished_rows_again(slimmable_runs):
    """The cascade, slimmable and static rows' networks, rebuilt from the store alone: the
    static one at the row's architecture, the dynamic ones computing their masked networks;
    rows whose networks are not stored are refused by name."""
    config, kw, rows = slimmable_runs.config, slimmable_runs.kw, slimmable_runs.rows
    store = kw["store"]
    for method in ("cascade", "slimmable", "static"):
        now = gating_runs.remeasure(config, rows[method], store=store, data_dir=kw["data_dir"])
        assert now["speedup_b1"] > 0 and now["speedup_b64"] > 0, method
        assert set(now["seconds"]) >= {"dense_b1", "dense_b64"}, method
        if method == "static":
            assert now["architecture"] == rows["static"]["architecture"]
        else:
            assert now["max_abs_diff"] <= 1e-4, method
    with pytest.raises(ValueError, match=r"got a gated row .*not stored"):
        gating_runs.remeasure(config, {**rows["cascade"], "method": "gated"}, store=store)
    missing = {**rows["cascade"], "supernet_key": "f" * 16}
    with pytest.raises(ValueError, match=r"f{16}\.npz"):
        gating_runs.remeasure(config, missing, store=store, data_dir=kw["data_dir"])
