"""Tests for dynprune.harness.config: configs as data, their keys, and step arguments."""

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynprune.harness import config

GMP = {"algorithm": "gmp", "target": 0.9, "begin": 0.1, "end": 0.7, "every": {"epochs": 0.25}}


def full_config() -> config.RunConfig:
    return config.RunConfig(
        model="lenet5",
        dataset="fashion_mnist",
        validation=1000,
        batch_size=64,
        pretrain=config.Phase(epochs=2, lr=3e-3, weight_decay=0.1, shift=1),
        prune=config.Phase(epochs=3, lr=0.01, optimizer="sgd", pruner=GMP, momentum=0.8),
        finetune=config.Phase(epochs=1, lr=1e-4, schedule="constant"),
        examples=512,
    )


def test_a_config_round_trips_through_json():
    for run in (
        full_config(),
        config.RunConfig(
            model="lenet5",
            prune=config.Phase(epochs=1, lr=1e-3),
            init_masks=config.MaskInit(target=0.99, batches=4),
        ),
    ):
        text = json.dumps(config.to_dict(run))
        assert config.from_dict(json.loads(text)) == run


def test_the_key_is_the_hash_of_the_data_not_of_the_object():
    run = full_config()
    same = config.from_dict(json.loads(json.dumps(config.to_dict(run))))
    assert config.run_key(run, 0, test=False) == config.run_key(same, 0, test=False)
    assert config.run_key(run, 0, test=False) != config.run_key(run, 1, test=False)
    assert config.run_key(run, 0, test=False) != config.run_key(run, 0, test=True)
    other = dataclasses.replace(
        run, prune=dataclasses.replace(run.prune, pruner={**GMP, "target": 0.8})
    )
    assert config.run_key(run, 0, test=False) != config.run_key(other, 0, test=False)


def test_unknown_and_missing_fields_name_the_valid_ones():
    values = config.to_dict(full_config())
    with pytest.raises(
        ValueError, match=r"unknown field\(s\) \['epoch'\] in config.prune.*'epochs'"
    ):
        config.from_dict({**values, "prune": {**values["prune"], "epoch": 3}})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['modle'\].*'model'"):
        config.from_dict({**values, "modle": "x"})
    with pytest.raises(ValueError, match=r"missing field\(s\) \['lr'\] in config.prune"):
        config.from_dict({**values, "prune": {"epochs": 1}})
    with pytest.raises(ValueError, match=r"unknown model 'lenet6'; valid: .*lenet5"):
        config.from_dict({**values, "model": "lenet6"})
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'; valid: adam, sgd"):
        config.Phase(epochs=1, lr=1e-3, optimizer="adamw")


def test_pruner_specs_are_checked_against_the_registry():
    with pytest.raises(ValueError, match=r"unknown algorithm 'gmpp'; valid names: .*'gmp'"):
        config.Phase(epochs=1, lr=1e-3, pruner={"algorithm": "gmpp"})
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['sparsity'\] for 'gmp'.*target"):
        config.Phase(epochs=1, lr=1e-3, pruner={"algorithm": "gmp", "sparsity": 0.9})
    with pytest.raises(ValueError, match=r"pruner 'gmp': hyperparameter 'target' .* got 1.5"):
        config.Phase(epochs=1, lr=1e-3, pruner={**GMP, "target": 1.5})
    with pytest.raises(ValueError, match=r"pruner 'dns': hyperparameter 'gamma' .* got -1"):
        config.Phase(epochs=1, lr=1e-3, pruner={"algorithm": "dns", "gamma": -1, "iter_stop": 0.75})
    with pytest.raises(ValueError, match="names its algorithm"):
        config.Phase(epochs=1, lr=1e-3, pruner={"target": 0.9})
    with pytest.raises(ValueError, match="init_masks trains them fixed"):
        config.RunConfig(
            model="lenet5",
            prune=config.Phase(epochs=1, lr=1e-3, pruner=GMP),
            init_masks=config.MaskInit(target=0.9),
        )


