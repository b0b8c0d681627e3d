"""Relaxation strategies: how a network settles to its equilibrium `s* = T(s*)`.

A relaxation works on one sample. It is given the update map `fn(s, args) -> T(s)`
and a start `s0`, and returns the equilibrium with `RelaxationStats`. Noisy dynamics
call `fn(s, args, noise)` with fresh state-shaped Gaussian noise at every step. Complex states
(complex nudges) are handed to the solvers as real pairs `(Re s, Im s)`. The result is
differentiable with respect to `args` by the implicit function theorem (optimistix /
diffrax `ImplicitAdjoint`): parameters must enter through `args`, never through `s0`.
"""

import abc
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx
from jaxtyping import Array, Bool, Int, PRNGKeyArray, PyTree, Real

from ._misc import is_complex_tree, tree_all_finite, tree_max_abs
from ._results import RESULTS

State = PyTree[Array]
UpdateFn = Callable[[State, PyTree], State]


class RelaxationStats(eqx.Module):
    """Diagnostics of one relaxation (leading batch/phase axes added by `vmap`).

    - `steps`: solver steps taken.
    - `residual`: `max |T(s) - s|` at the returned state.
    - `result`: a `RESULTS` code (`successful`, `max_steps_reached` or `diverged`).
    """

    steps: Int[Array, "*batch"]
    residual: Real[Array, "*batch"]
    result: RESULTS


def relaxation_stats(fn: UpdateFn, s: State, args: PyTree, steps, converged) -> RelaxationStats:
    """Residual `max|T(s) - s|` and result code of a relaxed state `s` (one sample)."""
    s = jax.lax.stop_gradient(s)
    residual = tree_max_abs(jtu.tree_map(jnp.subtract, fn(s, jax.lax.stop_gradient(args)), s))
    finite = tree_all_finite(s) & jnp.isfinite(residual)
    result = RESULTS.where(
        finite,
        RESULTS.where(converged, RESULTS.successful, RESULTS.max_steps_reached),
        RESULTS.diverged,
    )
    real_dtype = jnp.real(jtu.tree_leaves(s)[0]).dtype
    return RelaxationStats(jnp.asarray(steps), residual.astype(real_dtype), result)


class AbstractRelaxation(eqx.Module):
    """Finds the equilibrium of `s <- T(s)` for one sample."""

    @abc.abstractmethod
    def _solve(
        self, fn: UpdateFn, y0: State, args: PyTree
    ) -> tuple[State, Int[Array, ""], Bool[Array, ""]]:
        """Real states only. Returns (equilibrium, steps, converged)."""

    @property
    def noisy(self) -> bool:
        """Whether the dynamics draw noise (then `relax` needs a `key`)."""
        return False

    def relax(
        self, fn: UpdateFn, s0: State, args: PyTree, key: PRNGKeyArray | None = None
    ) -> tuple[State, RelaxationStats]:
        """Relax `s0` under `fn(s, args)`; returns `(s*, stats)`. `key` drives the
        noise of noisy dynamics and is ignored otherwise."""
        if self.noisy:
            if key is None:
                raise ValueError(
                    f"{type(self).__name__} has noisy dynamics and needs a PRNG key: pass "
                    "key=jax.random.key(...) to gradient()."
                )
            s, steps, converged = self._solve_noisy(fn, s0, args, key)
        elif is_complex_tree((s0, args)):
            # the solvers see only real numbers: complex leaves of the state and of the
            # arguments (a complex nudge) travel as (real, imaginary) pairs
            def real_fn(y, real_args):
                return _split(fn(_merge(y), _merge(real_args)))

            y, steps, converged = self._solve(real_fn, _split(s0), _split(args))
            s = _merge(y)
        else:
            s, steps, converged = self._solve(fn, s0, args)
        return s, relaxation_stats(fn, s, args, steps, converged)

    def _solve_noisy(self, fn, s0, args, key):
        raise NotImplementedError(f"{type(self).__name__} has no noisy dynamics.")


class _SplitComplex(eqx.Module):
    re: Array
    im: Array


def _split(tree):
    def split(v):
        return _SplitComplex(v.real, v.imag) if eqx.is_array(v) and jnp.iscomplexobj(v) else v

    return jtu.tree_map(split, tree)


def _merge(tree):
    def merge(v):
        return jax.lax.complex(v.re, v.im) if isinstance(v, _SplitComplex) else v

    return jtu.tree_map(merge, tree, is_leaf=lambda v: isinstance(v, _SplitComplex))


