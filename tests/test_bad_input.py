"""Bad input from outside: each class of input that once was accepted silently, or failed
with an error that named neither the argument nor the file, gets an error that names it
and says what to do; settings that are valid together are accepted together."""

import gzip
import json
import os
import tempfile

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_eqprop as ep
from eqx_eqprop.internal import cli_main as main, load_digits

from .helpers import problem, tiny_run, train_quietly

KEY = jax.random.key(0)


# ----------------------------------------------------------------- valid settings


def test_settings_given_as_separate_flags_are_validated_together(capsys):
    # rtol and atol must change together: as two flags they used to fail one by one
    argv = ["--set", "relaxation.rtol=1e-5", "--set", "relaxation.atol=1e-5", "--show-config"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "rtol = 1e-05" in text and "atol = 1e-05" in text
    # a kind and its arguments, in either order
    for argv in (
        ["--set", "relaxation.kind=anderson", "--set", "relaxation.rtol=1e-5"],
        ["--set", "relaxation.rtol=1e-5", "--set", "relaxation.kind=anderson"],
    ):
        assert main([*argv, "--set", "relaxation.atol=1e-5", "--show-config"]) == 0
        assert 'kind = "anderson"' in capsys.readouterr().out
    # an argument the new kind does not take is still an error, whatever the order
    assert main(["--set", "estimator.period=5", "--set", "estimator.kind=hep"]) == 2
    assert "estimator 'hep' takes no argument 'period'" in capsys.readouterr().err


def test_a_toml_file_with_several_keys_is_validated_together(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[relaxation]\nkind = "anderson"\nrtol = 1e-5\natol = 1e-5\n')
    cfg = ep.TrainConfig.from_file(path, ep.get_preset("mnist-hep"))
    assert cfg.relaxation["kind"] == "anderson" and cfg.relaxation["rtol"] == 1e-5
    path.write_text("[relaxation]\nrtol = 1e-5\natol = 1e-5\n")  # over fixed-step phases
    assert ep.TrainConfig.from_file(path, ep.get_preset("mnist-hep")).relaxation["atol"] == 1e-5


# ------------------------------------------------------------ silent acceptance


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: ep.EnergyMLP((6.7, 8, 3), key=KEY), r"layer_sizes\[0\] must be a positive"),
        (lambda: ep.EnergyMLP(784, key=KEY), "layer_sizes must be a sequence"),
        (lambda: ep.EnergyMLP((6, 8, 3), weight_scale=float("nan"), key=KEY), "weight_scale"),
        (lambda: ep.EnergyMLP((6, 8, 3), weight_scale=0.0, key=KEY), "weight_scale"),
        (
            lambda: ep.EnergyConvNet((8, 8, 1), (3,), 2, kernel_sizes=0, key=KEY),
            "kernel_sizes must be a positive integer, got 0",
        ),
        (
            lambda: ep.EnergyConvNet((8, 8, 1), (3,), 2, kernel_sizes=-3, key=KEY),
            "kernel_sizes must be a positive integer, got -3",
        ),
        (lambda: ep.EnergyConvNet((8, 8, 1), (3.5,), 2, key=KEY), r"channels\[0\]"),
        (
            lambda: ep.VectorFieldNet((6, 8, 3), weight_scale=float("inf"), key=KEY),
            "weight_scale",
        ),
        (
            lambda: ep.FixedPointRelaxation(rtol="1e-5", atol=1e-5),
            "rtol must be .* got the string '1e-5' \\(write numbers without quotes\\)",
        ),
        (lambda: ep.EvenOddRelaxation(max_steps=10.0), "max_steps must be a positive integer"),
        (lambda: ep.FixedPointRelaxation(rtol=0, atol=0), "can never be met"),
        (lambda: ep.ODERelaxation(rtol="1e-6"), "ODERelaxation: rtol"),
        (
            lambda: ep.HolomorphicEP(0.1, 2, error_tolerance=-0.1),
            "error_tolerance .* must be a finite positive number or None, got -0.1",
        ),
        (lambda: ep.SymmetricEP(0.1, max_retries=1.5), "max_retries"),
        (lambda: ep.OscillatingEP(0.1, period=10, dt="0.5"), "dt must be in"),
        (lambda: ep.RecurrentBackprop(rtol=-1.0), "RecurrentBackprop: rtol"),
        (lambda: ep.SoftmaxPool(temperature="1"), "temperature"),
        (lambda: ep.MaxPool(ties="random"), 'ties must be "first" or "split"'),
        (lambda: ep.Sigmoid(gain=float("nan")), "gain"),
    ],
)
def test_constructors_name_the_bad_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_predict_refuses_non_finite_pixels_and_nudged_phase_a_nan_beta():
    model, x, y = problem(0, sizes=(6, 9, 4), batch=3)
    with pytest.raises(eqx.EquinoxRuntimeError, match="NaN or inf"):
        ep.predict(model, x.at[1, 2].set(jnp.nan))
    with pytest.raises(eqx.EquinoxRuntimeError, match="beta is NaN or infinite"):
        ep.nudged_phase(model, x, y, jnp.nan)
    with pytest.raises(eqx.EquinoxRuntimeError, match="beta is NaN or infinite"):
        ep.nudged_phase(model, x, y, complex(0.1, float("inf")))
    logits, _ = ep.predict(model, x)  # a finite input still works
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_a_malformed_estimator_state_is_named_as_such():
    model, x, y = problem(0, sizes=(6, 9, 4), batch=3)
    adaptive = ep.HolomorphicEP(0.1, 2, target_error=0.05)
    state = adaptive.init(model, x, y)
    for bad in (None, jnp.ones(3), (state, state)):
        with pytest.raises(ValueError, match="estimator state does not match HolomorphicEP.init"):
            ep.gradient_step(model, x, y, bad, estimator=adaptive)
    with pytest.raises(ValueError, match="expected None"):  # a state for a stateless one
        ep.gradient_step(model, x, y, state, estimator=ep.HolomorphicEP(0.1, 2))
    grads, info, _ = ep.gradient_step(model, x, y, state, estimator=adaptive)
    assert info.radius > 0


