"""Shared plumbing of the figure scripts: arguments, the reference problems, output."""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import eqx_eqprop as ep  # noqa: E402
from eqx_eqprop.internal import (  # noqa: E402
    as_model_input,
    has_idx_files,
    load_digits,
    load_idx_directory,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (for the tests)")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "figures"))
    p.add_argument("--data-dir", default=str(DEFAULT_MNIST), help="MNIST IDX files (else digits)")
    p.add_argument("--seed", type=int, default=0)
    return p


def images(data_dir: str | None, n: int, seed: int = 0, split: str = "test"):
    """`n` flattened images and labels of a split: MNIST from IDX files when present,
    else the embedded digits."""
    data = load_idx_directory(data_dir) if has_idx_files(data_dir) else load_digits()
    x_all, y_all = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    idx = np.random.default_rng(seed).choice(len(x_all), n, replace=False)
    x = data.preprocess(x_all[idx]).reshape(n, -1)
    return jnp.asarray(x), jnp.asarray(y_all[idx]), data


def mlp(num_features: int, hidden, classes: int, seed: int, dtype=jnp.float32, scale=1.0):
    return ep.EnergyMLP(
        (num_features, *hidden, classes), weight_scale=scale, dtype=dtype, key=jax.random.key(seed)
    )


def problem(args, batch: int, smoke_batch: int, dtype=jnp.float32):
    """The reference problem of the figures: the MNIST MLP 784-256-256-10 at its default
    initialisation on `batch` test images (smoke: a 16-16 MLP on `smoke_batch` digits)."""
    hidden = (16, 16) if args.smoke else (256, 256)
    x, y, _ = images(
        None if args.smoke else args.data_dir, smoke_batch if args.smoke else batch, args.seed
    )
    model = mlp(x.shape[1], hidden, 10, args.seed, dtype=dtype)
    return model, x.astype(dtype), y, hidden


TIGHT = ep.FixedPointRelaxation(20000, 1e-11, 1e-11)  # float64 reference relaxation


def reference_gradient(model, x, y, relaxation=TIGHT):
    """The ground truth of the figures: the implicit gradient at a tightly converged free
    equilibrium, with the free phase's info (for the spectral radius)."""
    return ep.gradient(model, x, y, estimator=ep.ImplicitDifferentiation(), relaxation=relaxation)


def with_dtype(model, dtype):
    """`model` with every floating array cast to `dtype` (e.g. a float64 reference)."""
    return jax.tree_util.tree_map(
        lambda v: v.astype(dtype) if eqx.is_inexact_array(v) else v, model
    )


def training_batch(model, data: ep.Dataset, n: int, seed: int):
    """`n` preprocessed training images drawn with `seed`, shaped for `model`, and labels."""
    idx = np.random.default_rng(seed).choice(len(data.x_train), n, replace=False)
    x = as_model_input(model, data.preprocess(data.x_train[idx]))
    return x, jnp.asarray(data.y_train[idx])


def flat(tree):
    return jnp.concatenate([jnp.ravel(v) for v in jax.tree_util.tree_leaves(tree)])


def compare(estimate, truth) -> dict:
    dtype = jnp.zeros(()).dtype  # float64 when x64 is enabled
    a, b = flat(estimate).astype(dtype), flat(truth).astype(dtype)
    return {
        "cosine": float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b))),
        "relative_error": float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)),
    }


def print_record(record: dict, out: str | None) -> None:
    """Print `record` as JSON and, with `out`, also write it there (a temporary file,
    then a rename)."""
    text = json.dumps(record, indent=1)
    print(text)
    if out:
        tmp = Path(out).with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, out)


def save(fig, record: dict, out: str, name: str, arrays: dict | None = None) -> Path:
    """`name.png`, `name.json` (settings, numbers, command, machine) and optionally
    `name.npz` under `out`, each written to a temporary file and renamed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        **record,
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} "
        f"({jax.default_backend()})",
        "date": time.strftime("%Y-%m-%d"),
    }
    png = out / f"{name}.png"
    fig.savefig(out / f"{name}.tmp.png", dpi=130, bbox_inches="tight")
    os.replace(out / f"{name}.tmp.png", png)
    plt.close(fig)
    (out / f"{name}.tmp.json").write_text(json.dumps(record, indent=1, default=float))
    os.replace(out / f"{name}.tmp.json", out / f"{name}.json")
    if arrays:
        np.savez_compressed(out / f"{name}.tmp.npz", **arrays)
        os.replace(out / f"{name}.tmp.npz", out / f"{name}.npz")
    print(f"wrote {png}")
    return png
