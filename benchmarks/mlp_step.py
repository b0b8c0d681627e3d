"""Time one full hEP training step of the MNIST MLP at the settings of Table 1 of
Laborieux & Zenke (2022): 784-256-256-10, free phase 200 steps, N = 10 phases of 50
steps at |beta| = 0.4, plain SGD (lr 0.05), fixed step counts.

Prints JSON: compile seconds, steady-state seconds per step, samples per second, and
the fraction of the FLOP floor. The floor is the matmul work of the step (relaxation
and weight gradients, counting a complex-by-real product as two real ones) divided by
the matmul throughput this script measures, in the same process, for the same shapes.

    python benchmarks/mlp_step.py --batch 20
    python benchmarks/mlp_step.py --batch 128
"""

import argparse
import json
import platform
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import eqx_eqprop as ep

SIZES = (784, 256, 256, 10)


def make_step(estimator, relaxation, nudged_relaxation, optimiser, with_estimate=False):
    @eqx.filter_jit
    def step(model, opt_state, x, y):
        grads, info = ep.gradient(
            model,
            x,
            y,
            estimator=estimator,
            relaxation=relaxation,
            nudged_relaxation=nudged_relaxation,
            throw=False,
        )
        updates, opt_state = optimiser.update(grads, opt_state)
        # XLA drops the aliasing-error estimate unless it is returned
        out = (info.loss, info.error_estimate) if with_estimate else info.loss
        return eqx.apply_updates(model, updates), opt_state, out

    return step


def matmul_seconds(m, k, n, dtype, reps=200):
    """Seconds for one (m, k) @ (k, n) matmul, measured in a compiled loop."""
    a = jax.random.normal(jax.random.key(0), (m, k), dtype)
    b = jax.random.normal(jax.random.key(1), (k, n), dtype) / k

    @jax.jit
    def loop(a):
        # each product feeds the next operand (one column, a cheap update), so XLA
        # can neither hoist nor merge the matmuls
        def body(i, a):
            return a + 1e-6 * (a @ b)[:, :1]

        return jax.lax.fori_loop(0, reps, body, a)

    jax.block_until_ready(loop(a))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(loop(a))
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def matmul_work(batch, free_steps, nudged_steps, real_phases, complex_phases):
    """(count, m, k, n) of the matmuls in one step, complex products as real ones."""
    n0, n1, n2, k = SIZES
    b = batch
    work = [
        (1, b, n0, n1),  # input drive, once per step
        (2 * free_steps, b, n1, n2),  # W1 s1 and W1^T s2 per free step
    ]
    for phases, factor in ((real_phases, 1), (complex_phases, 2)):
        rows = factor * phases * b
        if rows:
            work += [
                (2 * nudged_steps, rows, n1, n2),
                (2 * nudged_steps, rows, n2, k),  # readout and its transpose
            ]
    # weight gradients: free phase once, each real phase once, each complex phase
    # a complex-by-complex contraction (4 real) for W1, complex-by-real (2) for W0
    grad_w0 = 1 + real_phases + 2 * complex_phases
    grad_w1 = 1 + real_phases + 4 * complex_phases
    work += [(grad_w0, n1, b, n0), (grad_w1, n1, b, n2), (grad_w1, k, b, n2)]
    return work


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--num-phases", type=int, default=10)
    p.add_argument("--beta", type=float, default=0.4)
    p.add_argument("--free-steps", type=int, default=200)
    p.add_argument("--nudged-steps", type=int, default=50)
    p.add_argument(
        "--with-error-estimate",
        action="store_true",
        help="also compute hEP's aliasing-error estimate (a diagnostic) every step",
    )
    args = p.parse_args()

    dtype = jnp.float32
    model = ep.EnergyMLP(SIZES, dtype=dtype, key=jax.random.key(0))
    estimator = ep.HolomorphicEP(args.beta, args.num_phases, error_tolerance=None)
    relaxation = ep.FixedPointRelaxation(args.free_steps, None, None)
    nudged = ep.FixedPointRelaxation(args.nudged_steps, None, None)
    optimiser = optax.sgd(0.05)
    opt_state = optimiser.init(eqx.filter(model, eqx.is_inexact_array))
    step = make_step(estimator, relaxation, nudged, optimiser, args.with_error_estimate)
    keys = jax.random.split(jax.random.key(1), 2)
    x = jax.random.uniform(keys[0], (args.batch, SIZES[0]), dtype)
    y = jax.random.randint(keys[1], (args.batch,), 0, SIZES[-1])

    t = time.perf_counter()
    model, opt_state, loss = step(model, opt_state, x, y)
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - t

    per_step = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for _ in range(args.steps):
            model, opt_state, loss = step(model, opt_state, x, y)
        jax.block_until_ready(loss)
        per_step.append((time.perf_counter() - t) / args.steps)
    step_s = statistics.median(per_step)

    factors = estimator.phase_factors()
    n_real = sum(u.imag == 0 for u in factors)
    n_complex = sum(u.imag > 0 for u in factors)
    work = matmul_work(args.batch, args.free_steps, args.nudged_steps, n_real, n_complex)
    timed = {}
    floor_s = 0.0
    flops = 0
    for count, m, k, n in work:
        if (m, k, n) not in timed:
            timed[(m, k, n)] = matmul_seconds(m, k, n, dtype)
        floor_s += count * timed[(m, k, n)]
        flops += count * 2 * m * k * n
    print(
        json.dumps(
            {
                "benchmark": "hEP MLP training step (784-256-256-10)",
                "batch": args.batch,
                "num_phases": args.num_phases,
                "with_error_estimate": args.with_error_estimate,
                "beta": args.beta,
                "free_steps": args.free_steps,
                "nudged_steps": args.nudged_steps,
                "compile_s": round(compile_s, 3),
                "step_s": round(step_s, 5),
                "step_s_all_repeats": [round(v, 5) for v in per_step],
                "samples_per_s": round(args.batch / step_s, 1),
                "matmul_gflop_per_step": round(flops / 1e9, 3),
                "floor_s": round(floor_s, 5),
                "floor_fraction": round(floor_s / step_s, 3),
                "device": str(jax.devices()[0]),
                "cpu_count": __import__("os").cpu_count(),
                "machine": platform.machine(),
                "jax": jax.__version__,
                "loss": float(loss[0] if args.with_error_estimate else loss),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
