"""Tests for sweeps: grid expansion, shards, compile-once runs, vmapped and sharded programs,
resume after SIGKILL, and the command line's errors."""

import dataclasses
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynprune.harness import config, results, sweep, sweep_runner

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "sweep.py"

TINY = {
    "description": "tiny test sweep",
    "seeds": 1,
    "run": {
        "model": "origin_mlp",
        "examples": 512,
        "batch_size": 64,
        "prune": {"epochs": 2, "lr": 0.003},
    },
    "methods": {
        "gmp": {
            "pruner": {"algorithm": "gmp", "begin": 0, "end": 0.5, "every": 4},
            "knob": "target",
            "values": [0.5, 0.7, 0.9],
        },
        "dns": {
            "pruner": {"algorithm": "dns", "warmup": 0.25},
            "knob": "c",
            "values": [0.5, {"fc1": 1.0, "default": 0.5}],
        },
    },
}


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("experiments_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_grid_is_methods_times_values_times_seeds(tiny):
    points = sweep.expand(sweep.load(tiny), seeds=2)
    assert len(points) == (3 + 2) * 2
    assert [(p.method, p.target, p.seed) for p in points[:2]] == [("gmp", 0.5, 0), ("gmp", 0.5, 1)]
    gmp = points[0].config.prune.pruner
    assert gmp == {"algorithm": "gmp", "begin": 0, "end": 0.5, "every": 4, "target": 0.5}
    assert points[-1].config.prune.pruner["c"] == {"fc1": 1.0, "default": 0.5}
    assert len({config.run_key(p.config, p.seed, test=False) for p in points}) == len(points)


def test_set_overrides_and_sweeps_fields(tiny):
    base = sweep.load(tiny)
    # a knob's values replaced for the methods that take it (DNS takes no target)
    points = sweep.expand(base, {"prune.target": [0.8, 0.95]})
    assert [(p.method, p.target) for p in points] == [
        ("gmp", 0.8),
        ("gmp", 0.95),
        ("dns", 0.5),
        ("dns", {"fc1": 1.0, "default": 0.5}),
    ]
    # a phase field swept: the grid doubles, and each point says what was swept
    points = sweep.expand(base, {"prune.epochs": [1, 2], "method": ["gmp"]})
    assert len(points) == 6
    assert {p.config.prune.epochs for p in points} == {1, 2}
    assert points[0].swept == {"prune.epochs": 1}
    # one method's argument
    points = sweep.expand(base, {"gmp.every": [2], "method": ["gmp"]})
    assert {p.config.prune.pruner["every"] for p in points} == {2}
    points = sweep.expand(base, {"batch_size": [32]})
    assert {p.config.batch_size for p in points} == {32}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"method": ["gmp", "rigl"]},
            r"unknown method\(s\) \['rigl'\]; this sweep has \['dns', 'gmp'\]",
        ),
        (
            {"prune.epoch": [1]},
            r"--set prune.epoch: no method of this sweep takes 'epoch'.*prune.epochs",
        ),
        ({"lr": [1]}, r"--set lr: unknown field; valid: 'method'.*'prune.lr'"),
        ({"gmp.c": [1]}, r"--set gmp.c: gmp takes no 'c'; valid: .*'target'"),
    ],
)
def test_bad_overrides_name_the_valid_choices(tiny, overrides, message):
    with pytest.raises(ValueError, match=message):
        sweep.expand(sweep.load(tiny), overrides)


@given(n=st.integers(1, 7), size=st.integers(0, 30))
def test_shards_are_disjoint_and_complete(n, size):
    points = list(range(size))
    slices = [sweep.shard(points, f"{i}/{n}") for i in range(n)]
    assert sorted(x for s in slices for x in s) == points


def test_bad_shards_are_refused():
    for spec in ("3/3", "a/b", "-1/2", "1"):
        with pytest.raises(ValueError, match="--shard"):
            sweep.shard([1, 2], spec)


def by_key(path: Path) -> dict:
    rows = results.read_jsonl(path)
    keyed = {r["key"]: r for r in rows}
    assert len(keyed) == len(rows), "a key was written twice"
    return keyed


