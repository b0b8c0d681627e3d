"""Datasets as numpy arrays: the embedded digits set, local MNIST-format IDX files, and
TFDS (mnist, fashion_mnist, cifar10, cifar100, ImageNet 32x32), with the
preprocessing and augmentation of the reference papers, and deterministic batching."""

import dataclasses
import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test arrays. Images are `(n, height, width, channels)` float32,
    feature vectors `(n, features)`; labels are int32 `(n,)`."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    augment: bool = False  # random flip and pad-4 crop on training batches

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_features(self) -> int:
        return int(np.prod(self.sample_shape))


# ---------------------------------------------------------------------------- digits


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled handwritten digits (1797 images, 8x8, 10 classes; no
    download). Pixels scaled to [0, 1]; a fixed, seeded stratified-by-shuffle split."""
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits()
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


def has_idx_files(directory: str | os.PathLike | None) -> bool:
    if directory is None:
        return False
    directory = Path(directory)
    return all(any((directory / n).exists() for n in (s, s + ".gz")) for s in _IDX_FILES.values())


def load_idx_directory(directory: str | os.PathLike, name: str = "mnist") -> Dataset:
    """MNIST or Fashion-MNIST from their four IDX files (official 60k/10k split).
    Pixels / 255 as float32 `(n, 28, 28, 1)`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"--data-dir {directory} is not a directory.")
    arrays = {k: read_idx(_find(directory, v)) for k, v in _IDX_FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"{directory}: {split} images {x.shape} and labels {y.shape} do not match "
                "(expected (n, rows, cols) images and (n,) labels)."
            )
    to_images = lambda a: (a.astype(np.float32) / 255.0)[..., None]  # noqa: E731
    return Dataset(
        name,
        to_images(arrays["x_train"]),
        arrays["y_train"].astype(np.int32),
        to_images(arrays["x_test"]),
        arrays["y_test"].astype(np.int32),
        int(arrays["y_train"].max()) + 1,
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
    records = (source[i] for i in range(len(source)))
    images, labels = zip(*((np.asarray(r["image"]), int(r["label"])) for r in records))
    return np.stack(images), np.asarray(labels, np.int32)


def load_tfds(
    name: str, data_dir: str | os.PathLike | None = None, download: bool = True
) -> Dataset:
    """A dataset through `tfds.data_source` (ArrayRecord; no TensorFlow needed).

    Images become float32 in [0, 1]; CIFAR and ImageNet are then normalised per channel
    with the training-set mean and std, and marked for augmentation."""
    import tensorflow_datasets as tfds

    if name not in TFDS_DATASETS:
        raise ValueError(f"unknown TFDS dataset {name!r}; valid: {', '.join(TFDS_DATASETS)}.")
    tfds_name, test_split, normalise, augment = TFDS_DATASETS[name]
    try:
        sources = tfds.data_source(
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
        raise RuntimeError(
            f"TFDS could not load {tfds_name!r} ({type(e).__name__}: {e}). {hint}"
        ) from e
    (x_train, y_train), (x_test, y_test) = (_records_to_arrays(s) for s in sources)
    x_train = x_train.astype(np.float32) / 255.0
    x_test = x_test.astype(np.float32) / 255.0
    if normalise:
        mean = x_train.mean(axis=(0, 1, 2), keepdims=True)
        std = x_train.std(axis=(0, 1, 2), keepdims=True) + 1e-8
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes, augment)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """`digits` (embedded), or a TFDS name; for `mnist` and `fashion_mnist` a `data_dir`
    holding IDX files is read directly (offline)."""
    if name == "digits":
        return load_digits()
    if name not in TFDS_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}.")
    if name in ("mnist", "fashion_mnist") and has_idx_files(data_dir):
        return load_idx_directory(data_dir, name)
    return load_tfds(name, data_dir)


# --------------------------------------------------------------------------- batches


def num_batches(n: int, batch_size: int) -> int:
    """Batches per epoch; the last incomplete batch is dropped (fixed shapes under jit)."""
    return n // batch_size


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of epoch `epoch`: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def augment_batch(x: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random horizontal flip and random crop after zero padding by `pad` pixels, per
    image, on `(batch, height, width, channels)`."""
    b, h, w, _ = x.shape
    flip = rng.random(b) < 0.5
    x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy = rng.integers(0, 2 * pad + 1, b)
    dx = rng.integers(0, 2 * pad + 1, b)
    rows = dy[:, None] + np.arange(h)[None]
    cols = dx[:, None] + np.arange(w)[None]
    return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def train_batches(
    data: Dataset, batch_size: int, *, seed: int, epoch: int, start: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shuffled training batches of epoch `epoch`, from batch index `start` (for
    resuming mid-epoch). Order and augmentation depend only on (seed, epoch, index)."""
    order = epoch_order(len(data.x_train), seed, epoch)
    for i in range(start, num_batches(len(order), batch_size)):
        idx = order[i * batch_size : (i + 1) * batch_size]
        x = data.x_train[idx]
        if data.augment:
            x = augment_batch(x, np.random.default_rng([seed, epoch, i, 1]))
        yield x, data.y_train[idx]


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int):
    """Every sample once, in order; the last batch is padded by repeating its first
    sample, and the count of real samples is yielded with it."""
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        n = len(xb)
        if n < batch_size:
            fill = batch_size - n
            xb = np.concatenate([xb, np.repeat(xb[:1], fill, 0)])
            yb = np.concatenate([yb, np.repeat(yb[:1], fill, 0)])
        yield xb, yb, n


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
