"""The experiment scripts run end to end at toy sizes."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # four training runs; the loop itself is tested in test_training.py
@pytest.mark.filterwarnings("ignore:.*failed_steps and:RuntimeWarning")
def test_table1_writes_a_markdown_table(tmp_path):
    table1 = load("table1")
    output = tmp_path / "table.md"
    argv = [
        "--presets",
        "digits-hep",
        "digits-bp",
        "--seeds",
        "0",
        "1",
        "--epochs",
        "1",
        "--set",
        "model.hidden=[16]",
        "--set",
        "relaxation.max_steps=15",
        "--set",
        "nudged_relaxation.max_steps=5",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--output",
        str(output),
        "--no-progress",
    ]
    assert table1.main(argv) == 0
    text = output.read_text()
    assert "| digits-hep | hEP N=10" in text and "| digits-bp | implicit (BP)" in text
    row = next(line for line in text.splitlines() if line.startswith("| digits-hep"))
    assert row.count("±") == 2  # mean ± std over the two seeds, last and best
    assert "Machine:" in text


FIGURES = [
    "oscillations",
    "stability_map",
    pytest.param("beta_sweep", marks=pytest.mark.slow),
    pytest.param("oscillation_convergence", marks=pytest.mark.slow),
    pytest.param("noise_robustness", marks=pytest.mark.slow),  # the longest smoke run
    pytest.param("homeostasis_angle", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", FIGURES)
def test_figure_script_smoke(name, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    module = load(name)
    module.main(["--smoke", "--out", str(tmp_path)])
    png, record = tmp_path / f"{name}.png", tmp_path / f"{name}.json"
    assert png.stat().st_size > 10_000  # a real figure, not an empty canvas
    assert json.loads(record.read_text())["command"].startswith("python")