@given(
    steps=st.integers(1, 10**7),
    per_epoch=st.integers(1, 10**4),
    fraction=st.floats(0.0, 1.0),
    epochs=st.floats(0.0, 100.0),
    count=st.integers(0, 10**6),
)
def test_step_arguments_resolve_against_the_phase(steps, per_epoch, fraction, epochs, count):
    spec = {
        "algorithm": "gmp",
        "target": 0.5,
        "begin": fraction,
        "end": count,
        "every": {"epochs": epochs},
    }
    got = config.pruner_arguments(spec, steps=steps, per_epoch=per_epoch)
    assert got == {
        "target": 0.5,
        "begin": int(fraction * steps),
        "end": count,
        "every": int(epochs * per_epoch),
    }


def test_a_float_step_argument_outside_0_1_is_refused():
    with pytest.raises(ValueError, match=r"end=1.5: a float is a fraction of the phase"):
        config.pruner_arguments({"algorithm": "gmp", "end": 1.5}, steps=100, per_epoch=10)
    with pytest.raises(ValueError, match=r"every='often' must be an int"):
        config.pruner_arguments({"algorithm": "gmp", "every": "often"}, steps=100, per_epoch=10)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: config.MaskInit(target=1.5), r"MaskInit: target .* in \[0, 1\], got 1.5"),
        (lambda: config.MaskInit(target=0.9, batches=0), r"MaskInit: batches .* >= 1, got 0"),
        (lambda: config.MaskInit(target=0.9, batch_size=0), r"batch_size .* >= 1, got 0"),
        (lambda: config.MaskInit(target=0.9, shift=-1), r"MaskInit: shift .* >= 0, got -1"),
        (lambda: config.Phase(epochs=-1, lr=1e-3), r"Phase: epochs .* >= 0, got -1"),
        (lambda: config.Phase(epochs=1.5, lr=1e-3), r"Phase: epochs .* integer >= 0, got 1.5"),
        (lambda: config.Phase(epochs=1, lr=-1e-3), r"Phase: lr .* >= 0, got -0.001"),
        (lambda: config.Phase(epochs=1, lr=float("nan")), r"Phase: lr .* got nan"),
        (lambda: config.Phase(epochs=1, lr="fast"), r"Phase: lr .* got 'fast'"),
        (lambda: config.Phase(epochs=1, lr=1e-3, weight_decay=-0.1), r"weight_decay .* -0.1"),
        (lambda: config.Phase(epochs=1, lr=1e-3, momentum=1.1), r"momentum .* \[0, 1\], got 1.1"),
        (lambda: config.Phase(epochs=1, lr=1e-3, shift=-2), r"Phase: shift .* >= 0, got -2"),
    ],
)
def test_phase_and_mask_init_numbers_are_range_checked_on_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("validation", 0, r"RunConfig: validation .* >= 1, got 0"),
        ("batch_size", 0, r"RunConfig: batch_size .* >= 1, got 0"),
        ("batch_size", 64.0, r"RunConfig: batch_size .* integer >= 1, got 64.0"),
        ("examples", 0, r"RunConfig: examples .* >= 1, got 0"),
        ("examples", -5, r"RunConfig: examples .* >= 1, got -5"),
    ],
)
def test_run_config_numbers_are_range_checked_on_construction(field, value, message):
    values = {**config.to_dict(full_config()), field: value}
    with pytest.raises(ValueError, match=message):
        config.from_dict(values)


def test_the_edges_of_the_ranges_are_accepted():
    edge = config.RunConfig(
        model="lenet5",
        validation=1,
        batch_size=1,
        examples=1,
        pretrain=config.Phase(epochs=0, lr=0.0, momentum=0.0),
        prune=config.Phase(epochs=1, lr=1e-3, momentum=1.0, shift=0),
        init_masks=config.MaskInit(target=0.0, batches=1, batch_size=1, shift=0),
    )
    assert config.from_dict(config.to_dict(edge)) == edge
    assert config.RunConfig(model="lenet5", prune=edge.prune, examples=None).examples is None
    assert config.MaskInit(target=1).target == 1
