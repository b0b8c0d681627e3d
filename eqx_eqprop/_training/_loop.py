"""The training loop: a jit-compiled step per batch, the device read once per logging
interval, evaluation and an atomic checkpoint at the end of every epoch, hooks
(`_hooks.py`) for the rest (progress bar, printing, your own)."""

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from .._data import Dataset, check_dataset, eval_batches, prefetch, train_batches
from .._models import AbstractModel
from .._runtime import release_compiled_programs
from ._advice import failure_advice, warn_failed
from ._build import (
    build_cost,
    build_data,
    build_estimator,
    build_model,
    build_model_from_spec,
    build_optimizer,
    build_relaxations,
    model_spec,
    steps_per_epoch,
)
from ._checkpoint import (
    CheckpointError,
    atomic_write,
    check_model_spec,
    load_checkpoint,
    load_model_file,
    metrics_text,
    read_json,
    read_meta,
    remove_leftovers,
    save_checkpoint,
    state_rest,
)
from ._config import TrainConfig
from ._devices import Placement, barrier, check_same_on_every_process, fingerprint
from ._hooks import EpochRecord, Hook, Printer, ProgressBar
from ._schema import HARMLESS
from ._step import (
    TrainState,
    accumulate,
    empty_accumulator,
    empty_eval_sums,
    init_train_state,
    make_eval_step,
    make_train_step,
    merge_sums,
    summarise,
)


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became non-finite."""


def read_device(tree):
    """The one place the loop waits for the device and copies to the host."""
    return jax.device_get(tree)


def with_augmentation(data: Dataset, setting) -> Dataset:
    """The configured augmentation (`{pad, flip}` or "none") instead of the dataset's."""
    if setting is None:
        return data
    if setting in ("none", False):
        return dataclasses.replace(data, augment=False)
    return dataclasses.replace(
        data, augment=True, pad=int(setting.get("pad", 4)), flip=bool(setting.get("flip", True))
    )


def as_model_input(model: AbstractModel, x: np.ndarray) -> np.ndarray:
    """Images flattened for a model that takes vectors; anything else unchanged (the
    model's own checks then name a mismatch, e.g. NCHW images for an NHWC model)."""
    shape = model.input_shape
    if len(shape) == 1 and x.ndim > 2 and math.prod(x.shape[1:]) == shape[0]:
        return x.reshape(len(x), shape[0])
    return x


# ------------------------------------------------------------------------ evaluation


def evaluate(
    model, data: Dataset, eval_step, batch_size: int, key, placement: Placement | None = None
) -> dict[str, float]:
    """Mean loss, top-1 and top-5 accuracy, and free-phase residual and steps over the
    test split; the sums stay on the device until the end."""
    placement = placement or Placement(1)
    sums = placement.replicate(empty_eval_sums())
    for i, (xb, yb, n) in enumerate(eval_batches(data, batch_size)):
        valid = np.arange(len(xb)) < n
        xb, yb, valid = placement.put_global_batch(as_model_input(model, xb), yb, valid)
        sums = eval_step(
            model, xb, yb, valid, placement.replicate(jax.random.fold_in(key, i)), sums
        )
    read = read_device(sums)
    count = max(float(read["count"]), 1.0)
    out = {
        "loss": float(read["loss"]) / count,
        "top1": float(read["top1"]) / count,
        "residual": float(read["residual"]) / count,
        "free_steps": float(read["free_steps"]) / count,
        "free_steps_max": float(read["free_steps_max"]),
        "failed": int(read["failed"]),
    }
    if model.num_classes > 5:
        out["top5"] = float(read["top5"]) / count
    return out


# ------------------------------------------------------------------------------ loop


def _check_run_dir(cfg: TrainConfig, run_dir: Path, resume: bool) -> None:
    """Refuse to resume a run directory that holds another configuration (read only:
    every process checks, process 0 alone writes)."""
    config_path = run_dir / "config.json"
    saved_config = read_json(config_path) if resume else None
    if saved_config is not None:
        saved = _flatten(saved_config)
        ours = _flatten(json.loads(json.dumps(cfg.to_dict())))
        changed = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
        harmless = set(HARMLESS)
        if cfg.get("optimizer.schedule") == "constant":
            harmless.add("loop.epochs")  # extending a run does not change its past
        if set(changed) - harmless:
            raise ValueError(
                f"{run_dir} holds a run with a different configuration ({', '.join(changed)}); "
                "use another output directory, or resume=False (--fresh) to start over."
            )


