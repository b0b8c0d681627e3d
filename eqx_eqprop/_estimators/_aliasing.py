"""The a-posteriori aliasing-error estimate of the phase estimators (Laborieux & Zenke
2022): the decay of the Fourier coefficients of the phase samples says how far the
circle |beta| is from the nearest singularity of beta -> s*_beta."""

from typing import Any

import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PyTree, Real

from .._misc import tree_norm


def aliasing_estimate(
    scale,
    unique: list[PyTree],
    circle: list[tuple[int, bool]],
    radius,
    gradient: PyTree,
) -> tuple[Real[Array, ""], Real[Array, " N"]]:
    """A-posteriori relative aliasing error of the N-phase estimate.

    The DFT of the samples `f(beta_n)` gives `c_k |beta|^k` (aliased with k + N, 2N..)
    for k = 1..N-1, and `DFT_0 - f(0)` gives `c_N |beta|^N`. Their norms `m_k` decay
    like `rho^k`, `rho = |beta| / R` with `R` the distance to the nearest singularity
    of `beta -> s*_beta`. `rho` is fitted on the last three `m_k`, `m_{N+1} = m_N rho`,
    and the error of `g = DFT_1 / |beta|` is about `m_{N+1} / (|beta| ||g||)` relative.
    On contractive test networks it is within a factor 5 of the true error. It measures
    aliasing: the bias of tolerance-limited relaxations (about tolerance / |beta|) is a
    separate error, seen in the residuals of `info.free_stats` and `info.nudged_stats`.

    `unique` holds the changes `f(beta_n) - f(0)` of the relaxed samples stacked along a
    leading axis (a real and a complex group); `circle[n] = (row, conjugate)` says which
    row of the concatenated groups is `f(beta_n) - f(0)`, conjugated for the partner of
    a complex phase. Each coefficient is a combination of the rows (working with changes
    leaves k >= 1 unchanged and keeps `DFT_0 - f(0)` free of cancellation): one small
    matmul per parameter array, `(N, rows) @ (rows, size)`. `scale` (the norm of
    `f(0)`) sets the rounding floor below which a coefficient carries no information.
    Returns `(relative error estimate, (m_1..m_N))`.
    """
    n = len(circle)
    n_rows = sum(jtu.tree_leaves(g)[0].shape[0] for g in unique)
    k = np.arange(n)
    dft = np.exp(-2j * np.pi * np.outer(k, k) / n) / n  # [k, n]
    # coefficient k = sum_a plain[k, a] d_a + conjugated[k, a] conj(d_a), d_a = u_a - f(0)
    plain = np.zeros((n, n_rows), complex)
    conjugated = np.zeros((n, n_rows), complex)
    for m, (row, conj) in enumerate(circle):
        (conjugated if conj else plain)[:, row] += dft[:, m]
    # with d = r + i q: plain d + conjugated conj(d) = (plain + conj.) r + i (plain - conj.) q
    on_real, on_imag = plain + conjugated, 1j * (plain - conjugated)
    sq: Any = 0
    for groups in zip(*[jtu.tree_leaves(g) for g in unique]):
        c_re: Any = 0
        c_im: Any = 0
        start = 0
        for g in groups:
            # coefficient = A r + B q with r, q the real and imaginary parts of the
            # rows, in real matmuls (XLA's complex matmul on CPU is several times
            # slower than four real ones)
            rows = slice(start, start + g.shape[0])
            start += g.shape[0]
            g = g.reshape(g.shape[0], -1)
            r = jnp.real(g)
            c_re = c_re + jnp.asarray(np.real(on_real)[:, rows], r.dtype) @ r
            c_im = c_im + jnp.asarray(np.imag(on_real)[:, rows], r.dtype) @ r
            if jnp.iscomplexobj(g):
                q = jnp.imag(g)
                c_re = c_re + jnp.asarray(np.real(on_imag)[:, rows], q.dtype) @ q
                c_im = c_im + jnp.asarray(np.imag(on_imag)[:, rows], q.dtype) @ q
        sq = sq + jnp.sum(c_re**2 + c_im**2, axis=1)
    norms = jnp.sqrt(jnp.concatenate([sq[1:], sq[:1]]))  # m_1..m_N (m_N: DFT_0 - f(0))
    eps = jnp.finfo(norms.dtype).eps
    floor = eps * (scale + jnp.max(norms))
    logs = jnp.log(norms + floor)
    order = jnp.arange(1, n + 1, dtype=logs.dtype)

    def fit(kk, ll):  # least-squares slope: log rho
        return jnp.sum((kk - kk.mean()) * (ll - ll.mean())) / jnp.sum((kk - kk.mean()) ** 2)

    last = slice(max(0, n - 3), n)  # the last three coefficients (two when N = 2)
    predicted = jnp.exp(logs[-1] + fit(order[last], logs[last]))  # m_{N+1} = m_N * rho
    if n >= 4:
        # m_N compares the nudged phases with the free phase, so it also carries the
        # mismatch of their relaxation errors (tolerance-limited relaxations), which
        # cancels in g itself. When m_N sits far above the trend of m_{N-3..N-1}, that
        # mismatch dominates it: extrapolate from the nudged-only coefficients instead.
        inner = slice(n - 4, n - 1)
        slope = fit(order[inner], logs[inner])
        trend = jnp.exp(logs[n - 2] + slope)  # m_N expected from the trend
        nudged_only = jnp.exp(logs[n - 2] + 2 * slope)  # m_{N+1} from it
        predicted = jnp.where(norms[-1] > 10 * trend, nudged_only, predicted)
    relative = predicted / (radius * tree_norm(gradient) + floor)
    return relative.astype(norms.dtype), norms
