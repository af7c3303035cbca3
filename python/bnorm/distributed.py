"""Synchronized batch norm: the statistics of a batch split over processes.

In data-parallel training each process holds a shard of the batch. Batch
norm on a shard alone normalizes with that shard's statistics, which are
noisier the smaller the shard; synchronized batch norm normalizes every shard
with the statistics of the whole batch, so the result is the batch norm of
the concatenated batch.

The split-phase functions (the C API's, see ``bnorm.h``) leave the transport
to the caller::

    count, mean, m2 = bnorm.distributed.moments(x_shard)        # local
    # exchange (count, mean, m2) with the other processes, then on each:
    count, mean, m2 = bnorm.distributed.merge_moments(counts, means, m2s)
    y, save_mean, save_invstd = bnorm.distributed.normalize(x_shard, count, mean, m2, w, b)
    # backward
    sum_dy, sum_dy_xmu = bnorm.distributed.backward_reduce(dy, x_shard, save_mean)
    # add the sums of every process, in rank order, then on each:
    dx, dw, db = bnorm.distributed.backward_elementwise(
        dy, x_shard, save_mean, save_invstd, w, sum_dy, sum_dy_xmu, count)

``SyncBatchNorm`` does all of it over a communicator: one ``allgather`` of
``2C + 1`` float64 values per process in the forward pass and one in the
backward pass. Every process merges the same gathered list in rank order, so
all of them hold bitwise the same statistics and gradients of weight and bias.
The communicator is an ``mpi4py`` communicator (``MPI.COMM_WORLD`` by
default; ``pip install "bnorm[mpi]"``), a ``torch.distributed`` process
group (gloo on the CPU) through :class:`TorchCommunicator`, or any object
with ``rank``, ``size`` and ``allgather`` like :class:`Communicator`.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _core, _spec
from ._functional import (_View, _channel_args, _data, _eps, _param_dtype, _per_channel,
                          _real, _running_pair, _out, _pair_views, _prepare)
from ._layer import BatchNorm

__all__ = ["moments", "merge_moments", "normalize", "backward_reduce",
           "backward_elementwise", "SyncBatchNorm", "Communicator",
           "MPICommunicator", "TorchCommunicator", "LocalCommunicator"]


# -- the split phases ---------------------------------------------------------

def moments(x, *, axis=1) -> Tuple[int, np.ndarray, np.ndarray]:
    """``(count, mean, m2)`` of a shard per channel: count = values per
    channel, ``m2 = sum((x - mean)**2)``; float64 whatever x's dtype, exactly
    the moments :func:`bnorm.batch_norm_train` normalizes with. An empty
    shard gives ``(0, zeros, zeros)``."""
    x, view, pdtype = _prepare(x, axis, None)
    a = _channel_args(_spec.MOMENTS, dict(x=view.flat), view, pdtype)
    _core.moments(_spec.MOMENTS.pack(a), view.outer, view.channels, view.inner)
    return view.outer * view.inner, a["mean"], a["m2"]


def merge_moments(counts, means, m2s) -> Tuple[int, np.ndarray, np.ndarray]:
    """Merges the moments of several shards (a balanced binary tree over
    them in the order given, so rounding grows with log2(shards)): ``counts``
    has one count per shard, ``means`` and ``m2s`` one row of C values per
    shard. Returns the total ``(count, mean, m2)``. The same list in the same
    order gives the same bits on every process."""
    try:
        c = np.asarray(counts)
        if c.dtype.kind not in "iuf" or not np.all(c == np.round(c)):
            raise TypeError
        c = np.ascontiguousarray(c, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise TypeError("counts must hold whole numbers") from None
    if c.ndim != 1:
        raise ValueError(f"counts must be 1-D (one count per shard), got shape {c.shape}")
    if np.any(c < 0):
        raise ValueError("counts must be >= 0")
    rows = []
    for name, a in (("means", means), ("m2s", m2s)):
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
        if a.ndim != 2 or a.shape[0] != c.shape[0]:
            raise ValueError(f"{name} has shape {a.shape}, expected ({c.shape[0]}, C): "
                             "one row per shard")
        rows.append(a)
    if rows[0].shape != rows[1].shape:
        raise ValueError(f"means has shape {rows[0].shape} but m2s {rows[1].shape}")
    C = rows[0].shape[1]
    count = np.empty(1, np.int64)
    mean = np.empty(C, np.float64)
    m2 = np.empty(C, np.float64)
    _core.merge_moments(c, rows[0], rows[1], count, mean, m2)
    return int(count[0]), mean, m2


def _count(count: Any, local: int) -> int:
    if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)):
        raise TypeError(f"count must be an integer, got {type(count).__name__}")
    count = int(count)
    if count <= 1:
        raise ValueError("Expected more than 1 value per channel when training, "
                         f"got a global count of {count}")
    if count < local:
        raise ValueError(f"count {count} is smaller than this shard's {local} values "
                         "per channel")
    return count


def _stats(a: Any, name: str, view: _View) -> np.ndarray:
    a = np.asarray(a)
    _real(a, name)
    _per_channel(a, name, view.channels, view.axis)
    return np.ascontiguousarray(a, dtype=np.float64)


def normalize(x, count, mean, m2, weight=None, bias=None, eps=1e-5, *, axis=1,
              running_mean=None, running_var=None, momentum=0.1,
              unbiased=True, out=None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training forward of a shard with the statistics of the whole batch
    (``count`` values per channel, ``mean``, ``m2`` from
    :func:`merge_moments`). Returns ``(y, save_mean, save_invstd)`` as
    :func:`bnorm.batch_norm_train` does, and updates the running statistics
    in place with the batch's unbiased variance ``m2 / (count - 1)``."""
    x, view, pdtype = _prepare(x, axis, out)
    eps = _eps(eps)
    count = _count(count, view.outer * view.inner)
    mean = _stats(mean, "mean", view)
    m2 = _stats(m2, "m2", view)
    running_mean, running_var, momentum = _running_pair(running_mean, running_var,
                                                        momentum, view, pdtype)
    a = _channel_args(_spec.NORMALIZE, dict(weight=weight, bias=bias), view, pdtype)
    y = _out(out, x, view)
    a.update(x=view.flat, out=y, mean=mean, m2=m2, running_mean=running_mean,
             running_var=running_var)
    _core.forward_normalize(_spec.NORMALIZE.pack(a), view.outer, view.channels, view.inner,
                            count, eps, momentum, bool(unbiased))
    return view.like(y), a["save_mean"], a["save_invstd"]


