"""One process of a multi-process training run, for tests/test_multihost.py.

    python tests/multihost_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID OUT_DIR [LR]

Joins the run with `jax.distributed` (CPU collectives), then trains the configuration
of `config(OUT_DIR)` twice: once without a break (`OUT_DIR/whole`) and once stopped
after 5 steps, as if every process were killed, and resumed (`OUT_DIR/killed`). Prints
one JSON line: this process's index and device count, and each run's parameters and
history as every process sees them.
"""

import json
import sys

import equinox as eqx
import jax
import numpy as np

import eqx_eqprop as ep
from eqx_eqprop.internal import load_digits


def data() -> ep.Dataset:
    """256 training and 72 test digits: 4 steps of 64 an epoch, a padded last test batch."""
    digits = load_digits()
    return ep.Dataset(
        "digits", digits.x_train[:256], digits.y_train[:256], digits.x_test[:72],
        digits.y_test[:72], 10,
    )  # fmt: skip


def config(out_dir: str, lr: float = 0.05) -> ep.TrainConfig:
    """The digits-hep preset made small: the adaptive radius (estimator state carried from
    step to step), short fixed-step phases, SGD with momentum on a cosine schedule
    (optimiser state), 2 epochs, a checkpoint every 3 steps (one in mid-epoch)."""
    return ep.get_preset("digits-hep").update(
        {
            "name": "multihost",
            "model.hidden": [16, 12],
            "data.batch_size": 64,
            "data.eval_batch_size": 48,
            "estimator.num_phases": 2,
            "estimator.max_retries": 1,
            "relaxation": {"kind": "even_odd", "max_steps": 20, "rtol": "none", "atol": "none"},
            "nudged_relaxation": {"kind": "even_odd", "max_steps": 8, "rtol": "none",
                                  "atol": "none"},
            "optimizer": {"kind": "momentum", "lr": lr, "schedule": "cosine", "clip_norm": 1.0},
            "loop.epochs": 2,
            "loop.log_every": 1,
            "loop.checkpoint_every": 3,
            "loop.out_dir": out_dir + "/{name}",
        }
    )  # fmt: skip


def summary(result: dict) -> dict:
    leaves = jax.tree_util.tree_leaves(eqx.filter(result["model"], eqx.is_inexact_array))
    return {
        "params": [np.asarray(v).tolist() for v in leaves],
        "history": [{k: v for k, v in h.items() if k != "seconds"} for h in result["history"]],
        "devices": len(result["state"].model.layers[0].weight.sharding.device_set),
    }


def main(coordinator: str, num_processes: str, process_id: str, out_dir: str, lr="0.05"):
    ep.initialize_distributed(coordinator, int(num_processes), int(process_id), timeout=60)
    out = {"process": jax.process_index(), "processes": jax.process_count()}
    digits = data()
    whole = ep.train(
        config(out_dir + "/whole", float(lr)), data=digits, progress=False, verbose=False
    )
    out["whole"] = summary(whole)
    killed = config(out_dir + "/killed", float(lr))
    stopped = ep.train(killed, data=digits, progress=False, verbose=False, stop_after_steps=5)
    out["stopped_at_step"] = stopped["stopped_at_step"]
    out["resumed"] = summary(ep.train(killed, data=digits, progress=False, verbose=False))
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
