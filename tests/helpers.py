"""Shared test problems and comparison helpers."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

import eqx_eqprop as ep

# Tight relaxations for exactness checks in float64: the relaxation error, divided by
# |beta|, must stay below the errors the tests measure.
TIGHT = ep.FixedPointRelaxation(max_steps=5000, rtol=1e-14, atol=1e-14)
TIGHT_ODE = ep.ODERelaxation(rtol=1e-11, atol=1e-11, max_steps=20000)


def problem(seed=0, sizes=(13, 17, 11, 5), batch=8, scale=0.5, dtype=jnp.float64, **kw):
    """A random network with inputs in [0, 1) and labels. `scale` multiplies the init
    std 1/sqrt(fan_in); 0.5 keeps the update Jacobian's spectral radius well below 1."""
    model = ep.EnergyMLP(sizes, weight_scale=scale, dtype=dtype, key=jax.random.key(seed), **kw)
    kx, ky = jax.random.split(jax.random.key(1000 + seed))
    x = jax.random.uniform(kx, (batch, sizes[0]), dtype)
    y = jax.random.randint(ky, (batch,), 0, sizes[-1])
    return model, x, y


def conv_problem(seed=0, batch=4, dtype=jnp.float64, **kw):
    """A small convolutional energy network on random 8x8x2 images: 3x3 convolutions with
    3 and 4 channels, softmax pooling and the holomorphic clip, weights at 0.5 x the
    default scale (contractive); states 4x4x3 and 2x2x4, 3 classes."""
    kw = {"pooling": ep.SoftmaxPool(0.5), "weight_scale": 0.5, **kw}
    model = ep.EnergyConvNet((8, 8, 2), (3, 4), 3, dtype=dtype, key=jax.random.key(seed), **kw)
    kx, ky = jax.random.split(jax.random.key(2000 + seed))
    x = jax.random.uniform(kx, (batch, 8, 8, 2), dtype)
    y = jax.random.randint(ky, (batch,), 0, 3)
    return model, x, y


def flat(tree) -> jnp.ndarray:
    return jnp.concatenate([jnp.ravel(v) for v in jtu.tree_leaves(tree)])


def rel_error(a, b) -> float:
    a, b = flat(a), flat(b)
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def cosine(a, b) -> float:
    a, b = flat(a).astype(jnp.float64), flat(b).astype(jnp.float64)
    return float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))


def tree_allclose(a, b, *, rtol, atol) -> bool:
    leaves = jtu.tree_leaves(
        jtu.tree_map(lambda u, v: np.allclose(u, v, rtol=rtol, atol=atol), a, b)
    )
    return all(leaves)


def implicit_gradient(model, x, y, relaxation=TIGHT, cost=ep.CrossEntropy()):
    """The ground truth: jax.grad of the equilibrium loss (implicit differentiation)."""
    return eqx.filter_grad(
        lambda m: ep.equilibrium_loss(m, x, y, relaxation=relaxation, cost=cost)
    )(model)


def fit_slope(xs, ys) -> float:
    """Least-squares slope of log(ys) against log(xs)."""
    return float(np.polyfit(np.log(np.asarray(xs)), np.log(np.asarray(ys)), 1)[0])


ALL_ESTIMATORS = {
    "implicit": ep.ImplicitDifferentiation(),
    "bptt": ep.BPTT(num_steps=60),
    "rbp": ep.RecurrentBackprop(),
    "classic": ep.ClassicEP(beta=0.05),
    "symmetric": ep.SymmetricEP(beta=0.05),
    "holomorphic": ep.HolomorphicEP(beta=0.1, num_phases=4),
    "oscillating": ep.OscillatingEP(beta=0.1, period=20),
}


def tiny_run(out_dir, name="tiny", **changes):
    """A small training configuration on the embedded digits: 64-8-10 MLP, symmetric EP
    with 6 fixed steps, batch 128 (11 steps an epoch), 2 epochs, a read and a checkpoint
    every 4 steps into `out_dir`; `changes` are dotted settings."""
    cfg = ep.TrainConfig(
        {
            "name": name,
            "data": {"kind": "digits", "batch_size": 128, "eval_batch_size": 359},
            "model": {"kind": "mlp", "hidden": [8]},
            "estimator": {"kind": "symmetric", "beta": 0.2, "error_tolerance": "none"},
            "relaxation": {"kind": "fixed_point", "max_steps": 6, "rtol": "none", "atol": "none"},
            "optimizer": {"kind": "sgd", "lr": 0.1},
            "loop": {"epochs": 2, "log_every": 4, "checkpoint_every": 4, "out_dir": str(out_dir)},
        }
    )
    return cfg.update(changes)


def train_quietly(cfg, data, **kw):
    return ep.train(cfg, data=data, progress=False, verbose=False, **kw)
