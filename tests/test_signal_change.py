"""The change of the learning signal between the free and a nudged phase, computed from
the displacement (no cancellation of two large batch averages): equal to the plain
difference in float64, far more accurate than it in float32, and what makes the float32
hEP gradient accurate."""

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import eqx_eqprop as ep

from .helpers import TIGHT, conv_problem, flat, problem, rel_error


def _states(model, x, y, beta, dtype=None):
    """The free equilibrium and the nudged one at `beta` (real or complex)."""
    s0, _ = ep.free_phase(model, x, TIGHT)
    s, _ = ep.nudged_phase(model, x, y, beta, relaxation=TIGHT, start=s0)
    return s0, s


def _plain(model, x, s0, s, nudge):
    return jtu.tree_map(
        jnp.subtract, model.learning_signal(x, s, nudge), model.learning_signal(x, s0, None)
    )


MODELS = {
    "mlp": lambda: problem(0, sizes=(13, 17, 11, 5), batch=6),
    "conv-softmax": lambda: conv_problem(0),
    "conv-avg": lambda: conv_problem(0, pooling=ep.AvgPool()),
    "conv-max": lambda: conv_problem(0, pooling=ep.MaxPool()),
}


@pytest.mark.parametrize(
    "name,beta",
    [("mlp", 0.3), ("mlp", 0.1 + 0.2j), ("conv-softmax", 0.1 + 0.2j), ("conv-avg", 0.3)]
    + [pytest.param("conv-max", 0.3, marks=pytest.mark.slow)],
)
def test_the_change_equals_the_plain_difference_in_float64(name, beta):
    model, x, y = MODELS[name]()
    s0, s = _states(model, x, y, beta)
    nudge = ep.Nudge(jnp.asarray(beta), y, ep.CrossEntropy())
    change = model.learning_signal_change(x, s0, s, nudge)
    plain = _plain(model, x, s0, s, nudge)
    assert rel_error(change, plain) < 1e-12
    assert float(jnp.linalg.norm(flat(plain))) > 1e-3  # a real change, not zeros


def _f32(tree):
    return jtu.tree_map(lambda v: v.astype(jnp.float32), tree)


@pytest.mark.parametrize(
    "make",
    [
        lambda: problem(0, sizes=(100, 120, 80, 10), batch=64),
        lambda: conv_problem(0, batch=16),
        lambda: conv_problem(0, batch=16, pooling=ep.MaxPool()),
    ],
    ids=["mlp", "conv-softmax", "conv-max"],
)
@pytest.mark.slow  # 40 s; float32 accuracy is checked in the default run by the hEP test below
def test_in_float32_the_change_is_far_more_accurate_than_the_difference(make):
    # a small nudge: each phase's signal is about 1000x the change (as on the MNIST MLP,
    # 87 against 3e-3); float64 states rounded to float32 are the inputs of both
    model64, x64, y = make()
    s0, s = _states(model64, x64, y, 0.01)
    truth = model64.learning_signal_change(
        x64, s0, s, ep.Nudge(jnp.asarray(0.01), y, ep.CrossEntropy())
    )
    model, x, s0, s = _f32(model64), _f32(x64), _f32(s0), _f32(s)
    nudge = ep.Nudge(jnp.asarray(0.01, jnp.float32), y, ep.CrossEntropy())
    change = model.learning_signal_change(x, s0, s, nudge)
    plain = _plain(model, x, s0, s, nudge)
    assert jax.tree.leaves(change)[0].dtype == jnp.float32
    err_change, err_plain = rel_error(change, truth), rel_error(plain, truth)
    assert err_change < 1e-4 and err_plain > 10 * err_change, (err_change, err_plain)


@pytest.mark.parametrize("num_phases", [pytest.param(1, marks=pytest.mark.slow), 2, 4])
def test_float32_hep_gradient_is_close_to_its_float64_self(num_phases):
    # the same weights in both precisions, relaxations converged in each: the float32
    # estimate's error against float64 stays near float32 resolution times the
    # conditioning, not the 1e-3 of a cancellation after rounding
    model64, x64, y = problem(3, sizes=(100, 120, 80, 10), batch=64)
    est = ep.HolomorphicEP(0.05, num_phases, error_tolerance=None)
    g64, _ = ep.gradient(model64, x64, y, estimator=est, relaxation=TIGHT)
    relaxation = ep.FixedPointRelaxation(max_steps=2000, rtol=1e-7, atol=1e-7)
    g32, _ = ep.gradient(
        _f32(model64), _f32(x64), y, estimator=est, relaxation=relaxation, throw=False
    )
    assert rel_error(g32, g64) < 1e-3


def test_a_model_without_a_quadratic_coupling_takes_the_plain_difference():
    model, x, y = problem(0, sizes=(6, 8, 4), batch=3)
    s0, s = _states(model, x, y, 0.2)
    nudge = ep.Nudge(jnp.asarray(0.2), y, ep.CrossEntropy())
    assert model.quadratic_coupling
    np.testing.assert_allclose(
        flat(model.learning_signal_change(x, s0, s, nudge)),
        flat(_plain(model, x, s0, s, nudge)),
        rtol=1e-10,
        atol=1e-13,
    )
