"""Internals that experiments, benchmarks and tests use, public but not stable (the
optimistix convention): helpers a user rarely needs and whose signatures may change."""

from ._data import (  # noqa: E402
    augment_batch as augment_batch,
    channel_stats as channel_stats,
    epoch_order as epoch_order,
    eval_batches as eval_batches,
    has_idx_files as has_idx_files,
    load_dataset as load_dataset,
    load_digits as load_digits,
    load_idx_directory as load_idx_directory,
    load_tfds as load_tfds,
    prefetch as prefetch,
    read_idx as read_idx,
    train_batches as train_batches,
)
from ._estimators._reference import check_adjoint_fits as check_adjoint_fits
from ._inference import (
    clamped_relax as clamped_relax,
    mean_cost as mean_cost,
    nudged_relax as nudged_relax,
)
from ._misc import (
    complex_dtype as complex_dtype,
    tree_astype as tree_astype,
    tree_norm as tree_norm,
)
from ._models import vector_field_from_energy_mlp as vector_field_from_energy_mlp  # noqa: E402
from ._models._vector_field import transposed_weight as transposed_weight  # noqa: E402
from ._results import combine_results as combine_results
from ._runtime import (
    memory_mappings as memory_mappings,
    release_compiled_programs as release_compiled_programs,
)
from ._training import (
    REGISTRY as REGISTRY,
    as_model_input as as_model_input,
    build_cost as build_cost,
    build_data as build_data,
    build_estimator as build_estimator,
    build_model as build_model,
    build_optimizer as build_optimizer,
    build_relaxations as build_relaxations,
    evaluate as evaluate,
    failure_advice as failure_advice,
    init_train_state as init_train_state,
    load_checkpoint as load_checkpoint,
    make_eval_step as make_eval_step,
    summarise as summarise,
    warn_failed as warn_failed,
)
from ._training._cli import main as cli_main, parse_setting as parse_setting  # noqa: F401
from ._training._devices import Placement as Placement  # noqa: E402
