"""Diagnostics of the dynamics."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Real

from ._models import AbstractModel, Dynamics, State


@eqx.filter_jit
def update_spectral_radius(
    model: AbstractModel, x: Float[Array, "batch ..."], s: State
) -> Real[Array, " batch"]:
    """Spectral radius of the free update Jacobian `dT/ds` at states `s` (`(batch, ...)`,
    e.g. `info.free_state`), per sample.

    It is the asymptotic contraction rate of `FixedPointRelaxation`: below 1 the free
    phase converges, and close to 1 the network is near-critical, where the equilibrium
    can have a singularity at small complex beta and holomorphic EP loses exactness
    (Laborieux & Zenke 2022). Uses a dense eigendecomposition: for small and medium
    states (the MNIST MLP's 512 units are fine), on CPU.
    """

    def one(xi, si):
        flat, unravel = ravel_pytree(si)
        dynamics = Dynamics(model, model.drive(xi))
        jac = jax.jacfwd(lambda v: ravel_pytree(dynamics(unravel(v)))[0])(flat)
        return jnp.max(jnp.abs(jnp.linalg.eigvals(jac)))

    return jax.vmap(one)(x, s)