def backward_reduce(dy, x, save_mean, *, axis=1) -> Tuple[np.ndarray, np.ndarray]:
    """``(sum_dy, sum_dy_xmu)`` of a shard per channel, float64:
    ``sum(dy)`` and ``sum(dy * (x - save_mean))``."""
    vx, vdy = _pair_views(_data(dy, "dy"), _data(x, "x"), axis, None)
    if save_mean is None:
        raise ValueError("save_mean is required")
    a = _channel_args(_spec.BACKWARD_REDUCE, dict(save_mean=save_mean), vx,
                      _param_dtype(vx.flat.dtype))
    a.update(dy=vdy.flat, x=vx.flat)
    _core.backward_reduce(_spec.BACKWARD_REDUCE.pack(a), vx.outer, vx.channels, vx.inner)
    return a["sum_dy"], a["sum_dy_xmu"]


def backward_elementwise(dy, x, save_mean, save_invstd, weight, sum_dy,
                         sum_dy_xmu, count, *, axis=1,
                         out=None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dweight, dbias)`` of a shard from the sums of the whole batch
    (added over every shard) and its ``count``: dx of the shard, and the
    whole batch's ``dweight = sum_dy_xmu * save_invstd``, ``dbias = sum_dy``."""
    x = _data(x, "x")
    vx, vdy = _pair_views(_data(dy, "dy"), x, axis, out)
    pdtype = _param_dtype(x.dtype)
    if save_mean is None or save_invstd is None:
        raise ValueError("save_mean and save_invstd are required")
    a = _channel_args(_spec.BACKWARD_APPLY, dict(save_mean=save_mean, save_invstd=save_invstd,
                                                 weight=weight), vx, pdtype)
    sdy = _stats(sum_dy, "sum_dy", vx)
    sdx = _stats(sum_dy_xmu, "sum_dy_xmu", vx)
    count = _count(count, vx.outer * vx.inner)
    dx = _out(out, x, vx)
    a.update(dy=vdy.flat, x=vx.flat, sum_dy=sdy, sum_dy_xmu=sdx, out=dx)
    _core.backward_apply(_spec.BACKWARD_APPLY.pack(a), vx.outer, vx.channels, vx.inner, count)
    return vx.like(dx), a["dweight"], a["dbias"]


