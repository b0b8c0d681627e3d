"""A guard for long-lived processes against a crash of XLA's CPU compiler.

Each program XLA compiles for the CPU keeps a few memory mappings of the process (3 for
a small jitted function, up to a few thousand for a training run's programs) until JAX
drops it from its caches. A process that compiles thousands of programs (a test worker,
a notebook running a sweep) reaches Linux's limit, `vm.max_map_count` (65530 by
default), and then JAX 0.10.2 does not raise: LLVM reports "Cannot allocate memory" and
the process dies with SIGSEGV (`tests/xla_map_count_crash.py` reproduces it). Measured in
this project's test suite: two xdist workers at 64979 and 64883 mappings, each dead in
the compile that followed. Dropping JAX's caches releases the mappings (1600 small
programs: 5702 mappings, 604 after).
"""

import gc

import jax


def memory_mappings() -> tuple[int, int] | None:
    """`(mappings in use, the limit)` of this process on Linux, else `None`."""
    try:
        with open("/proc/self/maps") as f:
            used = sum(1 for _ in f)
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return None
    return used, limit


def release_compiled_programs(fraction: float = 0.5) -> bool:
    """When this process uses more than `fraction` of its memory-mapping limit, drop
    JAX's caches of compiled programs (they are compiled again when next called) and
    return `True`; else do nothing and return `False`. Cheap enough to call once per
    epoch or per test (it reads `/proc/self/maps`)."""
    found = memory_mappings()
    if found is None or found[0] < fraction * found[1]:
        return False
    jax.clear_caches()
    gc.collect()
    return True
