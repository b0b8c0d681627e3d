"""Small pytree helpers shared by the modules. Not public."""

import functools
import operator

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PRNGKeyArray, PyTree


def tree_dot(a: PyTree[Array], b: PyTree[Array]) -> Array:
    """Bilinear `sum_i a_i b_i` over all leaves: no complex conjugation (holomorphic)."""
    terms = jtu.tree_leaves(jtu.tree_map(lambda u, v: jnp.sum(u * v), a, b))
    return functools.reduce(operator.add, terms)


def tree_max_abs(a: PyTree[Array]) -> Array:
    """`max_i |a_i|` over all leaves (0 for an empty tree)."""
    leaves = [jnp.max(jnp.abs(v)) for v in jtu.tree_leaves(a) if v.size]
    return jnp.max(jnp.stack(leaves)) if leaves else jnp.array(0.0)


def tree_norm(a: PyTree[Array]) -> Array:
    """Euclidean norm over all leaves, `sqrt(sum_i |a_i|^2)`."""
    return jnp.sqrt(sum(jnp.sum(jnp.abs(v) ** 2) for v in jtu.tree_leaves(a)))


def tree_all_finite(a: PyTree[Array]) -> Array:
    """True when every element of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jtu.tree_leaves(a)]))


def tree_astype(a: PyTree[Array], dtype) -> PyTree[Array]:
    return jtu.tree_map(lambda v: v.astype(dtype), a)


def tree_zeros_like(a: PyTree[Array]) -> PyTree[Array]:
    return jtu.tree_map(jnp.zeros_like, a)


def is_complex_tree(a: PyTree) -> bool:
    return any(jnp.iscomplexobj(v) for v in jtu.tree_leaves(a) if eqx.is_array(v))


def complex_dtype(dtype) -> jnp.dtype:
    """The complex dtype that matches a real floating dtype (float32 -> complex64)."""
    return jnp.result_type(dtype, jnp.complex64)


def real_dtype(tree: PyTree[Array]) -> jnp.dtype:
    """The real dtype of the first leaf (complex64 -> float32)."""
    return jnp.real(jtu.tree_leaves(tree)[0]).dtype


class SplitComplex(eqx.Module):
    """A complex array carried as its real and imaginary parts (for solvers that see
    only real numbers)."""

    re: Array
    im: Array


def split_complex(tree: PyTree) -> PyTree:
    """Replace every complex array leaf by a `SplitComplex` pair of real arrays."""

    def split(v):
        return SplitComplex(v.real, v.imag) if eqx.is_array(v) and jnp.iscomplexobj(v) else v

    return jtu.tree_map(split, tree)


def merge_complex(tree: PyTree) -> PyTree:
    """The inverse of `split_complex`."""

    def merge(v):
        return jax.lax.complex(v.re, v.im) if isinstance(v, SplitComplex) else v

    return jtu.tree_map(merge, tree, is_leaf=lambda v: isinstance(v, SplitComplex))


def gaussian_like(key: PRNGKeyArray, like: PyTree[Array], std) -> PyTree[Array]:
    """Independent Gaussian noise of std `std`, one real array per leaf of `like`
    (the real dtype of complex leaves)."""
    leaves, treedef = jtu.tree_flatten(like)
    keys = jax.random.split(key, len(leaves))
    draws = [std * jax.random.normal(k, v.shape, jnp.real(v).dtype) for k, v in zip(keys, leaves)]
    return jtu.tree_unflatten(treedef, draws)


def sample_keys(key: PRNGKeyArray | None, stream: int, batch: int):
    """Independent keys per sample for stream `stream` (0 = the free phase, n = the
    n-th nudged phase), or `None` without a key."""
    if key is None:
        return None
    return jax.random.split(jax.random.fold_in(key, stream), batch)
