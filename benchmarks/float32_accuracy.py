"""How accurate the float32 hEP gradient is, against the float64 one on identical weights
and inputs, for N = 1, 2, 4, 6 phases: with the phases' learning signals combined from
the displacement of the states (the library's way) and, for comparison, as the plain
difference of two batch-averaged signals (a cancellation after rounding). Both precisions
run the same fixed sweeps (200 free, 50 per nudged phase from the free state, even/odd),
as the cross-check against the papers' code did, so the difference is rounding alone.
Also the time of one float32 estimate with each.

    python benchmarks/float32_accuracy.py [--data-dir ../shared/data/mnist]

Prints one JSON object per network: {"net": ..., "rows": [{"N", "displacement",
"difference", "ms_displacement", "ms_difference"}, ...]} (relative errors of all the
parameters, and of the first layer's weights).
"""

import argparse
import json
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.tree_util as jtu  # noqa: E402
import numpy as np  # noqa: E402

import eqx_eqprop as ep  # noqa: E402
from eqx_eqprop.internal import has_idx_files, load_digits, load_idx_directory  # noqa: E402


class PlainDifference(ep.HolomorphicEP):
    """hEP with each phase's change taken as the difference of two batch averages."""

    def observable_change(self, model, x, s_free, f0, s, nudge):
        return jtu.tree_map(jnp.subtract, model.learning_signal(x, s, nudge), f0)


def flat(tree):
    return jnp.concatenate([jnp.ravel(v) for v in jtu.tree_leaves(tree)]).astype(jnp.float64)


def rel(a, b):
    return float(jnp.linalg.norm(flat(a) - flat(b)) / jnp.linalg.norm(flat(b)))


def first_weight(grads):
    layers = getattr(grads, "layers", None) or grads.convs
    return layers[0].weight


def f32(tree):
    return jtu.tree_map(lambda v: v.astype(jnp.float32) if v.dtype == jnp.float64 else v, tree)


def measure(model64, x64, y, beta, phases, repeats=3):
    rows = []
    free = ep.EvenOddRelaxation(max_steps=200, rtol=None, atol=None)
    nudged = ep.EvenOddRelaxation(max_steps=50, rtol=None, atol=None)
    model32, x32 = f32(model64), f32(x64)
    for n in phases:
        est = ep.HolomorphicEP(beta, n, error_tolerance=None)
        truth, _ = ep.gradient(
            model64, x64, y, estimator=est, relaxation=free, nudged_relaxation=nudged
        )
        row = {"N": n}
        for label, cls in (("displacement", ep.HolomorphicEP), ("difference", PlainDifference)):
            est32 = cls(beta, n, error_tolerance=None)
            fn = jax.jit(
                lambda m, x, y, est32=est32: ep.gradient(
                    m, x, y, estimator=est32, relaxation=free, nudged_relaxation=nudged
                )[0]
            )
            g = jax.block_until_ready(fn(model32, x32, y))
            start = time.perf_counter()
            for _ in range(repeats):
                g = jax.block_until_ready(fn(model32, x32, y))
            row[f"ms_{label}"] = round(1e3 * (time.perf_counter() - start) / repeats, 1)
            row[label] = float(f"{rel(g, truth):.3g}")
            row[f"{label}_layer0"] = float(f"{rel(first_weight(g), first_weight(truth)):.3g}")
        rows.append(row)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(Path(__file__).parents[2] / "shared/data/mnist"))
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    if has_idx_files(args.data_dir):
        data = load_idx_directory(args.data_dir)
        shape = (28, 28, 1)
    else:  # the embedded digits, where the MNIST files are not at hand
        data = load_digits()
        shape = (8, 8, 1)
    x = jnp.asarray(data.preprocess(data.x_train[: args.batch]), jnp.float64)
    y = jnp.asarray(data.y_train[: args.batch])
    key = jax.random.key(0)

    def conv(pooling):
        return ep.EnergyConvNet(shape, (32, 64), 10, pooling=pooling, dtype=jnp.float64, key=key)

    nets = {
        "mlp 784-256-256-10": (
            ep.EnergyMLP((int(np.prod(shape)), 256, 256, 10), dtype=jnp.float64, key=key),
            x.reshape(len(x), -1),
        ),
        "conv 32-64 softmax pooling": (conv(ep.SoftmaxPool()), x),
        "conv 32-64 average pooling": (conv(ep.AvgPool()), x),
    }
    for name, (model, xs) in nets.items():
        rows = measure(model, xs, y, beta=0.1, phases=(1, 2, 4, 6))
        print(json.dumps({"net": name, "batch": args.batch, "beta": 0.1, "rows": rows}), flush=True)


if __name__ == "__main__":
    main()