# ---------------------------------------------------------------------- data files


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _idx_directory(directory, labels=None):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 4, 4))
    labels = rng.integers(0, 10, 6) if labels is None else labels
    for stem, array in (
        ("train-images-idx3-ubyte", images),
        ("train-labels-idx1-ubyte", labels),
        ("t10k-images-idx3-ubyte", images[:2]),
        ("t10k-labels-idx1-ubyte", labels[:2]),
    ):
        _write_idx(directory / f"{stem}.gz", np.asarray(array))


def test_a_corrupted_label_byte_is_refused_and_its_file_named(tmp_path):
    _idx_directory(tmp_path, labels=np.array([1, 2, 255, 3, 0, 9]))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz: label 255 at index 2"):
        ep.load_dataset("mnist", tmp_path)
    _idx_directory(tmp_path, labels=np.array([1, 2, 5, 3, 0, 9]))
    data = ep.load_dataset("mnist", tmp_path)
    assert data.num_classes == 10  # declared, not the largest label + 1


def test_a_data_directory_is_checked_before_any_download_and_never_written(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        ep.load_dataset("mnist", missing)
    assert not missing.exists()
    partial = tmp_path / "partial"
    partial.mkdir()
    _idx_directory(partial)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    (partial / "train-images-idx3-ubyte.gz").unlink()
    before = sorted(os.listdir(partial))
    with pytest.raises(
        FileNotFoundError,
        match="missing the IDX file.s. train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz",
    ):
        ep.load_dataset("mnist", partial)
    with pytest.raises(FileNotFoundError, match="holds no TFDS-prepared cifar10"):
        ep.load_dataset("cifar10", partial)
    assert sorted(os.listdir(partial)) == before  # nothing created in the user's directory
    assert main(["--preset", "mnist-fast", "--data-dir", str(missing), "--no-progress"]) == 2


# --------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--set", "model.hidden=16"], "hidden is a list of layer sizes, e.g. [256, 256]"),
        (["--set", "model.hidden=abc"], "got the string 'abc'"),
        (["--set", "model.hidden=[16, 0]"], "hidden[1] must be a positive integer"),
        (["--set", "model.weight_scale=nan"], "weight_scale must be a finite positive"),
        (["--set", "loop.out_dir=runs/{nme}"], "loop.out_dir 'runs/{nme}' is not a valid"),
        (["--seed", "-1"], "loop.seed must be a non-negative integer"),
        (["--set", 'relaxation.rtol="1e-5"'], "write numbers without quotes"),
        (["--set", "nudged_relaxation.max_steps=0"], "nudged_relaxation 'fixed_point'"),
        (["--set", "estimator.error_tolerance=-1"], "error_tolerance"),
        (["--preset", "mnist-conv-hep", "--set", "model.kernel_sizes=0"], "kernel_sizes"),
    ],
)
def test_bad_settings_name_the_setting(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


# -------------------------------------------------------------------- run files


def tiny(tmp_path, name="tiny", **changes):
    return tiny_run(tmp_path, name, **changes)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


run = train_quietly


def test_a_checkpoint_of_another_model_kind_is_refused(tmp_path, digits):
    # an MLP's checkpoint has the leaf shapes of this vector-field net's (64-8-10 with
    # no feedback weights would not; so the MLP run is resumed as a vector-field run
    # over a copy of its files)
    mlp = tiny(tmp_path / "mlp", **{"loop.epochs": 1})
    run(mlp, digits)
    other = tmp_path / "other"
    other.mkdir()
    for name in os.listdir(tmp_path / "mlp"):
        if name != "config.json":
            (other / name).write_bytes((tmp_path / "mlp" / name).read_bytes())
    vf = tiny(other).update({"model": {"kind": "vector_field", "hidden": [8]}})
    with pytest.raises(ep.CheckpointError, match="kind: 'mlp' in the checkpoint, 'vector_field'"):
        run(vf, digits)
    (other / "config.json").unlink()  # (else the configurations differ first)
    wider = tiny(other, **{"model.hidden": [9]})
    with pytest.raises(ep.CheckpointError, match=r"args: \{'hidden': \[8\]\} in the checkpoint"):
        run(wider, digits)
    config = json.loads((tmp_path / "mlp" / "config.json").read_text())
    config["model"] = {"kind": "vector_field", "hidden": [8]}
    (tmp_path / "mlp" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ep.CheckpointError, match="'vector_field' in its config.json"):
        ep.load_trained_model(tmp_path / "mlp")


@pytest.mark.parametrize("victim", ["model", "state", "checkpoint.json", "config.json"])
def test_truncated_run_files_are_named(tmp_path, digits, victim):
    cfg = tiny(tmp_path, **{"loop.epochs": 1})
    run(cfg, digits)
    names = {p.name.split("-")[0] if p.suffix == ".eqx" else p.name: p for p in tmp_path.iterdir()}
    path = names[victim]
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ep.CheckpointError, match=f"{path.name} is truncated or corrupt"):
        run(cfg.set("loop.epochs", 2), digits)


