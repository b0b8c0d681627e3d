import jax

# float64 must be available for the exactness checks; float32 tests create float32
# models explicitly, and every estimator test checks that dtypes are preserved.
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
