"""Training: a jit-compiled step for any estimator and optax optimiser, evaluation,
metrics (JSONL), atomic resumable checkpoints, and a progress bar."""

import io
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from ._config import (
    COSTS,
    TrainConfig,
    build_estimator,
    build_model,
    build_optimizer,
    build_relaxations,
    steps_per_epoch,
)
from ._costs import AbstractCost
from ._data import Dataset, eval_batches, load_dataset, train_batches
from ._gradient import AbstractEstimator, check_inputs, free_phase
from ._misc import tree_all_finite
from ._relaxation import AbstractRelaxation
from ._results import RESULTS


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became non-finite."""


def make_train_step(
    estimator: AbstractEstimator,
    relaxation: AbstractRelaxation,
    cost: AbstractCost,
    optimizer,
) -> Callable:
    """`step(model, opt_state, x, y, key) -> (model, opt_state, metrics)`, jit-compiled.

    Never raises on a failed relaxation or a large aliasing estimate: those are counted
    in `metrics` (the loop reports them), so one bad batch does not end a long run.
    """

    @eqx.filter_jit
    def step(model, opt_state, x, y, key):
        x, y = check_inputs(model, x, y)
        key = key if relaxation.noisy else None
        grads, info = estimator(model, x, y, relaxation, cost, key)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        model = eqx.apply_updates(model, updates)
        logits = jax.vmap(model.readout)(info.free_state)
        metrics = {
            "loss": info.loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == y),
            "residual": jnp.mean(info.free_stats.residual),
            "failed": info.result != RESULTS.successful,
            "error_estimate": jnp.nan if info.error_estimate is None else info.error_estimate,
        }
        return model, opt_state, metrics

    return step


def make_eval_step(relaxation: AbstractRelaxation, cost: AbstractCost) -> Callable:
    """`eval(model, x, y, key) -> per-sample (loss, top1, top5, residual)`, jit-compiled."""

    @eqx.filter_jit
    def evaluate(model, x, y, key):
        x, y = check_inputs(model, x, y)
        s, stats = free_phase(model, x, relaxation, key if relaxation.noisy else None)
        logits = jax.vmap(model.readout)(s)
        loss = jax.vmap(cost)(logits, y)
        top5 = jnp.sum(logits > jnp.take_along_axis(logits, y[:, None], 1), axis=1) < 5
        return loss, jnp.argmax(logits, -1) == y, top5, stats.residual

    return evaluate


def evaluate(model, data_x, data_y, eval_step, batch_size: int, key) -> dict[str, float]:
    """Mean loss, top-1 and top-5 accuracy and free-phase residual over a whole split."""
    sums = np.zeros(4)
    count = 0
    for i, (xb, yb, n) in enumerate(eval_batches(data_x, data_y, batch_size)):
        xb = xb.reshape(len(xb), *model.input_shape)
        out = eval_step(model, xb, yb, jax.random.fold_in(key, i))
        sums += [float(jnp.sum(v[:n])) for v in out]
        count += n
    loss, top1, top5, residual = sums / count
    metrics = {"loss": loss, "top1": top1, "residual": residual}
    if model.num_classes > 5:
        metrics["top5"] = top5
    return metrics


# ---------------------------------------------------------------- checkpoints


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(run_dir: Path, model, opt_state, key, progress: dict, history: list) -> None:
    # (the layer sizes go with it, so that load_trained_model can rebuild the model)
    """Model, optimiser state and RNG key (one Equinox leaf file), then the progress and
    metrics history (JSON). Each file is replaced atomically; the JSON is written last
    and names the state it belongs to, so a crash between the two is detected."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, (model, opt_state, jax.random.key_data(key)))
    state_name = f"state-{progress['step']:09d}.eqx"
    _atomic_write(run_dir / state_name, buffer.getvalue())
    meta = {
        "progress": progress,
        "history": history,
        "state": state_name,
        "layer_sizes": list(model.layer_sizes),
    }
    _atomic_write(run_dir / "checkpoint.json", json.dumps(meta, indent=1).encode())
    for old in run_dir.glob("state-*.eqx"):
        if old.name != state_name:
            old.unlink(missing_ok=True)
    lines = "".join(json.dumps(h) + "\n" for h in history)
    _atomic_write(run_dir / "metrics.jsonl", lines.encode())