@pytest.mark.slow
def test_a_sweep_compiles_once_writes_rows_and_resumes(tiny, tmp_path, tfds_dir):
    out = tmp_path / "rows.jsonl"
    run = lambda **kw: sweep_runner.run_sweep(
        tiny, out=out, data_dir=tfds_dir, progress=False, overrides={"method": ["gmp"]}, **kw
    )
    summary = run()
    assert summary["runs"] == summary["rows"] == 3 and summary["skipped"] == 0
    assert summary["compiles"] == 1
    assert Path(summary["plot"]).stat().st_size > 10_000
    rows = by_key(out)
    for row in rows.values():
        assert row["method"] == "gmp" and row["seed"] == 0 and "test_error" not in row
        assert row["layers"]["fc1/kernel"]["sparsity"] == pytest.approx(row["target"], abs=1e-5)
        assert row["compression"] == pytest.approx(row["params"] / row["nonzeros"])
        assert row["backend"] == "cpu" and row["device_count"] >= 1 and row["wall_s"] > 0
        assert config.from_dict(row["config"]).prune.pruner["target"] == row["target"]
        kept = [e["kept"] for e in row["trace"]]
        assert kept == sorted(kept, reverse=True) and all(e["regrown"] == 0 for e in row["trace"])
        kernels = [v for k, v in row["layers"].items() if k.endswith("kernel")]
        assert row["trace"][-1]["kept"] == sum(v["nonzeros"] for v in kernels)
        pruned = sum(e["pruned"] for e in row["trace"])
        assert pruned == sum(v["size"] for v in kernels) - row["trace"][-1]["kept"]
    assert "gmp" in summary["table"] and "0.7" in summary["table"]

    again = run()
    assert again["runs"] == 0 and again["skipped"] == 3 and again["rows"] == 3
    assert len(results.read_jsonl(out)) == 3

    # The same points as one vmapped program: one compile, the same rows.
    vout = tmp_path / "vmapped.jsonl"
    vmapped = sweep_runner.run_sweep(
        tiny, out=vout, data_dir=tfds_dir, progress=False, overrides={"method": ["gmp"]}, vmap=3
    )
    assert vmapped["compiles"] == 1 and vmapped["runs"] == 3
    assert_same_rows(rows, by_key(vout))


def assert_same_rows(expected: dict, got: dict) -> None:
    assert expected.keys() == got.keys()
    for key, row in expected.items():
        assert got[key]["nonzeros"] == row["nonzeros"]
        assert got[key]["val_error"] == pytest.approx(row["val_error"], abs=2 / 512)
        assert [e["kept"] for e in got[key]["trace"]] == [e["kept"] for e in row["trace"]]


@pytest.mark.slow
def test_dns_and_test_error_rows(tiny, tmp_path, tfds_dir):
    out = tmp_path / "dns.jsonl"
    summary = sweep_runner.run_sweep(
        tiny, out=out, data_dir=tfds_dir, progress=False, overrides={"method": ["dns"]}, test=True
    )
    assert summary["compiles"] == 1 and summary["runs"] == 2
    for row in by_key(out).values():
        assert 0 <= row["test_error"] <= 1 and row["method"] == "dns"
        assert row["trace"] and row["trace"][0]["pruned"] > 0


def sweep_command(*args: str, tfds_dir: Path) -> list[str]:
    return [sys.executable, str(SCRIPT), *args, "--data-dir", str(tfds_dir), "--no-progress"]


@pytest.mark.slow
def test_sharded_over_8_fake_devices_equals_sequential(tiny, tmp_path, tfds_dir):
    sets = ["--set", "method=gmp", "--set", "prune.target=0.3,0.4,0.5,0.6", "--seeds", "2"]
    out = tmp_path / "sharded.jsonl"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    command = sweep_command(
        str(tiny), *sets, "--vmap", "8", "--devices", "all", "--out", str(out), tfds_dir=tfds_dir
    )
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["runs"] == 8 and summary["compiles"] == 1
    sharded = by_key(out)
    assert {r["device_count"] for r in sharded.values()} == {8}
    assert {r["points_in_program"] for r in sharded.values()} == {8}

    seq = tmp_path / "sequential.jsonl"
    sweep_runner.run_sweep(
        tiny,
        out=seq,
        seeds=2,
        data_dir=tfds_dir,
        progress=False,
        overrides={"method": ["gmp"], "prune.target": [0.3, 0.4, 0.5, 0.6]},
    )
    assert_same_rows(by_key(seq), sharded)


