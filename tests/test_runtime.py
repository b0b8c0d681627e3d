"""The guard against XLA's CPU compiler crash in long-lived processes: past Linux's limit
on memory mappings, JAX 0.10.2 segfaults in the next compile (reproduced by
`tests/xla_map_count_crash.py`); releasing the compiled programs keeps a process alive."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from eqx_eqprop.internal import memory_mappings, release_compiled_programs

REPRODUCER = Path(__file__).with_name("xla_map_count_crash.py")
linux = pytest.mark.skipif(memory_mappings() is None, reason="needs /proc (Linux)")


def _run(*args):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run(
        [sys.executable, str(REPRODUCER), *args], capture_output=True, text=True, env=env
    )


@linux
def test_releasing_compiled_programs_gives_their_mappings_back():
    fns = [jax.jit(lambda v, n=n: jnp.sin(v * n).sum()) for n in range(60)]
    for n, f in enumerate(fns):
        jax.block_until_ready(f(jnp.ones(n + 1)))
    used, limit = memory_mappings()
    assert not release_compiled_programs(fraction=1.0)  # under the limit: nothing done
    assert release_compiled_programs(fraction=used / limit / 2)
    after, _ = memory_mappings()
    assert after < used - 2 * 60  # about 3 mappings a program came back


@linux
@pytest.mark.slow  # 20 s; the default run exercises the guard itself (conftest.py)
def test_a_process_near_the_mapping_limit_survives_with_the_guard():
    proc = _run("300", "200", "--release")  # without, the crash comes after ~100
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no crash" in proc.stdout


@linux
@pytest.mark.slow  # documents the XLA bug the guard works around (JAX 0.10.2, CPU)
def test_without_the_guard_xla_crashes_at_the_mapping_limit():
    proc = _run("300", "200")
    assert proc.returncode != 0 and "no crash" not in proc.stdout
