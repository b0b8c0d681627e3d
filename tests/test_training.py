"""The training loop: loss goes down, checkpoints resume bit-identically, divergence
stops with the last good checkpoint kept, configuration errors list valid values."""

import json

import equinox as eqx
import jax
import numpy as np
import pytest

import eqx_eqprop as ep
from eqx_eqprop.internal import (
    REGISTRY,
    build_estimator,
    build_model,
    build_optimizer,
    build_relaxations,
    failure_advice,
    init_train_state,
    load_checkpoint,
    load_digits,
    summarise,
    warn_failed,
)


def small(tmp_path, **changes):
    """A tiny digits run: 16-12 hidden units, hEP with short fixed phases. `changes`
    are dotted settings, e.g. `{"loop.epochs": 3}`."""
    base = ep.TrainConfig(
        {
            "name": "tiny",
            "data": {"kind": "digits", "batch_size": 64, "eval_batch_size": 400},
            "model": {"kind": "mlp", "hidden": [16, 12]},
            "estimator": {"kind": "hep", "beta": 0.4, "num_phases": 4, "error_tolerance": "none"},
            "relaxation": {"kind": "fixed_point", "max_steps": 20, "rtol": "none", "atol": "none"},
            "nudged_relaxation": {
                "kind": "fixed_point",
                "max_steps": 8,
                "rtol": "none",
                "atol": "none",
            },
            "optimizer": {"kind": "sgd", "lr": 0.1},
            "loop": {
                "epochs": 2,
                "log_every": 5,
                "checkpoint_every": 5,
                "out_dir": str(tmp_path / "{name}"),
            },
        }
    )
    return base.update(changes)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _leaves(model):
    return [
        np.asarray(v) for v in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    ]


def run(cfg, digits, **kw):
    return ep.train(cfg, data=digits, progress=False, verbose=False, **kw)


