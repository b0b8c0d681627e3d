"""Time one training step of VGG-4 on 32x32x3 images (CIFAR-10 shapes) at the settings of
Table 2 of Laborieux & Zenke (2022): channels 128-256-512-512, max pooling, T1 = 250 free
steps, T2 = 60 steps per nudged phase, hEP with N = 2 (beta = 1), SGD with momentum.
Next to it, the same network trained with implicit-differentiation gradients ("BP": the
250-step free phase, then the adjoint solved by GMRES).

Prints one JSON object: compile seconds and images per second for both, and the CIFAR-10
epoch (50,000 images) that the throughput implies. Random images stand in for CIFAR.

    python benchmarks/conv_step.py --batch 8           # this CPU
    python benchmarks/conv_step.py --batch 128         # a GPU
"""

import argparse
import json
import os
import platform
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optax
import optimistix as optx

import eqx_eqprop as ep


def make_step(estimator, relaxation, nudged, optimizer):
    @eqx.filter_jit
    def step(model, opt_state, x, y):
        grads, info = ep.gradient(
            model,
            x,
            y,
            estimator=estimator,
            relaxation=relaxation,
            nudged_relaxation=nudged,
            throw=False,
        )
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state, info.loss

    return step


def time_step(step, model, opt_state, x, y, steps, repeats):
    start = time.perf_counter()
    model, opt_state, loss = step(model, opt_state, x, y)
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - start
    per_step = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            model, opt_state, loss = step(model, opt_state, x, y)
        jax.block_until_ready(loss)
        per_step.append((time.perf_counter() - start) / steps)
    return compile_s, statistics.median(per_step), float(loss)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--free-steps", type=int, default=250)
    p.add_argument("--nudged-steps", type=int, default=60)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()

    dtype = jnp.dtype(args.dtype)
    model = ep.EnergyConvNet(
        (32, 32, 3),
        (128, 256, 512, 512),
        10,
        paddings=("SAME", "SAME", "SAME", "VALID"),
        pooling=ep.MaxPool(),
        dtype=dtype,
        key=jax.random.key(0),
    )
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (args.batch, 32, 32, 3), dtype)
    y = jax.random.randint(ky, (args.batch,), 0, 10)
    optimizer = optax.sgd(0.05, momentum=0.9)
    free = ep.FixedPointRelaxation(args.free_steps, None, None)
    nudged = ep.FixedPointRelaxation(args.nudged_steps, None, None)
    bp_free = ep.FixedPointRelaxation(
        args.free_steps, None, None, adjoint=optx.ImplicitAdjoint(lx.GMRES(1e-5, 1e-5))
    )
    runs = {
        "hep": (ep.HolomorphicEP(1.0, 2, error_tolerance=None), free),
        "bp": (ep.ImplicitDifferentiation(), bp_free),
    }
    results = {}
    for name, (estimator, relaxation) in runs.items():
        opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
        step = make_step(estimator, relaxation, nudged, optimizer)
        compile_s, step_s, loss = time_step(step, model, opt_state, x, y, args.steps, args.repeats)
        results[name] = {
            "compile_s": round(compile_s, 2),
            "step_s": round(step_s, 4),
            "images_per_s": round(args.batch / step_s, 2),
            "cifar10_epoch_s_implied": round(50000 * step_s / args.batch, 1),
            "loss": loss,
        }
    print(
        json.dumps(
            {
                "benchmark": "VGG-4 training step, 32x32x3, T1=250, T2=60, hEP N=2 vs BP",
                "batch": args.batch,
                "free_steps": args.free_steps,
                "nudged_steps": args.nudged_steps,
                "dtype": args.dtype,
                "results": results,
                "device": str(jax.devices()[0]),
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "jax": jax.__version__,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
