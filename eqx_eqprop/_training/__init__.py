from ._advice import failure_advice as failure_advice, warn_failed as warn_failed
from ._build import (
    build_cost as build_cost,
    build_data as build_data,
    build_estimator as build_estimator,
    build_model as build_model,
    build_model_from_spec as build_model_from_spec,
    build_optimizer as build_optimizer,
    build_relaxations as build_relaxations,
    model_spec as model_spec,
)
from ._checkpoint import (
    CheckpointError as CheckpointError,
    load_checkpoint as load_checkpoint,
    save_checkpoint as save_checkpoint,
)
from ._config import TrainConfig as TrainConfig
from ._devices import initialize_distributed as initialize_distributed
from ._hooks import (
    EpochRecord as EpochRecord,
    Hook as Hook,
    Printer as Printer,
    ProgressBar as ProgressBar,
)
from ._loop import (
    TrainingDiverged as TrainingDiverged,
    as_model_input as as_model_input,
    evaluate as evaluate,
    load_trained_model as load_trained_model,
    read_device as read_device,
    train as train,
)
from ._presets import (
    PRESETS as PRESETS,
    get_preset as get_preset,
    preset_names as preset_names,
)
from ._registry import REGISTRY as REGISTRY, kinds as kinds, register as register
from ._step import (
    TrainState as TrainState,
    TrainStep as TrainStep,
    init_train_state as init_train_state,
    make_eval_step as make_eval_step,
    make_train_step as make_train_step,
    summarise as summarise,
)
