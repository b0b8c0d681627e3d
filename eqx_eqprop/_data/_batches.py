"""Deterministic batching: the epoch's order from (seed, epoch), augmentation per batch
as in the reference papers, and a background prefetch."""

import dataclasses
from collections.abc import Generator, Iterator

import numpy as np

from ._sources import Dataset


def num_batches(n: int, batch_size: int) -> int:
    """Batches per epoch; the last incomplete batch is dropped (fixed shapes under jit)."""
    return n // batch_size


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of epoch `epoch`: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def augment_batch(
    x: np.ndarray, rng: np.random.Generator, pad: int = 4, flip: bool = True
) -> np.ndarray:
    """Random horizontal flip (if `flip`) and random crop after zero padding by `pad`
    pixels, per image, on `(batch, height, width, channels)`."""
    b, h, w, _ = x.shape
    flips = rng.random(b) < 0.5
    if flip:
        x = np.where(flips[:, None, None, None], x[:, :, ::-1], x)
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy = rng.integers(0, 2 * pad + 1, b)
    dx = rng.integers(0, 2 * pad + 1, b)
    rows = dy[:, None] + np.arange(h)[None]
    cols = dx[:, None] + np.arange(w)[None]
    return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def train_batches(
    data: Dataset,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    start: int = 0,
    rows: slice = slice(None),
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shuffled, preprocessed training batches of epoch `epoch`, from batch index `start`
    (for resuming mid-epoch); `rows` of each batch only (a process's share). Order and
    augmentation depend only on (seed, epoch, index)."""
    order = epoch_order(len(data.x_train), seed, epoch)
    for i in range(start, num_batches(len(order), batch_size)):
        idx = order[i * batch_size : (i + 1) * batch_size]
        x = data.preprocess(data.x_train[idx])
        if data.augment:
            rng = np.random.default_rng([seed, epoch, i, 1])
            x = augment_batch(x, rng, data.pad, data.flip)
        yield x[rows], data.y_train[idx][rows]


def eval_batches(data: Dataset, batch_size: int, split: str = "test"):
    """Every sample of a split once, in order, preprocessed; the last batch is padded by
    repeating its first sample, and the count of real samples is yielded with it."""
    x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    for start in range(0, len(x), batch_size):
        xb, yb = data.preprocess(x[start : start + batch_size]), y[start : start + batch_size]
        n = len(xb)
        if n < batch_size:
            fill = batch_size - n
            xb = np.concatenate([xb, np.repeat(xb[:1], fill, 0)])
            yb = np.concatenate([yb, np.repeat(yb[:1], fill, 0)])
        yield xb, yb, n


def prefetch(iterator: Iterator, size: int = 2, transform=None) -> Generator:
    """Items of `iterator` prepared `size` ahead in a background thread (batching,
    augmentation and `transform`, e.g. the transfer to the devices, overlap with the
    computation of the previous steps). Exceptions reach the consumer. Closing the
    generator (`contextlib.closing`, or its end) stops the thread and waits for it, so
    no transfer outlives the loop that asked for it."""
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterator:
                if not put(item if transform is None else transform(item)):
                    return
        except BaseException as e:  # handed to the consumer
            put(_Failure(e))
        put(done)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


@dataclasses.dataclass
class _Failure:
    error: BaseException
