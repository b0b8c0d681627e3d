"""Vector-field networks and generalized EP (Laborieux & Zenke 2024): an energy network
written as a vector field gives the same equilibrium and gradients; with independent
feedback the true gradient still comes from implicit differentiation and recurrent
backprop, generalized hEP is biased, and the bias goes as the feedback turns towards
the transposed forward weights; the homeostasis estimate is |J - J^T|^2 / 2. float64."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import eqx_eqprop as ep
from eqx_eqprop.internal import vector_field_from_energy_mlp

from .helpers import TIGHT, implicit_gradient, problem, rel_error


def vf_problem(angle=90.0, graph="symmetric", sizes=(13, 17, 11, 5), seed=1):
    model = ep.VectorFieldNet(
        sizes,
        graph=graph,
        feedback_angle=angle,
        weight_scale=0.5,
        dtype=jnp.float64,
        key=jax.random.key(seed),
    )
    _, x, y = problem(0, sizes=(sizes[0], 4, sizes[-1]))
    return model, x, y


def test_an_energy_mlp_as_a_vector_field_has_the_same_equilibrium_and_gradients():
    mlp, x, y = problem(0)
    vf = vector_field_from_energy_mlp(mlp)
    assert ep.feedback_angles(vf) == {("out", 1): 0.0}
    s, _ = ep.free_phase(mlp, x, TIGHT)
    u, _ = ep.free_phase(vf, x, TIGHT)
    for a, b in zip(s, u):
        np.testing.assert_allclose(vf.activation(b), a, atol=1e-13)
    truth = implicit_gradient(vf, x, y)
    energy_truth = implicit_gradient(mlp, x, y)
    hep, _ = ep.gradient(mlp, x, y, estimator=ep.HolomorphicEP(0.1, 8), relaxation=TIGHT)
    forward, _ = ep.gradient(vf, x, y, estimator=ep.GeneralizedHEP(0.1, 0), relaxation=TIGHT)
    phases, info = ep.gradient(vf, x, y, estimator=ep.GeneralizedHEP(0.1, 8), relaxation=TIGHT)
    for g in (forward, phases):
        assert rel_error(g, truth) <= 1e-6
    assert float(info.error_estimate) <= 1e-6
    # the energy network's parameters are the forward connections and the readout; its
    # gradient is the vector-field gradient with each feedback gradient added (transposed)
    # to its forward partner's (W and B = W^T are one parameter there)
    combined_1 = truth.connections[1].weight + truth.connections[2].weight.T
    for energy_grad in (hep, energy_truth):
        np.testing.assert_allclose(
            energy_grad.layers[0].weight, truth.connections[0].weight, rtol=1e-6, atol=1e-12
        )
        np.testing.assert_allclose(energy_grad.layers[1].weight, combined_1, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(
            energy_grad.readout_layer.weight, truth.readout_layer.weight, rtol=1e-6, atol=1e-12
        )


@pytest.mark.parametrize("graph", ["symmetric", "loop"])
def test_true_gradient_with_independent_feedback(graph):
    sizes = (13, 17, 11, 5) if graph == "symmetric" else (13, 17, 11, 9, 5)
    model, x, y = vf_problem(90.0, graph, sizes)
    truth = implicit_gradient(model, x, y)
    rbp, _ = ep.gradient(
        model, x, y, estimator=ep.RecurrentBackprop(rtol=1e-14, atol=1e-14), relaxation=TIGHT
    )
    assert rel_error(rbp, truth) <= 1e-8
    gep, _ = ep.gradient(model, x, y, estimator=ep.GeneralizedHEP(0.1, 0), relaxation=TIGHT)
    assert rel_error(gep, truth) > 1e-3  # biased by the asymmetry


def test_the_bias_shrinks_as_the_feedback_turns_towards_the_transpose():
    errors = []
    for angle in (90.0, 45.0, 20.0, 5.0, 0.0):
        model, x, y = vf_problem(angle)
        truth = implicit_gradient(model, x, y)
        gep, _ = ep.gradient(model, x, y, estimator=ep.GeneralizedHEP(0.1, 0), relaxation=TIGHT)
        errors.append(rel_error(gep, truth))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-10 < 1e-3 < errors[0], errors


def test_homeostasis_estimate_matches_the_dense_jacobian():
    model, x, y = vf_problem(90.0, "loop", (6, 5, 4, 3, 3))
    s, _ = ep.free_phase(model, x[:1], TIGHT)
    activities = jax.vmap(model.activities)(s)
    xi, si = x[0], jax.tree.map(lambda v: v[0], activities)
    flat, unravel = ravel_pytree(si)
    drive = model.drive(xi)
    jac = jax.jacfwd(lambda v: ravel_pytree(model.activity_update(unravel(v), drive))[0] - v)(flat)
    exact = float(jnp.sum((jac - jac.T) ** 2) / 2)
    probes = 4000
    h = ep.JacobianHomeostasis(strength=1.0, num_probes=probes)
    estimate = float(h.loss(model, x[:1], activities, jax.random.key(0)))
    # |J e|^2 - e^T J^2 e = e^T A e with A = J^T J - (J^2 + J^2T)/2 symmetric: for
    # Gaussian e its variance is 2 |A|_F^2; the mean over the probes has std
    # sqrt(2 / probes) |A|_F
    a = jac.T @ jac - (jac @ jac + (jac @ jac).T) / 2
    std = float(np.sqrt(2 / probes) * jnp.linalg.norm(a))
    assert abs(estimate - exact) < 4 * std, (estimate, exact, std)
    assert exact > 10 * std  # the test can tell an asymmetric Jacobian from noise
    sym = float(jnp.linalg.norm((jac + jac.T) / 2))
    anti = float(jnp.linalg.norm((jac - jac.T) / 2))
    ratio = float(h.symmetry_ratio(model, x[:1], activities, jax.random.key(1)))
    assert abs(ratio - sym / (sym + anti)) < 0.02


def test_homeostasis_pulls_the_feedback_towards_the_transpose():
    model, x, y = vf_problem(90.0)
    estimator = ep.GeneralizedHEP(
        0.1, 0, homeostasis=ep.JacobianHomeostasis(strength=1.0, num_probes=16)
    )
    angles, ratios = [ep.feedback_angles(model)[("out", 1)]], []
    for _ in range(20):
        grads, info = ep.gradient(model, x, y, estimator=estimator, relaxation=TIGHT)
        model = eqx.apply_updates(model, jax.tree.map(lambda g: -0.05 * g, grads))
        angles.append(ep.feedback_angles(model)[("out", 1)])
        ratios.append(float(info.diagnostics["symmetry_ratio"]))
    assert angles[0] > 80 and angles[-1] < angles[0] - 30, angles
    assert ratios[-1] > ratios[0] + 0.05, ratios
    # symmetric feedback: nothing to remove, the homeostasis loss is zero
    mlp, x, y = problem(0)
    _, info = ep.gradient(
        vector_field_from_energy_mlp(mlp),
        x,
        y,
        estimator=ep.GeneralizedHEP(0.1, 0, homeostasis=ep.JacobianHomeostasis()),
        relaxation=TIGHT,
    )
    assert abs(float(info.diagnostics["homeostasis_loss"])) < 1e-12
    assert float(info.diagnostics["symmetry_ratio"]) == pytest.approx(1.0)


def test_reference_cosine_is_reported():
    model, x, y = vf_problem(90.0)
    est = ep.GeneralizedHEP(0.1, 4, reference=ep.RecurrentBackprop(rtol=1e-14, atol=1e-14))
    grads, info = ep.gradient(model, x, y, estimator=est, relaxation=TIGHT)
    truth = implicit_gradient(model, x, y)
    a, b = ravel_pytree(grads)[0], ravel_pytree(truth)[0]
    cos = float(a @ b / jnp.linalg.norm(a) / jnp.linalg.norm(b))
    assert float(info.diagnostics["reference_cosine"]) == pytest.approx(cos, abs=1e-8)
    assert set(info.metrics()) >= {"reference_cosine", "error_estimate", "nudged_steps"}


def test_vector_field_bad_input():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="unknown layer 7"):
        ep.VectorFieldNet((4, 5, 5, 3), graph=[("in", 1), (1, 7)], key=key)
    with pytest.raises(ValueError, match="layer 2 has no incoming edge"):
        ep.VectorFieldNet((4, 5, 5, 3), graph=[("in", 1), (2, 1)], key=key)
    with pytest.raises(ValueError, match=r"feedback_angle must be in \[0, 90\]"):
        ep.VectorFieldNet((4, 5, 5, 3), feedback_angle=120.0, key=key)
    with pytest.raises(ValueError, match="graph must be 'symmetric', 'loop'"):
        ep.VectorFieldNet((4, 5, 5, 3), graph="ring", key=key)
    feedforward = ep.VectorFieldNet(
        (4, 5, 5, 3), graph=[("in", 1), (1, "out")], dtype=jnp.float64, key=key
    )
    x, y = jnp.ones((2, 4)), jnp.array([0, 1])
    with pytest.raises(ValueError, match="EP needs feedback"):
        ep.gradient(feedforward, x, y, estimator=ep.GeneralizedHEP(0.1, 4))
    grads, _ = ep.gradient(feedforward, x, y, estimator=ep.ImplicitDifferentiation())
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    with pytest.raises(TypeError, match="has no energy"):
        ep.gradient(feedforward, x, y, estimator=ep.HolomorphicEP(0.1, 4))
    mlp, x, y = problem(0)
    with pytest.raises(TypeError, match="on it, generalized hEP is hEP"):
        ep.gradient(mlp, x, y, estimator=ep.GeneralizedHEP(0.1, 4))


def test_generalized_hep_under_jit_and_vmap_in_float32():
    model = ep.VectorFieldNet(
        (6, 9, 7, 4),
        feedback_angle=45.0,
        weight_scale=0.5,
        dtype=jnp.float32,
        key=jax.random.key(0),
    )
    x = jax.random.uniform(jax.random.key(1), (3, 4, 6))
    y = jnp.arange(12).reshape(3, 4) % 4
    relaxation = ep.EvenOddRelaxation(max_steps=500, rtol=1e-5, atol=1e-5)
    est = ep.GeneralizedHEP(0.1, 4)
    batched = jax.vmap(
        lambda x, y: ep.gradient(model, x, y, estimator=est, relaxation=relaxation)[0]
    )(x, y)
    single = ep.gradient(model, x[1], y[1], estimator=est, relaxation=relaxation)[0]
    for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
        assert a.dtype == jnp.float32 and a.shape[0] == 3
        np.testing.assert_allclose(a[1], b, rtol=1e-4, atol=1e-6)


CONV_SIZES = {
    "conv-conv": ((6, 6, 1), (6, 6, 2), (6, 6, 2), 3),
    "conv-dense": ((6, 6, 1), (6, 6, 2), 5, 3),
}


def conv_vf_problem(angle, layout):
    model = ep.VectorFieldNet(
        CONV_SIZES[layout],
        feedback_angle=angle,
        weight_scale=0.5,
        dtype=jnp.float64,
        key=jax.random.key(2),
    )
    x = jax.random.uniform(jax.random.key(3), (4, 6, 6, 1), jnp.float64)
    y = jnp.arange(4) % 3
    return model, x, y


def test_transposed_convolution_is_the_adjoint():
    conv = ep.Conv2d(3, 4, 3, use_bias=False, dtype=jnp.float64, key=jax.random.key(0))
    u = jax.random.normal(jax.random.key(1), (5, 6, 3), jnp.float64)
    v = jax.random.normal(jax.random.key(2), (5, 6, 4), jnp.float64)
    from eqx_eqprop.internal import transposed_weight

    back = ep.Conv2d(4, 3, 3, dtype=jnp.float64, key=jax.random.key(3))
    back = eqx.tree_at(lambda c: c.weight, back, transposed_weight(conv))
    np.testing.assert_allclose(jnp.vdot(conv.linear(u), v), jnp.vdot(u, back.linear(v)), rtol=1e-12)


@pytest.mark.parametrize("layout", list(CONV_SIZES))
def test_convolutional_connections(layout):
    # symmetric feedback (angle 0) makes J symmetric: generalized hEP is exact; with
    # independent feedback (90) the references still agree and generalized hEP does not
    model, x, y = conv_vf_problem(0.0, layout)
    assert model.input_shape == (6, 6, 1)
    assert all(abs(a) < 1e-5 for a in ep.feedback_angles(model).values())
    truth = implicit_gradient(model, x, y)
    for est in (ep.GeneralizedHEP(0.05, 0), ep.GeneralizedHEP(0.05, 6)):
        g, _ = ep.gradient(model, x, y, estimator=est, relaxation=TIGHT)
        assert rel_error(g, truth) <= 1e-6
    model, x, y = conv_vf_problem(90.0, layout)
    assert all(a > 45 for a in ep.feedback_angles(model).values())
    truth = implicit_gradient(model, x, y)
    rbp, _ = ep.gradient(
        model, x, y, estimator=ep.RecurrentBackprop(rtol=1e-14, atol=1e-14), relaxation=TIGHT
    )
    assert rel_error(rbp, truth) <= 1e-8
    gep, _ = ep.gradient(model, x, y, estimator=ep.GeneralizedHEP(0.05, 0), relaxation=TIGHT)
    assert rel_error(gep, truth) > 1e-3


def test_convolutional_layers_bad_input():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ep.VectorFieldNet(((6, 6, 1), (6, 6, 2), 3), kernel_size=2, key=key)
    with pytest.raises(ValueError, match=r"int \(units\) or \(height, width, channels\)"):
        ep.VectorFieldNet(((6, 6, 1), (6, 6), 3), key=key)
    with pytest.raises(ValueError, match="classes must be an int"):
        ep.VectorFieldNet(((6, 6, 1), (6, 6, 2), (1, 1, 3)), key=key)