def load_checkpoint(run_dir: Path, model, opt_state, key):
    """Returns `(model, opt_state, key, progress, history)` or None when there is none."""
    meta_path = run_dir / "checkpoint.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    like = (model, opt_state, jax.random.key_data(key))
    with open(run_dir / meta["state"], "rb") as f:
        model, opt_state, key_data = eqx.tree_deserialise_leaves(f, like)
    return model, opt_state, jax.random.wrap_key_data(key_data), meta["progress"], meta["history"]


def load_trained_model(run_dir: str | Path):
    """The model of a run directory of `eqprop-train`, from its last checkpoint."""
    run_dir = Path(run_dir)
    cfg = TrainConfig(
        **{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in json.loads((run_dir / "config.json").read_text()).items()
        }
    )
    meta = json.loads((run_dir / "checkpoint.json").read_text())
    sizes = meta["layer_sizes"]
    model = build_model(cfg, sizes[0], sizes[-1])
    optimizer = build_optimizer(cfg, model, 1)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    return load_checkpoint(run_dir, model, opt_state, jax.random.key(cfg.seed))[0]


# ---------------------------------------------------------------------- the loop


def _check_finite(model, where: str, last_good: str):
    if not bool(tree_all_finite(eqx.filter(model, eqx.is_inexact_array))):
        raise TrainingDiverged(
            f"The parameters became non-finite {where}. The last good checkpoint is "
            f"{last_good}. Lower the learning rate or |beta|, or use a convergence check "
            "(rtol/atol) to see whether the relaxations still converge."
        )


