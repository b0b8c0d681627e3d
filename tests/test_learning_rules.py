"""Learning rules that clamp the outputs: contrastive Hebbian learning and coupled
learning. What theory says of each is checked against `jax.grad` and linear algebra:

- `ContrastiveLearning` is the gradient of the contrastive objective
  `J = E(s_clamped*) - E(s_free*)`, differentiated through both equilibria by the
  implicit function theorem (the envelope theorem makes the equilibria's own motion
  drop out, which holds only for the energy that includes the activations' term);
- `CoupledLearning(eta)` tends, at first order in `eta`, to the learning signal's
  derivative along the equilibrium's linear response to the prescribed output
  displacement, which is the EP direction of a Schur-complement cost, not `dL/dtheta`.

Both on every energy network kind and relaxation, under jit and vmap, in float32 and
float64, with the errors a user meets when a rule does not apply."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from jax.scipy.special import xlogy

import eqx_eqprop as ep
from eqx_eqprop.internal import clamped_relax, load_digits, tree_astype, tree_norm

from .helpers import TIGHT, conv_problem, cosine, fit_slope, implicit_gradient, problem, rel_error

COST = ep.SquaredError()
SIGMOID = ep.Sigmoid()  # 1 / (1 + exp(-4 (z - 0.5)))


def mlp(**kw):
    return problem(sizes=(7, 6, 5, 3), batch=5, output_units=True, **kw)


def conv(**kw):
    return conv_problem(batch=3, output_units=True, **kw)


def estimate(model, x, y, estimator, relaxation=TIGHT, **kw):
    return ep.gradient(model, x, y, estimator=estimator, relaxation=relaxation, cost=COST, **kw)


def activation_term(s):
    """`sum G(s)`, `G' = sigma^{-1}` for the sigmoid of gain a and centre c:
    `G(v) = c v + (v log v + (1 - v) log(1 - v)) / a`."""
    a, c = SIGMOID.gain, SIGMOID.center
    return sum(jnp.sum(c * v + (xlogy(v, v) + xlogy(1 - v, 1 - v)) / a) for v in s)


def contrastive_objective(model, x, y, with_activation_term=True):
    """`J = mean(E(s_clamped*) - E(s_free*))`, both equilibria differentiable by the
    implicit function theorem (the relaxation's adjoint). The clamped outputs are
    constants (at 0 and 1 the activation term's slope is infinite; it never enters)."""
    s_free, _ = ep.free_phase(model, x, TIGHT)
    outputs = jax.vmap(lambda yi: COST.target(yi, model.num_classes, model.dtype))(y)
    drives = jax.vmap(model.drive)(x)
    s_clamped, _ = clamped_relax(model, drives, jax.lax.stop_gradient(s_free), outputs, TIGHT)
    k = model.output_layer
    s_clamped = (*s_clamped[:k], jax.lax.stop_gradient(s_clamped[k]))

    def energy(xi, si):
        e = model.energy(xi, si, None)
        return e + activation_term(si) if with_activation_term else e

    return jnp.mean(jax.vmap(energy)(x, s_clamped) - jax.vmap(energy)(x, s_free))


# the conv variants run with the long tests (`-m slow`): the default suite keeps its 12 minutes
CONV_SLOW = pytest.param(conv, id="conv", marks=pytest.mark.slow)


@pytest.mark.parametrize("make", [pytest.param(mlp, id="mlp"), CONV_SLOW])
def test_contrastive_learning_is_the_gradient_of_the_contrastive_objective(make):
    model, x, y = make(activation=SIGMOID)
    g, info = estimate(model, x, y, ep.ContrastiveLearning())
    truth = eqx.filter_grad(contrastive_objective)(model, x, y)
    assert rel_error(g, truth) < 1e-9
    # the test can fail: without the activations' term the energy is not stationary at
    # the equilibria, their motion does not drop out, and the gradients differ
    partial = eqx.filter_grad(lambda m: contrastive_objective(m, x, y, False))(model)
    assert rel_error(partial, truth) > 1e-2
    # the clamped phase holds the outputs at the one-hot target, exactly
    np.testing.assert_array_equal(info.clamped_state[-1], jax.nn.one_hot(y, 3))
    assert float(contrastive_objective(model, x, y)) > 0  # free phase: a lower energy


def response_limit(model, x, y, s_free):
    """`d2E/(dtheta ds) [v]`, `v = ((I - J_hh)^{-1} J_ho D, D)` per sample, `D` the
    displacement of the outputs towards the target, `J` the update's Jacobian at the
    free equilibrium: coupled learning's limit as `eta -> 0` (its docstring)."""
    k = model.num_classes

    def direction(xi, si, yi):
        flat, unravel = ravel_pytree(si)
        dynamics = ep.Dynamics(model, model.drive(xi))
        jac = jax.jacfwd(lambda f: ravel_pytree(dynamics(unravel(f)))[0])(flat)
        n = flat.size - k
        d = COST.target(yi, k, flat.dtype) - si[-1]
        vh = jnp.linalg.solve(jnp.eye(n) - jac[:n, :n], jac[:n, n:] @ d)
        return unravel(jnp.concatenate([vh, d]))

    v = jax.vmap(direction)(x, s_free, y)
    return jax.jvp(lambda s: model.learning_signal(x, s, None), (s_free,), (v,))[1]


@pytest.mark.parametrize("make", [pytest.param(mlp, id="mlp"), CONV_SLOW])
def test_coupled_learning_tends_to_the_linear_response_at_first_order(make):
    model, x, y = make()
    etas = [0.2, 0.1, 0.05, 0.025]
    grads = [estimate(model, x, y, ep.CoupledLearning(eta))[0] for eta in etas]
    s_free = ep.free_phase(model, x, TIGHT)[0]
    limit = response_limit(model, x, y, s_free)
    errors = [rel_error(g, limit) for g in grads]
    assert 0.9 < fit_slope(etas, errors) < 1.1, errors
    assert errors[-1] < 2e-2
    # eta = 1 is contrastive learning
    one = estimate(model, x, y, ep.CoupledLearning(1.0))[0]
    assert rel_error(one, estimate(model, x, y, ep.ContrastiveLearning())[0]) < 1e-12
    # and the limit is not the gradient of the loss (EP's): a different direction
    truth = implicit_gradient(model, x, y, cost=COST)
    assert cosine(limit, truth) < 0.999
    assert rel_error(limit, truth) > 0.05


def test_the_limit_is_the_ep_direction_of_a_schur_complement_cost():
    """`v = H^{-1} (0, S D)`, `S = H_oo - H_oh H_hh^{-1} H_ho`, with `H` the Hessian of
    the energy with the activations' term at the free equilibrium, while EP's response
    to the squared error is `H^{-1} (0, D)`."""
    model, x, y = mlp(activation=SIGMOID)
    s_free = ep.free_phase(model, x, TIGHT)[0]
    xi, si, yi = x[0], jax.tree_util.tree_map(lambda v: v[0], s_free), y[0]
    flat, unravel = ravel_pytree(si)
    k, n = 3, flat.size - 3
    hess = jax.hessian(lambda f: model.energy(xi, unravel(f), None) + activation_term(unravel(f)))(
        flat
    )
    d = COST.target(yi, k, flat.dtype) - si[-1]
    schur = hess[n:, n:] - hess[n:, :n] @ jnp.linalg.solve(hess[:n, :n], hess[:n, n:])
    v = jnp.linalg.solve(hess, jnp.concatenate([jnp.zeros(n), schur @ d]))
    dynamics = ep.Dynamics(model, model.drive(xi))
    jac = jax.jacfwd(lambda f: ravel_pytree(dynamics(unravel(f)))[0])(flat)
    vh = jnp.linalg.solve(jnp.eye(n) - jac[:n, :n], jac[:n, n:] @ d)
    np.testing.assert_allclose(v, jnp.concatenate([vh, d]), rtol=1e-9, atol=1e-12)
    # EP's own response to the cost moves the outputs by H^{-1}: not by D
    ep_response = jnp.linalg.solve(hess, jnp.concatenate([jnp.zeros(n), d]))
    assert float(jnp.linalg.norm(ep_response[n:] - d)) > 0.1 * float(jnp.linalg.norm(d))


RELAXATIONS = {
    "fixed_point": ep.FixedPointRelaxation(max_steps=3000, rtol=1e-12, atol=1e-12),
    "even_odd": ep.EvenOddRelaxation(max_steps=3000, rtol=1e-12, atol=1e-12),
    "anderson": ep.AndersonRelaxation(max_steps=500, rtol=1e-12, atol=1e-12),
    "mixed_precision": ep.MixedPrecisionRelaxation(
        high=ep.EvenOddRelaxation(max_steps=3000, rtol=1e-12, atol=1e-12)
    ),
    # an explicit solver's step-size controller hovers at its stability limit near the
    # steady state of the MLP with output units (residual stuck at ~2 x tol): a stiff one
    "ode": ep.ODERelaxation(rtol=1e-10, atol=1e-10, max_steps=20000, solver=diffrax.Kvaerno5()),
}


# contrastive learning is coupled learning at eta = 1 (the same code path), so the conv
# net runs the slower matrix for coupled learning only
@pytest.mark.parametrize(
    "make, rule",
    [
        pytest.param(mlp, ep.ContrastiveLearning(), id="mlp-contrastive"),
        pytest.param(mlp, ep.CoupledLearning(0.3), id="mlp-coupled"),
        pytest.param(conv, ep.CoupledLearning(0.3), id="conv-coupled", marks=pytest.mark.slow),
    ],
)
def test_every_relaxation_reaches_the_same_estimate_and_holds_the_outputs(make, rule):
    model, x, y = make()
    reference, _ = estimate(model, x, y, rule)
    target = jax.nn.one_hot(y, 3)

    def held(info):  # where the outputs are held, from the free outputs of the estimate
        if isinstance(rule, ep.ContrastiveLearning):
            return target
        return info.free_state[-1] + 0.3 * (target - info.free_state[-1])

    for name, relaxation in RELAXATIONS.items():
        g, info = estimate(model, x, y, rule, relaxation=relaxation)
        assert rel_error(g, reference) < 1e-6, name
        np.testing.assert_allclose(info.clamped_state[-1], held(info), rtol=0, atol=1e-14)
        assert info.converged() and info.metrics()["clamped_steps"] > 0
    # noisy dynamics: the clamp holds, the estimate stays finite and close
    noisy = ep.SDERelaxation(noise=1e-4, dt=0.1, duration=30.0)
    g, info = estimate(model, x, y, rule, relaxation=noisy, key=jax.random.key(3), throw=False)
    assert np.isfinite(tree_norm(g)) and cosine(g, reference) > 0.9
    np.testing.assert_array_equal(info.clamped_state[-1], held(info))


@pytest.mark.parametrize("make", [pytest.param(mlp, id="mlp"), CONV_SLOW])
def test_float32_under_jit_and_vmap(make):
    model64, x, y = make()
    model, x32 = tree_astype(model64, jnp.float32), x.astype(jnp.float32)
    relaxation = ep.EvenOddRelaxation(max_steps=500, rtol=1e-6, atol=1e-6)
    etas = jnp.array([0.1, 0.5, 1.0], jnp.float32)

    @jax.jit
    def sweep(etas):
        def one(eta):
            return ep.gradient(
                model,
                x32,
                y,
                estimator=ep.CoupledLearning(eta),
                relaxation=relaxation,
                cost=COST,
                throw=False,
            )[0]

        return jax.vmap(one)(etas)

    grads = sweep(etas)
    for i, eta in enumerate([0.1, 0.5, 1.0]):
        g = jax.tree_util.tree_map(lambda v: v[i], grads)
        assert jax.tree_util.tree_leaves(g)[0].dtype == jnp.float32
        exact = estimate(model64, x, y, ep.CoupledLearning(eta))[0]
        assert rel_error(g, exact) < 1e-3, eta


def test_rules_that_do_not_apply_say_what_to_do():
    model, x, y = problem(sizes=(7, 6, 3), batch=4)  # the readout lives in the cost
    with pytest.raises(ValueError, match="output_units=True"):
        estimate(model, x, y, ep.ContrastiveLearning())
    with_outputs, x, y = mlp()
    with pytest.raises(ValueError, match="CrossEntropy has none.*SquaredError"):
        ep.gradient(with_outputs, x, y, estimator=ep.CoupledLearning(0.5))
    vf = ep.VectorFieldNet((7, 6, 3), key=jax.random.key(0))
    with pytest.raises(TypeError, match="CoupledLearning samples the local learning signal"):
        ep.gradient(vf, x.astype(vf.dtype), y, estimator=ep.CoupledLearning(0.5), cost=COST)
    for eta in (0.0, -0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match=r"CoupledLearning: eta must be in \(0, 1\]"):
            ep.CoupledLearning(eta)
    with pytest.raises(ValueError, match="output_units must be true or false"):
        ep.EnergyMLP((4, 3, 2), output_units=1, key=jax.random.key(0))


def test_output_units_keep_the_parameters_and_make_a_layer():
    plain, x, y = problem(sizes=(7, 6, 5, 3), batch=5)
    with_outputs, _, _ = mlp()
    for a, b in zip(*(jax.tree_util.tree_leaves(m) for m in (plain, with_outputs)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert with_outputs.num_layers == 3 and with_outputs.output_layer == 2
    assert plain.output_layer is None
    s = ep.free_phase(with_outputs, x, TIGHT)[0]
    np.testing.assert_allclose(jax.vmap(with_outputs.readout)(s), s[-1])
    # outputs are sigmoid units driven by the readout coupling of the last hidden layer
    expected = SIGMOID(jax.vmap(with_outputs.readout_layer)(s[-2]))
    np.testing.assert_allclose(s[-1], expected, rtol=1e-10)
    # hEP on a network with output units: the exact gradient, as on any energy network
    g, _ = estimate(with_outputs, x, y, ep.HolomorphicEP(0.05, num_phases=6))
    assert rel_error(g, implicit_gradient(with_outputs, x, y, cost=COST)) < 1e-6
    conv_model = conv()[0]
    assert conv_model.output_layer == 2 and conv_model.init_state()[-1].shape == (3,)


@pytest.mark.parametrize("kind", ["contrastive", "coupled"])
def test_each_rule_trains_from_a_configuration(tmp_path, kind):
    cfg = ep.get_preset("digits-hep").update(
        {
            "name": kind,
            "cost": "squared_error",
            "model.output_units": True,
            "estimator": {"kind": kind, **({"eta": 0.5} if kind == "coupled" else {})},
            "optimizer": {"kind": "adam", "lr": 3e-3},
            "loop.epochs": 2,
            "loop.out_dir": str(tmp_path / "{name}"),
        }
    )
    history = ep.train(cfg, data=load_digits(), progress=False, verbose=False)["history"]
    assert history[-1]["test_top1"] > 0.8
    assert "clamped_steps" in history[0] and history[0]["clamped_unconverged"] == 0
