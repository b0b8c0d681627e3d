"""An estimator defined here, touching no library file: centered EP written from the
library's building blocks, with diagnostics of its own (the size of the even part of its
two phases, the O(beta) term that centering cancels) that declare how an epoch reduces
and names them. Through the registry it trains from a configuration and from the CLI,
and the loop logs, prints and warns about its metrics without knowing their names."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array

import eqx_eqprop as ep
from eqx_eqprop.internal import (
    REGISTRY,
    build_estimator,
    cli_main,
    load_digits,
    mean_cost,
    nudged_relax,
)

from .helpers import TIGHT, implicit_gradient, problem, rel_error


class CenteredInfo(ep.AbstractGradientInfo):
    loss: Array
    result: ep.RESULTS
    free_state: tuple
    free_stats: ep.RelaxationStats
    nudged_stats: ep.RelaxationStats
    even_part: Array

    def metrics(self):
        steps = self.nudged_stats.steps.astype(jnp.float32)
        return {
            **super().metrics(),
            "nudged_steps": jnp.mean(steps),
            "nudged_unconverged": jnp.mean(self.nudged_stats.result != ep.RESULTS.successful),
            "even_part": self.even_part,
        }

    def metric_specs(self):
        return {
            **super().metric_specs(),
            "nudged_unconverged": ep.MetricSpec(unconverged="centered nudged"),
            "even_part": ep.MetricSpec("max", label="even part"),
        }

    def converged(self):
        return super().converged() & jnp.all(self.nudged_stats.result == ep.RESULTS.successful)


class CenteredEP(ep.AbstractEstimator):
    beta: float = 0.05

    def needs(self):
        return ep.ModelNeeds(energy=True)

    def step(self, model, x, y, state, *, relaxation, nudged_relaxation, cost, key):
        s0, free_stats = ep.free_phase(model, x, relaxation, key)
        drives = jax.vmap(model.drive)(x)
        changes, stats = [], []
        for beta in (self.beta, -self.beta):
            s, st = nudged_relax(model, drives, s0, y, beta, cost, nudged_relaxation, key)
            changes.append(model.learning_signal_change(x, s0, s, ep.Nudge(beta, y, cost)))
            stats.append(st)
        grads = jax.tree_util.tree_map(lambda a, b: (a - b) / (2 * self.beta), *changes)
        even = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, *changes)
        nudged_stats = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *stats)
        info = CenteredInfo(
            loss=mean_cost(model, s0, y, cost),
            result=ep.RESULTS.where(
                jnp.all(free_stats.result == ep.RESULTS.successful)
                & jnp.all(nudged_stats.result == ep.RESULTS.successful),
                ep.RESULTS.successful,
                ep.RESULTS.max_steps_reached,
            ),
            free_state=s0,
            free_stats=free_stats,
            nudged_stats=nudged_stats,
            even_part=jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree_util.tree_leaves(even))),
        )
        return grads, info, state


@pytest.fixture
def registered():
    ep.register("estimator", "centered_test", CenteredEP)
    yield
    REGISTRY["estimator"].pop("centered_test")


def test_the_new_estimator_is_symmetric_ep():
    model = ep.EnergyMLP((9, 12, 4), dtype=jnp.float64, key=jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (6, 9), jnp.float64)
    y = jnp.arange(6) % 4
    ours, info = ep.gradient(model, x, y, estimator=CenteredEP(0.05), relaxation=TIGHT)
    library, _ = ep.gradient(
        model, x, y, estimator=ep.SymmetricEP(0.05, error_tolerance=None), relaxation=TIGHT
    )
    assert rel_error(ours, library) < 1e-9
    assert rel_error(ours, implicit_gradient(model, x, y)) < 1e-2
    assert set(info.metrics()) >= {"even_part", "nudged_unconverged", "loss"}


def test_what_it_needs_is_checked_before_it_runs():
    vf = ep.VectorFieldNet((9, 12, 4), key=jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (6, 9), vf.dtype)
    y = jnp.arange(6) % 4
    # without the check, step would fail inside (a vector field has no learning signal)
    with pytest.raises(TypeError, match="CenteredEP samples the local learning signal"):
        ep.gradient(vf, x, y, estimator=CenteredEP(0.1))
    # the library's own declare theirs, checked the same way
    with pytest.raises(TypeError, match="GeneralizedHEP differentiates the activities"):
        ep.gradient(
            ep.EnergyMLP((9, 12, 4), key=jax.random.key(0)),
            x,
            y,
            estimator=ep.GeneralizedHEP(0.1, 4),
        )
    assert ep.ImplicitDifferentiation().needs() == ep.ModelNeeds()


def test_the_new_estimator_trains_and_its_metric_is_logged_as_it_declares(
    tmp_path, registered, capsys
):
    cfg = ep.get_preset("digits-hep").update(
        {
            "name": "centered",
            "estimator": {"kind": "centered_test", "beta": 0.1},
            "model.hidden": [32],
            "loop.epochs": 2,
            "loop.log_every": 5,
            "loop.out_dir": str(tmp_path / "{name}"),
        }
    )

    class Logs(ep.Hook):
        def __init__(self):
            self.reads = []

        def on_log(self, step, summary):
            self.reads.append(summary)

    logs = Logs()
    result = ep.train(cfg, data=load_digits(), progress=False, verbose=True, hooks=(logs,))
    history = result["history"]
    assert history[-1]["test_loss"] < history[0]["test_loss"]
    per_epoch = len(logs.reads) // 2
    for epoch, record in enumerate(history):
        reads = logs.reads[epoch * per_epoch : (epoch + 1) * per_epoch]
        # declared "max": the epoch's value is the largest of its intervals', not a mean
        assert record["even_part"] == pytest.approx(max(r["even_part"] for r in reads))
        assert record["even_part"] > np.mean([r["even_part"] for r in reads])
    assert "even part " in capsys.readouterr().out  # its label, on the epoch line
    lines = (tmp_path / "centered" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["even_part"] for line in lines] == [h["even_part"] for h in history]


def test_the_cli_trains_it_and_its_failures_are_named_in_the_warning(tmp_path, registered):
    out = tmp_path / "cli"
    argv = [
        "--preset", "digits-hep", "--epochs", "1", "--out", str(out), "--no-progress",
        "--set", "estimator.kind=centered_test", "--set", "estimator.beta=0.1",
        "--set", "nudged_relaxation.max_steps=1",
    ]  # fmt: skip
    with pytest.warns(RuntimeWarning, match="of the centered nudged relaxations did not reach"):
        assert cli_main(argv) == 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["nudged_unconverged"] > 0 and "even_part" in record
    assert isinstance(ep.load_trained_model(out), eqx.Module)


class FreePhaseOnly(ep.AbstractEstimator):
    """An estimator whose step takes only the free relaxation (its `step_inputs`): the
    implicit gradient, computed through the library's reference."""

    step_inputs = ("relaxation",)

    def step(self, model, x, y, state, *, relaxation, cost):
        return ep.ImplicitDifferentiation().step(
            model, x, y, state, relaxation=relaxation, cost=cost
        )


