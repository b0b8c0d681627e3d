"""Convolutional energy networks: exact hEP with softmax pooling and a holomorphic
activation, the EP error orders, the reference gradients, pooling, and bad input.
float64 unless said."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
import pytest

import eqx_eqprop as ep

from .helpers import TIGHT, TIGHT_ODE, conv_problem, fit_slope, implicit_gradient, rel_error


@pytest.fixture(scope="module")
def reference():
    model, x, y = conv_problem(0)
    return model, x, y, implicit_gradient(model, x, y)


def test_holomorphic_ep_is_exact_on_a_conv_net(reference):
    model, x, y, truth = reference
    _, info = ep.gradient(model, x, y, estimator=ep.ImplicitDifferentiation(), relaxation=TIGHT)
    radius = float(jnp.max(ep.update_spectral_radius(model, x, info.free_state)))
    assert radius < 0.8, radius
    grads, info = ep.gradient(
        model, x, y, estimator=ep.HolomorphicEP(beta=0.05, num_phases=6), relaxation=TIGHT
    )
    assert rel_error(grads, truth) <= 1e-6
    assert float(info.error_estimate) <= 1e-5


@pytest.mark.parametrize(
    "make,exponents,order",
    [
        (lambda b: ep.ClassicEP(b), range(5, 10), 1),
        (lambda b: ep.SymmetricEP(b, error_tolerance=None), range(3, 8), 2),
        (lambda b: ep.HolomorphicEP(b, 3, error_tolerance=None), range(1, 5), 3),
    ],
    ids=["classic", "symmetric", "holomorphic N=3"],
)
def test_error_orders_on_a_conv_net(reference, make, exponents, order):
    model, x, y, truth = reference
    betas = [2.0**-k for k in exponents]
    step = jax.jit(lambda est: ep.gradient(model, x, y, estimator=est, relaxation=TIGHT)[0])
    errors = [rel_error(step(make(b)), truth) for b in betas]
    assert min(errors) > 1e-10, errors
    slope = fit_slope(betas, errors)
    assert abs(slope - order) <= 0.3, (slope, errors)


def test_references_agree_on_a_conv_net(reference):
    model, x, y, truth = reference
    bptt, _ = ep.gradient(model, x, y, estimator=ep.BPTT(num_steps=200), relaxation=TIGHT)
    rbp, _ = ep.gradient(
        model, x, y, estimator=ep.RecurrentBackprop(rtol=1e-14, atol=1e-14), relaxation=TIGHT
    )
    ode = implicit_gradient(model, x, y, relaxation=TIGHT_ODE)
    assert rel_error(bptt, truth) <= 1e-8
    assert rel_error(rbp, truth) <= 1e-8
    assert rel_error(ode, truth) <= 1e-8


def test_even_odd_on_a_conv_net(reference):
    model, x, y, truth = reference
    relaxation = ep.EvenOddRelaxation(max_steps=3000, rtol=1e-14, atol=1e-14)
    grads, _ = ep.gradient(model, x, y, estimator=ep.HolomorphicEP(0.05, 6), relaxation=relaxation)
    assert rel_error(grads, truth) <= 1e-6


def test_vgg4_and_a_small_mnist_net_are_expressible():
    vgg = ep.EnergyConvNet(
        (32, 32, 3),
        (128, 256, 512, 512),
        10,
        paddings=("SAME", "SAME", "SAME", "VALID"),
        dtype=jnp.float32,
        key=jax.random.key(0),
    )
    assert vgg.state_shapes == ((16, 16, 128), (8, 8, 256), (4, 4, 512), (1, 1, 512))
    assert vgg.readout_layer.weight.shape == (10, 512)
    small = ep.EnergyConvNet(
        (28, 28, 1), (16, 32), 10, kernel_sizes=5, dtype=jnp.float32, key=jax.random.key(0)
    )
    assert small.state_shapes == ((14, 14, 16), (7, 7, 32))
    assert set(jax.tree.leaves(small.param_groups())) == {"layer0", "layer1", "readout"}


def test_pooling_values_and_holomorphy():
    v = jax.random.normal(jax.random.key(0), (4, 6, 3), jnp.float64)
    windows = v.reshape(2, 2, 3, 2, 3).transpose(0, 2, 4, 1, 3).reshape(2, 3, 3, 4)
    np.testing.assert_allclose(ep.MaxPool()(v), windows.max(-1))
    np.testing.assert_allclose(ep.AvgPool()(v), windows.mean(-1), rtol=1e-14)
    np.testing.assert_allclose(ep.SoftmaxPool(1e-3)(v), windows.max(-1), atol=1e-6)
    np.testing.assert_allclose(ep.SoftmaxPool(1e4)(v), windows.mean(-1), atol=1e-3)
    soft = ep.SoftmaxPool(0.7)
    weights = jax.nn.softmax(windows / 0.7, axis=-1)
    np.testing.assert_allclose(soft(v), jnp.sum(weights * windows, -1), rtol=1e-13)
    # holomorphic: the complex step gives the real directional derivative
    d = jax.random.normal(jax.random.key(1), v.shape, jnp.float64)
    for pool in (soft, ep.AvgPool()):
        h = 1e-20
        step = jnp.imag(pool(v + 1j * h * d)) / h
        exact = jax.jvp(pool, (v,), (d,))[1]
        np.testing.assert_allclose(step, exact, rtol=1e-10, atol=1e-12)
    assert not ep.MaxPool.holomorphic and ep.SoftmaxPool.holomorphic


def test_conv_bad_input():
    model, x, y = conv_problem(0)
    nchw = jnp.transpose(x, (0, 3, 1, 2))
    with pytest.raises(ValueError, match="NCHW"):
        ep.gradient(model, nchw, y, estimator=ep.HolomorphicEP(0.05, 4))
    with pytest.raises(ValueError, match="layer 1: a VALID 3x3 convolution"):
        ep.EnergyConvNet((6, 6, 1), (4, 4), 3, paddings="VALID", key=jax.random.key(0))
    with pytest.raises(
        ValueError, match=r"layer 3: MaxPool\(window=2\) cannot pool the 1x1 output"
    ):
        ep.EnergyConvNet((8, 8, 1), (2, 2, 2, 2), 3, key=jax.random.key(0))
    maxpool, x, y = conv_problem(0, pooling=ep.MaxPool())
    with pytest.raises(ValueError, match=r"pools\[0\] \(MaxPool\).*SoftmaxPool"):
        ep.gradient(maxpool, x, y, estimator=ep.HolomorphicEP(0.05, 4))
    # real phases are fine with max pooling
    grads, _ = ep.gradient(
        maxpool, x, y, estimator=ep.HolomorphicEP(0.05, 2, error_tolerance=None), relaxation=TIGHT
    )
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_float32_conv_net_cosine():
    model, x, y = conv_problem(0, dtype=jnp.float32)
    as64 = jax.tree.map(lambda v: v.astype(jnp.float64) if eqx.is_inexact_array(v) else v, model)
    truth = implicit_gradient(as64, x.astype(jnp.float64), y)
    relaxation = ep.FixedPointRelaxation(max_steps=2000, rtol=1e-6, atol=1e-6)
    grads, _ = ep.gradient(model, x, y, estimator=ep.HolomorphicEP(0.1, 6), relaxation=relaxation)
    assert jax.tree.leaves(grads)[0].dtype == jnp.float32
    a = jnp.concatenate([g.ravel() for g in jax.tree.leaves(grads)]).astype(jnp.float64)
    b = jnp.concatenate([g.ravel() for g in jax.tree.leaves(truth)])
    assert float(a @ b / jnp.linalg.norm(a) / jnp.linalg.norm(b)) >= 0.9999


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("kernel", [2, 3, 5])
def test_patch_convolution_equals_the_lax_convolution(padding, kernel, monkeypatch):
    # the CPU path (a matmul of shifted views) against XLA's convolution: real and complex
    # inputs, under vmap, and the transposed map (the VJP that the energy's update uses)
    from eqx_eqprop import _layers

    conv = ep.Conv2d(3, 4, kernel, padding=padding, dtype=jnp.float64, key=jax.random.key(0))
    v = jax.random.normal(jax.random.key(1), (2, 9, 7, 3), jnp.float64)
    v = v + 1j * jax.random.normal(jax.random.key(2), v.shape, jnp.float64)
    outs = {}
    for method in ("patches", "lax"):
        monkeypatch.setattr(_layers, "_CONV_METHOD", method)
        out, vjp = jax.vjp(jax.vmap(conv), v)
        outs[method] = (out, vjp(jnp.ones_like(out) * (1 - 2j))[0])
    for a, b in zip(outs["patches"], outs["lax"]):
        assert a.shape == b.shape and a.dtype == jnp.complex128
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_a_dense_implicit_adjoint_too_large_for_memory_is_refused():
    # lineax's default solver materialises each sample's (n, n) state Jacobian: for a
    # 16-32 MNIST conv net n = 4704, 5.7 GB at batch 64 (it ran out of memory before
    # this check existed); a matrix-free adjoint is accepted
    model = ep.EnergyConvNet((28, 28, 1), (16, 32), 10, dtype=jnp.float32, key=jax.random.key(0))
    x, y = jnp.zeros((64, 28, 28, 1), jnp.float32), jnp.zeros(64, int)
    with pytest.raises(ValueError, match=r"4704 x 4704 for 64 samples is 5\.3 GiB.*GMRES"):
        ep.gradient(model, x, y, estimator=ep.ImplicitDifferentiation())
    from eqx_eqprop.internal import check_adjoint_fits

    gmres = ep.EvenOddRelaxation(adjoint=optx.ImplicitAdjoint(lx.GMRES(1e-5, 1e-5)))
    check_adjoint_fits(gmres, model, 64)
    check_adjoint_fits(ep.EvenOddRelaxation(), model, 2)  # 177 MB: dense is fine
    normal_cg = optx.ImplicitAdjoint(lx.Normal(lx.CG(1e-5, 1e-5)))
    check_adjoint_fits(ep.EvenOddRelaxation(adjoint=normal_cg), model, 64)


@pytest.mark.parametrize("preset", ["cifar10-bp", "cifar100-bp", "imagenet32-bp"])
def test_conv_bp_presets_use_a_matrix_free_adjoint(preset):
    from eqx_eqprop.internal import build_model, build_relaxations, check_adjoint_fits

    cfg = ep.get_preset(preset)
    classes = {"cifar10": 10, "cifar100": 100, "imagenet32": 1000}[cfg.get("data.kind")]
    model = build_model(cfg, (32, 32, 3), classes)
    free, _ = build_relaxations(cfg)
    check_adjoint_fits(free, model, cfg.get("data.batch_size"))
