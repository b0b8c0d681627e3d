"""The training loop: loss goes down, checkpoints resume bit-identically, divergence
stops with the last good checkpoint kept, configuration errors list valid values."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqx_eqprop import _config as config
from eqx_eqprop._data import load_digits
from eqx_eqprop._training import TrainingDiverged, load_checkpoint, train


def small(tmp_path, **changes):
    """A tiny digits run: 16 hidden units, hEP with short fixed phases."""
    base = config.TrainConfig(
        name="tiny",
        hidden=(16, 12),
        epochs=2,
        batch_size=64,
        lr=0.1,
        free_steps=20,
        nudged_steps=8,
        num_phases=4,
        beta=0.4,
        eval_batch_size=400,
        checkpoint_every=5,
        out_dir=str(tmp_path / "{name}"),
    )
    return base.replace(**changes)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _leaves(model):
    return [
        np.asarray(v) for v in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    ]


def test_smoke_training_lowers_the_loss(tmp_path, digits):
    result = train(small(tmp_path, epochs=3, lr=1.0), data=digits, progress=False, verbose=False)
    history = result["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["test_loss"] < 0.8 * history[0]["test_loss"]
    assert history[-1]["test_top1"] > 0.5
    lines = (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert set(history[0]) >= {"test_top1", "test_top5", "train_loss", "train_residual", "seconds"}


def test_killed_and_resumed_run_is_bit_identical(tmp_path, digits):
    whole = train(small(tmp_path, name="whole"), data=digits, progress=False, verbose=False)
    cfg = small(tmp_path, name="killed")
    # 22 steps per epoch: killed at step 13 (mid epoch 1), after the checkpoint at step 10
    stopped = train(cfg, data=digits, progress=False, verbose=False, stop_after_steps=13)
    assert stopped == {"stopped_at_step": 13}
    meta = json.loads((tmp_path / "killed" / "checkpoint.json").read_text())
    assert meta["progress"] == {"epoch": 0, "batch": 10, "step": 10}
    resumed = train(cfg, data=digits, progress=False, verbose=False)
    for a, b in zip(_leaves(whole["model"]), _leaves(resumed["model"])):
        np.testing.assert_array_equal(a, b)

    def strip(h):
        return {
            k: v for k, v in h.items() if not k.startswith(("seconds", "train_", "failed", "error"))
        }  # noqa: E731

    assert [strip(h) for h in whole["history"]] == [strip(h) for h in resumed["history"]]


def test_killed_and_resumed_noisy_run_is_bit_identical(tmp_path, digits):
    # noisy dynamics draw from per-step keys: those must resume exactly too
    changes = dict(noise=0.04, epochs=1)
    whole = train(
        small(tmp_path, name="whole", **changes), data=digits, progress=False, verbose=False
    )
    cfg = small(tmp_path, name="killed", **changes)
    train(cfg, data=digits, progress=False, verbose=False, stop_after_steps=7)
    resumed = train(cfg, data=digits, progress=False, verbose=False)
    for a, b in zip(_leaves(whole["model"]), _leaves(resumed["model"])):
        np.testing.assert_array_equal(a, b)
    other = train(
        small(tmp_path, name="other-seed", seed=1, **changes),
        data=digits,
        progress=False,
        verbose=False,
    )
    assert not np.array_equal(_leaves(whole["model"])[0], _leaves(other["model"])[0])


def test_resume_refuses_a_different_configuration(tmp_path, digits):
    train(small(tmp_path, epochs=1), data=digits, progress=False, verbose=False)
    with pytest.raises(ValueError, match="different configuration.*lr"):
        train(small(tmp_path, epochs=1, lr=0.2), data=digits, progress=False, verbose=False)


def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, digits):
    # a learning rate near the float32 limit overflows the weights within a few steps
    cfg = small(tmp_path, name="boom", lr=1e37, checkpoint_every=1)
    with pytest.raises(TrainingDiverged, match="last good checkpoint is .*checkpoint.json"):
        train(cfg, data=digits, progress=False, verbose=False)
    meta = json.loads((tmp_path / "boom" / "checkpoint.json").read_text())
    assert meta["progress"]["step"] >= 1
    model = config.build_model(cfg, 64, 10)
    opt_state = config.build_optimizer(cfg, model, 22).init(eqx.filter(model, eqx.is_inexact_array))
    restored = load_checkpoint(tmp_path / "boom", model, opt_state, jax.random.key(0))
    assert all(np.all(np.isfinite(v)) for v in _leaves(restored[0]))


def test_per_layer_learning_rates_through_optax(tmp_path, digits):
    cfg = small(tmp_path, layer_lrs=(0.1, 0.0), readout_lr=0.0, epochs=1)
    result = train(cfg, data=digits, progress=False, verbose=False)
    start = config.build_model(cfg, 64, 10)
    end = result["model"]
    assert not np.array_equal(start.weights[0], end.weights[0])
    np.testing.assert_array_equal(start.weights[1], end.weights[1])
    np.testing.assert_array_equal(start.readout_weight, end.readout_weight)


# a training run reports (warns about) steps whose relaxation did not converge; with
# 20 fixed free steps the adjoint of recurrent backprop sometimes does not
@pytest.mark.filterwarnings("ignore:.*steps reported:RuntimeWarning")
@pytest.mark.parametrize("estimator", ["classic", "symmetric", "oscillating", "rbp", "bptt"])
def test_every_estimator_trains(tmp_path, digits, estimator):
    cfg = small(tmp_path, estimator=estimator, epochs=1, beta=0.1, bptt_steps=20, period=10)
    result = train(cfg, data=digits, progress=False, verbose=False)
    assert np.isfinite(result["final"]["test_loss"])


def test_noisy_training_runs(tmp_path, digits):
    cfg = small(tmp_path, noise=0.04, epochs=1)
    result = train(cfg, data=digits, progress=False, verbose=False)
    assert np.isfinite(result["final"]["test_loss"])


def test_config_errors_list_the_valid_values(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'nope'; valid: digits-hep"):
        config.get_preset("nope")
    with pytest.raises(ValueError, match="unknown estimator 'ep'; valid: hep, classic"):
        config.TrainConfig(estimator="ep")
    with pytest.raises(ValueError, match="unknown dataset"):
        config.TrainConfig(dataset="svhn")
    with pytest.raises(ValueError, match="unknown setting 'betta'"):
        config.config_from_mapping({"betta": "0.1"})
    with pytest.raises(ValueError, match="one learning rate per hidden layer"):
        config.TrainConfig(hidden=(8, 8), layer_lrs=(0.1,))


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('dataset = "digits"\nhidden = [32, 16]\nbeta = 0.2\nrtol = 1e-4\natol = 1e-4\n')
    cfg = config.load_config_file(path, config.get_preset("digits-hep"))
    assert cfg.hidden == (32, 16) and cfg.beta == 0.2 and cfg.num_phases == 10
    cfg = config.config_from_mapping(
        {"hidden": "64,32", "epochs": "3", "rtol": "none", "atol": "None"}, cfg
    )
    assert cfg.hidden == (64, 32) and cfg.epochs == 3 and cfg.rtol is None
    assert jnp.dtype(cfg.dtype) == jnp.float32


def test_a_finished_run_can_be_extended(tmp_path, digits):
    one = train(small(tmp_path, epochs=1), data=digits, progress=False, verbose=False)
    two = train(small(tmp_path, epochs=2), data=digits, progress=False, verbose=False)
    assert [h["epoch"] for h in two["history"]] == [1, 2]
    assert two["history"][0] == one["history"][0]
