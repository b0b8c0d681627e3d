"""Reference gradients: implicit differentiation, BPTT, recurrent backprop. They use only
the dynamics of the model (`update`, `readout`), so they work on every network kind."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx
from jaxtyping import PyTree

from .._checks import check_integer
from .._inference import free_phase, mean_cost
from .._misc import tree_dot
from .._models import AbstractDynamics, Dynamics
from .._relaxation import AbstractRelaxation, FixedPointRelaxation, relaxation_stats
from .._relaxation._fixed_point import check_steps_and_tolerances
from .._results import RESULTS, combine_results
from ._base import AbstractEstimator, AdjointInfo, GradientInfo

# linear solvers that use only Jacobian-vector products; every other lineax solver
# materialises the Jacobian
_MATRIX_FREE = (lx.GMRES, lx.CG, lx.BiCGStab)
_DENSE_ADJOINT_LIMIT = 2**30  # bytes of the batch's materialised per-sample Jacobians


def check_adjoint_fits(relaxation, model, batch: int) -> None:
    """Trace-time check that the implicit adjoint's linear solve fits in memory: a dense
    solver (lineax's default) materialises the `(n, n)` Jacobian of each sample's state,
    which for a conv net's feature maps is gigabytes per sample."""
    adjoint = getattr(relaxation, "adjoint", None)
    if not isinstance(adjoint, optx.ImplicitAdjoint):
        return
    solver = adjoint.linear_solver
    while isinstance(solver, lx.Normal):
        solver = solver.inner_solver
    if isinstance(solver, _MATRIX_FREE):
        return
    leaves = jtu.tree_leaves(model.init_state())
    n = sum(leaf.size for leaf in leaves)
    need = batch * n * n * max(leaf.dtype.itemsize for leaf in leaves)
    if need > _DENSE_ADJOINT_LIMIT:
        raise ValueError(
            f"the implicit adjoint's linear solver ({type(adjoint.linear_solver).__name__}) "
            f"materialises the Jacobian of each sample's state: {n} x {n} for {batch} "
            f"samples is {need / 2**30:.1f} GiB. Use a matrix-free solver: "
            "`adjoint=optx.ImplicitAdjoint(lx.GMRES(rtol=1e-6, atol=1e-6))` on the "
            'relaxation (in a config: relaxation.adjoint = {kind = "gmres"}).'
        )


class ImplicitDifferentiation(AbstractEstimator):
    """`jax.grad` of `equilibrium_loss`: differentiation through the free equilibrium by
    the implicit function theorem, `dL/dtheta = dC/dtheta + (dT/dtheta)^T lambda` with
    `(I - dT/ds)^T lambda = dC/ds`, solved by the relaxation's adjoint (lineax)."""

    step_inputs = ("relaxation",)

    def step(self, model, x, y, state, *, relaxation, cost):
        if relaxation.noisy:
            raise ValueError(
                "ImplicitDifferentiation needs a deterministic equilibrium; noisy dynamics "
                "have none. Use an EP estimator, or a relaxation without noise."
            )
        check_adjoint_fits(relaxation, model, x.shape[0])

        def loss_fn(model):
            s, stats = free_phase(model, x, relaxation)
            return mean_cost(model, s, y, cost), (s, stats)

        (loss, (s, stats)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model)
        return grads, GradientInfo(loss, combine_results(stats.result), s, stats), state


class BPTT(AbstractEstimator):
    """Backpropagation through time: `jax.grad` through `num_steps` unrolled updates
    (a `lax.scan`) from the initial state. Equals implicit differentiation once the
    unrolled dynamics have converged. Ignores the relaxation (and its noise)."""

    num_steps: int = eqx.field(static=True, default=100)

    def __check_init__(self):
        check_integer(self.num_steps, "num_steps", owner="BPTT")

    step_inputs = ()

    def step(self, model, x, y, state, *, cost):
        def unroll(model, xi):
            dynamics = Dynamics(model, model.drive(xi))
            step = lambda s, _: (dynamics(s), None)  # noqa: E731
            return jax.lax.scan(step, model.init_state(), None, length=self.num_steps)[0]

        def loss_fn(model):
            s = jax.vmap(unroll, (None, 0))(model, x)
            return mean_cost(model, s, y, cost), s

        (loss, s), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model)
        stats = jax.vmap(
            lambda si, xi: relaxation_stats(
                Dynamics(model, model.drive(xi)), si, self.num_steps, RESULTS.successful
            )
        )(s, x)
        return grads, GradientInfo(loss, combine_results(stats.result), s, stats), state


