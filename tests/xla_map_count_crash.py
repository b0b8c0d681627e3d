"""Reproducer (not a test module): XLA's CPU compiler on JAX 0.10.2 dies with SIGSEGV, not
an error, when the process has no memory mappings left (Linux's vm.max_map_count, 65530
by default). It fills the mapping table to `LEAVE` short of the limit with anonymous
pages, then compiles small programs (3 mappings each): once the table is full, LLVM
prints "Cannot allocate memory" and the process dies (exit status -11 / 139). With
`--release`, `eqx_eqprop.internal.release_compiled_programs` runs between compiles and
the process survives.

    python tests/xla_map_count_crash.py LEAVE PROGRAMS [--release]
"""

import ctypes
import mmap
import sys

import jax
import jax.numpy as jnp

from eqx_eqprop.internal import release_compiled_programs

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]


def maps():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


jax.block_until_ready(jax.jit(lambda v: v + 1)(jnp.ones(3)))  # the backend is up
limit = int(open("/proc/sys/vm/max_map_count").read())
leave = int(sys.argv[1])
page = mmap.PAGESIZE
held = []
while maps() < limit - leave:
    for _ in range(min(2000, max(1, limit - leave - maps()))):
        if len(held) % 2:  # alternate protections so that neighbours never merge
            p = libc.mmap(None, page, mmap.PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        else:
            p = libc.mmap(
                None,
                page,
                mmap.PROT_READ | mmap.PROT_WRITE,
                mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                -1,
                0,
            )
        held.append(p)
    if maps() >= limit - leave:
        break
print("mappings", maps(), "of", limit, flush=True)
release = "--release" in sys.argv
for n in range(1, int(sys.argv[2]) + 1):
    f = jax.jit(lambda v, n=n: jnp.tanh(v @ v.T + n).sum(0))
    jax.block_until_ready(f(jnp.ones((n, 7))))
    if release and n % 25 == 0:  # 25 programs take about 75 of the mappings left
        release_compiled_programs(0.5)
    if n % 50 == 0:
        print(n, "programs compiled, mappings", maps(), flush=True)
print("no crash")