class _Crash(BaseException):
    """A kill at a chosen moment (not an Exception: nothing may catch it)."""


def test_a_crash_between_the_checkpoint_files_loses_and_repeats_no_metrics_line(
    tmp_path, digits, monkeypatch
):
    whole = run(tiny(tmp_path / "whole"), digits)
    cfg = tiny(tmp_path / "killed")
    replace, commits = os.replace, []

    def crash_at_the_first_epoch_commit(src, dst):
        if str(dst).endswith("checkpoint.json"):
            commits.append(dst)
            with open(src) as f:
                meta = json.load(f)
            if meta["progress"]["epoch"] == 1 and meta["progress"]["batch"] == 0:
                raise _Crash  # metrics.jsonl already holds epoch 1; checkpoint.json not
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_at_the_first_epoch_commit)
    with pytest.raises(_Crash):
        run(cfg, digits)
    monkeypatch.undo()
    killed = tmp_path / "killed"
    assert len((killed / "metrics.jsonl").read_text().splitlines()) == 1  # ahead of the commit
    (killed / ".checkpoint.json.x1y2.tmp").write_bytes(b"{")  # a kill -9 inside a write

    def crash_at_the_next_model_file(src, dst):
        if str(dst).endswith(".eqx"):
            raise _Crash
        return replace(src, dst)

    # a resume that dies before its first checkpoint: metrics.jsonl already agrees with
    # the committed checkpoint (step 8, no epoch finished)
    monkeypatch.setattr(os, "replace", crash_at_the_next_model_file)
    with pytest.raises(_Crash):
        run(cfg, digits)
    monkeypatch.undo()
    committed = json.loads((killed / "checkpoint.json").read_text())
    assert committed["progress"]["step"] == 8 and committed["history"] == []
    assert (killed / "metrics.jsonl").read_text() == ""
    resumed = run(cfg, digits)
    lines = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]

    def strip(h):
        return {k: v for k, v in h.items() if k != "seconds"}

    assert [strip(h) for h in lines] == [strip(h) for h in whole["history"]]
    assert [strip(h) for h in resumed["history"]] == [strip(h) for h in whole["history"]]
    leftovers = sorted(p.name for p in killed.iterdir())
    assert leftovers == [
        "checkpoint.json",
        "config.json",
        "metrics.jsonl",
        *sorted(p.name for p in killed.glob("*.eqx")),
    ]
    assert len(list(killed.glob("*.eqx"))) == 2  # one model and one state file


@pytest.mark.parametrize(
    "error,fails",
    [
        (OSError(28, "No space left on device"), "fsync"),
        (PermissionError(13, "Permission denied"), "mkstemp"),
    ],
)
def test_a_full_disk_or_a_read_only_directory_ends_the_run_cleanly(
    tmp_path, capsys, monkeypatch, error, fails
):
    out = tmp_path / "run"
    argv = [
        "--dataset", "digits", "--batch-size", "128", "--epochs", "1", "--no-progress",
        "--set", "model.hidden=[8]", "--set", "relaxation.max_steps=5",
        "--set", "nudged_relaxation.max_steps=3", "--set", "estimator.num_phases=2",
        "--set", "estimator.error_tolerance=none",
        "--set", "loop.checkpoint_every=4", "--set", "loop.log_every=4", "--out", str(out),
    ]  # fmt: skip
    original = {"fsync": os.fsync, "mkstemp": tempfile.mkstemp}[fails]
    calls = []

    def fail_after_the_first_checkpoint(*args, **kwargs):
        calls.append(1)
        if (out / "checkpoint.json").exists():
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(
        os if fails == "fsync" else tempfile, fails, fail_after_the_first_checkpoint
    )
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("eqprop-train: cannot write ") and error.strerror in err
    assert "the last good one is" in err and "checkpoint.json (step 4)" in err
    monkeypatch.undo()
    assert not list(out.glob(".*.tmp"))  # the failed write left nothing behind
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["progress"]["step"] == 4
    assert main(argv) == 0  # the same command resumes once the disk is writable