class _AdjointDynamics(AbstractDynamics):
    """`lambda <- (dT/ds)^T lambda + dC/ds` at a fixed state: `transpose` is the
    vector-Jacobian product of the update there."""

    transpose: PyTree
    dc: PyTree

    def __call__(self, lam, noise=None):
        del noise
        (vjp_lam,) = self.transpose(lam)
        return jtu.tree_map(jnp.add, vjp_lam, self.dc)


class RecurrentBackprop(AbstractEstimator):
    """Recurrent backpropagation (Almeida 1987; Pineda 1987): after the free phase,
    relax the adjoint `lambda <- (dT/ds)^T lambda + dC/ds` to its fixed point, then
    `dL/dtheta = dC/dtheta + (dT/dtheta)^T lambda` (one batched vector-Jacobian product).
    The adjoint relaxation's stats are in `info.adjoint_stats`.

    - `max_steps`, `rtol`, `atol`: the budget and tolerance of the adjoint relaxation
      (a `FixedPointRelaxation`), when `adjoint_relaxation` is not given.
    - `adjoint_relaxation`: the relaxation of the adjoint, any noise-free relaxation of
      an unlayered state (e.g. `AndersonRelaxation(even_odd=False)`); held as the
      field `adjoint_relaxation`.
    """

    adjoint_relaxation: AbstractRelaxation

    def __init__(
        self,
        max_steps: int = 1000,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        adjoint_relaxation: AbstractRelaxation | None = None,
    ):
        if adjoint_relaxation is None:
            check_steps_and_tolerances(self, max_steps, rtol, atol)
            if rtol is None:
                raise ValueError("RecurrentBackprop: the adjoint relaxation needs rtol and atol.")
            adjoint_relaxation = FixedPointRelaxation(max_steps, rtol, atol)
        elif not isinstance(adjoint_relaxation, AbstractRelaxation) or adjoint_relaxation.noisy:
            raise TypeError(
                "RecurrentBackprop: adjoint_relaxation must be a noise-free relaxation, got "
                f"{adjoint_relaxation!r}."
            )
        self.adjoint_relaxation = adjoint_relaxation

    step_inputs = ("relaxation", "key")

    def step(self, model, x, y, state, *, relaxation, cost, key):
        s, stats = jax.lax.stop_gradient(free_phase(model, x, relaxation, key))
        adjoint_relaxation = self.adjoint_relaxation

        def adjoint(si, xi, yi):
            _, transpose = jax.vjp(Dynamics(model, model.drive(xi)), si)
            dc = jax.grad(lambda s: cost(model.readout(s), yi))(si)
            return adjoint_relaxation.relax(
                _AdjointDynamics(transpose, dc), jtu.tree_map(jnp.zeros_like, si)
            )

        lam, adjoint_stats = jax.lax.stop_gradient(jax.vmap(adjoint)(s, x, y))

        def surrogate(model):
            def one(si, lami, xi, yi):
                t = Dynamics(model, model.drive(xi))(si)
                return tree_dot(lami, t) + cost(model.readout(si), yi)

            return jnp.mean(jax.vmap(one)(s, lam, x, y))

        grads = eqx.filter_grad(surrogate)(model)
        info = AdjointInfo(
            loss=mean_cost(model, s, y, cost),
            result=combine_results(stats.result, adjoint_stats.result),
            free_state=s,
            free_stats=stats,
            adjoint_stats=adjoint_stats,
        )
        return grads, info, state