class FixedPointRelaxation(AbstractRelaxation):
    """Discrete-time synchronous iteration `s <- T(s)` (Scellier & Bengio 2017),
    through `optimistix.fixed_point` with `FixedPointIteration`.

    - `max_steps`: step budget.
    - `rtol`, `atol`: stop when `max|T(s) - s| < atol + rtol * max|T(s)|`. With both
      `None` it runs exactly `max_steps` steps (the papers' fixed-length phases) and
      counts as converged whatever the residual; the residual is still reported.
    - `damping`: `s <- (1 - damping) T(s) + damping s`.
    - `adjoint`: how `jax.grad` differentiates through the equilibrium (implicit
      function theorem by default).
    - `noise`: std of Gaussian noise added inside the activation at every step,
      independent per sample, phase, neuron and step (`s <- sigma(dPhi/ds + noise)`,
      Laborieux & Zenke 2022). Noisy dynamics have no fixed point: they need
      `rtol = atol = None`, and `gradient(..., key=...)`.
    """

    max_steps: int = eqx.field(static=True, default=500)
    rtol: float | None = eqx.field(static=True, default=1e-6)
    atol: float | None = eqx.field(static=True, default=1e-6)
    damping: float = eqx.field(static=True, default=0.0)
    adjoint: optx.AbstractAdjoint = optx.ImplicitAdjoint()
    noise: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps!r}.")
        if (self.rtol is None) != (self.atol is None):
            raise ValueError(
                "Give both rtol and atol (tolerance-based stopping) or neither "
                "(exactly max_steps steps)."
            )
        if self.rtol is not None and (self.rtol < 0 or self.atol < 0):
            raise ValueError("rtol and atol must be non-negative.")
        if not 0 <= self.damping < 1:
            raise ValueError(f"damping must be in [0, 1), got {self.damping!r}.")
        if not self.noise >= 0:
            raise ValueError(f"noise must be a non-negative std, got {self.noise!r}.")
        if self.noise > 0 and self.rtol is not None:
            raise ValueError(
                "Noisy dynamics do not converge to a fixed point: use a fixed step count "
                "(rtol=None, atol=None) with noise > 0."
            )

    @property
    def fixed_steps(self) -> bool:
        return self.rtol is None

    @property
    def noisy(self) -> bool:
        return self.noise > 0

    def _solve_noisy(self, fn, s0, args, key):
        real = jtu.tree_map(lambda v: jnp.real(v).dtype, s0)

        def body(i, s):
            leaves, treedef = jtu.tree_flatten(s)
            keys = jax.random.split(jax.random.fold_in(key, i), len(leaves))
            noise = [
                self.noise * jax.random.normal(k, v.shape, d)
                for k, v, d in zip(keys, leaves, jtu.tree_leaves(real))
            ]
            new = fn(s, args, jtu.tree_unflatten(treedef, noise))
            if self.damping:
                new = jtu.tree_map(lambda a, b: (1 - self.damping) * a + self.damping * b, new, s)
            return new

        s = jax.lax.fori_loop(0, self.max_steps, body, s0)
        return s, jnp.array(self.max_steps), jnp.array(True)

    def _solve(self, fn, y0, args):
        solver = _SynchronousIteration(self.rtol, self.atol, self.damping)
        sol = optx.fixed_point(
            fn, solver, y0, args, max_steps=self.max_steps, adjoint=self.adjoint, throw=False
        )
        if self.fixed_steps:
            converged = jnp.array(True)
        else:
            converged = sol.result == optx.RESULTS.successful
        return sol.value, sol.stats["num_steps"], converged


class _SynchronousIteration(optx.AbstractFixedPointSolver):
    """`y <- (1 - damp) fn(y) + damp y`, stopping once
    `max|y_new - y| / (atol + rtol |y_new|) < 1`. With `rtol = atol = None` there is no
    stopping test (no per-step norm, no batched loop predicate) and optimistix runs
    exactly `max_steps` steps. Keeps its state in the dtype of `y` (float32 stays
    float32 when x64 is enabled)."""

    rtol: float | None = eqx.field(static=True)
    atol: float | None = eqx.field(static=True)
    damp: float = eqx.field(static=True)
    norm: Callable = eqx.field(static=True, default=optx.max_norm)

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        if self.rtol is None:
            return None
        dtype = jnp.result_type(*jtu.tree_leaves(y))
        return jnp.array(jnp.inf, dtype)

    def step(self, fn, y, args, options, state, tags):
        new_y, aux = fn(y, args)
        if self.damp:
            new_y = jtu.tree_map(lambda a, b: (1 - self.damp) * a + self.damp * b, new_y, y)
        if self.rtol is None:
            return new_y, None, aux
        scaled = jtu.tree_map(
            lambda a, b: jnp.abs(a - b) / (self.atol + self.rtol * jnp.abs(a)), new_y, y
        )
        return new_y, self.norm(scaled).astype(state.dtype), aux

    def terminate(self, fn, y, args, options, state, tags):
        done = jnp.array(False) if self.rtol is None else state < 1
        return done, optx.RESULTS.successful

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {}


def _max_norm(y):
    return tree_max_abs(y)