def _prepare_run_dir(cfg: TrainConfig, run_dir: Path, resume: bool) -> None:
    """Clear what a fresh run replaces and what interrupted writes left behind, and
    write `config.json` (process 0)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create the run directory {run_dir} ({e.strerror}).") from e
    meta = read_meta(run_dir) if resume else None
    if meta is None:  # a fresh start: nothing of an earlier run is kept
        for name in ("checkpoint.json", "metrics.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
    remove_leftovers(run_dir, meta)
    atomic_write(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=1).encode())


def _flatten(tree: dict, prefix="") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k not in ("group_lrs",):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class _Stopped(Exception):
    """`stop_after_steps` was reached (a simulated kill)."""


class _Run:
    """The state of one call of `train` on the host: what was built from the
    configuration, the device state, the progress counters and the epoch's metric
    sums. Each method is one event of the loop."""

    def __init__(self, cfg: TrainConfig, data: Dataset, resume: bool, hooks: Sequence[Hook]):
        self.cfg, self.data, self.hooks = cfg, data, hooks
        self.run_dir = cfg.run_dir
        self.batch_size = cfg.data["batch_size"]
        if len(data.x_train) < self.batch_size:
            raise ValueError(
                f"data.batch_size {self.batch_size} exceeds the {len(data.x_train)} "
                "training samples."
            )
        self.per_epoch = steps_per_epoch(len(data.x_train), self.batch_size)
        self.seed = cfg.loop["seed"]
        self.placement = Placement(cfg.loop["devices"])
        self.placement.check_batch(self.batch_size, "data.batch_size")
        self.placement.check_batch(cfg.data["eval_batch_size"], "data.eval_batch_size")
        model = build_model(cfg, data.sample_shape, data.num_classes)
        self.model_input = lambda x: as_model_input(model, x)  # noqa: E731
        self.spec = model_spec(cfg, data.sample_shape, data.num_classes)
        optimizer = build_optimizer(cfg, model, self.per_epoch)
        estimator = build_estimator(cfg)
        relaxation, nudged = build_relaxations(cfg)
        cost = build_cost(cfg)
        x0, y0 = next(train_batches(data, self.batch_size, seed=self.seed, epoch=0))
        x0 = self.model_input(x0)
        self.state = init_train_state(
            model, optimizer, estimator, jax.random.key(self.seed), x0, y0
        )
        self.advice = failure_advice((relaxation, nudged), model, estimator)
        self.epoch, self.batch, self.history, self.epoch_sums = 0, 0, [], {}
        restored = load_checkpoint(self.run_dir, self.state, self.spec) if resume else None
        if restored is not None:
            self.state, progress, self.history = restored
            self.epoch, self.batch = progress["epoch"], progress["batch"]
            self.epoch_sums = progress.get("epoch_sums", {})
            if self.placement.writes:  # the metrics of the committed checkpoint, exactly
                atomic_write(self.run_dir / "metrics.jsonl", metrics_text(self.history))
        check_same_on_every_process(
            np.array([int(restored[1]["step"]) if restored else -1], np.int32),
            "resumed from another checkpoint (or none)",
            f"every process must see the run directory {self.run_dir} that process 0 "
            "writes (a shared filesystem).",
        )
        self.state = self.placement.replicate(self.state)
        self.step = int(read_device(self.state.step))
        self.last_checkpoint = self.step
        self.last_good = (
            f"{self.run_dir / 'checkpoint.json'} (step {self.step})"
            if restored
            else "none (no step finished)"
        )
        train_step = make_train_step(estimator, relaxation, cost, optimizer, nudged)
        # one trace (nothing runs): the metrics' shapes and how each is reduced
        shapes, specs = train_step.trace(self.state, x0, y0)
        self.specs = specs

        @eqx.filter_jit
        def step_and_accumulate(state, acc, x, y):
            new_state, metrics = train_step(state, x, y)
            return new_state, accumulate(acc, metrics, specs)

        self.step_fn: Callable[..., tuple[TrainState, dict]] = step_and_accumulate
        self.eval_step = make_eval_step(relaxation, cost)
        self.eval_key = jax.random.fold_in(jax.random.key(self.seed), 2)
        self.zeros = self.placement.replicate(empty_accumulator(shapes, specs))

    def train_epoch(self, stop_after_steps: int | None, steps_this_call: int) -> int:
        """The epoch's remaining batches; returns the steps taken so far in this call."""
        log_every = self.cfg.loop["log_every"]
        acc, pending = self.zeros, 0
        batches = train_batches(
            self.data,
            self.batch_size,
            seed=self.seed,
            epoch=self.epoch,
            start=self.batch,
            rows=self.placement.local_rows(self.batch_size),
        )
        placed = prefetch(
            batches, transform=lambda b: self.placement.put_batch(self.model_input(b[0]), b[1])
        )
        # closed on any exit (a stop, a divergence, a failed write): its thread must not go
        # on transferring batches while the caller compiles and runs other programs
        with contextlib.closing(placed):
            for xb, yb in placed:
                if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                    raise _Stopped
                self.state, acc = self.step_fn(self.state, acc, xb, yb)
                self.step, self.batch, pending = self.step + 1, self.batch + 1, pending + 1
                steps_this_call += 1
                if pending >= log_every or self.batch == self.per_epoch:
                    self.log(acc)
                    acc, pending = self.zeros, 0
        return steps_this_call

    def log(self, acc) -> None:
        """One read of the device per interval: the metrics, and the state when a
        checkpoint is due (always at the end of the epoch)."""
        end = self.batch == self.per_epoch
        due = end or self.step - self.last_checkpoint >= self.cfg.loop["checkpoint_every"]
        state = self.state
        read, self.host_model, self.host_rest = read_device(
            (acc, state.model if due else None, state_rest(state) if due else None)
        )
        if not math.isfinite(float(read["loss"])) or read["nonfinite_params"] > 0:
            raise TrainingDiverged(
                "The loss or the parameters became non-finite at epoch "
                f"{self.epoch + 1}, step {self.step}. The last good checkpoint is "
                f"{self.last_good}. Lower the learning rate or |beta|, or use a convergence "
                "check (rtol/atol) to see whether the relaxations still converge."
            )
        self.epoch_sums = merge_sums(self.epoch_sums, read, self.specs)
        for hook in self.hooks:
            hook.on_log(self.step, summarise(read, self.specs))
        if due and not end:
            progress = {"epoch": self.epoch, "batch": self.batch, "step": self.step}
            self.checkpoint({**progress, "epoch_sums": self.epoch_sums})

    def checkpoint(self, progress: dict) -> None:
        if self.placement.writes:
            try:
                save_checkpoint(
                    self.run_dir,
                    self.host_model,
                    self.host_rest,
                    progress,
                    self.history,
                    self.spec,
                )
            except CheckpointError as e:
                raise CheckpointError(
                    f"{e} The checkpoint of step {self.step} was not saved; the last good "
                    f"one is {self.last_good}: run the same command again to resume from it."
                ) from e.__cause__
        self.last_good = f"{self.run_dir / 'checkpoint.json'} (step {self.step})"
        self.last_checkpoint = self.step

    def end_epoch(self, seconds: float) -> None:
        """Evaluate, record, warn about failed steps, checkpoint, call the hooks."""
        test = evaluate(
            self.state.model,
            self.data,
            self.eval_step,
            self.cfg.data["eval_batch_size"],
            self.eval_key,
            self.placement,
        )
        record = _epoch_record(self.epoch, self.step, test, self.epoch_sums, seconds, self.specs)
        if record.get("failed_steps") and self.placement.writes:
            steps = int(self.epoch_sums["count"])
            warn_failed(self.cfg.name, self.epoch + 1, record, steps, self.specs, self.advice)
        self.history.append(record)
        self.epoch, self.batch, self.epoch_sums = self.epoch + 1, 0, {}
        # a long process (a sweep in a notebook) must not run out of memory mappings,
        # which XLA's CPU compiler answers with a segfault (eqx_eqprop._runtime)
        release_compiled_programs()
        self.checkpoint({"epoch": self.epoch, "batch": 0, "step": self.step})
        for hook in self.hooks:
            hook.on_epoch_end(EpochRecord(record, self.specs), self.state.model)


