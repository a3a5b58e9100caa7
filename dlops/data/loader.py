"""The training loader of a trial: workers, threads, seeding and the last-batch rule.

Rules (each a pure function, unit-tested):

* **Workers** (:func:`thread_plan`): ``data.num_workers`` DataLoader worker processes per trial;
  default (None) the trial's CPUs minus one for the training process, at least 0. Workers are used
  only where a batch needs per-image work in Python (an augmentation policy); without one, every
  image is transformed once per trial and batches are slices of that tensor, in the process.
* **Threads**: the training process gets ``max(1, cpus - workers)`` threads, each worker 1, for
  torch (``torch.set_num_threads``), OpenCV (``cv2.setNumThreads``, albumentations' backend) and
  BLAS/OpenMP (``threadpoolctl``, and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS``
  for libraries loaded later), so ``workers + main threads == max(cpus, workers + 1)``: a trial's
  processes never run more threads than the CPUs Ray gave it (unless ``num_workers`` is set above
  ``cpus - 1``). The workers are forked with OpenCV's pool paused in the training process
  (:func:`opencv_pool_paused`: a child forked from a process whose pool has threads can hang in
  its own ``cv2.setNumThreads``).
* **Seeding** (:func:`worker_seed`): worker ``w`` draws its augmentation in epoch ``e`` from
  ``SeedSequence([seed, e, w])``: the same trial seed gives the same augmented batches (for the
  same number of workers), workers differ from one another, and a trial resumed at epoch ``e``
  repeats the uninterrupted sequence. Workers are persistent (started once per trial); the
  sampler hands them the epoch with every index, so they reseed when it changes.
* **Last batch** (:func:`drop_last_batch`): a last training batch of exactly 1 example is dropped
  (BatchNorm cannot normalise one example: ``Expected more than 1 value per channel``). The
  shuffle is per epoch, so a different example sits out each epoch.
* **Shuffle**: epoch ``e`` of a trial with seed ``s`` is the order of a ``DataLoader(shuffle=True)``
  whose generator is seeded with ``s + e`` (the order :func:`dlops.train.loop.make_loader` gives).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

__all__ = ["EpochBatchSampler", "FileImageDataset", "ThreadPlan", "TrainLoader", "WorkerInit", "cap_threads",
           "default_num_workers", "drop_last_batch", "opencv_pool_paused", "thread_counts", "thread_plan",
           "worker_seed"]

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def default_num_workers(cpus: float) -> int:
    """DataLoader workers for a trial of ``cpus`` CPUs: one CPU stays for training; >= 0."""
    return max(0, int(cpus) - 1)


@dataclass(frozen=True)
class ThreadPlan:
    """Processes and threads of one trial: ``num_workers`` workers of ``worker_threads`` threads
    each, and ``main_threads`` threads in the training process."""

    num_workers: int
    main_threads: int
    worker_threads: int = 1

    @property
    def total_threads(self) -> int:
        return self.main_threads + self.num_workers * self.worker_threads


def thread_plan(cpus: float, num_workers: Optional[int] = None, per_image_work: bool = True) -> ThreadPlan:
    """The :class:`ThreadPlan` of a trial with ``cpus`` CPUs (rules in the module docstring).

    Args:
        cpus: the CPUs Ray gave the trial (``search.resources.cpu``; a fraction counts as 1).
        num_workers: ``data.num_workers``; None: :func:`default_num_workers`.
        per_image_work: batches need per-image Python work (an augmentation policy); without it no
            worker is started and the training process keeps every CPU.
    """
    n_cpu = max(1, int(cpus))
    workers = default_num_workers(n_cpu) if num_workers is None else max(0, int(num_workers))
    if not per_image_work:
        workers = 0
    return ThreadPlan(num_workers=workers, main_threads=max(1, n_cpu - workers), worker_threads=1)


def drop_last_batch(n: int, batch_size: int) -> bool:
    """Whether a training epoch of ``n`` examples in batches of ``batch_size`` drops its last batch:
    only when that batch would hold exactly one example (and it is not the only batch)."""
    return n > 1 and batch_size > 1 and n % batch_size == 1


def worker_seed(seed: int, epoch: int, worker_id: int) -> int:
    """The augmentation seed of worker ``worker_id`` in epoch ``epoch`` (0-based) of a trial seeded
    ``seed``: ``numpy.random.SeedSequence([seed, epoch, worker_id])``'s first 32-bit word
    (the training process, without workers, counts as worker 0)."""
    ss = np.random.SeedSequence([int(seed) % 2**32, int(epoch), int(worker_id)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def cap_threads(n: int) -> None:
    """Cap this process at ``n`` threads for torch, OpenCV and BLAS/OpenMP (see the module docstring)."""
    import torch

    n = max(1, int(n))
    for k in THREAD_ENV:
        os.environ[k] = str(n)
    torch.set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:  # OpenCV is albumentations' backend; without it there is nothing to cap
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:
        pass


@contextlib.contextmanager
def opencv_pool_paused() -> Iterator[None]:
    """Around a ``fork`` (DataLoader workers starting): OpenCV's thread pool cut to 1 thread in
    this process, and its size restored after.

    A child forked while OpenCV's pool has threads inherits the pool without its threads, and the
    worker's ``cv2.setNumThreads`` (:func:`cap_threads`) can then hang for ever in
    ``pthread_cond_destroy`` (measured here with OpenCV 4.x: a parent whose pool of 4 threads had
    run ``GaussianBlur``, 3 of 6 forked children hung; with the pool paused, 0 of 10). Only when
    OpenCV is already imported; otherwise a no-op."""
    cv2 = sys.modules.get("cv2")
    n = int(cv2.getNumThreads()) if cv2 is not None else 1
    if n > 1:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        if n > 1:
            cv2.setNumThreads(n)


def thread_counts() -> dict[str, int]:
    """Threads this process would use now: ``{"torch": ..., "cv2": ...}`` (``cv2`` -1 without OpenCV)."""
    import torch

    out = {"torch": int(torch.get_num_threads()), "cv2": -1}
    try:
        import cv2

        out["cv2"] = int(cv2.getNumThreads())
    except ImportError:
        pass
    return out


class WorkerInit:
    """``DataLoader(worker_init_fn=...)``: cap the worker's threads and seed it from the trial seed
    (epoch 0's :func:`worker_seed`; the dataset reseeds per epoch). Picklable."""

    def __init__(self, seed: int, threads: int = 1) -> None:
        self.seed, self.threads = int(seed), int(threads)

    def __call__(self, worker_id: int) -> None:
        import random

        import torch

        cap_threads(self.threads)
        s = worker_seed(self.seed, 0, worker_id)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)


