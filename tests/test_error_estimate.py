"""HolomorphicEP knows when it is wrong: its a-posteriori aliasing error estimate
tracks the true error, and flags a circle |beta| that reaches a singularity."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import eqx_eqprop as ep

from .helpers import TIGHT, implicit_gradient, problem, rel_error

ROUNDOFF_FLOOR = 1e-11  # below this the float64 relaxation error dominates


@pytest.mark.parametrize("scale", [0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("num_phases", [4, 8])
def test_error_estimate_within_factor_10(seed, scale, num_phases):
    model, x, y = problem(seed, scale=scale)
    truth = implicit_gradient(model, x, y)

    @jax.jit
    def estimate(beta):
        est = ep.HolomorphicEP(beta, num_phases, error_tolerance=None)
        grads, info = ep.gradient(model, x, y, estimator=est, relaxation=TIGHT, throw=False)
        return grads, info.error_estimate, info.result == ep.RESULTS.successful

    checked = 0
    for beta in (0.05, 0.1, 0.2, 0.4, 0.8):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a phase may fail at 0.8
            grads, estimate_, converged = estimate(jnp.asarray(beta))
            jax.effects_barrier()
        err = rel_error(grads, truth)
        if err < ROUNDOFF_FLOOR or not converged:
            continue
        ratio = float(estimate_) / err
        assert 0.1 <= ratio <= 10, f"beta={beta}: true {err:.3g}, estimate {float(estimate_):.3g}"
        checked += 1
    assert checked >= 3  # the range of beta really was tested


def _near_critical():
    # A network whose free equilibrium is close to a bifurcation (update Jacobian
    # spectral radius 0.86): beta -> s*_beta has a singularity between |beta| = 0.05
    # and 0.1 for some sample of the batch.
    model, x, y = problem(2, scale=2.0)
    relaxation = ep.FixedPointRelaxation(max_steps=20000, rtol=1e-13, atol=1e-13)
    return model, x, y, relaxation


def test_flags_a_circle_that_crosses_a_singularity():
    model, x, y, relaxation = _near_critical()
    truth = implicit_gradient(model, x, y, relaxation=relaxation)
    _, info = ep.gradient(
        model, x, y, estimator=ep.ImplicitDifferentiation(), relaxation=relaxation
    )
    assert float(jnp.max(ep.update_spectral_radius(model, x, info.free_state))) > 0.8

    inside, info_in = ep.gradient(
        model, x, y, estimator=ep.HolomorphicEP(0.05, 8), relaxation=relaxation
    )
    assert rel_error(inside, truth) < 1e-2
    assert info_in.result == ep.RESULTS.successful

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        crossing, info_out = ep.gradient(
            model, x, y, estimator=ep.HolomorphicEP(0.1, 8), relaxation=relaxation, throw=False
        )
        jax.effects_barrier()
    assert rel_error(crossing, truth) > 0.3  # every phase converged, yet O(1) wrong
    assert bool(jnp.all(info_out.nudged_stats.result == ep.RESULTS.successful))
    assert float(info_out.error_estimate) > 0.1
    assert info_out.result == ep.RESULTS.inaccurate_estimate
    assert any("aliasing error" in str(w.message) for w in caught)

    with pytest.raises(eqx.EquinoxRuntimeError, match="aliasing error"):
        ep.gradient(model, x, y, estimator=ep.HolomorphicEP(0.1, 8), relaxation=relaxation)


def test_fourier_norms_decay_geometrically_on_a_contractive_network():
    model, x, y = problem(0)
    _, info = ep.gradient(model, x, y, estimator=ep.HolomorphicEP(0.2, 8), relaxation=TIGHT)
    norms = info.fourier_norms
    assert norms.shape == (8,)
    # each coefficient is smaller than the one before (rho = |beta| / R < 1)
    assert bool(jnp.all(norms[1:] < norms[:-1]))


def test_symmetric_ep_reports_its_bias_and_classic_ep_has_no_estimate():
    model, x, y = problem(0)
    truth = implicit_gradient(model, x, y)
    g, info = ep.gradient(model, x, y, estimator=ep.SymmetricEP(0.1), relaxation=TIGHT)
    ratio = float(info.error_estimate) / rel_error(g, truth)
    assert 0.1 <= ratio <= 10
    _, info = ep.gradient(model, x, y, estimator=ep.ClassicEP(0.1), relaxation=TIGHT)
    assert info.error_estimate is None and info.fourier_norms is None
