"""Tests that pin the *path* of the dynamics, not only where they end: single noisy and
damped steps against their formulas, BPTT through 1-3 steps against a hand-unrolled
loop, the readout bias in the logits and in the gradient. A fixed point or a long run
hides bugs (noise outside the activation, a damping of the wrong side, a dropped bias)
that these catch. Each formula is written out with the raw weight matrices."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqx_eqprop as ep

from .helpers import TIGHT, implicit_gradient, problem


def raw(model):
    """(weights, biases, readout weight, readout bias) as plain arrays."""
    return (
        [layer.weight for layer in model.layers],
        [layer.bias for layer in model.layers],
        model.readout_layer.weight,
        model.readout_layer.bias,
    )


def sigmoid(z):
    return 1 / (1 + jnp.exp(-4 * z + 2))


def logit(s):
    """The inverse of `sigmoid`: z with sigmoid(z) = s."""
    return (jnp.log(s / (1 - s)) + 2) / 4


def _pre(weights, biases, x, s):
    """`dPhi/ds` of the layered MLP by hand: W_{l-1} s_{l-1} + b_{l-1} + W_l^T s_{l+1}."""
    below = [x, *s[:-1]]
    out = []
    for layer in range(len(s)):
        h = weights[layer] @ below[layer] + biases[layer]
        if layer + 1 < len(s):
            h = h + weights[layer + 1].T @ s[layer + 1]
        out.append(h)
    return out


def pre_activation(model, x, s):
    ws, bs, _, _ = raw(model)
    return _pre(ws, bs, x, s)


def test_one_noisy_step_adds_the_noise_inside_the_activation():
    model, x, y = problem(0, sizes=(20, 60, 50, 4), batch=64, scale=0.3)
    x = x.at[1].set(x[0])
    std = 0.05
    relaxation = ep.FixedPointRelaxation(max_steps=1, rtol=None, atol=None, noise=std)
    s1, _ = ep.free_phase(model, x, relaxation, key=jax.random.key(3))
    two = ep.FixedPointRelaxation(max_steps=2, rtol=None, atol=None, noise=std)
    s2, _ = ep.free_phase(model, x, two, key=jax.random.key(3))
    zero = model.init_state()
    implied1, implied2 = [], []
    for b in range(x.shape[0]):
        pre0 = pre_activation(model, x[b], zero)
        pre1 = pre_activation(model, x[b], [v[b] for v in s1])
        implied1.append(jnp.concatenate([logit(v[b]) - p for v, p in zip(s1, pre0)]))
        implied2.append(jnp.concatenate([logit(v[b]) - p for v, p in zip(s2, pre1)]))
    n1, n2 = jnp.stack(implied1), jnp.stack(implied2)
    count = n1.size
    for n in (n1, n2):
        # Gaussian with the std asked for, inside the activation: were it added outside
        # (s = sigma(pre) + noise) the implied inner noise would be wider by 1/sigma'
        assert abs(float(jnp.mean(n))) < 4 * std / np.sqrt(count)
        assert abs(float(jnp.std(n)) / std - 1) < 4 / np.sqrt(2 * count) + 1e-3
    # a fresh draw at every step, and for every sample (samples 0 and 1 are identical)
    assert abs(float(jnp.corrcoef(n1.ravel(), n2.ravel())[0, 1])) < 0.05
    assert abs(float(jnp.corrcoef(n1[0], n1[1])[0, 1])) < 0.2


@pytest.mark.parametrize("damping", [0.0, 0.3])
def test_first_steps_follow_the_damped_update(damping):
    model, x, y = problem(1, sizes=(7, 9, 8, 3), batch=3)
    for steps in (1, 2, 3):
        relaxation = ep.FixedPointRelaxation(steps, None, None, damping=damping)
        s, stats = ep.free_phase(model, x, relaxation)
        assert bool(jnp.all(stats.steps == steps))
        for b in range(x.shape[0]):
            state = model.init_state()
            for _ in range(steps):
                new = [sigmoid(p) for p in pre_activation(model, x[b], state)]
                state = [(1 - damping) * n + damping * o for n, o in zip(new, state)]
            for got, want in zip(s, state):
                np.testing.assert_allclose(got[b], want, rtol=0, atol=1e-14)


def _hand_unrolled_loss(weights, biases, w_out, b_out, x, y, steps):
    def one(xi, yi):
        s = [jnp.zeros(b.shape, b.dtype) for b in biases]
        for _ in range(steps):
            s = [sigmoid(p) for p in _pre(weights, biases, xi, s)]
        logits = w_out @ s[-1] + b_out
        return jax.nn.logsumexp(logits) - logits[yi]

    return jnp.mean(jax.vmap(one)(x, y))


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_bptt_through_a_few_steps_equals_a_hand_unrolled_loop(steps):
    model, x, y = problem(2, sizes=(6, 8, 7, 4), batch=5)
    grads, info = ep.gradient(model, x, y, estimator=ep.BPTT(num_steps=steps), throw=False)
    ws, bs, w_out, b_out = raw(model)
    loss, (gw, gb, gwo, gbo) = jax.value_and_grad(_hand_unrolled_loss, argnums=(0, 1, 2, 3))(
        ws, bs, w_out, b_out, x, y, steps
    )
    np.testing.assert_allclose(info.loss, loss, rtol=1e-13)
    want = (gw, gb, gwo, gbo)
    for got, ref in zip(raw(grads), want):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_readout_bias_enters_the_logits_and_the_gradient():
    model, x, y = problem(3, sizes=(6, 8, 7, 4), batch=5)
    bias = jnp.array([0.3, -0.2, 0.5, -0.1])
    model = _with_readout_bias(model, bias)
    logits, stats = ep.predict(model, x, TIGHT)
    s, _ = ep.free_phase(model, x, TIGHT)
    _, _, w_out, b_out = raw(model)
    np.testing.assert_allclose(b_out, bias)
    np.testing.assert_allclose(logits, s[-1] @ w_out.T + bias[None], rtol=1e-13)
    # dL/db_out = mean(softmax(logits) - onehot(y)): the readout bias does not move the
    # equilibrium (it lives in the cost), so this holds exactly at the free equilibrium
    expected = jnp.mean(jax.nn.softmax(logits) - jax.nn.one_hot(y, 4), axis=0)
    truth = implicit_gradient(model, x, y)
    np.testing.assert_allclose(raw(truth)[3], expected, rtol=1e-10, atol=1e-14)
    hep, _ = ep.gradient(model, x, y, estimator=ep.HolomorphicEP(0.1, 8), relaxation=TIGHT)
    np.testing.assert_allclose(raw(hep)[3], expected, rtol=1e-8, atol=1e-12)


def _with_readout_bias(model, bias):
    return eqx.tree_at(lambda m: m.readout_layer.bias, model, bias.astype(model.dtype))