class EpochBatchSampler:
    """Batches of ``(epoch, index)`` pairs: the order of epoch :attr:`epoch` (set with
    :meth:`set_epoch`), with the last-batch rule. A ``DataLoader`` with persistent workers takes
    it as ``batch_sampler`` and draws from it anew at every ``iter()``."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.bs, self.seed, self.shuffle = int(n), int(batch_size), int(seed), shuffle
        self.epoch = 0
        self.drop_last = shuffle and drop_last_batch(self.n, self.bs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> list[int]:
        """Epoch :attr:`epoch`'s order: that of ``DataLoader(shuffle=True)`` with a generator
        seeded ``seed + epoch`` (it draws its base seed, then ``randperm``)."""
        import torch

        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=g)  # the DataLoader's base-seed draw
        return torch.randperm(self.n, generator=g).tolist()

    def __len__(self) -> int:
        return self.n // self.bs if self.drop_last else (self.n + self.bs - 1) // self.bs

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order()
        for b in range(len(self)):
            yield [(self.epoch, i) for i in order[b * self.bs:(b + 1) * self.bs]]


class _EpochDataset:
    """Map-style dataset of ``(epoch, i)`` keys: image ``i`` through the training transform,
    its augmentation policy reseeded with :func:`worker_seed` whenever the epoch changes."""

    def __init__(self, x: Any, y: np.ndarray, transform: Callable[[np.ndarray], Any], seed: int,
                 policy_only: bool = False) -> None:
        self.x, self.y, self.transform, self.seed = x, y, transform, int(seed)
        self.policy_only = policy_only  # return the augmented uint8 image; the loader normalises whole batches
        self._epoch: Optional[int] = None

    def __len__(self) -> int:
        return len(self.y)

    def _reseed(self, epoch: int) -> None:
        import torch

        info = torch.utils.data.get_worker_info()
        wid = 0 if info is None else int(info.id)
        s = worker_seed(self.seed, epoch, wid)
        if info is not None:  # torch-drawn augmentation (torchvision v2) in a worker; never the trainer's RNG
            torch.manual_seed(s)
        policy = getattr(self.transform, "policy", None)
        if policy is not None and hasattr(policy, "reseed"):
            # after manual_seed: a policy reseeds itself when torch's seed changes under it
            policy.reseed(s)
        self._epoch = epoch

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, Any]:
        import torch

        epoch, i = key
        if epoch != self._epoch:
            self._reseed(epoch)
        y = self.y[i]
        img = self.x[i] if not hasattr(self.x, "load") else self.x.load(i)
        target = int(y) if np.ndim(y) == 0 else torch.as_tensor(y, dtype=torch.float32)
        if self.policy_only:
            from dlops.data.transforms import to_uint8

            out = self.transform.policy(to_uint8(np.asarray(img)))
            return torch.from_numpy(np.ascontiguousarray(out if out.ndim == 3 else out[..., None])), target
        return self.transform(img), target


class TrainLoader:
    """A trial's training batches, epoch by epoch, built once per trial (workers persist).

    Args:
        x: training images (N, H, W, C) uint8 (anything indexable by int, or an object with
            ``load(i)`` and ``len()``, such as :class:`FileImageDataset`).
        y: (N,) int class indices or (N, L) float multi-label targets.
        transform: the training transform (:func:`dlops.data.transforms.build_transform`).
        batch_size: examples per batch.
        seed: the trial's seed.
        plan: the trial's :class:`ThreadPlan` (its ``num_workers`` used when a policy augments).
        pin_memory: pin host memory (CUDA only; see :mod:`dlops.train.device`).
        pretransformed: (N, C, H', W') ``transform`` of every image, for a transform without an
            augmentation policy (batches are slices of it, no workers).
        batch_tail: the evaluation transform's batched form (``build_transform(..., train=False).batch``
            with the training transform's size, mean and std). With it, workers return the augmented
            uint8 images (a quarter of the bytes of float32 between processes) and the loader turns each
            batch to normalised float32 at once: the same tensors as ``transform`` per image, since
            ``transform`` is the policy followed by exactly those operations. Not used with
            ``pin_memory`` (CUDA): there the workers transform fully and the batches stay pinned.

    ``loader.epoch(e)`` yields ``(x (B, C, H', W') float32, y (B,) int64 or (B, L) float32)``.
    """

    def __init__(self, x: Any, y: np.ndarray, transform: Callable[[np.ndarray], Any], batch_size: int, seed: int,
                 plan: ThreadPlan, pin_memory: bool = False, pretransformed: Any = None,
                 batch_tail: Optional[Callable[[np.ndarray], Any]] = None) -> None:
        import torch
        from torch.utils.data import DataLoader

        y_a = np.asarray(y)
        self.n = len(y_a)
        self.sampler = EpochBatchSampler(self.n, batch_size, seed, shuffle=True)
        self.pre = pretransformed if getattr(transform, "batch", None) is not None else None
        self.plan = plan
        self.loader: Optional[DataLoader] = None
        if self.pre is not None:
            self.yt = torch.as_tensor(y_a, dtype=torch.int64 if y_a.ndim == 1 else torch.float32)
            return
        w = int(plan.num_workers)
        # on CUDA (pinned memory) the workers transform fully: normalising in the trainer would take
        # its time from feeding the GPU, and the batches it made would not be pinned
        self.tail = batch_tail if getattr(transform, "policy", None) is not None and not pin_memory else None
        ds = _EpochDataset(x, y_a, transform, seed, policy_only=self.tail is not None)
        self.loader = DataLoader(ds, batch_sampler=self.sampler, num_workers=w,
                                 persistent_workers=w > 0, pin_memory=bool(pin_memory),
                                 worker_init_fn=WorkerInit(seed, plan.worker_threads) if w > 0 else None)

    @property
    def num_workers(self) -> int:
        return 0 if self.loader is None else int(self.loader.num_workers)

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int) -> Iterator[tuple[Any, Any]]:
        """The batches of epoch ``epoch`` (0-based)."""
        import torch

        self.sampler.set_epoch(epoch)
        if self.loader is not None:
            with opencv_pool_paused():  # the first epoch forks the (persistent) workers
                it = iter(self.loader)
            if self.tail is None:
                return it
            tail = self.tail
            return ((tail(xb.numpy()), yb) for xb, yb in it)
        order = torch.as_tensor(self.sampler.order(), dtype=torch.int64)
        bs = self.sampler.bs
        return ((self.pre[order[b * bs:(b + 1) * bs]], self.yt[order[b * bs:(b + 1) * bs]])
                for b in range(len(self.sampler)))

    def close(self) -> None:
        """Stop the workers (also done when the loader is garbage-collected)."""
        self.loader = None


class FileImageDataset:
    """Images read from their files on every access: decode (:func:`dlops.data.decode.decode_image`:
    EXIF orientation, mode conversion, the decompression-bomb guard) and resize to ``size``.

    The uncached path (the benchmark's baseline, and for data larger than memory). ``ds.load(i)``
    is (size, size, channels) uint8; ``ds[i]`` is ``(transform(image), label)``.

    Raises (at access):
        dlops.errors.DataError: a file that cannot be read or decoded any more (changed or
            removed after the pre-scan); the message names the file. Training stops: a silently
            shrinking epoch would change what the trial learns.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[Any], channels: int, size: Optional[int],
                 transform: Optional[Callable[[np.ndarray], Any]] = None) -> None:
        self.paths, self.labels = list(paths), np.asarray(labels)
        self.channels, self.size, self.transform = int(channels), size, transform

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> np.ndarray:
        from dlops.data.cache import read_resized

        return read_resized(self.paths[i], self.channels, self.size)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        img = self.load(i)
        y = self.labels[i]
        return (self.transform(img) if self.transform is not None else img), (int(y) if np.ndim(y) == 0 else y)
