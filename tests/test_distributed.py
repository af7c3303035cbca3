"""Synchronized batch norm (bnorm.distributed): the split phases in one
process, and SyncBatchNorm across processes under mpiexec (mpi4py and the
mpich wheel, the test extra) and over torch.distributed's gloo backend."""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import bnorm
from bnorm import distributed as dist

from conftest import TOL

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "distributed", "sync_worker.py")

CASES = [((8, 16, 9, 9), 1), ((64, 33), 1), ((4, 7, 7, 300), -1),
         ((3, 5, 4100), 1), ((6, 40, 40, 8), -1), ((2, 3, 5), 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", CASES)
def test_one_shard_is_bitwise_the_fused_op(rng, shape, axis, dtype):
    """With a single shard the split phases are the one-process kernels."""
    x = (100 + rng.standard_normal(shape)).astype(dtype)
    C = shape[axis]
    w = rng.standard_normal(C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    rm2, rv2 = rm.copy(), rv.copy()
    y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm, running_var=rv)
    n, mu, m2 = dist.moments(x, axis=axis)
    assert n == x.size // C
    n, mu, m2 = dist.merge_moments([n], [mu], [m2])
    y2, sm2, si2 = dist.normalize(x, n, mu, m2, w, b, axis=axis,
                                  running_mean=rm2, running_var=rv2)
    dy = rng.standard_normal(shape).astype(dtype)
    dx, dw, db = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis)
    s1, s2 = dist.backward_reduce(dy, x, sm2, axis=axis)
    dx2, dw2, db2 = dist.backward_elementwise(dy, x, sm2, si2, w, s1, s2, n, axis=axis)
    for a, b_ in [(y, y2), (sm, sm2), (si, si2), (rm, rm2), (rv, rv2),
                  (dx, dx2), (dw, dw2), (db, db2)]:
        assert a.dtype == b_.dtype and np.array_equal(a, b_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", CASES)
def test_shards_give_the_whole_batch(rng, shape, axis, dtype):
    """Uneven shards (one empty), merged: the statistics and results of the
    whole batch, held against float64 NumPy and against bnorm on the batch."""
    x = (1e3 + rng.standard_normal(shape)).astype(dtype)
    C = shape[axis]
    n0 = shape[0]
    cuts = [0, n0 // 3, n0 // 3, n0]  # the second shard is empty
    shards = [x[cuts[k]:cuts[k + 1]] for k in range(3)]
    parts = [dist.moments(s, axis=axis) for s in shards]
    assert parts[1][0] == 0 and not parts[1][1].any() and not parts[1][2].any()
    count, mean, m2 = dist.merge_moments([p[0] for p in parts], [p[1] for p in parts],
                                         [p[2] for p in parts])
    xd = np.moveaxis(x.astype(np.float64), axis, -1).reshape(-1, C)
    assert count == xd.shape[0]
    np.testing.assert_allclose(mean, xd.mean(0), rtol=1e-14)
    ref_m2 = ((xd - xd.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(m2, ref_m2, rtol=1e-12)
    # the layer maths on the shards against the whole batch
    w = rng.uniform(0.5, 2, C).astype(dtype)
    y_ref, sm_ref, si_ref = bnorm.batch_norm_train(x, w, None, axis=axis)
    dy = rng.standard_normal(shape).astype(dtype)
    dx_ref, dw_ref, db_ref = bnorm.batch_norm_backward(dy, x, sm_ref, si_ref, w, axis=axis)
    outs, sums = [], []
    for k, s in enumerate(shards):
        y, sm, si = dist.normalize(s, count, mean, m2, w, axis=axis)
        outs.append((y, sm, si))
        sums.append(dist.backward_reduce(dy[cuts[k]:cuts[k + 1]], s, sm, axis=axis))
    tot_dy = sums[0][0] + sums[1][0] + sums[2][0]
    tot_dxmu = sums[0][1] + sums[1][1] + sums[2][1]
    tol = TOL[np.dtype(dtype)]
    for k, s in enumerate(shards):
        y, sm, si = outs[k]
        dx, dw, db = dist.backward_elementwise(dy[cuts[k]:cuts[k + 1]], s, sm, si, w,
                                               tot_dy, tot_dxmu, count, axis=axis)
        assert y.shape == s.shape and dx.shape == s.shape
        if s.size:
            np.testing.assert_allclose(y, y_ref[cuts[k]:cuts[k + 1]], rtol=0,
                                       atol=tol * np.abs(y_ref).max())
            np.testing.assert_allclose(dx, dx_ref[cuts[k]:cuts[k + 1]], rtol=0,
                                       atol=tol * np.abs(dx_ref).max())
        np.testing.assert_allclose(dw, dw_ref, rtol=0, atol=tol * 10 * np.abs(dw_ref).max())
        np.testing.assert_allclose(db, db_ref, rtol=0, atol=tol * 10 * np.abs(db_ref).max())


def test_merge_is_deterministic_and_order_defined(rng):
    counts = rng.integers(0, 1000, 50)
    means = 1e4 + rng.standard_normal((50, 7))
    m2s = rng.uniform(0, 100, (50, 7))
    a = dist.merge_moments(counts, means, m2s)
    b = dist.merge_moments(counts.copy(), means.copy(), m2s.copy())
    assert a[0] == b[0] == counts.sum()
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    # zero-count shards are skipped, whatever their values
    means2, m2s2 = means.copy(), m2s.copy()
    means2[counts == 0] = np.nan
    m2s2[counts == 0] = np.nan
    c = dist.merge_moments(counts, means2, m2s2)
    assert np.array_equal(a[1], c[1]) and np.array_equal(a[2], c[2])
    # the exact merge of an exactly representable case
    n, mu, q = dist.merge_moments([2, 2], [[1.0], [3.0]], [[2.0], [2.0]])
    assert (n, mu[0], q[0]) == (4, 2.0, 8.0)  # values 0, 2, 2, 4
    # no shard at all
    n, mu, q = dist.merge_moments(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3)))
    assert n == 0 and not mu.any() and not q.any()


def test_many_batches_and_a_large_offset():
    """A million shards of 2 values each, 1e6 standard deviations from zero:
    the merged variance stays accurate (Chan's formula, in double)."""
    rng = np.random.default_rng(7)
    k = 1_000_000
    v = 1e6 + rng.standard_normal((k, 2))
    means = v.mean(1, keepdims=True)
    m2s = ((v - means) ** 2).sum(1, keepdims=True)
    n, mu, q = dist.merge_moments(np.full(k, 2), means, m2s)
    flat = v.ravel()
    ref_mean = math.fsum(flat) / flat.size  # correctly rounded sums
    ref_var = math.fsum((flat - ref_mean) ** 2) / flat.size
    assert n == 2 * k
    # a left-to-right chain of merges was off by 2.6e-14 here; the tree by 1e-16
    assert abs(mu[0] - ref_mean) / ref_mean < 1e-15
    assert abs(q[0] / n - ref_var) / ref_var < 1e-11


def test_split_phase_errors(rng):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    n, mu, m2 = dist.moments(x)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        dist.normalize(x, 1, mu, m2)
    with pytest.raises(ValueError, match="smaller than this shard"):
        dist.normalize(x, n - 1, mu, m2)
    with pytest.raises(TypeError, match="count must be an integer"):
        dist.normalize(x, 20.0, mu, m2)
    with pytest.raises(ValueError, match=r"mean has 2 elements, expected 3 \(channels on axis 1\)"):
        dist.normalize(x, n, mu[:2], m2)
    with pytest.raises(ValueError, match="counts must be >= 0"):
        dist.merge_moments([-1, 3], [mu, mu], [m2, m2])
    with pytest.raises(ValueError, match="one row per shard"):
        dist.merge_moments([1, 3], [mu], [m2, m2])
    with pytest.raises(TypeError, match="whole numbers"):
        dist.merge_moments([1.5], [mu], [m2])
    sm = mu.astype(np.float32)
    s1, s2 = dist.backward_reduce(x, x, sm)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        dist.backward_elementwise(x, x, sm, sm, None, s1, s2, 0)
    with pytest.raises(ValueError, match="dy has shape"):
        dist.backward_reduce(x[:2], x, sm)
    # the C library's own checks, through the bindings
    from bnorm import _core
    with pytest.raises(bnorm.BnormError, match="inconsistent"):
        _core.merge_moments(np.array([2**62, 2**62], np.int64), np.zeros((2, 1)),
                            np.zeros((2, 1)), np.empty(1, np.int64), np.empty(1),
                            np.empty(1))


def test_empty_shard_alone(rng):
    x = np.zeros((0, 4, 3), np.float64)
    n, mu, m2 = dist.moments(x)
    assert n == 0 and mu.shape == (4,)
    y, sm, si = dist.normalize(x, 10, np.arange(4.0), np.full(4, 9.0))
    assert y.shape == x.shape
    np.testing.assert_allclose(sm, np.arange(4.0))
    np.testing.assert_allclose(si, 1 / np.sqrt(0.9 + 1e-5))
    s1, s2 = dist.backward_reduce(x, x, sm)
    assert not s1.any() and not s2.any()
    dx, dw, db = dist.backward_elementwise(x, x, sm, si, None, np.ones(4), np.ones(4), 10)
    assert dx.shape == x.shape
    np.testing.assert_allclose(db, 1.0)
    np.testing.assert_allclose(dw, si)


@pytest.mark.parametrize("axis,shape", [(1, (6, 4, 5, 5)), (-1, (6, 5, 5, 4))])
def test_sync_layer_in_a_world_of_one_is_batchnorm(rng, axis, shape):
    sync = dist.SyncBatchNorm(4, comm=dist.LocalCommunicator(), axis=axis, momentum=None)
    ref = bnorm.BatchNorm(4, axis=axis, momentum=None)
    for _ in range(3):
        x = rng.standard_normal(shape).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        assert np.array_equal(sync(x), ref(x))
        assert np.array_equal(sync.backward(dy), ref.backward(dy))
        assert np.array_equal(sync.grad_weight, ref.grad_weight)
        assert np.array_equal(sync.running_var, ref.running_var)
    sync.eval(), ref.eval()
    assert np.array_equal(sync(x), ref(x))
    assert np.array_equal(sync.backward(dy), ref.backward(dy))
    assert sync.state_dict().keys() == ref.state_dict().keys()


def test_sync_layer_rejects_a_bad_communicator():
    with pytest.raises(TypeError, match="communicator"):
        dist.SyncBatchNorm(3, comm=object())


def _mpiexec():
    pytest.importorskip("mpi4py")
    exe = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(exe):
        pytest.skip("no mpiexec (pip install mpich)")
    return exe


def _check_report(out, size, comm):
    report = json.loads(out.strip().splitlines()[-1])
    assert report["size"] == size and report["comm"] == comm
    if size >= 3:
        assert 0 in report["shards"]
    for dtype, bound in (("float32", TOL[np.dtype(np.float32)]),
                         ("float64", TOL[np.dtype(np.float64)])):
        worst = report["worst"][dtype]
        assert set(worst) == {"y", "dx", "grad_weight", "grad_bias", "running_mean",
                              "running_var", "eval_y"}
        for what, err in worst.items():
            # gradients of weight and bias are sums over the batch: 10x room
            b = bound * (10 if what.startswith("grad") else 1)
            assert err <= b, f"{dtype} {what}: {err:.3g} > {b:.3g}"
    return report


@pytest.mark.parametrize("n", [2, 3])
def test_sync_batch_norm_over_mpi(n):
    exe = _mpiexec()
    r = subprocess.run([exe, "-n", str(n), sys.executable, WORKER], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    _check_report(r.stdout, n, "mpi")


@pytest.mark.slow
def test_sync_batch_norm_over_torch_gloo(tmp_path):
    pytest.importorskip("torch")
    import torch.distributed
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", BNORM_INIT=init)
        procs.append(subprocess.Popen([sys.executable, WORKER, "--comm", "torch"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, o + e
    _check_report(outs[0][0], 2, "torch")
