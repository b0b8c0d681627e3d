"""Accelerated relaxations (even/odd, safeguarded Anderson) reach the equilibria of plain
iteration, keep the EP estimates exact and their error orders, differentiate through
the implicit adjoint; the adaptive radius of holomorphic EP. float64."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_eqprop as ep
from eqx_eqprop.internal import complex_dtype, tree_astype

from .helpers import TIGHT, fit_slope, implicit_gradient, problem, rel_error

EVEN_ODD = ep.EvenOddRelaxation(max_steps=3000, rtol=1e-14, atol=1e-14)
ANDERSON = ep.AndersonRelaxation(max_steps=3000, rtol=1e-14, atol=1e-14)
ANDERSON_SYNC = ep.AndersonRelaxation(max_steps=3000, rtol=1e-14, atol=1e-14, even_odd=False)
ACCELERATED = {"even_odd": EVEN_ODD, "anderson": ANDERSON, "anderson_sync": ANDERSON_SYNC}


def relax_batch(relaxation, model, x, y, beta):
    dtype = (
        model.dtype if beta is None or not jnp.iscomplexobj(beta) else complex_dtype(model.dtype)
    )

    def one(xi, yi):
        nudge = None if beta is None else ep.Nudge(beta, yi, ep.CrossEntropy())
        s0 = tree_astype(model.init_state(), dtype)
        return relaxation.relax(ep.Dynamics(model, model.drive(xi), nudge), s0)

    return jax.jit(jax.vmap(one))(x, y)


BETAS = {
    "free": None,
    "real+": 0.3,
    "real-": -0.3,
    "complex": 0.3 * np.exp(1j * np.pi / 3),
    "imag": 0.5j,
}
CASES = [("even_odd", b) for b in BETAS] + [
    ("anderson", "free"),
    ("anderson", "complex"),
    ("anderson_sync", "real-"),
    ("anderson_sync", "imag"),
]


@pytest.mark.parametrize("name,beta_id", CASES, ids=[f"{n}-{b}" for n, b in CASES])
def test_same_equilibrium_as_plain_iteration(name, beta_id):
    beta = BETAS[beta_id]
    model, x, y = problem(seed=3)
    beta = None if beta is None else jnp.asarray(beta)
    plain, _ = relax_batch(TIGHT, model, x, y, beta)
    fast, stats = relax_batch(ACCELERATED[name], model, x, y, beta)
    for a, b in zip(plain, fast):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert bool(jnp.all(stats.result == ep.RESULTS.successful))
    assert float(jnp.max(stats.residual)) < 1e-12


def test_even_odd_halves_the_sweeps_of_a_layered_network():
    # the block Gauss-Seidel rate is the square of the synchronous (Jacobi) rate
    model, x, y = problem(seed=4, sizes=(13, 17, 11, 9, 5))
    _, plain = relax_batch(TIGHT, model, x, y, None)
    _, even_odd = relax_batch(EVEN_ODD, model, x, y, None)
    ratio = np.asarray(plain.steps) / np.asarray(even_odd.steps)
    assert np.all((ratio > 1.6) & (ratio < 2.4)), ratio


@pytest.mark.parametrize("name", ["even_odd", "anderson"])
def test_hep_is_exact_with_accelerated_relaxations(name):
    model, x, y = problem(0)
    truth = implicit_gradient(model, x, y)
    relaxation = ACCELERATED[name]
    grads, info = ep.gradient(
        model, x, y, estimator=ep.HolomorphicEP(0.1, 8), relaxation=relaxation
    )
    assert rel_error(grads, truth) <= 1e-6
    assert info.result == ep.RESULTS.successful
    # and the implicit adjoint differentiates through them
    through = eqx.filter_grad(lambda m: ep.equilibrium_loss(m, x, y, relaxation=relaxation))(model)
    assert rel_error(through, truth) <= 1e-10


@pytest.mark.parametrize(
    "make,exponents,order",
    [
        (lambda b: ep.ClassicEP(b), range(4, 9), 1),
        (lambda b: ep.SymmetricEP(b, error_tolerance=None), range(3, 7), 2),
        (lambda b: ep.HolomorphicEP(b, 3, error_tolerance=None), range(1, 5), 3),
    ],
    ids=["classic", "symmetric", "holomorphic N=3"],
)
def test_error_orders_with_even_odd_relaxation(make, exponents, order):
    model, x, y = problem(0)
    truth = implicit_gradient(model, x, y)
    betas = [2.0**-k for k in exponents]
    step = jax.jit(lambda est: ep.gradient(model, x, y, estimator=est, relaxation=EVEN_ODD)[0])
    errors = [rel_error(step(make(b)), truth) for b in betas]
    assert min(errors) > 1e-10, errors
    slope = fit_slope(betas, errors)
    assert abs(slope - order) <= 0.3, (slope, errors)


def test_safeguarded_anderson_on_a_near_critical_network():
    # spectral radius ~0.86: plain iteration is slow, extrapolation fragile
    model, x, y = problem(2, scale=2.0, batch=16)
    relaxation = dict(max_steps=5000, rtol=1e-10, atol=1e-10)
    _, even_odd = relax_batch(ep.EvenOddRelaxation(**relaxation), model, x, y, None)
    _, anderson = relax_batch(ep.AndersonRelaxation(**relaxation), model, x, y, None)
    for stats in (even_odd, anderson):
        assert bool(jnp.all(stats.result == ep.RESULTS.successful))
    # faster on the typical sample, and never slower than its map on the slowest one
    assert np.median(anderson.steps) < 0.6 * np.median(even_odd.steps)
    assert int(anderson.steps.max()) <= int(even_odd.steps.max())


class _Flat(ep.AbstractEnergyModel):
    """A one-layer network whose state is a bare array (no layers)."""

    layer: ep.Dense
    activation: ep.AbstractActivation = ep.Sigmoid()

    input_shape = property(lambda self: (self.layer.in_features,))
    num_classes = property(lambda self: self.layer.out_features)

    def init_state(self):
        return jnp.zeros(self.layer.out_features, self.dtype)

    def drive(self, x):
        return self.layer(x)

    def coupling(self, s):
        return jnp.zeros((), s.dtype)

    def readout(self, s):
        return s


def test_even_odd_refuses_a_network_without_layers():
    model = _Flat(ep.Dense(4, 3, dtype=jnp.float64, key=jax.random.key(0)))
    x = jnp.ones((2, 4))
    assert model.num_layers is None
    with pytest.raises(ValueError, match="needs a layered network"):
        ep.free_phase(model, x, ep.EvenOddRelaxation())
    with pytest.raises(ValueError, match="needs a layered network"):
        ep.free_phase(model, x, ep.AndersonRelaxation())
    _, stats = ep.free_phase(model, x, ep.AndersonRelaxation(even_odd=False))
    assert bool(jnp.all(stats.result == ep.RESULTS.successful))


def test_accelerated_relaxation_arguments():
    with pytest.raises(ValueError, match="history must be a positive integer"):
        ep.AndersonRelaxation(history=0)
    with pytest.raises(ValueError, match="mixing must be in"):
        ep.AndersonRelaxation(mixing=1.5)
    with pytest.raises(ValueError, match="stops on a tolerance"):
        ep.AndersonRelaxation(rtol=None, atol=None)
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        ep.EvenOddRelaxation(max_steps=0)
    with pytest.raises(ValueError, match="fixed step count"):
        ep.EvenOddRelaxation(max_steps=10, noise=0.1)


def test_adaptive_radius_on_a_near_critical_network():
    model, x, y = problem(2, scale=2.0)
    relaxation = ep.FixedPointRelaxation(max_steps=20000, rtol=1e-13, atol=1e-13)
    truth = implicit_gradient(model, x, y, relaxation=relaxation)
    fixed, info = ep.gradient(
        model,
        x,
        y,
        estimator=ep.HolomorphicEP(0.4, 8, error_tolerance=None),
        relaxation=relaxation,
    )
    assert rel_error(fixed, truth) > 0.1  # a fixed radius 0.4 is wrong by more than 10 %
    target = 1e-3
    estimator = ep.HolomorphicEP(0.4, 8, target_error=target)
    grads, info = ep.gradient(model, x, y, estimator=estimator, relaxation=relaxation)
    assert rel_error(grads, truth) <= 10 * target
    assert float(info.radius) < 0.2 and int(info.retries) >= 1
    assert float(info.error_estimate) <= target
    # across steps the state starts from the accepted radius: no retry the second time
    state = estimator.init(model, x, y)
    _, first, state = ep.gradient_step(
        model, x, y, state, estimator=estimator, relaxation=relaxation
    )
    _, second, state = ep.gradient_step(
        model, x, y, state, estimator=estimator, relaxation=relaxation
    )
    assert int(second.retries) == 0
    assert float(first.radius) <= float(second.radius) <= 0.4


@pytest.mark.slow
def test_adaptive_radius_grows_back_on_a_contractive_network():
    model, x, y = problem(0)
    estimator = ep.HolomorphicEP(0.4, 6, target_error=1e-4)
    state = jnp.asarray(0.01)  # as if an earlier batch had needed a tiny radius
    radii = []
    for _ in range(4):
        _, info, state = ep.gradient_step(model, x, y, state, estimator=estimator, relaxation=TIGHT)
        radii.append(float(info.radius))
    assert radii == sorted(radii) and radii[-1] > 2 * radii[0]


def test_adaptive_radius_arguments_and_noise():
    with pytest.raises(ValueError, match="target_error must be a finite positive number"):
        ep.HolomorphicEP(0.4, 4, target_error=0.0)
    with pytest.raises(ValueError, match="needs num_phases >= 2"):
        ep.HolomorphicEP(0.4, 1, target_error=0.01)
    model, x, y = problem(0, sizes=(6, 9, 7, 4), batch=4)
    noisy = ep.FixedPointRelaxation(20, None, None, noise=0.01)
    with warnings.catch_warnings(), pytest.raises(ValueError, match="noisy dynamics"):
        ep.gradient(
            model,
            x,
            y,
            estimator=ep.HolomorphicEP(0.4, 4, target_error=0.01),
            relaxation=noisy,
            key=jax.random.key(0),
        )
