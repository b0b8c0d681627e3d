"""Atomic, resumable checkpoints that say how to rebuild the model.

A run directory holds `config.json`, `metrics.jsonl` (one line per epoch),
`model-<step>.eqx` (the model's arrays), `state-<step>.eqx` (optimiser and estimator
state, key, step) and `checkpoint.json`, which names both files, the progress and
history, and the model's kind, constructor arguments and sample shape: enough to rebuild
any registered network kind without the data.

`checkpoint.json` is the commit point. A checkpoint writes the model and state files,
then `metrics.jsonl`, then `checkpoint.json`; each file goes to a temporary file that
is renamed into place. A crash at any moment leaves the previous checkpoint valid, and
a resume rewrites `metrics.jsonl` from the history in `checkpoint.json` and removes
what an interrupted write left behind (temporary files, files of an uncommitted
checkpoint): checkpoint and metrics always agree after a resume, with no line lost or
repeated.
"""

import io
import json
import os
import tempfile
from pathlib import Path

import equinox as eqx
import jax

from ._step import TrainState

_TMP_SUFFIX = ".tmp"


class CheckpointError(RuntimeError):
    """A run directory could not be written, or what it holds cannot be read back."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename. A failed
    write (a full disk, a read-only directory) raises `CheckpointError` naming the file
    and leaves no temporary file behind."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(
            f"cannot write {path} ({e.strerror or e}). Free disk space or make the directory "
            "writable; the files written before this one are intact."
        ) from e
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def remove_leftovers(run_dir: Path, meta: dict | None) -> None:
    """Delete what interrupted writes left: temporary files, and model and state files
    that the committed `checkpoint.json` (`meta`; `None`: there is none) does not name."""
    keep = set() if meta is None else {meta.get("model_file"), meta.get("state_file")}
    for pattern in (f".*{_TMP_SUFFIX}", "model-*.eqx", "state-*.eqx"):
        for f in run_dir.glob(pattern):
            if f.name not in keep:
                f.unlink(missing_ok=True)


def _serialise(tree) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    return buffer.getvalue()


def state_rest(state: TrainState):
    """Everything but the model, with the key as raw data (serialisable)."""
    return (state.opt_state, state.estimator_state, jax.random.key_data(state.key), state.step)


def metrics_text(history: list) -> bytes:
    return "".join(json.dumps(h) + "\n" for h in history).encode()


def save_checkpoint(
    run_dir: Path, model, rest, progress: dict, history: list, model_spec: dict
) -> None:
    """Model and state files, `metrics.jsonl`, then `checkpoint.json` naming them (the
    commit), then the previous checkpoint's files are removed. `model` and `rest`
    (`state_rest(state)`) are best read to the host first, in one transfer."""
    step = int(progress["step"])
    model_name, state_name = f"model-{step:09d}.eqx", f"state-{step:09d}.eqx"
    atomic_write(run_dir / model_name, _serialise(model))
    atomic_write(run_dir / state_name, _serialise(rest))
    atomic_write(run_dir / "metrics.jsonl", metrics_text(history))
    meta = {
        "progress": progress,
        "history": history,
        "model_file": model_name,
        "state_file": state_name,
        "model": model_spec,
    }
    atomic_write(run_dir / "checkpoint.json", json.dumps(meta, indent=1).encode())
    remove_leftovers(run_dir, meta)


def _corrupt(path: Path, e: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path} is truncated or corrupt ({type(e).__name__}: {e}). Start the run over "
        "(--fresh, or resume=False), or use another output directory."
    )


def read_json(path: Path) -> dict | None:
    """A JSON file of a run directory, `None` if absent; a truncated or corrupt one is a
    `CheckpointError` naming it."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _corrupt(path, e) from None
    if not isinstance(value, dict):
        raise _corrupt(path, TypeError(f"expected a JSON object, got {type(value).__name__}"))
    return value


def read_meta(run_dir: Path) -> dict | None:
    meta = read_json(run_dir / "checkpoint.json")
    if meta is not None:
        missing = {"progress", "history", "model_file", "state_file", "model"} - set(meta)
        if missing:
            raise _corrupt(
                run_dir / "checkpoint.json", KeyError(f"no {', '.join(sorted(missing))}")
            )
    return meta


def _deserialise(path: Path, like):
    if not path.exists():
        raise CheckpointError(
            f"{path.parent / 'checkpoint.json'} names {path.name}, which is missing. Start "
            "the run over (--fresh, or resume=False), or use another output directory."
        )
    try:
        with open(path, "rb") as f:
            return eqx.tree_deserialise_leaves(f, like)
    except (RuntimeError, ValueError, EOFError, OSError) as e:
        raise _corrupt(path, e) from None


def load_model_file(run_dir: Path, meta: dict, like):
    return _deserialise(run_dir / meta["model_file"], like)


def check_model_spec(saved: dict, ours: dict, where: Path, what: str = "the configuration") -> None:
    """A checkpoint's model (kind, constructor arguments, sample shape, classes) must be
    the one `what` describes: leaves of equal shapes do not make equal models."""
    diffs = [
        f"{key}: {saved.get(key)!r} in the checkpoint, {ours.get(key)!r} in {what}"
        for key in ("kind", "args", "sample_shape", "num_classes")
        if key in ours and saved.get(key) != ours.get(key)
    ]
    if diffs:
        raise CheckpointError(
            f"{where} holds a checkpoint of another model ({'; '.join(diffs)}). Use another "
            "output directory, or start over (--fresh, or resume=False)."
        )


def load_checkpoint(run_dir: Path, like: TrainState, model_spec: dict | None = None):
    """`(state, progress, history)` from the last checkpoint, or `None` when there is
    none. `like` is a state of the same structure (a freshly initialised one);
    `model_spec`, if given, must match the checkpoint's model."""
    meta = read_meta(run_dir)
    if meta is None:
        return None
    if model_spec is not None:
        check_model_spec(meta["model"], model_spec, run_dir)
    model = load_model_file(run_dir, meta, like.model)
    opt_state, estimator_state, key_data, step = _deserialise(
        run_dir / meta["state_file"], state_rest(like)
    )
    state = TrainState(model, opt_state, estimator_state, jax.random.wrap_key_data(key_data), step)
    return state, meta["progress"], meta["history"]
