"""How exact is a trained run's gradient? The run's estimator with the run's relaxations
and dtype (the gradient training used), and the same estimator with converged
relaxations in float64, each against the implicit gradient in float64 (free phase to
1e-10, GMRES adjoint), on a batch of training images at a checkpoint of any run.

The two numbers separate the error of the relaxation budget (training setting against
converged) from the estimator's own bias (converged against implicit: the aliasing of N
phases on a circle |beta|). `--settings` measures further budgets and tolerances, to
find the cheapest that keeps the gradient exact. Slow samples, those the reference needs
more than a fifth of its sweeps for, are counted: near-critical equilibria are where
both errors grow.

    python experiments/checkpoint_gradient.py runs/mnist-conv-hep --batch 64 \
        --settings 100/30/1e-4/1e-6 300/100/1e-5
"""

import argparse
import dataclasses
import json
import os
import platform
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

import eqx_eqprop as ep
from eqx_eqprop.internal import (
    build_cost,
    build_data,
    build_estimator,
    build_relaxations,
)

from _util import compare, print_record, training_batch, with_dtype  # the scripts' plumbing


def converged(relaxation, max_steps: int, tol: float):
    """The run's relaxation, run to `tol` within `max_steps`, without noise, with a
    GMRES adjoint (no dense Jacobian, so conv nets fit); an ODE or other relaxation is
    replaced by even/odd sweeps (every layered model has them) or fixed-point ones."""
    adjoint = optx.ImplicitAdjoint(lx.GMRES(tol, tol, max_steps=max_steps))
    if isinstance(relaxation, ep.EvenOddRelaxation | ep.FixedPointRelaxation):
        changes = {"max_steps": max_steps, "rtol": tol, "atol": tol, "adjoint": adjoint}
        if hasattr(relaxation, "noise"):
            changes["noise"] = 0.0
        return dataclasses.replace(relaxation, **changes)
    return ep.FixedPointRelaxation(max_steps, tol, tol, adjoint=adjoint)


def missed(stats) -> np.ndarray:
    """Which relaxations ended without meeting their tolerance."""
    return np.asarray(stats.result != ep.RESULTS.successful)


def parse_setting(text: str) -> tuple[int, int, float, float]:
    """`FREE/NUDGED/TOL` or `FREE/NUDGED/FREE_TOL/NUDGED_TOL`: budgets in sweeps and
    tolerances (rtol = atol) of the free and nudged relaxations."""
    parts = text.split("/")
    if len(parts) not in (3, 4):
        raise ValueError(
            f"setting {text!r}: write FREE/NUDGED/TOL or FREE/NUDGED/FREE_TOL/NUDGED_TOL, "
            "e.g. 100/30/1e-4/1e-6."
        )
    tols = [float(t) for t in parts[2:]]
    return int(parts[0]), int(parts[1]), tols[0], tols[-1]


