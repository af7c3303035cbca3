"""One process of the synchronized batch-norm check (run by
tests/test_distributed.py under ``mpiexec -n K``, or by hand).

Every process builds the same global batches from one seed and takes its
shard (uneven; with 3 or more processes one shard is empty). Each step runs
SyncBatchNorm forward and backward on the shard, and BatchNorm on the whole
batch in this same process; the shard's outputs, dx, the gradients of weight
and bias and the running statistics must agree. Every process must also hold
bitwise the same statistics and gradients as the others. Rank 0 prints one
JSON line: the worst relative errors per dtype, and the checks that passed.

    mpiexec -n 3 python tests/distributed/sync_worker.py [--comm mpi|torch]
"""
import argparse
import json
import os
import sys

import numpy as np

import bnorm
from bnorm.distributed import SyncBatchNorm, TorchCommunicator


def rel(a, ref):
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    if ref.size == 0:
        return 0.0
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-300))


def shard_sizes(n, size):
    """Uneven shards of n rows; with 3 or more processes the middle one is
    empty."""
    if size == 1:
        return [n]
    weights = np.arange(1, size + 1, dtype=np.float64)
    if size >= 3:
        weights[1] = 0
    sizes = np.floor(n * weights / weights.sum()).astype(int)
    sizes[-1] += n - sizes.sum()
    return [int(s) for s in sizes]


def check_case(comm, shape, axis, dtype, steps, worst, gather):
    rank, size = comm.rank, comm.size
    C = shape[axis]
    rng = np.random.default_rng(2024)
    sizes = shard_sizes(shape[0], size)
    lo = sum(sizes[:rank])
    hi = lo + sizes[rank]
    sync = SyncBatchNorm(C, comm=comm, axis=axis, dtype=dtype)
    ref = bnorm.BatchNorm(C, axis=axis, dtype=dtype)
    w = rng.uniform(0.5, 2, C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    for layer in (sync, ref):
        layer.weight[...] = w
        layer.bias[...] = b
    key = np.dtype(dtype).name
    for step in range(steps):
        x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        y_ref = ref(x)
        dx_ref = ref.backward(dy)
        y = sync(x[lo:hi])
        dx = sync.backward(dy[lo:hi])
        assert y.shape == x[lo:hi].shape and dx.shape == y.shape
        errs = {
            "y": rel(y, y_ref[lo:hi]),
            "dx": rel(dx, dx_ref[lo:hi]),
            "grad_weight": rel(sync.grad_weight, ref.grad_weight),
            "grad_bias": rel(sync.grad_bias, ref.grad_bias),
            "running_mean": rel(sync.running_mean, ref.running_mean),
            "running_var": rel(sync.running_var, ref.running_var),
        }
        for k, v in errs.items():
            worst[key][k] = max(worst[key].get(k, 0.0), v)
        # every process holds the same bits
        mine = np.concatenate([sync.grad_weight, sync.grad_bias,
                               sync.running_mean, sync.running_var]).astype(np.float64)
        all_rows = gather(mine)
        assert all(np.array_equal(all_rows[0], r) for r in all_rows), \
            "processes disagree on statistics or gradients"
    # eval mode: running statistics, no exchange
    sync.eval()
    ref.eval()
    x = rng.standard_normal(shape).astype(dtype)
    worst[key]["eval_y"] = max(worst[key].get("eval_y", 0.0),
                               rel(sync(x[lo:hi]), ref(x)[lo:hi]))
    assert sync.num_batches_tracked == ref.num_batches_tracked == steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--comm", choices=["mpi", "torch"], default="mpi")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    if args.comm == "mpi":
        from bnorm.distributed import MPICommunicator
        comm = MPICommunicator()
    else:
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method=os.environ["BNORM_INIT"],
                                rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]))
        comm = TorchCommunicator()

    def gather(v):
        return comm.allgather(np.ascontiguousarray(v, np.float64))

    worst = {"float32": {}, "float64": {}}
    cases = [((12, 5, 6, 7), 1),      # NCHW
             ((12, 6, 7, 16), -1),    # NHWC
             ((30, 9), 1),            # (N, C)
             ((10, 3, 4100), 1)]      # long runs (several units per channel)
    for dtype in (np.float32, np.float64):
        for shape, axis in cases:
            check_case(comm, shape, axis, dtype, args.steps, worst, gather)

    # An argument error on one process is raised on every process.
    C = 4
    layer = SyncBatchNorm(C, comm=comm, dtype=np.float64)
    x = np.ones((2, C, 3), np.float32 if comm.rank == comm.size - 1 else np.float64)
    try:
        layer(x)
        raised = None
    except TypeError:
        raised = "TypeError"
    except RuntimeError:
        raised = "RuntimeError"
    expected = "TypeError" if comm.rank == comm.size - 1 else "RuntimeError"
    assert raised == expected, (comm.rank, raised)
    # ...and the processes are still in step afterwards
    y = layer(np.ones((2, C, 3)) * np.arange(3))
    assert np.isfinite(y).all()

    if comm.rank == 0:
        print(json.dumps({"size": comm.size, "comm": args.comm,
                          "shards": shard_sizes(12, comm.size), "worst": worst}))
    sys.stdout.flush()
    if args.comm == "torch":
        # leave together: a gloo process that exits while its peer still
        # talks to it aborts ("terminate called without an active exception")
        gather(np.zeros(1))
        import torch.distributed as dist
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
