"""Data: where datasets come from (`_sources`) and how they are batched (`_batches`)."""

from ._batches import (
    augment_batch as augment_batch,
    epoch_order as epoch_order,
    eval_batches as eval_batches,
    num_batches as num_batches,
    prefetch as prefetch,
    train_batches as train_batches,
)
from ._sources import (
    DATASETS as DATASETS,
    IDX_CLASSES as IDX_CLASSES,
    TFDS_DATASETS as TFDS_DATASETS,
    Dataset as Dataset,
    channel_stats as channel_stats,
    check_dataset as check_dataset,
    has_idx_files as has_idx_files,
    load_dataset as load_dataset,
    load_digits as load_digits,
    load_idx_directory as load_idx_directory,
    load_tfds as load_tfds,
    read_idx as read_idx,
)