def test_smoke_training_lowers_the_loss(tmp_path, digits):
    result = run(small(tmp_path, **{"loop.epochs": 3, "optimizer.lr": 1.0}), digits)
    history = result["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["test_loss"] < 0.8 * history[0]["test_loss"]
    assert history[-1]["test_top1"] > 0.5
    lines = (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert set(history[0]) >= {
        "test_top1",
        "test_top5",
        "train_loss",
        "train_residual",
        "seconds",
        "free_steps",
        "free_steps_max",
        "nudged_steps",
        "nudged_steps_max",
        "error_estimate",
        "radius",
    }
    assert history[0]["free_steps"] == 20 and history[0]["nudged_steps_max"] == 8
    # fixed-step relaxations have no tolerance to miss: every step counts as converged
    assert history[0]["converged_steps"] == 1.0 and history[0]["error_estimate"] > 0


def test_killed_and_resumed_run_is_bit_identical(tmp_path, digits):
    whole = run(small(tmp_path, name="whole"), digits)
    cfg = small(tmp_path, name="killed")
    # 22 steps per epoch: killed at step 13 (mid epoch 1), after the checkpoint at step 10
    stopped = run(cfg, digits, stop_after_steps=13)
    assert stopped == {"stopped_at_step": 13}
    meta = json.loads((tmp_path / "killed" / "checkpoint.json").read_text())
    assert {k: meta["progress"][k] for k in ("epoch", "batch", "step")} == {
        "epoch": 0,
        "batch": 10,
        "step": 10,
    }
    resumed = run(cfg, digits)
    for a, b in zip(_leaves(whole["model"]), _leaves(resumed["model"])):
        np.testing.assert_array_equal(a, b)

    def strip(h):
        return {k: v for k, v in h.items() if not k.startswith("seconds")}

    # the epoch's training metrics survive the kill too (they are checkpointed)
    assert [strip(h) for h in whole["history"]] == [strip(h) for h in resumed["history"]]


@pytest.mark.slow  # about a minute: three compiled runs; the plain resume test stays default
def test_killed_and_resumed_noisy_run_is_bit_identical(tmp_path, digits):
    # noisy dynamics draw from per-step keys: those must resume exactly too
    changes = {"relaxation.noise": 0.04, "nudged_relaxation.noise": 0.04, "loop.epochs": 1}
    whole = run(small(tmp_path, name="whole", **changes), digits)
    cfg = small(tmp_path, name="killed", **changes)
    run(cfg, digits, stop_after_steps=7)
    resumed = run(cfg, digits)
    for a, b in zip(_leaves(whole["model"]), _leaves(resumed["model"])):
        np.testing.assert_array_equal(a, b)
    # the noise is really there (else the identity above would hold without the keys):
    # the configured relaxations carry it, and one noisy relaxation depends on its key
    free, nudged = build_relaxations(cfg)
    assert free.noise == nudged.noise == 0.04
    x = digits.preprocess(digits.x_test[:4]).reshape(4, -1)
    a, _ = ep.free_phase(whole["model"], x, free, key=jax.random.key(0))
    b, _ = ep.free_phase(whole["model"], x, free, key=jax.random.key(1))
    assert not np.array_equal(a[0], b[0])


def test_resume_refuses_a_different_configuration(tmp_path, digits):
    run(small(tmp_path, **{"loop.epochs": 1}), digits)
    with pytest.raises(ValueError, match="different configuration.*optimizer.lr"):
        run(small(tmp_path, **{"loop.epochs": 1, "optimizer.lr": 0.2}), digits)


def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, digits):
    # a learning rate near the float32 limit overflows the weights within a few steps
    cfg = small(
        tmp_path,
        name="boom",
        **{"optimizer.lr": 1e37, "loop.checkpoint_every": 1, "loop.log_every": 1},
    )
    with pytest.raises(ep.TrainingDiverged, match="last good checkpoint is .*checkpoint.json"):
        run(cfg, digits)
    meta = json.loads((tmp_path / "boom" / "checkpoint.json").read_text())
    assert meta["progress"]["step"] >= 1
    model = build_model(cfg, (8, 8, 1), 10)
    optimizer = build_optimizer(cfg, model, 22)
    like = init_train_state(
        model,
        optimizer,
        ep.HolomorphicEP(0.4, 4),
        jax.random.key(0),
        digits.x_test[:2].reshape(2, -1),
        digits.y_test[:2],
    )
    restored, _, _ = load_checkpoint(tmp_path / "boom", like)
    assert all(np.all(np.isfinite(v)) for v in _leaves(restored.model))


def test_per_group_learning_rates_through_optax(tmp_path, digits):
    cfg = small(
        tmp_path, **{"optimizer.group_lrs": {"layer1": 0.0, "readout": 0.0}, "loop.epochs": 1}
    )
    result = run(cfg, digits)
    start = build_model(cfg, (8, 8, 1), 10)
    end = result["model"]
    assert not np.array_equal(start.layers[0].weight, end.layers[0].weight)
    np.testing.assert_array_equal(start.layers[1].weight, end.layers[1].weight)
    np.testing.assert_array_equal(start.readout_layer.weight, end.readout_layer.weight)
    with pytest.raises(ValueError, match="unknown parameter groups.*layer0"):
        run(small(tmp_path, name="bad", **{"optimizer.group_lrs": {"layer7": 0.1}}), digits)


# with 20 fixed free steps the adjoint of recurrent backprop sometimes does not
# converge: the loop warns at the end of that epoch
@pytest.mark.filterwarnings("ignore:.*failed_steps and:RuntimeWarning")
@pytest.mark.parametrize(
    "estimator,args",
    [
        ("classic", {"beta": 0.1}),
        ("symmetric", {"beta": 0.1, "error_tolerance": "none"}),
        ("oscillating", {"beta": 0.1, "period": 10}),
        ("rbp", {}),
        ("bptt", {"num_steps": 20}),
    ],
)
def test_every_estimator_trains(tmp_path, digits, estimator, args):
    cfg = small(tmp_path, **{"loop.epochs": 1}).update({"estimator": {"kind": estimator, **args}})
    result = run(cfg, digits)
    assert np.isfinite(result["final"]["test_loss"])


def test_noisy_training_runs(tmp_path, digits):
    cfg = small(
        tmp_path, **{"relaxation.noise": 0.04, "nudged_relaxation.noise": 0.04, "loop.epochs": 1}
    )
    result = run(cfg, digits)
    assert np.isfinite(result["final"]["test_loss"])


def test_config_errors_list_the_valid_values(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'nope'; valid: digits-bp, digits-hep"):
        ep.get_preset("nope")
    with pytest.raises(ValueError, match="unknown estimator 'ep'; valid: hep, classic"):
        ep.TrainConfig({"estimator": {"kind": "ep"}})
    with pytest.raises(ValueError, match="unknown data 'svhn'"):
        ep.TrainConfig({"data": {"kind": "svhn"}})
    with pytest.raises(ValueError, match="unknown setting 'betta'"):
        ep.TrainConfig().set("betta", 0.1)
    with pytest.raises(ValueError, match="settings live in sections"):
        ep.TrainConfig({"beta": 0.1})
    # an argument of another kind is an error, not silently ignored
    with pytest.raises(ValueError, match="estimator 'hep' takes no argument 'period'"):
        ep.TrainConfig().set("estimator.period", 50)
    with pytest.raises(ValueError, match="optimizer.lr must be finite and non-negative"):
        ep.TrainConfig().set("optimizer.lr", -0.1)
    with pytest.raises(ValueError, match="beta must be finite and non-zero"):
        ep.TrainConfig().set("estimator.beta", float("nan"))
    with pytest.raises(ValueError, match="loop.epochs must be a positive integer"):
        ep.TrainConfig().set("loop.epochs", 0)
    with pytest.raises(ValueError, match="unknown activation 'tanh'; valid: sigmoid"):
        ep.TrainConfig().set("model.activation", "tanh")


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        "[model]\nhidden = [32, 16]\n[estimator]\nbeta = 0.2\n"
        "[relaxation]\nrtol = 1e-6\natol = 1e-6\n"
    )
    cfg = ep.TrainConfig.from_file(path, ep.get_preset("digits-hep"))
    assert cfg.model["hidden"] == [32, 16] and cfg.estimator["beta"] == 0.2
    assert cfg.estimator["num_phases"] == 4 and cfg.relaxation["rtol"] == 1e-6
    cfg = cfg.update(
        {
            "model.hidden": [64, 32],
            "loop.epochs": 3,
            "relaxation.rtol": "none",
            "relaxation.atol": None,
        }
    )
    assert cfg.model["hidden"] == [64, 32] and cfg.loop["epochs"] == 3
    assert cfg.relaxation["rtol"] == "none" and cfg.get("relaxation.atol") is None
    # a configuration survives TOML
    again = tmp_path / "again.toml"
    again.write_text(cfg.to_toml())
    assert ep.TrainConfig.from_file(again) == cfg.set("relaxation.atol", "none")
    # setting a kind keeps the arguments it takes and drops the others
    implicit = cfg.set("estimator.kind", "implicit")
    assert dict(implicit.estimator) == {"kind": "implicit"}
    classic = cfg.set("estimator.kind", "classic")
    assert dict(classic.estimator) == {"kind": "classic", "beta": 0.2}


def test_a_change_checks_only_the_sections_it_changed(monkeypatch):
    """Setting a value builds nothing it does not change: the estimator section is
    built (its constructor is its check) when it is made or changed, never when the
    loop or the model changes; a bad value in a changed section still fails at once."""
    built = []

    def counting(**args):
        built.append(args)
        return ep.SymmetricEP(**args)

    ep.register("estimator", "counting_test", counting)
    try:
        cfg = ep.get_preset("digits-hep").set("estimator", {"kind": "counting_test", "beta": 0.1})
        assert len(built) == 1
        cfg = cfg.set("loop.epochs", 3).set("model.hidden", [8]).set("name", "other")
        assert len(built) == 1
        cfg = cfg.set("estimator.beta", 0.2)
        assert len(built) == 2 and built[-1] == {"beta": 0.2}
        with pytest.raises(ValueError, match="beta must be finite and non-zero"):
            cfg.set("estimator.beta", 0.0)
        with pytest.raises(ValueError, match="loop.out_dir"):
            cfg.set("loop.out_dir", "runs/{nmae}")
        # the loop's check reads the name: a new name checks the loop again
        bad = cfg.set("loop.out_dir", "runs/{name}")
        assert bad.run_dir.name == "other"
    finally:
        REGISTRY["estimator"].pop("counting_test")


@pytest.mark.slow  # resumption itself is tested bit for bit above
def test_a_finished_run_can_be_extended(tmp_path, digits):
    one = run(small(tmp_path, **{"loop.epochs": 1}), digits)
    two = run(small(tmp_path, **{"loop.epochs": 2}), digits)
    assert [h["epoch"] for h in two["history"]] == [1, 2]
    assert two["history"][0] == one["history"][0]


def test_load_trained_model_rebuilds_it_from_the_checkpoint(tmp_path, digits):
    result = run(small(tmp_path, **{"loop.epochs": 1}), digits)
    model = ep.load_trained_model(result["run_dir"])
    for a, b in zip(_leaves(model), _leaves(result["model"])):
        np.testing.assert_array_equal(a, b)
    meta = json.loads((tmp_path / "tiny" / "checkpoint.json").read_text())
    assert meta["model"]["kind"] == "mlp" and meta["model"]["sample_shape"] == [8, 8, 1]


def test_a_convolutional_vector_field_net_trains_and_reloads(tmp_path, digits):
    # a feature-map layer (convolutions in and back) and a dense layer, generalized hEP
    # with homeostasis, through the registry, the loop and the checkpoint
    changes = {
        "model": {"kind": "vector_field", "hidden": [[8, 8, 3], 12], "feedback_angle": 90.0},
        "estimator": {
            "kind": "generalized_hep",
            "beta": 0.2,
            "num_phases": 2,
            "error_tolerance": "none",
            "homeostasis": {"kind": "jacobian", "strength": 0.1, "num_probes": 1},
        },
        "optimizer": {"kind": "adam", "lr": 1e-2},
        "loop.epochs": 2,
    }
    result = run(small(tmp_path, name="vf", **changes), digits)
    history = result["history"]
    assert history[-1]["test_loss"] < history[0]["test_loss"]
    assert "symmetry_ratio" in history[-1]
    model = ep.load_trained_model(result["run_dir"])
    assert model.input_shape == (8, 8, 1) and model.layer_sizes[1] == (8, 8, 3)
    for a, b in zip(_leaves(model), _leaves(result["model"])):
        np.testing.assert_array_equal(a, b)


def test_the_loop_reads_the_device_once_per_logging_interval(tmp_path, digits, monkeypatch):
    cfg = small(tmp_path, **{"loop.epochs": 2, "loop.log_every": 4, "loop.checkpoint_every": 8})
    # every read must go through one explicit jax.device_get per interval: count those,
    # and make any implicit read (float(), np.asarray(), bool() of a device array) fail
    reads, inside = [], []
    device_get = jax.device_get

    def counting_get(tree):
        reads.append(1)
        inside.append(1)
        try:
            return device_get(tree)
        finally:
            inside.pop()

    array_type = type(jax.numpy.zeros(()))
    for name in ("__array__", "__float__", "__int__", "__bool__", "__index__", "item", "tolist"):
        original = getattr(array_type, name)

        def guarded(self, *args, _name=name, _original=original, **kwargs):
            if not inside:
                raise AssertionError(f"an implicit device read through {_name}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(array_type, name, guarded)
    monkeypatch.setattr(jax, "device_get", counting_get)
    result = run(cfg, digits)
    monkeypatch.undo()
    intervals = -(-22 // 4)  # 22 steps per epoch, a read every 4 and at the epoch's end
    # one read of the step counter at the start; per epoch, one per interval (the
    # checkpoints' states travel with the metrics) and one for the evaluation
    assert len(reads) == 1 + 2 * (intervals + 1)
    assert [h["epoch"] for h in result["history"]] == [1, 2]


def test_end_of_epoch_warning_advice_comes_from_the_objects_that_failed():
    specs = {
        "free_unconverged": ep.MetricSpec(unconverged="free"),
        "nudged_unconverged": ep.MetricSpec(unconverged="nudged"),
        "free_steps_max": ep.MetricSpec("max"),
    }

    def advice(cfg, record):
        sample = (28, 28, 1)
        sources = failure_advice(
            build_relaxations(cfg), build_model(cfg, sample, 10), build_estimator(cfg)
        )
        with pytest.warns(RuntimeWarning) as caught:
            warn_failed(cfg.name, 1, {"failed_steps": 3, **record}, 10, specs, sources)
        (w,) = caught
        return str(w.message)

    conv = ep.get_preset("mnist-conv-hep")
    unconverged = {"free_unconverged": 0.25}
    text = advice(conv.set("model.pooling", "max"), unconverged)
    assert "in 3 of 10 steps 25 % of the free relaxations did not reach" in text
    assert 'model.pooling = "avg" or "softmax"' in text  # from MaxPool
    assert "even/odd" not in text  # the preset already relaxes even/odd
    assert "(failed_steps and free_unconverged, nudged_unconverged in metrics.jsonl)" in text
    text = advice(conv.set("model.pooling", "avg"), unconverged)
    assert "max pooling" not in text and "raise the relaxations' max_steps" in text
    assert 'kind = "straggler"' in text
    assert "checkpoint_gradient.py" in text  # a looser tolerance is not offered as a fix
    assert text.count("raise the relaxations' max_steps") == 1  # free and nudged: said once
    text = advice(
        conv.set("model.pooling", "avg"), {"free_unconverged": 0.5, "nudged_unconverged": 0.1}
    )
    assert "50 % of the free relaxations and 10 % of the nudged relaxations" in text
    mlp = ep.get_preset("mnist-hep")
    assert "use an even/odd relaxation" in advice(  # from FixedPointRelaxation
        mlp.set("relaxation.kind", "fixed_point"), unconverged
    )
    text = advice(mlp, {})  # from HolomorphicEP
    assert "flagged its estimate as inaccurate" in text and "max_steps" not in text
    assert "lower |beta|, raise num_phases" in text
    # an estimator without advice of its own: the warning says what happened, no advice
    text = advice(mlp.update({"estimator": {"kind": "implicit"}}), {})
    assert "To change it" not in text


def test_progress_bar_opens_no_bar_after_the_last_epoch():
    cfg = ep.get_preset("mnist-fast").set("loop.epochs", 2)
    bar = ep.ProgressBar()
    bar.on_start(cfg, 0, 0, 3)
    assert bar.bar.desc.endswith("epoch 1/2")
    bar.on_epoch_end({"epoch": 1}, None)
    assert bar.bar.desc.endswith("epoch 2/2")
    bar.on_epoch_end({"epoch": 2}, None)
    assert bar.bar is None  # was: a bar for "epoch 3/2"
    bar.on_end()


def test_error_estimate_is_averaged_over_converged_steps_only(tmp_path, digits, capsys):
    """The aliasing estimate reads DFT_0 - f(0), which a relaxation stopped at its budget
    spoils: the epoch's estimate comes from the steps whose relaxations all converged,
    and reads n/a when none did. The estimate declares so (its MetricSpec), and its
    label, which the printer shows."""
    # (the smoke test checks that fixed-step relaxations count as converged)
    # 3 sweeps cannot reach 1e-9: every step has unconverged relaxations
    starved = small(
        tmp_path,
        name="starved",
        **{"loop.epochs": 1, "relaxation.rtol": 1e-9, "relaxation.atol": 1e-9},
    ).set("relaxation.max_steps", 3)

    class Keep(ep.Hook):
        def on_epoch_end(self, record, model):
            self.record = record

    keep = Keep()
    with pytest.warns(RuntimeWarning, match="did not reach their tolerance"):
        record = run(starved, digits, hooks=(keep,))["history"][0]
    assert record["free_unconverged"] == 1.0
    assert record["converged_steps"] == 0.0 and "error_estimate" not in record
    assert isinstance(keep.record, ep.EpochRecord) and dict(keep.record) == record
    spec = keep.record.specs["error_estimate"]
    assert spec == ep.MetricSpec("converged_mean", label="hEP error est.")
    ep.Printer("starved").on_epoch_end(keep.record, None)
    assert "hEP error est. n/a" in capsys.readouterr().out
    converged = {**record, "error_estimate": 0.0123, "converged_steps": 1.0}
    ep.Printer("converged").on_epoch_end(ep.EpochRecord(converged, keep.record.specs), None)
    assert "hEP error est. 1.2e-02\n" in capsys.readouterr().out
    half = ep.EpochRecord({**converged, "converged_steps": 0.5}, keep.record.specs)
    ep.Printer("half").on_epoch_end(half, None)
    assert "(over the 50 % of steps that converged)" in capsys.readouterr().out


def test_summarise_reduces_each_metric_as_its_spec_says():
    specs = {
        "error_estimate": ep.MetricSpec("converged_mean"),
        "free_steps_max": ep.MetricSpec("max"),
    }
    read = {
        "count": 4.0,
        "loss": 8.0,
        "error_estimate": 0.3,
        "converged_steps": 3.0,
        "free_steps_max": 17.0,
    }
    out = summarise(read, specs)
    assert out["loss"] == 2.0 and out["converged_steps"] == 0.75
    assert out["error_estimate"] == pytest.approx(0.1)
    assert out["free_steps_max"] == 17.0
    none_converged = {**read, "error_estimate": 0.0, "converged_steps": 0.0}
    assert "error_estimate" not in summarise(none_converged, specs)
    # the name decides nothing: without a spec a metric is a mean
    assert summarise(read, {})["free_steps_max"] == 17.0 / 4


# image shape and classes of each dataset kind, as its loader yields them (NHWC)
_DATA_SHAPES = {
    "digits": ((8, 8, 1), 10),
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "imagenet32": ((32, 32, 3), 1000),
}


@pytest.mark.parametrize("name", ep.preset_names())
def test_every_preset_builds_its_run(name):
    # a preset is only checked when someone trains it; this builds each part of its run
    # (the model on its dataset's image shape, estimator, relaxations, optimiser) and
    # traces one relaxation step and the readout on abstract inputs, so a preset that names an
    # unknown key or a conv stack its images cannot feed fails here
    cfg = ep.get_preset(name)
    shape, classes = _DATA_SHAPES[cfg.data["kind"]]
    model = build_model(cfg, shape, classes)
    build_estimator(cfg)
    build_relaxations(cfg)
    opt = build_optimizer(cfg, model, steps_per_epoch=10)
    jax.eval_shape(opt.init, eqx.filter(model, eqx.is_inexact_array))
    assert np.prod(model.input_shape) == np.prod(shape)

    def one_step(model, x):
        s = model.update(model.init_state(), model.drive(x))
        return s, model.readout(s)

    x = jax.ShapeDtypeStruct(model.input_shape, model.dtype)
    s, logits = jax.eval_shape(one_step, model, x)
    assert jax.tree.structure(s) == jax.tree.structure(model.init_state())
    assert logits.shape == (classes,)


def test_centered_ep_is_symmetric_ep_under_the_fields_other_name():
    assert ep.CenteredEP is ep.SymmetricEP  # one class, not a copy
    cfg = ep.TrainConfig({"estimator": {"kind": "centered", "beta": 0.2}})
    estimator = build_estimator(cfg)
    assert type(estimator) is ep.SymmetricEP and float(estimator.beta) == 0.2
    symmetric = build_estimator(cfg.set("estimator.kind", "symmetric"))
    assert eqx.tree_equal(estimator, symmetric)
