"""The cost of synchronized batch norm: ``python -m bnorm syncbench``.

Starts itself under ``mpiexec -n RANKS`` (mpi4py and the mpich wheel:
``pip install "bnorm[mpi]"``). Each process holds 1/RANKS of the global batch
and runs one thread. Per case it times, as the median of the steps after a
warm-up, a training step (forward and backward) of SyncBatchNorm on the shard
against BatchNorm on the same shard with no exchange, and the two allgathers
alone; it prints the overhead and the bytes each process sends per step.
Like the main benchmark, it prints figures, never a verdict.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import List, Optional

import numpy as np

SUITE = [((32, 64, 56, 56), 1), ((32, 56, 56, 64), -1), ((32, 256, 14, 14), 1),
         ((64, 2048, 7, 7), 1), ((256, 1024), 1)]


def _fmt(s: float) -> str:
    return f"{s * 1e6:7.0f} us" if s < 1e-3 else f"{s * 1e3:7.2f} ms"


def launch(ranks: int, repeat: int, dtype: str, json_path: Optional[str]) -> int:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        print('syncbench needs mpi4py and an MPI: pip install "bnorm[mpi]"', file=sys.stderr)
        return 1
    exe = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(exe):
        print("syncbench: no mpiexec on PATH (pip install mpich)", file=sys.stderr)
        return 1
    cmd = [exe, "-n", str(ranks), sys.executable, "-m", "bnorm.tools.syncbench",
           str(repeat), dtype, json_path or ""]
    return subprocess.call(cmd)


def worker(repeat: int, dtype_name: str, json_path: str) -> int:
    from mpi4py import MPI

    import bnorm
    from bnorm.distributed import MPICommunicator, SyncBatchNorm

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    bnorm.set_num_threads(1)
    dtype = np.dtype(dtype_name)
    rows: List[dict] = []
    for shape, axis in SUITE:
        C = shape[axis]
        n = shape[0] // size
        local = (n,) + shape[1:]
        rng = np.random.default_rng(rank)
        x = rng.standard_normal(local).astype(dtype)
        dy = rng.standard_normal(local).astype(dtype)
        plain = bnorm.BatchNorm(C, axis=axis, dtype=dtype)
        sync = SyncBatchNorm(C, axis=axis, dtype=dtype, comm=MPICommunicator(comm))
        mpi = MPICommunicator(comm)
        buf = np.zeros(2 * C + 1)

        def step_plain():
            plain(x)
            plain.backward(dy)

        def step_sync():
            sync(x)
            sync.backward(dy)

        def exchange():
            mpi.allgather(buf)
            mpi.allgather(buf)

        times = {}
        for name, fn in (("local", step_plain), ("sync", step_sync), ("exchange", exchange)):
            for _ in range(3):
                fn()
            t = []
            for _ in range(repeat):
                comm.Barrier()
                t0 = time.perf_counter()
                fn()
                t.append(time.perf_counter() - t0)
            # the slowest process sets the pace of a synchronized step
            times[name] = comm.allreduce(float(np.median(t)), op=MPI.MAX)
        rows.append({"shape": "x".join(map(str, local)), "global": "x".join(map(str, shape)),
                     "layout": "NHWC" if axis == -1 and len(shape) == 4 else
                               ("NCHW" if len(shape) == 4 else "NC"),
                     "channels": C, **times,
                     "bytes_sent": 2 * (2 * C + 1) * 8,
                     "bytes_received": 2 * (2 * C + 1) * 8 * size})
    if rank == 0:
        print(f"bnorm {bnorm.__version__} SyncBatchNorm, {size} processes (mpiexec), "
              f"1 thread each, {dtype_name}, median of {repeat} steps (forward + backward)")
        print(f"{'shard':<16} {'layout':<6} {'local BN':>10} {'sync BN':>10} {'overhead':>9} "
              f"{'exchange':>10} {'sent/step':>10}")
        for r in rows:
            over = r["sync"] / r["local"] - 1
            print(f"{r['shape']:<16} {r['layout']:<6} {_fmt(r['local']):>10} "
                  f"{_fmt(r['sync']):>10} {over:>+8.1%} {_fmt(r['exchange']):>10} "
                  f"{r['bytes_sent']:>8d} B")
        print("sent/step: two allgathers of 2C+1 float64 values per process (forward: count, "
              "mean, M2; backward: a flag, sum dy, sum dy*(x-mean)); each process receives "
              "that times the number of processes")
        if json_path:
            with open(json_path, "w") as f:
                json.dump({"processes": size, "dtype": dtype_name, "cases": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(worker(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
