"""Multi-process data-parallel training with `jax.distributed`, two processes on this
machine (CPU collectives): the run equals the one-process run, a run stopped on every
process resumes exactly, and bad setups fail with a message instead of hanging."""

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

from eqx_eqprop.internal import cli_main as main

from .helpers import train_quietly
from .multihost_worker import config, data

WORKER = Path(__file__).with_name("multihost_worker.py")
ROOT = WORKER.parent.parent
CLI = "import sys; from eqx_eqprop.internal import cli_main; sys.exit(cli_main(sys.argv[1:]))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args_of, tmp_path, n=2, timeout=300):
    """Start `n` processes (`args_of(i)` the command of process i), wait for all; their
    (returncode, stdout, stderr). Output goes to files: a pipe nobody reads would block
    a process, and with it the others at their next collective."""
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": str(ROOT)}
    procs, files = [], []
    for i in range(n):
        out, err = (open(tmp_path / f"process{i}.{k}", "w+") for k in ("out", "err"))
        files.append((out, err))
        procs.append(subprocess.Popen(args_of(i), stdout=out, stderr=err, text=True, env=env))
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    results = []
    for p, (out, err) in zip(procs, files):
        out.seek(0), err.seek(0)
        results.append((p.returncode, out.read(), err.read()))
        out.close(), err.close()
    return results


def test_two_processes_train_like_one_and_resume_exactly(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    outs = launch(
        lambda i: [sys.executable, str(WORKER), coordinator, "2", str(i), str(tmp_path / "mh")],
        tmp_path,
    )
    results = []
    for rc, stdout, stderr in outs:
        assert rc == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert [(r["process"], r["processes"]) for r in results] == [(0, 2), (1, 2)]
    one = train_quietly(config(str(tmp_path / "one")), data())
    ref_params = [np.asarray(v) for v in _params(one)]
    ref_history = [{k: v for k, v in h.items() if k != "seconds"} for h in one["history"]]
    assert [h["step"] for h in ref_history] == [4, 8]
    for r in results:
        whole, resumed = r["whole"], r["resumed"]
        assert whole["devices"] == 2  # the parameters live on both processes' devices
        for a, b in zip(whole["params"], ref_params, strict=True):
            np.testing.assert_allclose(np.asarray(a), b, rtol=2e-5, atol=2e-6)
        for h2, h1 in zip(whole["history"], ref_history, strict=True):
            assert h2.keys() == h1.keys()
            for k in h1:  # the test split counted once, not once per process
                np.testing.assert_allclose(h2[k], h1[k], rtol=1e-4, atol=1e-6, err_msg=k)
        # stopped at step 5 on every process, after the mid-epoch checkpoint at step 3:
        # the resume repeats steps 4-5 and then equals the uninterrupted run exactly
        assert r["stopped_at_step"] == 5
        assert resumed["params"] == whole["params"]
        assert resumed["history"] == whole["history"]
    assert results[0]["whole"] == results[1]["whole"]
    # process 0 wrote one metrics line per epoch, the same as the processes returned
    lines = (tmp_path / "mh" / "whole" / "multihost" / "metrics.jsonl").read_text().splitlines()
    assert [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines] == (
        results[0]["whole"]["history"]
    )
    killed = (tmp_path / "mh" / "killed" / "multihost" / "metrics.jsonl").read_text()
    assert len(killed.splitlines()) == 2


def _params(result):
    return jax.tree_util.tree_leaves(eqx.filter(result["model"], eqx.is_inexact_array))


def _cli(*args):
    return [sys.executable, "-c", CLI, *map(str, args)]


def test_processes_started_with_different_settings_are_refused(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    outs = launch(
        lambda i: _cli(
            "--preset",
            "digits-hep",
            "--epochs",
            1,
            "--no-progress",
            "--out",
            tmp_path / "run",
            "--coordinator",
            coordinator,
            "--num-processes",
            2,
            "--process-id",
            i,
            "--set",
            f"estimator.beta={0.4 if i == 0 else 0.3}",
        ),  # fmt: skip
        tmp_path,
        timeout=120,
    )
    for rc, _, stderr in outs:
        assert rc == 2, stderr[-3000:]
        assert "process(es) 1 were started with another configuration" in stderr
        assert "same command" in stderr
    assert not (tmp_path / "run" / "checkpoint.json").exists()


def test_a_coordinator_nobody_answers_times_out_with_a_message(tmp_path):
    start = time.perf_counter()
    ((rc, _, stderr),) = launch(
        lambda i: _cli(
            "--preset",
            "digits-hep",
            "--out",
            tmp_path / "run",
            "--coordinator",
            f"127.0.0.1:{free_port()}",
            "--num-processes",
            2,
            "--process-id",
            1,
            "--coordinator-timeout",
            3,
        ),  # fmt: skip
        tmp_path,
        n=1,
        timeout=120,
    )
    assert rc == 2, stderr[-3000:]
    assert "process 1 of 2 could not start the run at 127.0.0.1:" in stderr
    assert "nothing answers there" in stderr
    assert "within 3 s" in stderr and "--coordinator-timeout" in stderr
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num-processes", 2, "--process-id", 2], "--process-id 2 is out of range"),
        (["--num-processes", 2, "--process-id", -1], "--process-id -1 is out of range"),
        (["--num-processes", 0, "--process-id", 0], "--num-processes must be at least 1"),
        (["--num-processes", 2], "give --num-processes N and --process-id I too"),
    ],
)
def test_a_bad_process_setup_is_named_before_any_connection(flags, message, capsys):
    assert main(["--coordinator", "127.0.0.1:1", *map(str, flags)]) == 2
    assert message in capsys.readouterr().err


def test_process_flags_without_a_coordinator_are_refused(capsys):
    assert main(["--num-processes", "2", "--process-id", "1"]) == 2
    assert "need --coordinator HOST:PORT" in capsys.readouterr().err


@pytest.mark.slow
def test_the_readme_multihost_commands_run_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = next(
        b for b in re.findall(r"```bash\n(.*?)```", readme, flags=re.S) if "--process-id 1" in b
    )
    lines = [line.rstrip(" &") for line in block.strip().splitlines()]
    assert len(lines) == 2 and all(line.startswith("eqprop-train ") for line in lines)
    port = str(free_port())
    outs = launch(
        lambda i: [
            sys.executable,
            "-c",
            CLI,
            *[a.replace("1234", port) for a in shlex.split(lines[i])[1:]],
            "--no-progress",
            "--out",
            str(tmp_path / "run"),
        ],  # fmt: skip
        tmp_path,
        timeout=900,
    )
    for rc, stdout, stderr in outs:
        assert rc == 0, stderr[-3000:]
        assert "digits-hep: test top-1" in stdout
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    assert json.loads(lines[-1])["test_top1"] > 0.7