def train(
    cfg: TrainConfig,
    *,
    data: Dataset | None = None,
    resume: bool = True,
    progress: bool = True,
    verbose: bool = True,
    stop_after_steps: int | None = None,
) -> dict:
    """Train `cfg`, writing `config.json`, `metrics.jsonl` and checkpoints under
    `cfg.run_dir`, and resuming from its checkpoint when there is one.

    `progress` shows a tqdm bar with live loss, accuracy and residual; `verbose` prints
    a line per epoch. `stop_after_steps` stops (as if killed) after that many steps of
    this call, without writing anything more: for testing resumption.

    Returns `{"model", "history", "final", "run_dir"}`.
    """
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"
    if resume and config_path.exists():
        saved = json.loads(config_path.read_text())
        ours = json.loads(json.dumps(cfg.to_dict()))
        changed = sorted(k for k in ours if saved.get(k) != ours[k])
        harmless = {"eval_batch_size", "checkpoint_every", "data_dir", "out_dir"}
        if cfg.schedule == "constant":
            harmless.add("epochs")  # extending a run does not change its past
        if set(changed) - harmless:
            raise ValueError(
                f"{run_dir} holds a run with a different configuration ({', '.join(changed)}); "
                "use another output directory, or resume=False (--fresh) to start over."
            )
    if not resume:
        for f in [
            *run_dir.glob("state-*.eqx"),
            run_dir / "checkpoint.json",
            run_dir / "metrics.jsonl",
        ]:
            f.unlink(missing_ok=True)
    _atomic_write(config_path, json.dumps(cfg.to_dict(), indent=1).encode())

    data = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    per_epoch = steps_per_epoch(len(data.x_train), cfg.batch_size)
    if len(data.x_train) < cfg.batch_size:
        raise ValueError(
            f"batch_size {cfg.batch_size} exceeds the {len(data.x_train)} training samples."
        )
    model = build_model(cfg, data.num_features, data.num_classes)
    optimizer = build_optimizer(cfg, model, per_epoch)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    key = jax.random.key(cfg.seed)
    relaxation, _ = build_relaxations(cfg)
    cost = COSTS[cfg.cost]()
    step_fn = make_train_step(build_estimator(cfg), relaxation, cost, optimizer)
    eval_fn = make_eval_step(relaxation, cost)

    epoch, batch_index, step, history = 0, 0, 0, []
    restored = load_checkpoint(run_dir, model, opt_state, key) if resume else None
    if restored is not None:
        model, opt_state, key, prog, history = restored
        epoch, batch_index, step = prog["epoch"], prog["batch"], prog["step"]
    last_good = (
        f"{run_dir / 'checkpoint.json'} (step {step})" if restored else "none (no step finished)"
    )

    step_keys = jax.random.fold_in(key, 1)
    eval_key = jax.random.fold_in(key, 2)
    steps_this_call = 0
    warned = False
    while epoch < cfg.epochs:
        t0 = time.perf_counter()
        running = {"loss": 0.0, "accuracy": 0.0, "residual": 0.0, "failed": 0, "error": 0.0}
        done = 0
        bar = tqdm(
            total=per_epoch,
            initial=batch_index,
            disable=not progress,
            leave=False,
            desc=f"{cfg.name} epoch {epoch + 1}/{cfg.epochs}",
            dynamic_ncols=True,
        )
        for xb, yb in train_batches(
            data, cfg.batch_size, seed=cfg.seed, epoch=epoch, start=batch_index
        ):
            if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                bar.close()
                return {"stopped_at_step": step}
            xb = xb.reshape(len(xb), *model.input_shape)
            model, opt_state, m = step_fn(
                model, opt_state, xb, yb, jax.random.fold_in(step_keys, step)
            )
            loss = float(m["loss"])
            if not math.isfinite(loss):
                bar.close()
                raise TrainingDiverged(
                    f"The loss became {loss} at epoch {epoch + 1}, batch {batch_index + 1} "
                    f"(step {step + 1}). The last good checkpoint is {last_good}. Lower the "
                    "learning rate or |beta|, or check that the relaxations converge."
                )
            step += 1
            batch_index += 1
            steps_this_call += 1
            done += 1
            running["loss"] += loss
            running["accuracy"] += float(m["accuracy"])
            running["residual"] += float(m["residual"])
            running["failed"] += int(m["failed"])
            running["error"] += float(m["error_estimate"])
            bar.update(1)
            bar.set_postfix(
                loss=f"{running['loss'] / done:.3f}",
                acc=f"{running['accuracy'] / done:.3f}",
                res=f"{running['residual'] / done:.1e}",
            )
            if (
                cfg.checkpoint_every
                and step % cfg.checkpoint_every == 0
                and batch_index < per_epoch
            ):
                _check_finite(model, f"at step {step}", last_good)
                prog = {"epoch": epoch, "batch": batch_index, "step": step}
                save_checkpoint(run_dir, model, opt_state, key, prog, history)
                last_good = f"{run_dir / 'checkpoint.json'} (step {step})"
        bar.close()
        _check_finite(model, f"in epoch {epoch + 1}", last_good)
        test = evaluate(model, data.x_test, data.y_test, eval_fn, cfg.eval_batch_size, eval_key)
        record = {
            "epoch": epoch + 1,
            "step": step,
            "test_top1": test["top1"],
            "test_loss": test["loss"],
            "test_residual": test["residual"],
            "seconds": time.perf_counter() - t0,
        }
        if "top5" in test:
            record["test_top5"] = test["top5"]
        if done:  # averages over the steps of this call (all of them unless resumed)
            record.update(
                train_loss=running["loss"] / done,
                train_accuracy=running["accuracy"] / done,
                train_residual=running["residual"] / done,
                failed_steps=running["failed"],
            )
            if cfg.estimator in ("hep", "symmetric"):
                record["error_estimate"] = running["error"] / done
        if running["failed"] and not warned:
            warnings.warn(
                f"{cfg.name}, epoch {epoch + 1}: {running['failed']} of {done} steps reported a "
                "non-converged relaxation or a large aliasing estimate; `failed_steps` in "
                "metrics.jsonl counts them for every epoch (warned once per run).",
                RuntimeWarning,
                stacklevel=2,
            )
            warned = True
        history.append(record)
        epoch, batch_index = epoch + 1, 0
        save_checkpoint(
            run_dir, model, opt_state, key, {"epoch": epoch, "batch": 0, "step": step}, history
        )
        last_good = f"{run_dir / 'checkpoint.json'} (step {step})"
        if verbose:
            tqdm.write(
                f"{cfg.name} epoch {record['epoch']:3d}: test top1 {record['test_top1']:.4f}, "
                f"loss {record['test_loss']:.4f}, {record['seconds']:.1f} s",
                file=sys.stdout,
            )
    final = history[-1] if history else {}
    return {"model": model, "history": history, "final": final, "run_dir": str(run_dir)}
