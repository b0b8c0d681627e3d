"""The `eqprop-train` command line."""

import json
import subprocess
import sys
import time

import pytest

from eqx_eqprop._cli import main


def test_list_presets(capsys):
    assert main(["--list-presets"]) == 0
    out = capsys.readouterr().out
    for name in ("digits-hep", "mnist-hep", "mnist-classic-0.1-noise", "mnist-bp"):
        assert name in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--preset", "nope"], "unknown preset 'nope'; valid: digits-hep"),
        (["--dataset", "svhn"], "unknown dataset 'svhn'; valid: digits, mnist"),
        (["--estimator", "ep"], "unknown estimator 'ep'; valid: hep, classic"),
        (["--set", "betta=0.1"], "unknown setting 'betta'"),
        (["--set", "beta"], "--set takes KEY=VALUE"),
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
        "hidden=16",
        "--set",
        "free_steps=10",
        "--set",
        "nudged_steps=5",
        "--set",
        "num_phases=3",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "test top-1" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["hidden"] == [16] and config["num_phases"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


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