class ODERelaxation(AbstractRelaxation):
    """Continuous time `ds/dt = T(s) - s` (for energy networks
    `ds/dt = -s + sigma(dPhi_beta/ds)`), integrated with diffrax to a steady state.

    - `solver`: a diffrax solver (explicit Runge-Kutta by default).
    - `rtol`, `atol`: step-size control and the steady-state criterion
      `max|ds/dt| < atol + rtol * max|s|`.
    - `max_steps`: solver step budget.
    - `dt0`: initial step (`None`: chosen by the solver).
    - `adjoint`: differentiation through the steady state (`diffrax.ImplicitAdjoint`).
    """

    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    rtol: float = eqx.field(static=True, default=1e-6)
    atol: float = eqx.field(static=True, default=1e-6)
    max_steps: int = eqx.field(static=True, default=4096)
    dt0: float | None = eqx.field(static=True, default=None)
    adjoint: diffrax.AbstractAdjoint = diffrax.ImplicitAdjoint()

    def __check_init__(self):
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps!r}.")
        if not (self.rtol >= 0 and self.atol >= 0 and self.rtol + self.atol > 0):
            raise ValueError("rtol and atol must be non-negative and not both zero.")

    def _solve(self, fn, y0, args):
        term = diffrax.ODETerm(_VectorField(fn))
        event = diffrax.Event(
            diffrax.steady_state_event(rtol=self.rtol, atol=self.atol, norm=_max_norm)
        )
        sol = diffrax.diffeqsolve(
            term,
            self.solver,
            t0=0.0,
            t1=jnp.inf,
            dt0=self.dt0,
            y0=y0,
            args=args,
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            event=event,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=self.max_steps,
            adjoint=self.adjoint,
            throw=False,
        )
        y = jtu.tree_map(lambda v: v[-1], sol.ys)
        converged = diffrax.is_event(sol.result)  # the steady-state event fired
        return y, sol.stats["num_steps"], converged


class SDERelaxation(AbstractRelaxation):
    """Noisy continuous time: the Ito SDE `ds = (T(s) - s) dt + noise dW`, integrated
    with diffrax over a fixed duration, with a Brownian path (`VirtualBrownianTree`)
    drawn from the key of each sample and phase. Complex states get the noise on their
    real part (the noise is that of the physical, real dynamics).

    - `duration`: integration time (the papers' time unit is the neuron time constant).
    - `dt`: step of the solver.
    - `noise`: diffusion coefficient (0 gives a deterministic fixed-step ODE solve).
    - `solver`: an SDE-capable diffrax solver (Euler-Maruyama by default).
    """

    duration: float = eqx.field(static=True, default=20.0)
    dt: float = eqx.field(static=True, default=0.05)
    noise: float = eqx.field(static=True, default=0.04)
    solver: diffrax.AbstractSolver = diffrax.Euler()

    def __check_init__(self):
        if not (self.duration > 0 and self.dt > 0 and self.dt <= self.duration):
            raise ValueError("SDERelaxation needs 0 < dt <= duration.")
        if not self.noise >= 0:
            raise ValueError(f"noise must be a non-negative std, got {self.noise!r}.")

    @property
    def noisy(self) -> bool:
        return self.noise > 0

    @property
    def num_steps(self) -> int:
        return int(round(self.duration / self.dt))

    def _integrate(self, fn, y0, args, key):
        drift = diffrax.ODETerm(_VectorField(fn))
        terms = drift
        if key is not None:
            shapes = jtu.tree_map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), y0)
            brownian = diffrax.VirtualBrownianTree(
                0.0, self.duration, tol=self.dt / 2, shape=shapes, key=key
            )
            diagonal = _noise_diagonal(y0, self.noise)
            diffusion = diffrax.ControlTerm(
                lambda t, y, args: lx.DiagonalLinearOperator(diagonal), brownian
            )
            terms = diffrax.MultiTerm(drift, diffusion)
        sol = diffrax.diffeqsolve(
            terms,
            self.solver,
            t0=0.0,
            t1=self.duration,
            dt0=self.dt,
            y0=y0,
            args=args,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=self.num_steps + 2,
            throw=False,
        )
        y = jtu.tree_map(lambda v: v[-1], sol.ys)
        return y, sol.stats["num_steps"], diffrax.is_successful(sol.result)

    def _solve(self, fn, y0, args):
        return self._integrate(fn, y0, args, None)

    def _solve_noisy(self, fn, s0, args, key):
        if is_complex_tree((s0, args)):

            def real_fn(y, real_args):
                return _split(fn(_merge(y), _merge(real_args)))

            y, steps, ok = self._integrate(real_fn, _split(s0), _split(args), key)
            return _merge(y), steps, ok
        return self._integrate(fn, s0, args, key)


def _noise_diagonal(y0, noise):
    """`noise` on real leaves and on the real part of split complex leaves, 0 on the
    imaginary parts."""

    def diag(v):
        if isinstance(v, _SplitComplex):
            return _SplitComplex(jnp.full_like(v.re, noise), jnp.zeros_like(v.im))
        return jnp.full_like(v, noise)

    return jtu.tree_map(diag, y0, is_leaf=lambda v: isinstance(v, _SplitComplex))


class _VectorField(eqx.Module):
    fn: UpdateFn = eqx.field(static=True)

    def __call__(self, t, y, args):
        del t
        return jtu.tree_map(jnp.subtract, self.fn(y, args), y)
