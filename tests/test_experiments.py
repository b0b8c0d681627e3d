"""The experiment scripts run end to end at toy sizes."""

import importlib.util
import json
from pathlib import Path

import pytest

import eqx_eqprop as ep

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


@pytest.mark.slow  # 18 s: with the long tests, to keep the default run under 12 minutes
@pytest.mark.filterwarnings("ignore:.*failed_steps and:RuntimeWarning")
def test_checkpoint_gradient_measures_a_trained_runs_gradient(tmp_path, capsys, monkeypatch):
    """A tiny trained run: its converged hEP gradient is off the float64 implicit one by
    about hEP's own aliasing estimate (N = 4 at |beta| = 0.4, within the documented factor
    5), and the training setting's float32 gradient points the same way."""
    import eqx_eqprop as ep
    from eqx_eqprop.internal import load_digits

    relax = {"kind": "even_odd", "rtol": 1e-3, "atol": 1e-3}
    cfg = ep.TrainConfig(
        {
            "name": "tiny",
            "data": {"kind": "digits", "batch_size": 64, "eval_batch_size": 400},
            "model": {"kind": "mlp", "hidden": [16, 12]},
            "estimator": {"kind": "hep", "beta": 0.4, "num_phases": 4},
            "relaxation": {**relax, "max_steps": 20},
            "nudged_relaxation": {**relax, "max_steps": 8},
            "optimizer": {"kind": "sgd", "lr": 0.1},
            "loop": {"epochs": 1, "checkpoint_every": 100, "out_dir": str(tmp_path / "{name}")},
        }
    )
    ep.train(cfg, data=load_digits(), progress=False, verbose=False)
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    module = load("checkpoint_gradient")
    out = tmp_path / "check.json"
    run_dir = str(tmp_path / "tiny")
    with pytest.raises(ValueError, match="FREE/NUDGED/TOL"):
        module.main([run_dir, "--settings", "100/30"])
    argv = [run_dir, "--batch", "8", "--settings", "200/100/1e-9", "--out", str(out)]
    record = module.main(argv)
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out)
    assert record["reference_unconverged"] == 0 and record["slow_samples"] == 0
    converged = record["converged_relaxations"]
    ratio = converged["relative_error"] / converged["error_estimate"]
    assert 0.2 <= ratio <= 5, record
    assert record["training_setting"]["dtype"] == "float32"
    assert record["training_setting"]["cosine"] > 0.95, record
    # a tight setting in float32 is the converged float64 one up to float32 rounding
    tight = record["settings"]["200/100/1e-9"]
    assert tight["dtype"] == "float32" and tight["free_sweeps_mean"] > 20
    assert abs(tight["relative_error"] - converged["relative_error"]) < 1e-3, record
    with pytest.raises(FileNotFoundError, match="no config.json"):
        module.main([str(tmp_path)])


MNIST = ROOT.parent / "shared" / "data" / "mnist"


