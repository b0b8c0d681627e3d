"""Mixed precision: a bfloat16 free phase polished in float32 gives the float32 gradient;
without the polish its rounding would show in the estimate."""

import jax
import jax.numpy as jnp
import pytest

import eqx_eqprop as ep

from .helpers import problem, rel_error

F32 = ep.EvenOddRelaxation(max_steps=2000, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def setting():
    model, x, y = problem(0, sizes=(30, 40, 30, 5), batch=16, dtype=jnp.float32, scale=0.8)
    estimator = ep.HolomorphicEP(0.1, 4, error_tolerance=None)
    reference, _ = ep.gradient(model, x, y, estimator=estimator, relaxation=F32)
    return model, x, y, estimator, reference


def test_bfloat16_free_phase_gives_the_float32_gradient(setting):
    model, x, y, estimator, reference = setting
    mixed = ep.MixedPrecisionRelaxation(
        low=ep.EvenOddRelaxation(max_steps=60, rtol=1e-2, atol=1e-2),
        high=ep.EvenOddRelaxation(max_steps=200, rtol=1e-6, atol=1e-6),
        dtype="bfloat16",
    )
    grads, info = ep.gradient(
        model, x, y, estimator=estimator, relaxation=mixed, nudged_relaxation=F32
    )
    assert jax.tree.leaves(grads)[0].dtype == jnp.float32
    assert info.free_state[0].dtype == jnp.float32
    assert rel_error(grads, reference) <= 1e-3
    # the bfloat16 part did most of the work: the float32 polish needs few sweeps
    _, plain = ep.free_phase(model, x, F32)
    _, low_only = ep.free_phase(model, x, mixed.low)
    assert float(jnp.mean(info.free_stats.steps)) < float(jnp.mean(plain.steps)) + 30
    assert float(jnp.mean(low_only.steps)) > 2


def test_without_the_polish_the_rounding_shows(setting):
    # one-sided EP subtracts the free phase's signal, so the free state's rounding
    # shows in it divided by beta (with N >= 2 phases the free phase cancels out)
    model, x, y, _, _ = setting
    estimator = ep.ClassicEP(0.05)
    reference, _ = ep.gradient(model, x, y, estimator=estimator, relaxation=F32)
    unpolished = ep.MixedPrecisionRelaxation(
        high=ep.EvenOddRelaxation(max_steps=1, rtol=None, atol=None)
    )
    polished = ep.MixedPrecisionRelaxation(
        high=ep.EvenOddRelaxation(max_steps=200, rtol=1e-6, atol=1e-6)
    )
    errors = [
        rel_error(
            ep.gradient(
                model,
                x,
                y,
                estimator=estimator,
                relaxation=r,
                nudged_relaxation=F32,
                throw=False,
            )[0],
            reference,
        )
        for r in (unpolished, polished)
    ]
    assert errors[0] > 1e-2 and errors[1] < 1e-3, errors


def test_mixed_precision_refuses_complex_states(setting):
    model, x, y, _, _ = setting
    with pytest.raises(ValueError, match="real states only"):
        ep.gradient(
            model,
            x,
            y,
            estimator=ep.HolomorphicEP(0.1, 4),
            relaxation=F32,
            nudged_relaxation=ep.MixedPrecisionRelaxation(),
        )
    with pytest.raises(ValueError, match="dtype must be one of"):
        ep.MixedPrecisionRelaxation(dtype="float8")
