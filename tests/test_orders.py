"""The order of the bias of each EP estimator, fitted over beta = 2^-k (log-log slope):
one-sided O(beta), symmetric O(beta^2), N-phase holomorphic O(beta^N). A slope test
catches sign, scale and half-nudge bugs that a single tolerance lets through."""

import jax
import numpy as np
import pytest

import eqx_eqprop as ep

from .helpers import TIGHT, fit_slope, implicit_gradient, problem, rel_error

CASES = [
    # (name, estimator factory, exponents k of beta = 2^-k, expected slope)
    ("classic", lambda b: ep.ClassicEP(b), range(4, 10), 1),
    ("symmetric", lambda b: ep.SymmetricEP(b, error_tolerance=None), range(3, 8), 2),
    ("holomorphic N=2", lambda b: ep.HolomorphicEP(b, 2, error_tolerance=None), range(3, 8), 2),
    ("holomorphic N=3", lambda b: ep.HolomorphicEP(b, 3, error_tolerance=None), range(1, 6), 3),
    ("holomorphic N=4", lambda b: ep.HolomorphicEP(b, 4, error_tolerance=None), range(1, 6), 4),
]


@pytest.fixture(scope="module")
def reference():
    model, x, y = problem(0)
    return model, x, y, implicit_gradient(model, x, y)


@pytest.mark.parametrize("name,make,exponents,order", CASES, ids=[c[0] for c in CASES])
def test_error_order(reference, name, make, exponents, order):
    model, x, y, truth = reference
    betas = [2.0**-k for k in exponents]
    step = jax.jit(lambda est: ep.gradient(model, x, y, estimator=est, relaxation=TIGHT)[0])
    errors = [rel_error(step(make(b)), truth) for b in betas]
    # stay above the round-off floor of the float64 relaxation (tolerance 1e-14 / beta)
    assert min(errors) > 1e-10, errors
    slope = fit_slope(betas, errors)
    assert abs(slope - order) <= 0.3, f"{name}: slope {slope:.2f}, errors {np.array(errors)}"
