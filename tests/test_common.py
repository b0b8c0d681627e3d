"""The common suite every estimator passes: structure and dtype of the result, jit,
vmap, and no recompilation for new data of the same shape."""

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import eqx_eqprop as ep

from .helpers import ALL_ESTIMATORS, conv_problem, problem


def _relaxation(dtype):
    tol = 1e-5 if dtype == jnp.float32 else 1e-12
    return ep.FixedPointRelaxation(max_steps=1000, rtol=tol, atol=tol)


PROBLEMS = {
    "mlp": lambda dtype: problem(0, sizes=(6, 9, 7, 4), batch=4, dtype=dtype),
    "conv": lambda dtype: conv_problem(0, dtype=dtype),
}


# every estimator in both dtypes and on both kinds: the MLP in float64, the conv net in
# float32 (its float64 exactness is tested in test_conv.py; the MLP in float32 trains in
# test_training.py and is checked against float64 in test_exactness.py)
CASES = [("mlp", jnp.float64), ("conv", jnp.float32)]


@pytest.mark.parametrize("kind,dtype", CASES, ids=["mlp-f64", "conv-f32"])
@pytest.mark.parametrize("name", ALL_ESTIMATORS)
def test_structure_dtype_jit_vmap(name, dtype, kind):
    estimator = ALL_ESTIMATORS[name]
    model, x, y = PROBLEMS[kind](dtype)
    classes = model.num_classes
    relaxation = _relaxation(dtype)
    grads, info = ep.gradient(model, x, y, estimator=estimator, relaxation=relaxation)

    params = eqx.filter(model, eqx.is_inexact_array)
    assert jtu.tree_structure(grads) == jtu.tree_structure(params)
    for g, p in zip(jtu.tree_leaves(grads), jtu.tree_leaves(params)):
        assert g.shape == p.shape and g.dtype == p.dtype == dtype
        assert bool(jnp.all(jnp.isfinite(g)))
    assert float(jnp.linalg.norm(jtu.tree_leaves(grads)[0])) > 0  # not silently zero
    assert info.loss.dtype == dtype
    assert all(v.dtype == dtype for v in info.free_state)
    assert info.free_stats.residual.shape == (4,)
    assert info.result == ep.RESULTS.successful

    # under an outer jit: same numbers
    jitted = eqx.filter_jit(
        lambda m, x, y: ep.gradient(m, x, y, estimator=estimator, relaxation=relaxation)[0]
    )
    rtol = 1e-4 if dtype == jnp.float32 else 1e-10

    def atol(b):
        # the MLP's gradients are O(1); the conv net's are small, and float32 EP divides
        # the rounding of its states by beta: compare with the gradient's own scale
        if kind == "mlp":
            return rtol * 1e-2
        return (5e-2 if dtype == jnp.float32 else 1e-8) * float(jnp.max(jnp.abs(b)))

    for a, b in zip(jtu.tree_leaves(jitted(model, x, y)), jtu.tree_leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol(b))

    # under vmap over three data batches: each slice equals a separate call
    xs = jnp.stack([x, 1 - x, 0.5 * x])
    ys = jnp.stack([y, (y + 1) % classes, (y + 2) % classes])
    batched = jax.vmap(
        lambda x, y: ep.gradient(model, x, y, estimator=estimator, relaxation=relaxation)[0]
    )(xs, ys)
    for k in range(3):
        single = ep.gradient(model, xs[k], ys[k], estimator=estimator, relaxation=relaxation)[0]
        for a, b in zip(jtu.tree_leaves(batched), jtu.tree_leaves(single)):
            assert a.shape[0] == 3
            np.testing.assert_allclose(a[k], b, rtol=rtol, atol=atol(b))


@pytest.mark.parametrize("kind", PROBLEMS)
@pytest.mark.parametrize("name", ALL_ESTIMATORS)
def test_no_recompilation_for_new_data(name, kind, caplog):
    estimator = ALL_ESTIMATORS[name]
    model, x, y = PROBLEMS[kind](jnp.float64)
    relaxation = _relaxation(jnp.float64)
    ep.gradient(model, x, y, estimator=estimator, relaxation=relaxation)
    x2, y2 = 1 - x, (y + 1) % model.num_classes
    new_model = jax.tree.map(lambda v: 0.9 * v if eqx.is_inexact_array(v) else v, model)
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        caplog.clear()
        grads, _ = ep.gradient(new_model, x2, y2, estimator=estimator, relaxation=relaxation)
        jax.block_until_ready(grads)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiled, compiled


def test_new_beta_does_not_recompile(caplog):
    model, x, y = problem(1, sizes=(6, 9, 7, 4), batch=4)
    step = eqx.filter_jit(
        lambda est: ep.gradient(model, x, y, estimator=est, relaxation=_relaxation(jnp.float64))
    )
    step(ep.HolomorphicEP(0.1, 4))
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        caplog.clear()
        jax.block_until_ready(step(ep.HolomorphicEP(0.2, 4))[0])
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