class Misnamed(FreePhaseOnly):
    step_inputs = ("relaxation", "adjoint")


def test_step_is_called_with_what_it_declares_and_nothing_else():
    model, x, y = problem()
    # a step that took the nudged relaxation or the key would fail here with a TypeError
    ours, _ = ep.gradient(model, x, y, estimator=FreePhaseOnly(), relaxation=TIGHT)
    assert rel_error(ours, implicit_gradient(model, x, y)) < 1e-12
    with pytest.raises(TypeError, match=r"Misnamed.step_inputs names \['adjoint'\]"):
        ep.gradient(model, x, y, estimator=Misnamed(), relaxation=TIGHT)
    assert ep.BPTT.step_inputs == () and ep.HolomorphicEP.step_inputs == (
        "relaxation",
        "nudged_relaxation",
        "key",
    )


def test_recurrent_backprop_holds_its_adjoint_relaxation():
    model, x, y = problem()
    anderson = ep.AndersonRelaxation(max_steps=300, rtol=1e-13, atol=1e-13, even_odd=False)
    rbp = ep.RecurrentBackprop(adjoint_relaxation=anderson)
    assert rbp.adjoint_relaxation is anderson
    g, info = ep.gradient(model, x, y, estimator=rbp, relaxation=TIGHT)
    assert rel_error(g, implicit_gradient(model, x, y)) < 1e-9
    # Anderson reaches the adjoint's fixed point in fewer steps than the default iteration
    _, plain = ep.gradient(
        model, x, y, estimator=ep.RecurrentBackprop(rtol=1e-13, atol=1e-13), relaxation=TIGHT
    )
    assert np.mean(info.adjoint_stats.steps) < np.mean(plain.adjoint_stats.steps)
    cfg = ep.get_preset("digits-hep").update(
        {
            "estimator": {
                "kind": "rbp",
                "adjoint_relaxation": {"kind": "anderson", "even_odd": False},
            }
        }
    )
    built = build_estimator(cfg)
    assert isinstance(built.adjoint_relaxation, ep.AndersonRelaxation)
    with pytest.raises(TypeError, match="adjoint_relaxation must be a noise-free relaxation"):
        ep.RecurrentBackprop(
            adjoint_relaxation=ep.FixedPointRelaxation(max_steps=5, rtol=None, atol=None, noise=0.1)
        )
