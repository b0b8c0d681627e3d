"""Test-session setup shared by tests/ and notebooks/.

The tests compile many small programs and run each briefly, so XLA's backend
optimisations cost more than they save: at `--xla_backend_optimization_level=0` the
conv-net tests take 54 s instead of 96 s (one core). Results are the same programs'
results up to rounding, and every tolerance in the suite is far above that. The
notebooks, which train for real, ran slower that way (quickstart 109 s against 58 s), so
the flag applies to the test processes only: the notebook kernels, and any other
subprocess, get the environment as it was.

(A persistent compilation cache was tried here too and dropped: JAX 0.10.2 segfaulted
reading an executable back from it during a full run.)
"""

import os

_flags = os.environ.get("XLA_FLAGS")
if "xla_backend_optimization_level" not in (_flags or ""):
    os.environ["XLA_FLAGS"] = ((_flags or "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

jax.devices()  # the CPU backend reads XLA_FLAGS now, once
if _flags is None:
    del os.environ["XLA_FLAGS"]
else:
    os.environ["XLA_FLAGS"] = _flags

import pytest  # noqa: E402

from eqx_eqprop.internal import release_compiled_programs  # noqa: E402

# the three longest notebooks run with the long tests (`python -m pytest -m slow`), which
# keeps the default run under 12 minutes on 2 cores; 00 and 04 run by default
SLOW_NOTEBOOKS = {"01_gradient_exactness.ipynb", "02_oscillations.ipynb", "03_convnets.ipynb"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_NOTEBOOKS:
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    # a test worker compiles thousands of programs; past Linux's limit on memory
    # mappings XLA's CPU compiler segfaults (two workers died so at 65k mappings):
    # drop JAX's compiled programs once half the limit is used
    release_compiled_programs(0.4)