def train(
    cfg: TrainConfig,
    *,
    data: Dataset | None = None,
    resume: bool = True,
    progress: bool = True,
    verbose: bool = True,
    stop_after_steps: int | None = None,
    hooks: tuple[Hook, ...] = (),
) -> dict:
    """Train `cfg`, writing `config.json`, `metrics.jsonl` and checkpoints under
    `cfg.run_dir`, and resuming from its checkpoint when there is one (bit-identically:
    the batches, the noise and the updates after a resume are those of an
    uninterrupted run).

    The step metrics stay on the device and are read once per `loop.log_every` steps;
    a checkpoint is written at the first read after `loop.checkpoint_every` steps and
    at the end of every epoch, after the evaluation on the test split. `progress`
    shows a tqdm bar, `verbose` prints a line per epoch, `hooks` are called at each
    read and epoch. `stop_after_steps` stops (as if killed) after that many steps of
    this call, without writing anything more: for testing resumption.

    Returns `{"model", "history", "final", "run_dir", "state"}`.
    """
    release_compiled_programs()
    data = data if data is not None else build_data(cfg)
    data = with_augmentation(data, cfg.data.get("augment"))
    check_dataset(data)
    check_same_on_every_process(
        fingerprint(cfg.to_dict(), resume, data.y_train, data.y_test, data.x_train[:64]),
        "were started with another configuration or other data",
        "start every process with the same command (preset, config file, --set flags, "
        "--fresh) and the same data files.",
    )
    _check_run_dir(cfg, cfg.run_dir, resume)
    if jax.process_index() == 0:
        _prepare_run_dir(cfg, cfg.run_dir, resume)
    barrier("eqx_eqprop run directory ready")
    # one progress bar and one line per epoch: process 0's
    talk = jax.process_index() == 0
    hooks = (
        *(ProgressBar(),) * (progress and talk),
        *(Printer(cfg.name),) * (verbose and talk),
        *hooks,
    )
    run = _Run(cfg, data, resume, hooks)
    for hook in hooks:
        hook.on_start(cfg, run.epoch, run.step, run.per_epoch)
    steps_this_call = 0
    try:
        while run.epoch < cfg.loop["epochs"]:
            start = time.perf_counter()
            steps_this_call = run.train_epoch(stop_after_steps, steps_this_call)
            run.end_epoch(time.perf_counter() - start)
    except _Stopped:
        return {"stopped_at_step": run.step}
    finally:
        for hook in hooks:
            hook.on_end()
    return {
        "model": run.state.model,
        "history": run.history,
        "final": run.history[-1] if run.history else {},
        "run_dir": str(cfg.run_dir),
        "state": run.state,
    }


