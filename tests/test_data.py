"""Loaders: real MNIST IDX files, the embedded digits, TFDS through mock data, and the
deterministic batching that resumable training relies on."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

import eqx_eqprop as ep
import eqx_eqprop.internal as data

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.exists(), reason="../shared/data/mnist not present")


@needs_mnist
def test_idx_reader_on_the_real_mnist_files():
    d = data.load_dataset("mnist", MNIST_DIR)
    assert d.x_train.shape == (60000, 28, 28, 1) and d.x_test.shape == (10000, 28, 28, 1)
    assert d.x_train.dtype == np.uint8  # kept as bytes; batches are preprocessed
    pixels = d.preprocess(d.x_train[:1000])
    assert pixels.dtype == np.float32 and 0.0 <= pixels.min() and pixels.max() == 1.0
    assert d.num_classes == 10 and d.num_features == 784
    # known facts of the official files
    assert d.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert d.y_test[:3].tolist() == [7, 2, 1]
    np.testing.assert_array_equal(
        np.bincount(d.y_test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )


def _write_idx(path: Path, array: np.ndarray, gz: bool):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_gzipped_or_not(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 4, 5))
    labels = rng.integers(0, 3, 7)
    for stem, arr in [
        ("train-images-idx3-ubyte", images),
        ("train-labels-idx1-ubyte", labels),
        ("t10k-images-idx3-ubyte", images[:3]),
        ("t10k-labels-idx1-ubyte", labels[:3]),
    ]:
        _write_idx(tmp_path / stem, arr, gz)
    d = data.load_dataset("fashion_mnist", tmp_path)
    np.testing.assert_allclose(d.preprocess(d.x_train)[..., 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.y_test, labels[:3])


def test_corrupt_or_missing_idx_files_name_the_file(tmp_path):
    path = _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 4, 4)), gz=False)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: truncated or corrupt IDX file"):
        data.read_idx(path)
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(path)
    bad_gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad_gz.write_bytes(b"definitely not gzip")
    with pytest.raises(
        ValueError, match="t10k-labels-idx1-ubyte.gz: cannot read it as a gzipped IDX"
    ):
        data.read_idx(bad_gz)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte"):
        data.load_idx_directory(empty)


def test_digits_split_is_fixed_and_disjoint():
    a, b = data.load_digits(), data.load_digits()
    assert a.x_train.shape == (1438, 8, 8, 1) and a.x_test.shape == (359, 8, 8, 1)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert a.x_train.max() == 1.0 and a.num_classes == 10
    train_rows = {r.tobytes() for r in a.x_train}
    assert sum(r.tobytes() in train_rows for r in a.x_test) < 10  # a few duplicate images exist


@pytest.mark.parametrize(
    "name,shape,classes",
    [
        ("mnist", (28, 28, 1), 10),
        ("fashion_mnist", (28, 28, 1), 10),
        ("cifar10", (32, 32, 3), 10),
        ("cifar100", (32, 32, 3), 100),
    ],
)
def test_tfds_path_with_mock_data(name, shape, classes):
    with tfds.testing.mock_data(num_examples=12):
        d = data.load_dataset(name)
    assert d.x_train.shape == (12, *shape) and d.x_train.dtype == np.uint8
    assert d.y_train.dtype == np.int32 and d.y_train.max() < classes
    x = d.preprocess(d.x_train)
    assert x.dtype == np.float32
    if name.startswith("cifar"):
        assert d.augment
        np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-5)  # normalised
        np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-4)
    else:
        assert not d.augment and 0 <= x.min() and x.max() <= 1


def test_tfds_download_path_reaches_the_network(tmp_path, monkeypatch):
    # on a fresh install the download used to fail first on a missing module
    # (importlib_resources); now it gets as far as the network, which is offline here
    # (and made to fail at once: no name resolution, no retry back-off)
    import socket
    import time

    def offline(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    with pytest.raises(RuntimeError, match="could not load 'mnist': no network") as caught:
        data.load_tfds("mnist", tmp_path)
    assert "--data-dir" in str(caught.value)
    chain, e = [], caught.value
    while e is not None:
        chain.append(type(e).__name__)
        e = e.__cause__ or e.__context__
    assert "ModuleNotFoundError" not in chain, chain


def test_tfds_failure_says_how_to_pass_data_dir(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "data_source", offline)
    with pytest.raises(RuntimeError, match="--data-dir"):
        data.load_dataset("cifar10")


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: digits, mnist, fashion_mnist, cifar10"):
        data.load_dataset("svhn")


def test_batches_are_a_function_of_seed_and_epoch():
    d = data.load_digits()
    first = list(data.train_batches(d, 100, seed=3, epoch=0))
    again = list(data.train_batches(d, 100, seed=3, epoch=0))
    other = list(data.train_batches(d, 100, seed=3, epoch=1))
    assert len(first) == 14  # 1438 // 100, the remainder is dropped
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first[0][1], other[0][1])
    resumed = list(data.train_batches(d, 100, seed=3, epoch=0, start=5))
    np.testing.assert_array_equal(resumed[0][0], first[5][0])
    # one epoch visits distinct samples
    seen = np.concatenate([data.epoch_order(len(d.x_train), 3, 0)[:1400]])
    assert len(np.unique(seen)) == 1400


def test_augmentation_flips_and_crops():
    x = np.arange(2 * 6 * 6 * 1, dtype=np.float32).reshape(2, 6, 6, 1) + 1
    out = data.augment_batch(x, np.random.default_rng(0), pad=2)
    assert out.shape == x.shape
    for img, aug in zip(x[..., 0], out[..., 0]):
        padded = np.pad(img, 2)
        candidates = [
            c[dy : dy + 6, dx : dx + 6]
            for c in (padded, np.pad(img[:, ::-1], 2))
            for dy in range(5)
            for dx in range(5)
        ]
        assert any(np.array_equal(aug, c) for c in candidates)


def test_eval_batches_cover_every_sample_once():
    x, y = np.arange(23)[:, None].astype(np.float32), np.arange(23)
    d = ep.Dataset("toy", x, y, x, y, 23)
    seen = []
    for xb, yb, n in data.eval_batches(d, 10):
        assert xb.shape == (10, 1)
        seen.extend(yb[:n].tolist())
    assert seen == list(range(23))


def test_batches_are_preprocessed_per_batch_from_uint8():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 4, 4, 3)).astype(np.uint8)
    y = rng.integers(0, 5, 50).astype(np.int32)
    mean, std = data.channel_stats(x, 255.0)
    d = ep.Dataset("toy", x, y, x[:10], y[:10], 5, pixel_max=255.0, mean=mean, std=std)
    np.testing.assert_allclose(mean, (x / 255.0).mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, (x / 255.0).std(axis=(0, 1, 2)), rtol=1e-6)
    xb, yb = next(data.train_batches(d, 8, seed=0, epoch=0))
    idx = data.epoch_order(50, 0, 0)[:8]
    assert xb.dtype == np.float32 and d.x_train.dtype == np.uint8
    np.testing.assert_allclose(xb, (x[idx] / 255.0 - mean) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(yb, y[idx])


def test_prefetch_keeps_the_order_and_passes_errors():
    def items():
        yield from range(5)
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for v in data.prefetch(items(), size=2, transform=lambda v: 10 * v):
            got.append(v)
    assert got == [0, 10, 20, 30, 40]
    # a consumer that stops early does not wait for the rest
    first = next(iter(data.prefetch(iter(range(10**6)))))
    assert first == 0


def test_a_closed_prefetch_stops_its_thread_and_transfers_nothing_more():
    import contextlib
    import threading
    import time

    calls = []
    before = threading.active_count()
    placed = data.prefetch(iter(range(10**6)), size=2, transform=lambda v: calls.append(v) or v)
    with pytest.raises(RuntimeError, match="consumer stopped"):
        with contextlib.closing(placed):
            for v in placed:
                if v == 3:
                    raise RuntimeError("consumer stopped")
    assert threading.active_count() == before  # the thread was joined, not left running
    done = len(calls)
    time.sleep(0.3)
    assert len(calls) == done <= 4 + 2  # what was asked for, and at most the queue ahead