@pytest.mark.slow
def test_two_processes_joined_by_jax_distributed_equal_sequential(tiny, tmp_path, tfds_dir):
    """Two local processes, one CPU device each, joined by jax.distributed.initialize on
    localhost (gloo collectives): the 2 points are sharded one per process; process 0 writes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "distributed.jsonl"
    sets = ["--set", "method=gmp", "--set", "prune.target=0.5,0.8"]
    common = [str(tiny), *sets, "--vmap", "2", "--devices", "all", "--out", str(out)]
    joined = ["--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    processes = [
        subprocess.Popen(
            sweep_command(*common, *joined, "--process-id", str(i), tfds_dir=tfds_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    summaries = [json.loads(o.strip().splitlines()[-1]) for o in outputs]
    assert [(s["process"], s["runs"], s["compiles"]) for s in summaries] == [(0, 2, 1), (1, 0, 1)]
    distributed = by_key(out)
    assert {r["device_count"] for r in distributed.values()} == {2}

    seq = tmp_path / "sequential.jsonl"
    sweep_runner.run_sweep(
        tiny,
        out=seq,
        data_dir=tfds_dir,
        progress=False,
        overrides={"method": ["gmp"], "prune.target": [0.5, 0.8]},
    )
    assert_same_rows(by_key(seq), distributed)


@pytest.mark.slow
def test_a_sweep_killed_mid_run_resumes_with_every_row_once(tiny, tmp_path, tfds_dir):
    targets = ",".join(f"{t / 20:g}" for t in range(1, 13))
    out = tmp_path / "killed.jsonl"
    command = sweep_command(
        str(tiny),
        "--set",
        "method=gmp",
        "--set",
        f"prune.target={targets}",
        "--set",
        "prune.epochs=6",
        "--out",
        str(out),
        tfds_dir=tfds_dir,
    )
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out.exists() and out.read_bytes().count(b"\n") >= 2):
        assert process.poll() is None and time.monotonic() < deadline, "no rows before the kill"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = len(by_key(out))
    assert 2 <= before < 12, "the kill must land mid-sweep"

    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == before and summary["runs"] == 12 - before
    rows = by_key(out)
    assert len(rows) == summary["rows"] == 12
    assert sorted(r["target"] for r in rows.values()) == [t / 20 for t in range(1, 13)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-config"], "unknown config 'no-such-config'; valid configs: .*mnist-frontier"),
        (["mnist-frontier", "--set", "method=magic"], r"unknown method\(s\) \['magic'\]"),
        (
            ["mnist-frontier", "--set", "prune.nonsense=1"],
            "no method of this sweep takes 'nonsense'",
        ),
        (
            ["mnist-frontier", "--backend", "tpu"],
            "backend 'tpu' is not available here; available: cpu",
        ),
        (["mnist-frontier", "--shard", "2/2"], "--shard must be I/N"),
        (
            ["mnist-frontier", "--set", "prune.target=0.9,1.5"],
            r"pruner 'gmp': hyperparameter 'target' must be a finite number in \[0, 1\], got 1.5",
        ),
    ],
)
def test_the_command_line_names_what_is_valid(cli, argv, message, tfds_dir):
    with pytest.raises(SystemExit, match=message):
        cli.main([*argv, "--data-dir", str(tfds_dir), "--no-progress"])


def test_every_config_loads_and_is_listed(cli, capsys):
    cli.main(["--list"])
    listed = capsys.readouterr().out
    for name, path in cli.configs().items():
        loaded = sweep.load(path)
        assert name in listed and loaded.description in listed
        assert len(sweep.expand(loaded)) >= 2  # a sweep compares points; a round may have two


def test_quick_mode_is_one_epoch_on_2048_images():
    run = config.RunConfig(
        model="lenet300",
        pretrain=config.Phase(epochs=10, lr=1e-3),
        prune=config.Phase(epochs=0, lr=1e-3),
        finetune=config.Phase(epochs=3, lr=1e-3),
        retrain=config.Phase(epochs=4, lr=1e-3),
    )
    quick = sweep_runner.quick(run)
    epochs = [phase.epochs for _, phase in quick.phases()]
    assert epochs == [1, 0, 1, 1]
    assert quick.examples == 2048 and dataclasses.replace(quick, examples=None) != run


def test_quick_mode_keeps_a_smaller_number_of_examples():
    run = config.RunConfig(model="lenet300", prune=config.Phase(epochs=2, lr=1e-3))
    assert sweep_runner.quick(dataclasses.replace(run, examples=512)).examples == 512
    assert sweep_runner.quick(dataclasses.replace(run, examples=10_000)).examples == 2048
