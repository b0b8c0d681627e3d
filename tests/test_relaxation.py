"""Relaxations: discrete and continuous time reach the same equilibrium, for real and
complex nudges, and report what happened."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_eqprop as ep
from eqx_eqprop.internal import complex_dtype, tree_astype

from .helpers import TIGHT, TIGHT_ODE, problem


def relax_batch(relaxation, model, x, y, beta):
    """Relax every sample from zero at nudge `beta` (None: free phase)."""
    dtype = (
        model.dtype if beta is None or not jnp.iscomplexobj(beta) else complex_dtype(model.dtype)
    )

    def one(xi, yi):
        s0 = tree_astype(model.init_state(), dtype)
        nudge = None if beta is None else ep.Nudge(beta, yi, ep.CrossEntropy())
        return relaxation.relax(ep.Dynamics(model, model.drive(xi), nudge), s0)

    return jax.jit(jax.vmap(one))(x, y)


@pytest.mark.parametrize(
    "beta",
    [None, 0.3, -0.3, 0.3 * np.exp(1j * np.pi / 3), 0.5j],
    ids=["free", "real+", "real-", "complex", "imag"],
)
def test_fixed_point_and_ode_reach_the_same_equilibrium(beta):
    model, x, y = problem(seed=3)
    beta = None if beta is None else jnp.asarray(beta)
    s_fp, stats_fp = relax_batch(TIGHT, model, x, y, beta)
    s_ode, stats_ode = relax_batch(TIGHT_ODE, model, x, y, beta)
    for a, b in zip(s_fp, s_ode):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    if beta is not None and jnp.iscomplexobj(beta):
        assert jnp.iscomplexobj(s_fp[0]) and float(jnp.max(jnp.abs(s_fp[0].imag))) > 1e-3
    for stats, tol in ((stats_fp, 1e-13), (stats_ode, 1e-9)):
        assert bool(jnp.all(stats.result == ep.RESULTS.successful))
        assert float(jnp.max(stats.residual)) < tol
        assert bool(jnp.all(stats.steps > 5))


def test_equilibrium_is_a_fixed_point_of_the_update():
    model, x, y = problem(seed=4)
    s, _ = relax_batch(TIGHT, model, x, y, None)
    t = jax.vmap(lambda si, xi: ep.Dynamics(model, model.drive(xi))(si))(s, x)
    for a, b in zip(s, t):
        np.testing.assert_allclose(a, b, atol=1e-13)


def test_fixed_steps_mode_runs_exactly_max_steps():
    model, x, y = problem(seed=5)
    relaxation = ep.FixedPointRelaxation(max_steps=7, rtol=None, atol=None)
    s, stats = relax_batch(relaxation, model, x, y, None)
    assert bool(jnp.all(stats.steps == 7))
    assert bool(jnp.all(stats.result == ep.RESULTS.successful))
    # 7 steps from zero is not converged: the residual says so
    assert float(jnp.min(stats.residual)) > 1e-6

    # and equals 7 explicit updates
    def manual(xi):
        s = model.init_state()
        for _ in range(7):
            s = ep.Dynamics(model, model.drive(xi))(s)
        return s

    for a, b in zip(s, jax.vmap(manual)(x)):
        np.testing.assert_allclose(a, b, atol=1e-14)


def test_tolerance_not_met_is_reported():
    model, x, y = problem(seed=5)
    relaxation = ep.FixedPointRelaxation(max_steps=5, rtol=1e-12, atol=1e-12)
    for rel in (relaxation, ep.ODERelaxation(max_steps=3)):
        _, stats = relax_batch(rel, model, x, y, None)
        assert bool(jnp.all(stats.result == ep.RESULTS.max_steps_reached))


def test_blow_up_is_reported_as_diverged():
    # ReLU with large weights grows without bound: the states overflow to inf / NaN.
    model, x, y = problem(seed=6, scale=30.0, activation=ep.ReLU())
    relaxation = ep.FixedPointRelaxation(max_steps=400, rtol=1e-8, atol=1e-8)
    _, stats = relax_batch(relaxation, model, x, y, None)
    assert bool(jnp.all(stats.result == ep.RESULTS.diverged))


def test_relaxation_argument_checks():
    with pytest.raises(ValueError, match="max_steps"):
        ep.FixedPointRelaxation(max_steps=0)
    with pytest.raises(ValueError, match="both rtol and atol"):
        ep.FixedPointRelaxation(rtol=None, atol=1e-6)
    with pytest.raises(ValueError, match="damping"):
        ep.FixedPointRelaxation(damping=1.0)
    with pytest.raises(ValueError, match="must not both be zero"):
        ep.ODERelaxation(rtol=0.0, atol=0.0)


def test_damping_reaches_the_same_equilibrium():
    model, x, y = problem(seed=7)
    damped = ep.FixedPointRelaxation(max_steps=5000, rtol=1e-14, atol=1e-14, damping=0.5)
    s1, _ = relax_batch(TIGHT, model, x, y, None)
    s2, stats = relax_batch(damped, model, x, y, None)
    for a, b in zip(s1, s2):
        np.testing.assert_allclose(a, b, atol=1e-12)
