"""Bad input gets an error that says what is wrong; runtime failures are reported in
`info` and raise under `throw=True`. Nothing becomes NaN or zero silently."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import eqx_eqprop as ep

from .helpers import problem

HEP = ep.HolomorphicEP(0.1, 4)


@pytest.fixture(scope="module")
def small():
    return problem(0, sizes=(6, 9, 7, 4), batch=4)


def test_wrong_input_shape(small):
    model, x, y = small
    with pytest.raises(ValueError, match=r"x must have shape \('batch', 6\)"):
        ep.gradient(model, x[:, :5], y, estimator=HEP)
    with pytest.raises(ValueError, match="add a batch axis"):
        ep.gradient(model, x[0], y, estimator=HEP)


def test_wrong_label_shape_or_dtype(small):
    model, x, y = small
    with pytest.raises(ValueError, match="one integer label per sample"):
        ep.gradient(model, x, y[:3], estimator=HEP)
    with pytest.raises(ValueError, match="one integer label per sample"):
        ep.gradient(model, x, jax.nn.one_hot(y, 4), estimator=HEP)
    with pytest.raises(TypeError, match="integer class labels"):
        ep.gradient(model, x, y.astype(jnp.float64), estimator=HEP)


def test_labels_out_of_range(small):
    model, x, y = small
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"labels y must lie in \[0, 4\)"):
        ep.gradient(model, x, y.at[0].set(4), estimator=HEP)
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"labels y must lie in \[0, 4\)"):
        ep.equilibrium_loss(model, x, y.at[1].set(-1))


def test_non_finite_inputs(small):
    model, x, y = small
    with pytest.raises(eqx.EquinoxRuntimeError, match="NaN or inf"):
        ep.gradient(model, x.at[1, 2].set(jnp.nan), y, estimator=HEP)
    with pytest.raises(eqx.EquinoxRuntimeError, match="NaN or inf"):
        ep.gradient(model, x.at[0, 0].set(jnp.inf), y, estimator=ep.ImplicitDifferentiation())


@pytest.mark.parametrize("make", [ep.ClassicEP, ep.SymmetricEP, lambda b: ep.HolomorphicEP(b, 4)])
def test_beta_zero_or_non_finite(make):
    with pytest.raises(ValueError, match="beta must be finite and non-zero"):
        make(0.0)
    with pytest.raises(ValueError, match="beta must be finite and non-zero"):
        make(float("nan"))
    with pytest.raises(TypeError, match="real scalar"):
        make(0.1j)


def test_holomorphic_beta_is_a_radius():
    with pytest.raises(ValueError, match="radius"):
        ep.HolomorphicEP(-0.1, 4)


@pytest.mark.parametrize("n", [0, -2, 2.5, True])
def test_num_phases_must_be_a_positive_integer(n):
    with pytest.raises(ValueError, match="num_phases must be a positive integer"):
        ep.HolomorphicEP(0.1, n)


def test_non_holomorphic_activation_is_refused_by_complex_phases():
    model, x, y = problem(0, sizes=(6, 9, 7, 4), batch=4, activation=ep.HardSigmoid())
    with pytest.raises(ValueError, match="holomorphic activation"):
        ep.gradient(model, x, y, estimator=HEP)
    # real-phase estimators are fine with it
    grads, _ = ep.gradient(model, x, y, estimator=ep.SymmetricEP(0.05, error_tolerance=None))
    assert bool(jnp.all(jnp.isfinite(grads.layers[0].weight)))


def test_wrong_strategy_types(small):
    model, x, y = small
    with pytest.raises(TypeError, match="estimator must be"):
        ep.gradient(model, x, y, estimator="hep")
    with pytest.raises(TypeError, match="relaxation must be"):
        ep.gradient(model, x, y, estimator=HEP, relaxation=200)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="at least one hidden layer"):
        ep.EnergyMLP((784, 10), key=jax.random.key(0))
    with pytest.raises(ValueError, match="real floating dtype"):
        ep.EnergyMLP((4, 5, 3), dtype=jnp.int32, key=jax.random.key(0))


def test_free_phase_not_converged_raises_or_reports(small):
    model, x, y = small
    short = ep.FixedPointRelaxation(max_steps=3, rtol=1e-10, atol=1e-10)
    for est in (HEP, ep.ImplicitDifferentiation(), ep.RecurrentBackprop()):
        with pytest.raises(eqx.EquinoxRuntimeError, match="reached `max_steps`"):
            ep.gradient(model, x, y, estimator=est, relaxation=short)
    with pytest.raises(eqx.EquinoxRuntimeError, match="reached `max_steps`"):
        ep.equilibrium_loss(model, x, y, relaxation=short)
    with pytest.warns(RuntimeWarning, match="reached `max_steps`"):
        grads, info = ep.gradient(model, x, y, estimator=HEP, relaxation=short, throw=False)
        jax.effects_barrier()
    assert info.result == ep.RESULTS.max_steps_reached
    assert bool(jnp.all(info.free_stats.result == ep.RESULTS.max_steps_reached))
    assert bool(jnp.all(info.free_stats.steps == 3))
    assert float(jnp.min(info.free_stats.residual)) > 1e-10


def test_diverging_complex_phase_raises_or_reports(small):
    model, x, y = small
    relaxation = ep.FixedPointRelaxation(max_steps=500, rtol=1e-10, atol=1e-10)
    big = ep.HolomorphicEP(100.0, 4)
    with pytest.raises(eqx.EquinoxRuntimeError, match="nudged phase did not converge"):
        ep.gradient(model, x, y, estimator=big, relaxation=relaxation)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = ep.gradient(model, x, y, estimator=big, relaxation=relaxation, throw=False)
        jax.effects_barrier()
    assert info.result == ep.RESULTS.nudged_phase_failed
    assert any("nudged phase did not converge" in str(w.message) for w in caught)
    failed = info.nudged_stats.result != ep.RESULTS.successful
    assert failed.shape == (3, 4)  # (unique phases, batch)
    assert bool(jnp.any(failed))
    assert bool(jnp.all(info.free_stats.result == ep.RESULTS.successful))


def test_blown_up_free_phase_is_diverged_not_nan(small):
    model, x, y = problem(6, sizes=(6, 9, 7, 4), scale=30.0, activation=ep.ReLU())
    relaxation = ep.FixedPointRelaxation(max_steps=400, rtol=1e-8, atol=1e-8)
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite states"):
        ep.gradient(model, x, y, estimator=ep.SymmetricEP(0.1), relaxation=relaxation)
