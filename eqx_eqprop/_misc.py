"""Small pytree helpers shared by the modules. Not public."""

import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree


def tree_dot(a: PyTree[Array], b: PyTree[Array]) -> Array:
    """Bilinear `sum_i a_i b_i` over all leaves: no complex conjugation (holomorphic)."""
    terms = jtu.tree_leaves(jtu.tree_map(lambda u, v: jnp.sum(u * v), a, b))
    return sum(terms[1:], terms[0])


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


def is_complex_tree(a: PyTree[Array]) -> bool:
    return any(jnp.iscomplexobj(v) for v in jtu.tree_leaves(a))


def complex_dtype(dtype) -> jnp.dtype:
    """The complex dtype that matches a real floating dtype (float32 -> complex64)."""
    return jnp.result_type(dtype, jnp.complex64)
