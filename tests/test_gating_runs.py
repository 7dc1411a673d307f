"""The gating experiment: config checks, the selection rule, static widths and masks, and
a whole (tiny) validation → test pass on real MNIST whose rows exist once."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynprune as dp
from dynprune import gating
from dynprune.harness import gating_runs, results

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


def validation_row(config, method, density, error, mac_ratio, dataset="mnist"):
    seed = config.selection_seed
    key = gating_runs.run_key(config, dataset, method, seed, "validation", density)
    return {
        "key": key, "experiment": "gating", "dataset": dataset, "method": method, "seed": seed,
        "split": "validation", "density": density, "error": error, "mac_ratio": mac_ratio,
    }  # fmt: skip


def test_choose_density_takes_the_largest_mac_ratio_within_the_allowed_loss():
    config = tiny_config(densities=[0.5, 0.4, 0.3], max_loss=0.003)
    dense = validation_row(config, "dense", None, 0.010, 1.0)
    rows = [
        dense,
        validation_row(config, "gated", 0.5, 0.011, 2.0),
        validation_row(config, "gated", 0.4, 0.013, 2.6),  # exactly at the allowed loss
        validation_row(config, "gated", 0.3, 0.0131, 3.5),  # past it
    ]
    assert gating_runs.choose_density(rows, config, "mnist") == 0.4
    # none within the loss: the lowest validation error
    rows = [dense] + [
        validation_row(config, "gated", d, 0.05 - d / 100, 2.0) for d in (0.5, 0.4, 0.3)
    ]
    assert gating_runs.choose_density(rows, config, "mnist") == 0.5
    # rows of another configuration (a key that does not match) do not count
    other = dataclasses.replace(config, epochs=9)
    foreign = [validation_row(other, "gated", d, 0.0, 9.0) for d in (0.5, 0.4, 0.3)]
    with pytest.raises(ValueError, match=r"mnist: the validation runs are not finished"):
        gating_runs.choose_density([dense, *foreign], config, "mnist")


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
    chosen = gating_runs.choose_density(rows, config, "mnist")
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
