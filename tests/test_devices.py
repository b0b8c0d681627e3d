"""Data-parallel training: two steps on two (CPU) devices give the parameters of one
device, within float32 rounding. The devices exist only if XLA is told before JAX
starts, so the runs happen in a subprocess."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    import numpy as np
    import equinox as eqx
    import eqx_eqprop as ep
    from eqx_eqprop.internal import build_model, load_digits

    assert len(jax.devices()) == 2, jax.devices()
    digits = load_digits()
    data = ep.Dataset("digits", digits.x_train[:128], digits.y_train[:128],
                      digits.x_test[:64], digits.y_test[:64], 10)
    out = {}
    for devices in (1, 2):
        # the preset's adaptive radius (estimator state) with short fixed-step phases
        cfg = ep.get_preset("digits-hep").update({
            "name": f"dp{devices}", "model.hidden": [16, 12], "data.batch_size": 64,
            "data.eval_batch_size": 64, "loop.epochs": 1, "loop.devices": devices,
            "loop.out_dir": sys.argv[1] + "/{name}", "estimator.max_retries": 1,
            "estimator.num_phases": 2,
            "relaxation": {"kind": "even_odd", "max_steps": 20, "rtol": "none", "atol": "none"},
            "nudged_relaxation": {"kind": "even_odd", "max_steps": 8, "rtol": "none",
                                  "atol": "none"},
        })
        result = ep.train(cfg, data=data, progress=False, verbose=False)
        leaves = jax.tree_util.tree_leaves(eqx.filter(result["model"], eqx.is_inexact_array))
        out[devices] = {
            "params": [np.asarray(v).tolist() for v in leaves],
            "step": int(result["history"][-1]["step"]),
            "test_loss": result["history"][-1]["test_loss"],
            "devices": len(result["state"].model.layers[0].weight.sharding.device_set),
        }
        init = build_model(cfg, (8, 8, 1), 10)
        out["init"] = [np.asarray(v).tolist() for v in
                       jax.tree_util.tree_leaves(eqx.filter(init, eqx.is_inexact_array))]
    print(json.dumps(out))
    """
)


def test_two_devices_train_like_one(tmp_path):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    env = {**os.environ, "XLA_FLAGS": flags.strip()}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, two = out["1"], out["2"]
    assert one["step"] == two["step"] == 2
    assert one["devices"] == 1 and two["devices"] == 2
    for a, b in zip(one["params"], two["params"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    # the steps moved the parameters (the comparison is not between two no-ops)
    moved = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(out["init"], two["params"])
    )
    assert moved > 1e-3
    np.testing.assert_allclose(two["test_loss"], one["test_loss"], rtol=1e-5)
