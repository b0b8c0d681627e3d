"""Datasets as numpy arrays: the embedded digits set, local MNIST-format IDX files, and
TFDS (mnist, fashion_mnist, cifar10, cifar100, ImageNet 32x32), with the
preprocessing of the reference papers, and the checks a dataset gets once."""

import dataclasses
import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test arrays as stored: images `(n, height, width, channels)`, uint8 for
    the image sets (ImageNet 32x32 as float32 would take 15.7 GB), float32 for digits;
    labels int32 `(n,)`. `preprocess` turns a batch into the model's float32 input,
    `x / pixel_max`, then `(x - mean) / std` per channel when `mean` is set; training
    batches are augmented when `augment`: a random crop after zero padding by `pad`
    pixels, and a random horizontal flip if `flip` (CIFAR: pad 4 with flips; for digits,
    a shift without flips)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    augment: bool = False
    flip: bool = True
    pad: int = 4
    pixel_max: float = 1.0
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_features(self) -> int:
        return int(np.prod(self.sample_shape))

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """Stored samples (a batch) as float32 model inputs."""
        x = x.astype(np.float32)
        if self.pixel_max != 1.0:
            x = x / np.float32(self.pixel_max)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean.astype(np.float32)) / self.std.astype(np.float32)
        return x


def channel_stats(x: np.ndarray, pixel_max: float, chunk: int = 8192):
    """Per-channel mean and std of `x / pixel_max` over all but the last axis, in float64
    chunks (never a float copy of the whole set)."""
    total = np.zeros(x.shape[-1])
    squares = np.zeros(x.shape[-1])
    axes = tuple(range(x.ndim - 1))
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].astype(np.float64) / pixel_max
        total += part.sum(axis=axes)
        squares += (part**2).sum(axis=axes)
    count = x.size / x.shape[-1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0)) + 1e-8
    return mean, std


# ---------------------------------------------------------------------------- digits


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled handwritten digits (1797 images, 8x8, 10 classes; no
    download). Pixels scaled to [0, 1]; a fixed, seeded stratified-by-shuffle split."""
    from sklearn.datasets import load_digits as sk_digits

    data: Any = sk_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    y = data.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", x[train], y[train], x[test], y[test], 10)


# ------------------------------------------------------------------------------- IDX

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file not found: {path}") from None
    except (OSError, EOFError) as e:
        raise ValueError(
            f"{path}: cannot read it as a {'gzipped ' * (opener is gzip.open)}IDX file ({e})."
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: not an IDX file (expected magic bytes 00 00 <type> <ndim>, "
            f"got {raw[:4].hex(' ') or 'an empty file'})."
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: truncated or corrupt IDX file: header says shape {shape} "
            f"({expected} bytes), the file has {len(raw)} bytes."
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(
        f"{directory}: no {stem}(.gz). An MNIST-format directory holds the four files "
        f"{', '.join(v + '.gz' for v in _IDX_FILES.values())} (gzipped or not)."
    )


def _present_idx_files(directory: Path) -> dict[str, bool]:
    return {
        stem: any(
            (directory / n).exists() for n in (stem + ".gz", stem, stem.replace("-idx", ".idx"))
        )
        for stem in _IDX_FILES.values()
    }


def has_idx_files(directory: str | os.PathLike | None) -> bool:
    if directory is None:
        return False
    return all(_present_idx_files(Path(directory)).values())


# the classes each IDX data set declares (labels outside them are corrupt data)
IDX_CLASSES = {"mnist": 10, "fashion_mnist": 10}


def load_idx_directory(
    directory: str | os.PathLike, name: str = "mnist", num_classes: int | None = None
) -> Dataset:
    """MNIST or Fashion-MNIST from their four IDX files (official 60k/10k split), kept
    as uint8 `(n, 28, 28, 1)`; batches are pixels / 255. Labels must lie in
    `[0, num_classes)` (default: the classes `name` declares, 10 for both; the largest
    label + 1 for other names): a corrupted label byte is an error naming the file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"--data-dir {directory} is not a directory.")
    paths = {k: _find(directory, v) for k, v in _IDX_FILES.items()}
    arrays = {k: read_idx(path) for k, path in paths.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"{directory}: {split} images {x.shape} and labels {y.shape} do not match "
                "(expected (n, rows, cols) images and (n,) labels)."
            )
        if x.dtype != np.uint8 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"{paths[f'x_{split}'].name}, {paths[f'y_{split}'].name}: expected uint8 "
                f"images and integer labels, got {x.dtype} and {y.dtype}."
            )
    classes = num_classes or IDX_CLASSES.get(name) or int(arrays["y_train"].max()) + 1
    for key in ("y_train", "y_test"):
        y = arrays[key]
        bad = np.flatnonzero((y < 0) | (y >= classes))
        if bad.size:
            raise ValueError(
                f"{paths[key]}: label {int(y[bad[0]])} at index {int(bad[0])} lies outside "
                f"the {classes} classes of {name} ({bad.size} such labels): the file is "
                "corrupt; replace it with the official one."
            )
    return Dataset(
        name,
        arrays["x_train"][..., None],
        arrays["y_train"].astype(np.int32),
        arrays["x_test"][..., None],
        arrays["y_test"].astype(np.int32),
        classes,
        pixel_max=255.0,
    )


# ------------------------------------------------------------------------------ TFDS

# name -> (TFDS name, test split, normalise per channel, augment)
TFDS_DATASETS = {
    "mnist": ("mnist", "test", False, False),
    "fashion_mnist": ("fashion_mnist", "test", False, False),
    "cifar10": ("cifar10", "test", True, True),
    "cifar100": ("cifar100", "test", True, True),
    # ImageNet 32x32 with labels (Chrabaszcz et al. 2017). TFDS's downsampled_imagenet
    # has no labels; imagenet_resized needs the ImageNet files placed by hand.
    "imagenet32": ("imagenet_resized/32x32", "validation", True, True),
}
DATASETS = ("digits", *TFDS_DATASETS)