@pytest.mark.slow  # a float64 reference and three float32 gradients of a narrow VGG-4
@pytest.mark.skipif(not MNIST.is_dir(), reason="needs ../shared/data/mnist")
def test_conv_fidelity_ranks_settings_against_the_exact_gradient(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    fidelity = load("conv_fidelity")
    record = fidelity.main(
        [
            "--channels", "4", "8", "8", "8", "--batch", "2", "--pool", "4",
            "--max-steps", "500", "--settings", "paper", "eo:20/8", "eo:2/1", "aa:20/8@1e-6",
            "--out", str(tmp_path / "fidelity.json"),
        ]
    )  # fmt: skip
    settings = record["settings"]
    assert record["reference_unconverged"] == 0 and record["pool_cycling"] <= 2
    assert settings["paper"]["sweeps_per_step"] == 250 + 3 * 60  # N = 4: 3 phases relaxed
    assert settings["eo:20/8"]["sweeps_per_step"] == 20 + 3 * 8
    # softmax pooling at initialisation relaxes in a few sweeps: both budgets are exact,
    # while 2 and 1 sweeps are not
    assert settings["paper"]["cosine"] > 0.9999 and settings["eo:20/8"]["cosine"] > 0.9999
    assert settings["eo:2/1"]["relative_error"] > 10 * settings["eo:20/8"]["relative_error"]
    # Anderson to a tight tolerance stops early and is as exact as the fixed budget
    assert settings["aa:20/8@1e-6"]["sweeps_per_step"] < 20 + 3 * 8
    assert settings["aa:20/8@1e-6"]["cosine"] > 0.9999
    assert (
        json.loads((tmp_path / "fidelity.json").read_text())["settings"].keys() == settings.keys()
    )


def test_conv_fidelity_reads_its_settings(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    fidelity = load("conv_fidelity")
    free, nudged = fidelity.parse_setting("aa:100/40@1e-4")
    assert isinstance(free, ep.AndersonRelaxation) and (free.max_steps, free.rtol) == (100, 1e-4)
    assert isinstance(nudged, ep.AndersonRelaxation) and nudged.max_steps == 40
    free, nudged = fidelity.parse_setting("mp:60/20@1e-3")
    # bfloat16 for the free phase only: the nudged phases are complex
    assert isinstance(free, ep.MixedPrecisionRelaxation) and free.high.rtol == 1e-3
    assert isinstance(nudged, ep.EvenOddRelaxation) and nudged.max_steps == 20
    assert fidelity.parse_setting("eo:30/10")[0].rtol is None
    for bad in ("aa:100/40", "xx:1/1", "eo:30", "eo:a/b"):
        with pytest.raises(ValueError, match="KIND:FREE/NUDGED"):
            fidelity.parse_setting(bad)


def test_learning_rules_report_counts_from_the_runs_files(tmp_path, capsys):
    """The table's numbers against hand counts from two fake runs' files."""
    report = load("learning_rules")
    for name, accs, clamped in (("a", [0.5, 0.75, 0.7], True), ("b", [0.6, 0.8], False)):
        run = tmp_path / name
        run.mkdir()
        lines = []
        for i, acc in enumerate(accs):
            record = {"epoch": i + 1, "test_top1": acc, "seconds": 10.0 + i, "free_steps": 20.0}
            record["clamped_steps" if clamped else "nudged_steps"] = 5.0 + i
            lines.append(json.dumps(record))
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    check = tmp_path / "a.json"
    check.write_text(json.dumps({"training_setting": {"cosine": 0.5}}))
    out = tmp_path / "fig.png"
    report.main([f"A={tmp_path / 'a'}:{check}", f"B={tmp_path / 'b'}", "--out", str(out)])
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 4 and out.stat().st_size > 0
    # a: 3 epochs, last 70 %, best 75 %, 10 + 11 + 12 s, 20 + 7 sweeps, cosine 0.5
    assert rows[2] == "| A | 3 | 70.00 % | 75.00 % | 33 | 27.0 | 0.500 | - |"
    assert rows[3] == "| B | 2 | 80.00 % | 80.00 % | 21 | 26.0 | - | - |"
    with pytest.raises(SystemExit, match="is .* a run directory"):
        report.main([f"C={tmp_path}"])


@pytest.mark.slow  # four tiny training runs and their float64 references
@pytest.mark.skipif(not MNIST.is_dir(), reason="needs ../shared/data/mnist")
def test_depth_experiment_writes_its_table_and_figure(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    depth = load("depth")
    out = tmp_path / "out"
    argv = ["--smoke", "--estimators", "centered EP", "--out", str(out), "--runs-dir",
            str(tmp_path / "runs"), "--data-dir", str(MNIST)]  # fmt: skip
    record = depth.main(argv)
    rows = record["runs"]
    assert [(r["depth"], r["skips"]) for r in rows] == [
        (2, False),
        (3, False),
        (2, True),
        (3, True),
    ]
    # a chain's colouring is even/odd; a skip l -> l + 2 joins two layers of one parity
    assert [r["colours"] for r in rows] == [2, 2, 2, 3]
    assert all(0.0 <= r["test_top1"] <= 1.0 and r["end"]["cosine"] > 0.9 for r in rows)
    assert json.loads((out / "depth.json").read_text())["runs"] == rows
    assert (out / "depth.png").stat().st_size > 10_000
