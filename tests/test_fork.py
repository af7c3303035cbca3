"""bnorm in processes made by fork() after the parent used it on several
threads: multiprocessing's fork workers, os.fork, PyTorch DataLoader
workers, a child that sets its own thread count first. The child's first
call must not hang (GNU OpenMP's pool does not survive fork; bnorm runs the
child's work on threads of its own) and gives the parent's bits.

Each scenario runs in a fresh interpreter with a timeout, so a hang fails
the test instead of stopping the run. (The C library in a forked C program,
with OpenMP and with a host pool, is tests/c/test_fork.c.)
"""
import subprocess
import sys
import textwrap

import pytest

import bnorm

PRELUDE = """
import numpy as np
import bnorm
bnorm.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 8, 32, 32), dtype=np.float32)   # threads are used
dy = rng.standard_normal(x.shape, dtype=np.float32)
w = rng.standard_normal(8, dtype=np.float32)
b = rng.standard_normal(8, dtype=np.float32)

def step():
    y, m, s = bnorm.batch_norm_train(x, w, b)
    dx, dw, db = bnorm.batch_norm_backward(dy, x, m, s, w)
    yr, _, _ = bnorm.batch_norm_train(x.transpose(0, 2, 3, 1).copy(), w, b, axis=-1,
                                      activation="relu")
    return [y, m, s, dx, dw, db, yr]

def same(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a, b))

parent = step()   # the parent's threads (OpenMP's) start here
"""


def run_scenario(body, timeout=120):
    code = PRELUDE + textwrap.dedent(body)
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("the scenario hung (timeout)")
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_multiprocessing_fork_pool():
    out = run_scenario("""
        import multiprocessing as mp
        def child(_):
            from bnorm._core import threading_backend
            return same(step(), parent), threading_backend(), bnorm.get_num_threads()
        with mp.get_context("fork").Pool(2) as pool:
            results = pool.map_async(child, range(4)).get(timeout=60)
        assert all(ok for ok, _, _ in results), results
        print(results[0][1], results[0][2])
    """)
    backend, n = out.split()
    assert backend in ("bnorm", "none")   # bnorm's own threads, or no OpenMP at all
    assert int(n) == (1 if backend == "none" else 2)


def test_os_fork_child_and_grandchild():
    run_scenario("""
        import os
        import signal
        def in_child(fn):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    signal.alarm(60)   # a hang kills the child
                    code = fn()
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        def grandchild():
            return 0 if same(step(), parent) else 3
        def child():
            if not same(step(), parent):
                return 2
            return in_child(grandchild)   # a fork of a child that used bnorm's threads
        assert in_child(child) == 0
        assert same(step(), parent)       # and the parent is unaffected
    """)


def test_child_sets_its_thread_count_first():
    run_scenario("""
        import multiprocessing as mp
        def child(n):
            bnorm.set_num_threads(n)
            return same(step(), parent), bnorm.get_num_threads()
        ctx = mp.get_context("fork")
        with ctx.Pool(1) as pool:
            for n in (2, 3, 1):
                ok, got = pool.apply_async(child, (n,)).get(timeout=60)
                assert ok
                from bnorm._core import threading_backend
                assert got == (1 if threading_backend() == "none" else n)
    """)


def test_torch_dataloader_fork_workers():
    pytest.importorskip("torch")
    run_scenario("""
        import torch
        from torch.utils.data import DataLoader, Dataset
        torch.set_num_threads(2)
        t = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True)
        class Normalized(Dataset):
            def __len__(self):
                return 4
            def __getitem__(self, i):
                y, _, _ = bnorm.batch_norm_train(x, w, b)   # in the worker process
                return torch.from_numpy(y), torch.tensor(same(step(), parent))
        loader = DataLoader(Normalized(), batch_size=1, num_workers=2,
                            multiprocessing_context="fork", timeout=60)
        for y, ok in loader:
            assert bool(ok.all())
            assert np.array_equal(y[0].numpy(), parent[0])
    """)
