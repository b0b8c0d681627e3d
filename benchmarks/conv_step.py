"""Where the time of a VGG-4 training step goes, at the papers' relaxation settings and at
the fast ones, side by side in one run: VGG-4 on 32x32x3 images (CIFAR-10 shapes, Table
2 of Laborieux & Zenke 2022: 128-256-512-512 channels, max pooling, hEP N = 2 at beta =
1, SGD with momentum), the relaxations and estimator of the presets `cifar10-hep`
(`paper`: T1 = 250 free, T2 = 60 nudged synchronous sweeps) and `cifar10-hep-fast`
(`fast`). Random images stand in for CIFAR.

For each setting: the sweeps the batch ran per step (free, nudged phases together; a
batch sweeps until its slowest sample stops), the FLOPs per image per step (sweeps x
the convolutions and their transposes of one sweep, 2 x 2 x H x W x k^2 x C_in x C_out
each: 0.66 GFLOP for VGG-4; a sweep of a complex phase twice that), compile seconds,
images/s, the CIFAR-10 epoch (50,000 images) the throughput implies, and the fraction
of the device's peak, where the peak is the best FLOP rate this process measures for
the same convolutions (each layer's, at the step's batch and dtype, in a compiled
loop). Prints one JSON object.

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
import numpy as np
import optax

import eqx_eqprop as ep
from eqx_eqprop.internal import build_estimator, build_model, build_relaxations


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
        # the sweeps of the batch (its slowest sample) per relaxed phase; a phase at a
        # complex nudge convolves real and imaginary parts, twice the work of a real one
        per_phase = jnp.max(info.nudged_stats.steps, -1)
        work = jnp.where(jnp.imag(info.betas) != 0, 2, 1)
        steps = (jnp.max(info.free_stats.steps), jnp.sum(per_phase), jnp.sum(per_phase * work))
        return eqx.apply_updates(model, updates), opt_state, (info.loss, steps)

    return step


def complex_phases(estimator) -> int:
    """How many phases the estimator relaxes at a complex nudge (hEP relaxes its real
    phases, such as +-beta, in real arithmetic, and one of each conjugate pair)."""
    return sum(1 for u in estimator.phase_factors() if u.imag > 0)


def time_step(step, model, opt_state, x, y, steps, repeats):
    start = time.perf_counter()
    model, opt_state, out = step(model, opt_state, x, y)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - start
    per_step, sweeps = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            model, opt_state, out = step(model, opt_state, x, y)
            sweeps.append(out[1])
        jax.block_until_ready(out)
        per_step.append((time.perf_counter() - start) / steps)
    free, nudged, work = (float(np.mean([int(s[i]) for s in sweeps])) for i in (0, 1, 2))
    return compile_s, statistics.median(per_step), float(out[0]), free, nudged, work


def conv_shapes(model, batch):
    """`(input shape (batch, h, w, c), kernel shape)` of each convolution of a sweep."""
    h, w, c = model.image_shape
    out = []
    for conv, shape in zip(model.convs, model.state_shapes, strict=True):
        out.append(((batch, h, w, c), conv.weight.shape, conv.padding))
        h, w, c = shape
    return out


def flops_per_sweep(model) -> float:
    """Per image: every convolution and its transpose, `2 x 2 H' W' k^2 C_in C_out`."""
    total = 0.0
    for (_, h, w, _), (k, _, c_in, c_out), padding in conv_shapes(model, 1):
        ho, wo = (h, w) if padding == "SAME" else (h - k + 1, w - k + 1)
        total += 2 * 2 * ho * wo * k * k * c_in * c_out
    return total


def conv_peak(model, batch, dtype, reps=20) -> float:
    """The best FLOP/s of the network's convolutions at this batch and dtype, each timed
    in a compiled loop whose iterations depend on each other (nothing hoisted)."""
    best = 0.0
    for shape, kernel_shape, padding in conv_shapes(model, batch):
        x = jax.random.normal(jax.random.key(0), shape, dtype)
        kernel = jax.random.normal(jax.random.key(1), kernel_shape, dtype) * 0.01

        @jax.jit
        def loop(x, kernel=kernel, padding=padding):
            def body(i, x):
                y = jax.lax.conv_general_dilated(
                    x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
                )
                return x + 1e-6 * jnp.mean(y)

            return jax.lax.fori_loop(0, reps, body, x)

        jax.block_until_ready(loop(x))
        seconds = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready(loop(x))
            seconds = min(seconds, (time.perf_counter() - t) / reps)
        h, w = shape[1:3]
        k, _, c_in, c_out = kernel_shape
        ho, wo = (h, w) if padding == "SAME" else (h - k + 1, w - k + 1)
        best = max(best, 2 * batch * ho * wo * k * k * c_in * c_out / seconds)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--paper", default="cifar10-hep", help="preset of the papers' settings")
    p.add_argument("--fast", default="cifar10-hep-fast", help="preset of the fast settings")
    p.add_argument("--channels", type=int, nargs="*", help="narrower VGG-4 (smoke tests)")
    args = p.parse_args()

    changes = {"model.channels": list(args.channels)} if args.channels else {}
    model = build_model(ep.get_preset(args.paper).update(changes), (32, 32, 3), 10)
    dtype = model.convs[0].weight.dtype
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (args.batch, 32, 32, 3), dtype)
    y = jax.random.randint(ky, (args.batch,), 0, 10)
    optimizer = optax.sgd(0.05, momentum=0.9)
    per_sweep = flops_per_sweep(model)
    peak = conv_peak(model, args.batch, dtype)
    results = {}
    for name, preset in (("paper", args.paper), ("fast", args.fast)):
        cfg = ep.get_preset(preset).update(changes)
        model = build_model(cfg, (32, 32, 3), 10)  # the same weights; pooling may differ
        relaxation, nudged = build_relaxations(cfg)
        estimator = build_estimator(cfg)
        step = make_step(estimator, relaxation, nudged, optimizer)
        n_complex = complex_phases(estimator)
        opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
        compile_s, step_s, loss, free, nudged_sweeps, nudged_work = time_step(
            step, model, opt_state, x, y, args.steps, args.repeats
        )
        sweeps = free + nudged_sweeps
        flops = (free + nudged_work) * per_sweep
        results[name] = {
            "preset": preset,
            "pooling": type(model.pools[-1]).__name__,
            "estimator": f"{cfg.estimator['kind']} N={cfg.estimator.get('num_phases')}",
            "complex_phases_relaxed": n_complex,
            "free_sweeps": free,
            "nudged_sweeps": nudged_sweeps,
            "sweeps_per_image_step": sweeps,
            "gflop_per_image_step": round(flops / 1e9, 1),
            "compile_s": round(compile_s, 2),
            "step_s": round(step_s, 4),
            "images_per_s": round(args.batch / step_s, 2),
            "cifar10_epoch_s_implied": round(50000 * step_s / args.batch, 1),
            "tflop_per_s": round(flops * args.batch / step_s / 1e12, 3),
            "fraction_of_peak": round(flops * args.batch / step_s / peak, 3),
            "loss": loss,
        }
    results["speedup"] = round(results["paper"]["step_s"] / results["fast"]["step_s"], 2)
    results["sweep_ratio"] = round(
        results["paper"]["sweeps_per_image_step"] / results["fast"]["sweeps_per_image_step"], 2
    )
    print(
        json.dumps(
            {
                "benchmark": "VGG-4 hEP training step, 32x32x3, papers' and fast settings",
                "batch": args.batch,
                "channels": list(model.state_shapes[i][-1] for i in range(model.num_layers)),
                "dtype": str(dtype),
                "gflop_per_image_sweep": round(per_sweep / 1e9, 3),
                "peak_tflop_per_s_measured": round(peak / 1e12, 3),
                **results,
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