def _epoch_record(epoch, step, test, sums, seconds, specs) -> dict:
    record = {
        "epoch": epoch + 1,
        "step": step,
        "test_top1": test["top1"],
        "test_loss": test["loss"],
        "test_residual": test["residual"],
        "test_free_steps": test["free_steps"],
        "test_free_steps_max": test["free_steps_max"],
        "seconds": seconds,
    }
    if "top5" in test:
        record["test_top5"] = test["top5"]
    if test["failed"]:
        record["test_failed"] = test["failed"]
    count = sums.get("count", 0.0)
    if count:
        means = summarise(sums, specs)
        record["train_loss"] = means.pop("loss")
        record["train_accuracy"] = means.pop("accuracy")
        record["train_residual"] = means.pop("residual")
        record["failed_steps"] = int(round(sums["failed"]))
        record["skipped_steps"] = int(round(sums["skipped"]))
        means.pop("failed")
        means.pop("skipped")
        means.pop("nonfinite_params")
        means.pop("count")
        record.update(means)
    return record


def load_trained_model(run_dir: str | Path) -> AbstractModel:
    """The model of a run directory of `eqprop-train` (or `train`), from its last
    checkpoint. Its kind must be registered (the library's are)."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if meta is None:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint.json: not a finished run?")
    config = read_json(run_dir / "config.json")
    if config is not None and isinstance(config.get("model"), dict):
        model = config["model"]
        ours = {"kind": model.get("kind"), "args": {k: v for k, v in model.items() if k != "kind"}}
        check_model_spec(meta["model"], ours, run_dir, "its config.json")
    like = build_model_from_spec(meta["model"])
    return load_model_file(run_dir, meta, like)
