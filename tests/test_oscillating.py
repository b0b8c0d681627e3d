"""Continuous hEP with a rotating teaching signal (OscillatingEP), and noisy continuous
time (SDERelaxation). float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_eqprop as ep

from .helpers import TIGHT, cosine, fit_slope, implicit_gradient, problem, rel_error


@pytest.fixture(scope="module")
def reference():
    model, x, y = problem(0)
    return model, x, y, implicit_gradient(model, x, y)


def _estimate(model, x, y, relaxation=TIGHT, key=None, **kw):
    est = ep.OscillatingEP(0.1, **kw)
    return ep.gradient(model, x, y, estimator=est, relaxation=relaxation, key=key)


def test_slow_oscillation_matches_the_implicit_gradient(reference):
    model, x, y, truth = reference
    grads, info = _estimate(model, x, y, period=200)
    assert cosine(grads, truth) >= 0.9999
    assert rel_error(grads, truth) < 1e-3
    # the period-averaged state is the free equilibrium (zeroth Fourier coefficient)
    loss = ep.equilibrium_loss(model, x, y, relaxation=TIGHT)
    np.testing.assert_allclose(info.loss, loss, rtol=1e-8)


def test_error_shrinks_with_the_period(reference):
    # The state lags the rotating nudge by a phase; its first-order effect rotates the
    # (real) Fourier coefficient out of the real axis and drops out of Re, leaving an
    # error of second order in the rotation speed: a slope of -2 in the period.
    model, x, y, truth = reference
    periods = [25, 50, 100, 200]
    errors = [rel_error(_estimate(model, x, y, period=p)[0], truth) for p in periods]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    slope = fit_slope(periods, errors)
    assert -2.3 <= slope <= -1.7, (slope, errors)


@pytest.mark.parametrize("kw", [dict(period=400, num_blocks=4), dict(period=400, dt=0.5)])
def test_piecewise_rotation_and_euler_time_steps(reference, kw):
    model, x, y, truth = reference
    grads, _ = _estimate(model, x, y, **kw)
    assert cosine(grads, truth) >= 0.9999


def test_averaging_periods_beats_noise(reference):
    model, x, y, _ = reference
    clean, _ = _estimate(model, x, y, period=50, num_periods=16)
    noisy = ep.FixedPointRelaxation(10, None, None, noise=0.01)
    counts = [1, 4, 16]
    spread = []
    for n in counts:
        errors = [
            rel_error(
                _estimate(model, x, y, noisy, jax.random.key(k), period=50, num_periods=n)[0], clean
            )
            for k in range(4)
        ]
        spread.append(float(np.mean(errors)))
    assert spread[0] > spread[1] > spread[2], spread
    # averaging independent periods: the error falls like 1 / sqrt(periods)
    assert -0.8 <= fit_slope(counts, spread) <= -0.3, spread


def test_oscillating_argument_checks():
    with pytest.raises(ValueError, match="beta must be finite and non-zero"):
        ep.OscillatingEP(0.0)
    with pytest.raises(ValueError, match="period must be a positive integer"):
        ep.OscillatingEP(0.1, period=0)
    with pytest.raises(ValueError, match="num_blocks"):
        ep.OscillatingEP(0.1, period=10, num_blocks=20)
    with pytest.raises(ValueError, match="dt must be in"):
        ep.OscillatingEP(0.1, dt=1.5)
    model, x, y = problem(0, activation=ep.HardSigmoid())
    with pytest.raises(ValueError, match="holomorphic activation"):
        ep.gradient(model, x, y, estimator=ep.OscillatingEP(0.1, period=10))


def test_sde_relaxation_is_reproducible_and_tends_to_the_ode():
    model, x, y = problem(3)
    _, info = ep.gradient(model, x, y, estimator=ep.ImplicitDifferentiation(), relaxation=TIGHT)
    quiet = ep.SDERelaxation(duration=30.0, dt=0.05, noise=0.0)
    _, info_quiet = ep.gradient(model, x, y, estimator=ep.ClassicEP(0.1), relaxation=quiet)
    for a, b in zip(info_quiet.free_state, info.free_state):
        np.testing.assert_allclose(a, b, atol=1e-8)
    sde = ep.SDERelaxation(duration=30.0, dt=0.05, noise=0.04)
    est = ep.ClassicEP(0.1)
    g1, i1 = ep.gradient(model, x, y, estimator=est, relaxation=sde, key=jax.random.key(0))
    g2, _ = ep.gradient(model, x, y, estimator=est, relaxation=sde, key=jax.random.key(0))
    np.testing.assert_array_equal(g1.layers[0].weight, g2.layers[0].weight)
    deviation = [float(jnp.std(a - b)) for a, b in zip(i1.free_state, info.free_state)]
    assert 0.005 < max(deviation) < 0.1  # noise of the size asked for, no blow-up
    with pytest.raises(ValueError, match="pass key="):
        ep.gradient(model, x, y, estimator=est, relaxation=sde)
