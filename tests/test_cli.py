"""The `eqprop-train` command line."""

import json
import subprocess
import sys
import time

import pytest

import eqx_eqprop as ep
from eqx_eqprop.internal import cli_main as main


def test_list_presets(capsys):
    assert main(["--list-presets"]) == 0
    out = capsys.readouterr().out
    for name in ("digits-hep", "mnist-hep", "mnist-classic-0.1-noise", "mnist-bp"):
        assert name in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--preset", "nope"], "unknown preset 'nope'; valid: digits-bp, digits-hep"),
        (["--dataset", "svhn"], "unknown data 'svhn'; valid: digits, mnist"),
        (["--estimator", "ep"], "unknown estimator 'ep'; valid: hep, classic"),
        (["--set", "betta=0.1"], "unknown setting 'betta'"),
        (["--set", "estimator.betta=0.1"], "estimator 'hep' takes no argument 'betta'"),
        (["--set", "beta"], "--set takes SECTION.KEY=VALUE"),
        (["--set", "optimizer.lr=-1"], "optimizer.lr must be finite and non-negative"),
    ],
)
def test_bad_names_list_the_valid_ones(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_small_run_from_flags(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "--dataset",
        "digits",
        "--estimator",
        "hep",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--set",
        "model.hidden=[16]",
        "--set",
        "relaxation.max_steps=10",
        "--set",
        "nudged_relaxation.max_steps=5",
        "--set",
        "estimator.num_phases=3",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "test top-1" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["hidden"] == [16] and config["estimator"]["num_phases"] == 3
    assert config["nudged_relaxation"]["max_steps"] == 5
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_show_config_prints_toml_that_reads_back(tmp_path, capsys):
    argv = ["--preset", "mnist-hep-noise", "--set", "estimator.beta=0.2", "--show-config"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    path = tmp_path / "run.toml"
    path.write_text(text)
    cfg = ep.TrainConfig.from_file(path)
    assert cfg == ep.get_preset("mnist-hep-noise").set("estimator.beta", 0.2)
    assert cfg.nudged_relaxation["noise"] == 0.04


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "eqx_eqprop", "--list-presets"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "digits-hep" in proc.stdout


@pytest.mark.slow
def test_default_command_compares_hep_and_bp_within_two_minutes(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run(
        ["eqprop-train", "--no-progress", "--fresh"], capture_output=True, text=True, cwd=tmp_path
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "holomorphic EP" in proc.stdout and "implicit differentiation" in proc.stdout
    assert elapsed < 120


def test_cifar10_preset_runs_end_to_end_on_mock_data(tmp_path, capsys):
    # the preset's own data pipeline (TFDS, uint8, per-channel normalisation, flips and
    # crops), model kind, estimator and per-layer optimiser, at toy sizes
    import tensorflow_datasets as tfds

    argv = [
        "--preset",
        "cifar10-hep",
        "--set",
        "model.channels=[2, 2, 2, 2]",
        "--set",
        "relaxation.max_steps=3",
        "--set",
        "nudged_relaxation.max_steps=2",
        "--set",
        "data.eval_batch_size=4",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    with tfds.testing.mock_data(num_examples=8):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "cifar10-hep: test top-1" in out
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and record["step"] == 2
    model = ep.load_trained_model(tmp_path / "run")
    assert model.input_shape == (32, 32, 3) and model.num_classes == 10
