"""Activations and costs: values, and holomorphy where it is claimed."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eqx_eqprop as ep

HOLOMORPHIC = [
    ep.Sigmoid(),
    ep.Sigmoid(gain=1.0, center=0.0),
    ep.SmoothClip(),
    ep.SmoothClip(width=2.0, sharpness=3.0),
    ep.SiLU(),
]
POINTS = jnp.array([-1.3, -0.2, 0.1, 0.5, 0.9, 1.7, 2.6])


@pytest.mark.parametrize("act", HOLOMORPHIC, ids=lambda a: repr(a))
def test_complex_step_derivative_equals_real_derivative(act):
    # For a holomorphic f real on the real axis, Im f(x + i h) / h = f'(x) + O(h^2).
    h = 1e-20
    complex_step = jnp.imag(act(POINTS + 1j * h)) / h
    real_derivative = jax.vmap(jax.grad(act))(POINTS)
    np.testing.assert_allclose(complex_step, real_derivative, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("act", HOLOMORPHIC, ids=lambda a: repr(a))
def test_cauchy_riemann_off_the_real_axis(act):
    # df/dz is the same along the real and the imaginary direction.
    z = POINTS + 0.3j
    h = 1e-6
    along_real = (act(z + h) - act(z - h)) / (2 * h)
    along_imag = (act(z + 1j * h) - act(z - 1j * h)) / (2j * h)
    np.testing.assert_allclose(along_real, along_imag, rtol=1e-7, atol=1e-8)
    holomorphic_grad = jax.vmap(jax.grad(act, holomorphic=True))(z)
    np.testing.assert_allclose(holomorphic_grad, along_real, rtol=1e-7, atol=1e-8)


def test_activation_formulas():
    z = jnp.linspace(-3, 3, 13)
    np.testing.assert_allclose(ep.Sigmoid()(z), 1 / (1 + jnp.exp(-4 * z + 2)), rtol=1e-14)
    silu = jax.nn.silu
    np.testing.assert_allclose(
        ep.SmoothClip(width=2.0, sharpness=1.0)(z), (silu(z) - silu(z - 2)) / 2, atol=1e-14
    )
    # sharp SmoothClip approaches the hard clip it is named after
    np.testing.assert_allclose(
        ep.SmoothClip(width=2.0, sharpness=50.0)(z), ep.HardSigmoid()(z), atol=0.01
    )
    np.testing.assert_allclose(ep.SiLU()(z), silu(z), rtol=1e-14)
    np.testing.assert_allclose(ep.ReLU()(z), jnp.maximum(z, 0))


@pytest.mark.parametrize("act", [ep.HardSigmoid(), ep.ReLU()])
def test_non_holomorphic_activation_refuses_complex_states(act):
    assert not act.holomorphic
    with pytest.raises(TypeError, match="not holomorphic"):
        act(jnp.array([0.5 + 0.1j]))


def test_cross_entropy_matches_optax():
    logits = jax.random.normal(jax.random.key(0), (6, 10))
    labels = jnp.arange(6)
    ours = jax.vmap(ep.CrossEntropy())(logits, labels)
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    # large logits stay finite (the shift by the maximum)
    assert jnp.isfinite(ep.CrossEntropy()(jnp.array([1000.0, -1000.0, 3.0]), 1))


def test_squared_error_value():
    logits = jnp.array([0.2, 0.9, -0.1])
    np.testing.assert_allclose(
        ep.SquaredError()(logits, 1), 0.5 * (0.2**2 + 0.1**2 + 0.1**2), rtol=1e-14
    )


@pytest.mark.parametrize("cost", [ep.CrossEntropy(), ep.SquaredError()])
def test_costs_are_holomorphic(cost):
    logits = jax.random.normal(jax.random.key(1), (5,))
    direction = jax.random.normal(jax.random.key(2), (5,))
    h = 1e-20
    complex_step = jnp.imag(cost(logits + 1j * h * direction, 3)) / h
    directional = jax.grad(cost)(logits, 3) @ direction
    np.testing.assert_allclose(complex_step, directional, rtol=1e-12)
    z = logits + 0.2j * direction
    g = jax.grad(cost, holomorphic=True)(z, 3)
    eps = 1e-6
    fd = (cost(z + 1j * eps * direction, 3) - cost(z - 1j * eps * direction, 3)) / (2j * eps)
    np.testing.assert_allclose(g @ direction, fd, rtol=1e-8)
