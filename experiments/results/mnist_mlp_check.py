"""Compare hEP on a trained MNIST run with the implicit gradient (float64) and with
hEP's own error estimate. Usage: python mnist_mlp_check.py RUN_DIR [--data-dir DIR]"""

import argparse
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp

import eqx_eqprop as ep
from eqx_eqprop.internal import load_idx_directory


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    jax.config.update("jax_enable_x64", True)
    warnings.simplefilter("ignore", RuntimeWarning)
    model = ep.load_trained_model(args.run_dir)
    data = load_idx_directory(args.data_dir)
    x = jnp.asarray(data.preprocess(data.x_test[: args.batch]).reshape(args.batch, -1))
    y = jnp.asarray(data.y_test[: args.batch])
    m64 = jax.tree.map(lambda v: v.astype(jnp.float64) if eqx.is_inexact_array(v) else v, model)
    x64 = x.astype(jnp.float64)

    def flat(t):
        return jnp.concatenate([v.ravel() for v in jax.tree_util.tree_leaves(t)]).astype(
            jnp.float64
        )

    def compare(g, truth):
        a, b = flat(g), flat(truth)
        return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)), float(
            a @ b / jnp.linalg.norm(a) / jnp.linalg.norm(b)
        )

    tight = ep.FixedPointRelaxation(20000, 1e-10, 1e-10)
    truth, info = ep.gradient(m64, x64, y, estimator=ep.ImplicitDifferentiation(), relaxation=tight)
    radius = ep.update_spectral_radius(m64, x64, info.free_state)
    print(f"spectral radius: median {float(jnp.median(radius)):.3f}, max {float(radius.max()):.3f}")
    paper = ep.HolomorphicEP(0.4, 10, error_tolerance=None)
    free = ep.FixedPointRelaxation(200, None, None)
    nudged = ep.FixedPointRelaxation(50, None, None)
    g, i = ep.gradient(
        model, x, y, estimator=paper, relaxation=free, nudged_relaxation=nudged, throw=False
    )
    rel, cos = compare(g, truth)
    print(f"hEP 0.4, 200/50, f32: rel {rel:.3g} cos {cos:.5f} est. {float(i.error_estimate):.3g}")
    for beta in (0.4, 0.2, 0.1, 0.05):
        est = ep.HolomorphicEP(beta, 10, error_tolerance=None)
        g, i = ep.gradient(m64, x64, y, estimator=est, relaxation=tight, throw=False)
        rel, cos = compare(g, truth)
        print(f"hEP {beta}, f64: rel {rel:.3g} cos {cos:.5f} est. {float(i.error_estimate):.3g}")


if __name__ == "__main__":
    main()
