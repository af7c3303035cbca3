"""Many Python threads (the GIL released in the kernels) calling every op at
once on shared read-only inputs get the bytes of serial calls."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import bnorm

THREADS = 8
ROUNDS = 6
SHAPES = [((16, 32, 14, 14), 1), ((64, 14, 14, 24), -1), ((2, 3, 40000), 1), ((5, 3), 1)]


def frozen(a):
    a.flags.writeable = False
    return a


def make_inputs(dtype):
    rng = np.random.default_rng(42)
    cases = []
    for shape, axis in SHAPES:
        C = shape[axis]
        cases.append(dict(
            x=frozen(rng.normal(3.0, 2.0, shape).astype(dtype)),
            dy=frozen(rng.standard_normal(shape).astype(dtype)),
            w=frozen(rng.uniform(0.5, 2, C).astype(dtype)),
            b=frozen(rng.normal(0, 1, C).astype(dtype)),
            rm=frozen(rng.normal(3, 0.1, C).astype(dtype)),
            rv=frozen(rng.uniform(3, 5, C).astype(dtype)),
            lw=frozen(rng.standard_normal((C, 7)).astype(dtype)),
            axis=axis))
    return cases


def every_op(case):
    """All ops on one case; bytes of every result."""
    x, dy, w, b, axis = case["x"], case["dy"], case["w"], case["b"], case["axis"]
    rm_copy, rv_copy = case["rm"].copy(), case["rv"].copy()  # updated in place
    y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm_copy,
                                       running_var=rv_copy)
    dx, dw, db = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis)
    dxf, dwf, dbf = bnorm.batch_norm_backward(dy, x, case["rm"], si, w, axis=axis,
                                              training=False)
    yi = bnorm.batch_norm(x, case["rm"], case["rv"], w, b, axis=axis)
    layer = bnorm.BatchNorm(x.shape[axis], axis=axis, dtype=x.dtype)
    yl = layer(x)
    dxl = layer.backward(dy)
    scale, shift = bnorm.inference_scale_shift(case["rm"], case["rv"], w, b)
    fw, fb = bnorm.fold_batch_norm(case["lw"], None, case["rm"], case["rv"], w, b)
    return [a.tobytes() for a in (y, sm, si, rm_copy, rv_copy, dx, dw, db, dxf, dwf, dbf,
                                  yi, yl, dxl, layer.grad_weight, scale, shift, fw, fb)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_calling_every_op_at_once_match_serial_calls(threads, dtype):
    bnorm.set_num_threads(2)
    cases = make_inputs(dtype)
    serial = [every_op(c) for c in cases]
    jobs = [(t, r) for t in range(THREADS) for r in range(ROUNDS)]

    def job(tr):
        t, r = tr
        k = (t + r) % len(cases)
        return k, every_op(cases[k])

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(job, jobs))
    assert len(results) == THREADS * ROUNDS
    for k, got in results:
        assert got == serial[k]
    for c in cases:  # the shared inputs are untouched (and still read-only)
        assert not c["x"].flags.writeable