# -- communicators --------------------------------------------------------------

class Communicator:
    """What :class:`SyncBatchNorm` needs of a transport: this process's
    ``rank``, the number of processes ``size``, and ``allgather(buf)``, which
    takes a 1-D float64 array of the same length on every process and returns
    a ``(size, len)`` array whose row k is process k's ``buf``."""

    rank: int = 0
    size: int = 1

    def allgather(self, buf: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


class LocalCommunicator(Communicator):
    """A world of one process (no exchange): SyncBatchNorm then equals
    BatchNorm bitwise."""

    def allgather(self, buf: np.ndarray) -> np.ndarray:
        return buf.reshape(1, -1).copy()


class MPICommunicator(Communicator):
    """An mpi4py communicator (default ``MPI.COMM_WORLD``)."""

    def __init__(self, comm: Any = None):
        if comm is None:
            try:
                from mpi4py import MPI
            except ImportError as e:
                raise ImportError('SyncBatchNorm over MPI needs mpi4py: '
                                  'pip install "bnorm[mpi]"') from e
            comm = MPI.COMM_WORLD
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    def allgather(self, buf: np.ndarray) -> np.ndarray:
        out = np.empty((self.size, buf.size), np.float64)
        self.comm.Allgather(np.ascontiguousarray(buf, np.float64), out)
        return out


class TorchCommunicator(Communicator):
    """A ``torch.distributed`` process group (``None``: the default group),
    e.g. gloo on the CPU."""

    def __init__(self, group: Any = None):
        import torch.distributed as dist
        self._dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)

    def allgather(self, buf: np.ndarray) -> np.ndarray:
        import torch
        t = torch.from_numpy(np.ascontiguousarray(buf, np.float64))
        parts = [torch.empty_like(t) for _ in range(self.size)]
        self._dist.all_gather(parts, t, group=self.group)
        return torch.stack(parts).numpy()


def _communicator(comm: Any) -> Communicator:
    if comm is None:
        return MPICommunicator()
    if hasattr(comm, "Allgather") and hasattr(comm, "Get_rank"):
        return MPICommunicator(comm)
    if all(hasattr(comm, a) for a in ("allgather", "rank", "size")):
        return comm
    raise TypeError("comm must be an mpi4py communicator or have rank, size and "
                    f"allgather (see bnorm.distributed.Communicator), got {type(comm).__name__}")


# -- the layer ----------------------------------------------------------------

