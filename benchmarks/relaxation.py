"""Steps and wall time to a tolerance, for the free phase and the nudged phases of the MNIST
MLP 784-256-256-10 (float32, a batch of 64 test images): synchronous, even/odd and
safeguarded Anderson (over the even/odd map) relaxation, at the default initialisation
and after one epoch of training.

The nudged phases are those of holomorphic EP with N = 4 at |beta| = 0.2 (two real and
one complex phase, the complex one's conjugate is not relaxed), started from the free
equilibrium. A relaxation of the batch is one vmapped call, so its wall time is set by
its slowest sample: `steps_max` is what it costs, `steps_median` what a sample needs.
Wall times are the median of `--repeats` calls after compilation.

    python benchmarks/relaxation.py                      # trains the epoch itself (~1 min)
    python benchmarks/relaxation.py --trained runs/mnist-fast/seed0

Prints one JSON object.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import eqx_eqprop as ep
from eqx_eqprop.internal import load_idx_directory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")


def relaxations(tol: float, budget: int) -> dict:
    return {
        "synchronous": ep.FixedPointRelaxation(budget, tol, tol),
        "even_odd": ep.EvenOddRelaxation(budget, tol, tol),
        "anderson_even_odd": ep.AndersonRelaxation(max_steps=budget, rtol=tol, atol=tol),
    }


def timed(fn, *args, repeats: int):
    out = jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def measure(model, x, y, relaxation, repeats: int) -> dict:
    free_fn = jax.jit(lambda m, x: ep.free_phase(m, x, relaxation))
    (s_free, free), free_s = timed(free_fn, model, x, repeats=repeats)
    betas = 0.2 * jnp.array([1, -1, 1j], jnp.complex64)

    def nudged(m, x, y, start):
        return jax.vmap(lambda b: ep.nudged_phase(m, x, y, b, relaxation=relaxation, start=start))(
            betas
        )

    (_, stats), nudged_s = timed(jax.jit(nudged), model, x, y, s_free, repeats=repeats)

    def summary(stats, seconds):
        steps = np.asarray(stats.steps)
        return {
            "steps_median": float(np.median(steps)),
            "steps_max": int(steps.max()),
            "converged": bool(np.all(np.asarray(stats.result == ep.RESULTS.successful))),
            "residual_max": float(np.max(stats.residual)),
            "seconds": round(seconds, 4),
        }

    return {"free": summary(free, free_s), "nudged": summary(stats, nudged_s)}


def trained_model(args, data):
    if args.trained:
        return ep.load_trained_model(args.trained), args.trained
    out = tempfile.mkdtemp()
    cfg = ep.get_preset(args.preset).update(
        {"loop.epochs": 1, "loop.out_dir": out + "/{name}", "data.data_dir": args.data_dir}
    )
    result = ep.train(cfg, data=data, resume=False, progress=False, verbose=False)
    return result["model"], f"preset {args.preset}, one epoch"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=MNIST)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--budget", type=int, default=5000, help="max_steps of every relaxation")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--trained", help="a run directory (default: train one epoch of --preset)")
    p.add_argument("--preset", default="mnist-fast")
    args = p.parse_args()

    data = load_idx_directory(args.data_dir)
    x = jnp.asarray(data.preprocess(data.x_test[: args.batch]).reshape(args.batch, -1))
    y = jnp.asarray(data.y_test[: args.batch])
    models = {"init": (ep.EnergyMLP((784, 256, 256, 10), key=jax.random.key(0)), "seed 0")}
    models["one_epoch"] = trained_model(args, data)
    results = {}
    for state, (model, source) in models.items():
        rows = {
            name: measure(model, x, y, r, args.repeats)
            for name, r in relaxations(args.tol, args.budget).items()
        }
        plain = rows["synchronous"]
        for name, row in rows.items():
            for phase in ("free", "nudged"):
                row[phase]["speedup_vs_synchronous"] = round(
                    plain[phase]["seconds"] / row[phase]["seconds"], 2
                )
        results[state] = {"model": source, **rows}
    print(
        json.dumps(
            {
                "benchmark": "relaxation to tolerance, MNIST MLP 784-256-256-10, float32",
                "tol": args.tol,
                "batch": args.batch,
                "nudges": "0.2, -0.2, 0.2i (hEP N=4, conjugate reused)",
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
