"""Atomic, resumable checkpoints that say how to rebuild the model.

A run directory holds `config.json`, `metrics.jsonl` (one line per epoch),
`model-<step>.eqx` (the model's arrays), `state-<step>.eqx` (optimiser and estimator
state, key, step) and `checkpoint.json`, written last, which names both files, the
progress and history, and the model's kind, constructor arguments and sample shape:
enough to rebuild any registered network kind without the data.
"""

import io
import json
import os
import tempfile
from pathlib import Path

import equinox as eqx
import jax

from ._step import TrainState


def atomic_write(path: Path, data: bytes) -> None:
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


def _serialise(tree) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    return buffer.getvalue()


def state_rest(state: TrainState):
    """Everything but the model, with the key as raw data (serialisable)."""
    return (state.opt_state, state.estimator_state, jax.random.key_data(state.key), state.step)


def save_checkpoint(
    run_dir: Path, model, rest, progress: dict, history: list, model_spec: dict
) -> None:
    """Model and state files, then `checkpoint.json` naming them (so a crash between
    the writes leaves the previous checkpoint valid), then `metrics.jsonl`. `model`
    and `rest` (`state_rest(state)`) are best read to the host first, in one transfer."""
    step = int(progress["step"])
    model_name, state_name = f"model-{step:09d}.eqx", f"state-{step:09d}.eqx"
    atomic_write(run_dir / model_name, _serialise(model))
    atomic_write(run_dir / state_name, _serialise(rest))
    meta = {
        "progress": progress,
        "history": history,
        "model_file": model_name,
        "state_file": state_name,
        "model": model_spec,
    }
    atomic_write(run_dir / "checkpoint.json", json.dumps(meta, indent=1).encode())
    for old in [*run_dir.glob("model-*.eqx"), *run_dir.glob("state-*.eqx")]:
        if old.name not in (model_name, state_name):
            old.unlink(missing_ok=True)
    lines = "".join(json.dumps(h) + "\n" for h in history)
    atomic_write(run_dir / "metrics.jsonl", lines.encode())


def read_meta(run_dir: Path) -> dict | None:
    path = run_dir / "checkpoint.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_model_file(run_dir: Path, meta: dict, like):
    with open(run_dir / meta["model_file"], "rb") as f:
        return eqx.tree_deserialise_leaves(f, like)


def load_checkpoint(run_dir: Path, like: TrainState):
    """`(state, progress, history)` from the last checkpoint, or `None` when there is
    none. `like` is a state of the same structure (a freshly initialised one)."""
    meta = read_meta(run_dir)
    if meta is None:
        return None
    model = load_model_file(run_dir, meta, like.model)
    with open(run_dir / meta["state_file"], "rb") as f:
        opt_state, estimator_state, key_data, step = eqx.tree_deserialise_leaves(
            f, state_rest(like)
        )
    state = TrainState(model, opt_state, estimator_state, jax.random.wrap_key_data(key_data), step)
    return state, meta["progress"], meta["history"]