class SyncBatchNorm(BatchNorm):
    """:class:`bnorm.BatchNorm` whose training-mode statistics are those of
    the whole batch, split over the processes of ``comm``.

    Forward (training mode): each process computes its shard's moments, one
    allgather exchanges ``(count, mean, m2)`` (2C + 1 float64 values per
    process), each process merges them in rank order and normalizes its
    shard; the running statistics take the whole batch's mean and unbiased
    variance. Backward: one allgather of the shard sums (2C + 1 values),
    added in rank order; dx is the shard's part of the whole batch's
    gradient, and ``grad_weight``/``grad_bias`` are the whole batch's (the
    same on every process). Shards may differ in size, and may be empty.
    In eval mode it is a plain BatchNorm (no exchange).

    Every process must call forward and backward the same number of times
    (they are collective). An argument error on one process is exchanged and
    raised on all of them, so none is left waiting.
    """

    def __init__(self, num_features: int, eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, comm: Any = None,
                 axis: int = 1, dtype: Any = np.float32):
        super().__init__(num_features, eps, momentum, affine,
                         track_running_stats, axis=axis, dtype=dtype)
        self.comm = _communicator(comm)
        self._sync_count: Optional[int] = None  # whole-batch count of the last forward

    def __repr__(self) -> str:
        return "Sync" + super().__repr__() + f" over {self.comm.size} process(es)"

    def _gather(self, buf: np.ndarray, error: Optional[BaseException],
                what: str) -> np.ndarray:
        """Gathers every process's buf (2C + 1 values; buf[0] >= 0 on
        success). Raises on every process if any failed before the exchange,
        so that none is left waiting in a later collective."""
        if error is not None:
            buf[0] = -1.0
        rows = self.comm.allgather(buf)
        if error is not None:
            raise error
        bad = [k for k in range(rows.shape[0]) if not rows[k, 0] >= 0]
        if bad:
            raise RuntimeError(f"SyncBatchNorm {what}: process(es) {bad} failed "
                               "before the exchange (their errors say why)")
        return rows

    def forward(self, x: Any) -> np.ndarray:
        self._sync_count = None
        if not self.training:
            return super().forward(x)
        C = self.num_features
        buf = np.full(1 + 2 * C, -1.0)  # count, mean, m2 of this shard
        error = None
        try:
            x = self._check_input(x)
            view = _View(x, self.axis % x.ndim, allow_channels_last=True)
            _core.moments((view.flat, buf[1:1 + C], buf[1 + C:]), view.outer, C, view.inner)
            buf[0] = view.outer * view.inner
        except Exception as e:  # exchanged, then raised on every process
            error = e
        rows = self._gather(buf, error, "forward")
        count = np.empty(1, np.int64)
        mean = np.empty(C)
        m2 = np.empty(C)
        _core.merge_moments(rows[:, 0].astype(np.int64), np.ascontiguousarray(rows[:, 1:1 + C]),
                            np.ascontiguousarray(rows[:, 1 + C:]), count, mean, m2)
        total = int(count[0])
        if total <= 1:
            raise ValueError("Expected more than 1 value per channel when training, got "
                             f"{total} over all {rows.shape[0]} processes")
        update = self.track_running_stats
        factor = 0.0
        if update:
            factor = (1.0 / (self.num_batches_tracked + 1) if self.momentum is None
                      else self.momentum)
        y = view.empty()
        save_mean = np.empty(C, self.param_dtype)
        save_invstd = np.empty(C, self.param_dtype)
        _core.forward_normalize(
            _spec.NORMALIZE.pack(dict(
                x=view.flat, out=y, mean=mean, m2=m2, weight=self.weight, bias=self.bias,
                save_mean=save_mean, save_invstd=save_invstd,
                running_mean=self.running_mean if update else None,
                running_var=self.running_var if update else None)),
            view.outer, C, view.inner, total, self.eps, factor, True)
        if update:
            self.num_batches_tracked += 1
        self._saved = (x, save_mean, save_invstd, True)
        self._sync_count = total
        return view.like(y)

    __call__ = forward

    def backward(self, dy: Any) -> np.ndarray:
        if self._saved is None:
            raise RuntimeError("backward() called before forward()")
        if self._sync_count is None:  # eval-mode forward
            return super().backward(dy)
        x, mean, invstd, _ = self._saved
        C = self.num_features
        buf = np.full(1 + 2 * C, -1.0)  # flag, sum dy, sum dy * (x - mean)
        error = None
        try:
            vx, vdy = _pair_views(_data(dy, "dy"), x, self.axis, None)
            _core.backward_reduce((vdy.flat, vx.flat, mean, buf[1:1 + C], buf[1 + C:]),
                                  vx.outer, C, vx.inner)
            buf[0] = 0.0
        except Exception as e:
            error = e
        rows = self._gather(buf, error, "backward")[:, 1:]
        total = rows[0].copy()
        for k in range(1, rows.shape[0]):  # rank order: the same bits everywhere
            total += rows[k]
        dx = vx.empty()
        dw = np.empty(C, self.param_dtype)
        db = np.empty(C, self.param_dtype)
        _core.backward_apply(
            _spec.BACKWARD_APPLY.pack(dict(
                dy=vdy.flat, x=vx.flat, save_mean=mean, save_invstd=invstd, weight=self.weight,
                sum_dy=total[:C], sum_dy_xmu=total[C:], out=dx, dweight=dw, dbias=db)),
            vx.outer, C, vx.inner, self._sync_count)
        if self.affine:
            self.grad_weight, self.grad_bias = dw, db
        return vx.like(dx)