def _records_to_arrays(source) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((len(source), *np.asarray(source[0]["image"]).shape), np.uint8)
    labels = np.empty(len(source), np.int32)
    for i in range(len(source)):
        record = source[i]
        images[i] = np.asarray(record["image"])
        labels[i] = int(record["label"])
    return images, labels


_OFFLINE = ("ConnectionError", "NameResolutionError", "MaxRetryError", "gaierror", "URLError")


def load_tfds(
    name: str, data_dir: str | os.PathLike | None = None, download: bool = True
) -> Dataset:
    """A dataset through `tfds.data_source` (ArrayRecord; no TensorFlow needed).

    Images stay uint8; batches become float32 in [0, 1], and for CIFAR and ImageNet
    are normalised per channel with the training-set mean and std and augmented."""
    import tensorflow_datasets as tfds

    if name not in TFDS_DATASETS:
        raise ValueError(f"unknown TFDS dataset {name!r}; valid: {', '.join(TFDS_DATASETS)}.")
    tfds_name, test_split, normalise, augment = TFDS_DATASETS[name]
    try:
        sources: Any = tfds.data_source(
            tfds_name,
            split=["train", test_split],
            data_dir=None if data_dir is None else os.fspath(data_dir),
            download=download,
            builder_kwargs={"file_format": "array_record"},
        )
    except Exception as e:  # network, missing manual files, missing prepared data
        hint = (
            "For MNIST or Fashion-MNIST, pass --data-dir DIR with the four IDX files "
            "(e.g. ../shared/data/mnist); for the others, pass --data-dir DIR with a "
            "TFDS data directory where the dataset is already prepared (run "
            f"`tfds build {tfds_name} --file_format=array_record` on a machine online "
            "and copy its data_dir)."
        )
        chain = [type(c).__name__ for c in _causes(e)]
        what = "no network to download it" if any(c in _OFFLINE for c in chain) else "failed"
        raise RuntimeError(
            f"TFDS could not load {tfds_name!r}: {what} ({type(e).__name__}: {e}). {hint}"
        ) from e
    (x_train, y_train), (x_test, y_test) = (_records_to_arrays(s) for s in sources)
    mean = std = None
    if normalise:
        mean, std = channel_stats(x_train, 255.0)
    num_classes = _declared_classes(sources[0]) or int(max(y_train.max(), y_test.max())) + 1
    return Dataset(
        name,
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes,
        augment=augment,
        pixel_max=255.0,
        mean=mean,
        std=std,
    )


def _declared_classes(source) -> int | None:
    """The number of classes the dataset declares (not the largest label seen)."""
    try:
        return int(source.dataset_info.features["label"].num_classes)
    except (AttributeError, KeyError, TypeError):
        return None


def _causes(e: BaseException):
    seen = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """`digits` (embedded), or a TFDS name; for `mnist` and `fashion_mnist` a `data_dir`
    holding IDX files is read directly (offline).

    A given `data_dir` is only read: it must exist and hold either the four IDX files
    (MNIST and Fashion-MNIST) or the dataset prepared by TFDS; nothing is downloaded into
    it, and a missing file or directory is named at once. Without `data_dir`, TFDS
    loads (and downloads, if online) into its default directory."""
    if name == "digits":
        return load_digits()
    if name not in TFDS_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}.")
    if data_dir is None:
        return load_tfds(name)
    directory = Path(data_dir)
    if not directory.is_dir():
        what = "is a file, not a directory" if directory.exists() else "does not exist"
        raise FileNotFoundError(f"data directory {directory} {what} (data.data_dir, --data-dir).")
    tfds_dir = directory / TFDS_DATASETS[name][0]
    if name in IDX_CLASSES:
        present = _present_idx_files(directory)
        if all(present.values()):
            return load_idx_directory(directory, name)
        if any(present.values()) or not tfds_dir.is_dir():
            missing = [f"{stem}.gz" for stem, here in present.items() if not here]
            raise FileNotFoundError(
                f"{directory} is missing the IDX file(s) {', '.join(missing)} "
                f"(gzipped or not) for {name}, and holds no TFDS-prepared {name} "
                f"({tfds_dir}). Put the four official files there, e.g. from "
                "../shared/data/mnist."
            )
    elif not tfds_dir.is_dir():
        raise FileNotFoundError(
            f"{directory} holds no TFDS-prepared {name} ({tfds_dir} does not exist). Run "
            f"`tfds build {TFDS_DATASETS[name][0]} --file_format=array_record` on a machine "
            "online and copy its data_dir, or leave out data_dir to load (and download) "
            "into TFDS's default directory."
        )
    return load_tfds(name, directory, download=False)


def check_dataset(data: Dataset) -> None:
    """The checks `gradient` makes at run time, made once on the host for a whole
    dataset: finite inputs, one integer label per sample, labels in range."""
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if len(x) != len(y):
            raise ValueError(f"{data.name}: {len(x)} {split} inputs but {len(y)} labels.")
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"{data.name}: {split} labels must be integers, got {y.dtype}.")
        if len(y) and (y.min() < 0 or y.max() >= data.num_classes):
            raise ValueError(
                f"{data.name}: {split} labels must lie in [0, {data.num_classes}), found "
                f"{y.min()}..{y.max()}."
            )
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            raise ValueError(f"{data.name}: the {split} inputs contain NaN or inf values.")