def check(run_dir, batch=64, data_dir=None, max_steps=5000, tol=1e-10, seed=0, settings=()) -> dict:
    """The JSON record of the script (see its docstring); `settings` are further
    relaxation settings (`parse_setting`) to measure the run's estimator with."""
    jax.config.update("jax_enable_x64", True)  # the reference is float64
    parsed = {text: parse_setting(text) for text in settings}  # bad ones fail first
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} holds no config.json: not a run directory?")
    cfg = ep.TrainConfig(json.loads(config_path.read_text()))
    if data_dir is not None:
        cfg = cfg.set("data.data_dir", data_dir)
    model = ep.load_trained_model(run_dir)
    data = build_data(cfg)
    if batch > len(data.x_train):
        raise ValueError(f"--batch {batch}: the training split has {len(data.x_train)} images.")
    x, y = training_batch(model, data, batch, seed)
    estimator, cost = build_estimator(cfg), build_cost(cfg)
    free, nudged = build_relaxations(cfg)
    model64 = with_dtype(model, jnp.float64)
    x64 = jnp.asarray(x, jnp.float64)
    tight = converged(free, max_steps, tol)
    key = jax.random.key(seed)

    start = time.perf_counter()
    truth, info = ep.gradient(
        model64,
        x64,
        y,
        estimator=ep.ImplicitDifferentiation(),
        relaxation=tight,
        cost=cost,
        throw=False,
    )
    steps = np.asarray(info.free_stats.steps)
    record = {
        "run": str(run_dir),
        "batch": batch,
        "estimator": json.loads(json.dumps(dict(cfg.estimator), default=str)),
        "reference": f"implicit differentiation, float64, free phase to {tol:g} within "
        f"{max_steps} sweeps, GMRES adjoint",
        "reference_unconverged": int(np.sum(missed(info.free_stats))),
        "slow_samples": int(np.sum(steps > max_steps // 5)),
        "reference_sweeps_median": float(np.median(steps)),
        "reference_sweeps_max": int(steps.max()),
    }

    def measure(m, xs, relaxation, nudged_relaxation) -> tuple[dict, object]:
        with warnings.catch_warnings():  # unconverged relaxations are counted instead
            warnings.simplefilter("ignore", RuntimeWarning)
            g, info = ep.gradient(
                m,
                xs,
                y,
                estimator=estimator,
                relaxation=relaxation,
                nudged_relaxation=nudged_relaxation,
                cost=cost,
                key=key,
                throw=False,
            )
        out = {
            **compare(g, truth),
            "dtype": str(xs.dtype),
            "free_sweeps_mean": float(np.mean(info.free_stats.steps)),
            "free_unconverged": float(np.mean(missed(info.free_stats))),
        }
        if hasattr(info, "nudged_stats"):
            out["nudged_sweeps_mean"] = float(np.mean(info.nudged_stats.steps))
            out["nudged_unconverged"] = float(np.mean(missed(info.nudged_stats)))
        return out, info

    record["training_setting"], _ = measure(model, jnp.asarray(x), free, nudged)
    discrete = ep.EvenOddRelaxation | ep.FixedPointRelaxation
    if parsed and not (isinstance(free, discrete) and isinstance(nudged, discrete)):
        raise ValueError(
            "--settings set sweeps and tolerances of fixed-point or even/odd relaxations; "
            f"this run relaxes with {type(free).__name__} and {type(nudged).__name__}."
        )
    for text, (f_steps, n_steps, f_tol, n_tol) in parsed.items():
        change = {"max_steps": f_steps, "rtol": f_tol, "atol": f_tol}
        nudged_change = {"max_steps": n_steps, "rtol": n_tol, "atol": n_tol}
        record.setdefault("settings", {})[text], _ = measure(
            model,
            jnp.asarray(x),
            dataclasses.replace(free, **change),
            dataclasses.replace(nudged, **nudged_change),
        )
    record["converged_relaxations"], info = measure(
        model64, x64, tight, converged(nudged, max_steps, tol)
    )
    if getattr(info, "error_estimate", None) is not None:
        record["converged_relaxations"]["error_estimate"] = float(info.error_estimate)
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} "
        f"({jax.default_backend()})"
    )
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run directory of eqprop-train (config.json, checkpoint)")
    p.add_argument("--batch", type=int, default=64, help="training images (default 64)")
    p.add_argument("--data-dir", default=None, help="where the run's data is, if moved")
    p.add_argument("--max-steps", type=int, default=5000, help="sweeps of the reference")
    p.add_argument("--tol", type=float, default=1e-10, help="tolerance of the reference")
    p.add_argument("--seed", type=int, default=0, help="which training images")
    p.add_argument(
        "--settings",
        nargs="*",
        default=[],
        help="more relaxation settings to measure, FREE/NUDGED/TOL or "
        "FREE/NUDGED/FREE_TOL/NUDGED_TOL (sweeps and tolerances), e.g. 100/30/1e-4/1e-6",
    )
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    record = check(
        args.run_dir, args.batch, args.data_dir, args.max_steps, args.tol, args.seed, args.settings
    )
    print_record(record, args.out)
    return record


if __name__ == "__main__":
    main()
