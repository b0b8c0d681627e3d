"""Noisy discrete dynamics: Gaussian noise inside the activation, reproducible from a
key, independent per sample and phase."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_eqprop as ep

from .helpers import flat, problem

NOISY = ep.FixedPointRelaxation(max_steps=60, rtol=None, atol=None, noise=0.04)


def test_noise_is_reproducible_and_per_sample():
    model, x, y = problem(0, sizes=(6, 9, 7, 4), batch=4)
    x = x.at[1].set(x[0])  # two identical samples
    y = y.at[1].set(y[0])
    est = ep.HolomorphicEP(0.4, 4)
    g1, info1 = ep.gradient(model, x, y, estimator=est, relaxation=NOISY, key=jax.random.key(0))
    g2, _ = ep.gradient(model, x, y, estimator=est, relaxation=NOISY, key=jax.random.key(0))
    g3, _ = ep.gradient(model, x, y, estimator=est, relaxation=NOISY, key=jax.random.key(1))
    np.testing.assert_array_equal(flat(g1), flat(g2))
    assert float(jnp.max(jnp.abs(flat(g1) - flat(g3)))) > 1e-4
    # identical samples see different noise
    s = info1.free_state[0]
    assert float(jnp.max(jnp.abs(s[0] - s[1]))) > 1e-3
    # and so do the phases: each nudged state differs from the noise-free one by noise
    assert info1.nudged_state[0].shape == (3, 4, 9)


def test_noise_level_sets_the_spread_of_the_free_state():
    model, x, y = problem(0, sizes=(6, 9, 7, 4), batch=4)
    est = ep.ClassicEP(0.1)
    _, ref = ep.gradient(
        model, x, y, estimator=est, relaxation=ep.FixedPointRelaxation(60, None, None)
    )
    spreads = []
    for noise in (0.01, 0.04):
        rel = ep.FixedPointRelaxation(60, None, None, noise=noise)
        _, info = ep.gradient(model, x, y, estimator=est, relaxation=rel, key=jax.random.key(2))
        spreads.append(float(jnp.std(info.free_state[0] - ref.free_state[0])))
    # the deviation from the noise-free state scales with the noise std
    assert 2.5 < spreads[1] / spreads[0] < 5.5


def test_noisy_relaxation_needs_a_key_and_fixed_steps():
    model, x, y = problem(0, sizes=(6, 9, 7, 4), batch=4)
    with pytest.raises(ValueError, match="pass key="):
        ep.gradient(model, x, y, estimator=ep.ClassicEP(0.1), relaxation=NOISY)
    with pytest.raises(ValueError, match="fixed step count"):
        ep.FixedPointRelaxation(max_steps=60, rtol=1e-6, atol=1e-6, noise=0.04)
    with pytest.raises(ValueError, match="deterministic equilibrium"):
        ep.gradient(
            model,
            x,
            y,
            estimator=ep.ImplicitDifferentiation(),
            relaxation=NOISY,
            key=jax.random.key(0),
        )
