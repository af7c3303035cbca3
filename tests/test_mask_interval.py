"""The ReLU / ReLU6 mask recomputed from x, against its formula in NumPy.

With the mask from x (no y given), a value's dy reaches the batch norm where
the pre-activation p = (x - m) * s + b, formed in double from the float
saved mean m, s = float(gamma * invstd) and the float bias b, is > 0 (and
< 6 for ReLU6). The dx map decides it by each channel's interval of x
(mask.hpp, open_interval), the reductions by the formula; both must give
the formula's decision on every value. Here the residual's gradient of the
C entry point, which is dy where the mask is open and 0 elsewhere (the
Python wrapper offers it only with y), is compared bit for bit with
that formula evaluated by NumPy in float64, on the values where a wrong
interval would show: the floats (or halves) next to each channel's edge,
the infinities, NaN, both zeros, the largest and the subnormal values; and
on channels whose statistics are special: a zero or subnormal weight, a
huge mean or scale, a negative weight, and statistics that are not finite
(where no interval is used). The reductions decide by the same intervals
(from 64 values per channel): dx, dweight and dbias must be those of the
plain backward of the masked dy, bit for bit.
"""
import ctypes
from pathlib import Path

import numpy as np
import pytest

import bnorm
from conftest import values_around

try:
    import ml_dtypes
    HALVES = [np.float16, ml_dtypes.bfloat16]
except ImportError:  # pragma: no cover
    HALVES = [np.float16]

f32, f64 = np.float32, np.float64


def expected_mask(x, mean, invstd, w, b, axis, clip6):
    shape = [1] * x.ndim
    shape[axis] = -1
    s = (w.astype(f64) * invstd.astype(f64)).astype(f32).astype(f64)
    with np.errstate(invalid="ignore", over="ignore"):
        pre = ((x.astype(f64) - mean.astype(f64).reshape(shape)) * s.reshape(shape)
               + b.astype(f64).reshape(shape))
        open_ = pre > 0
        if clip6:
            open_ &= pre < 6
    return open_


def edge_channels(rng, dt, C, K):
    """Statistics whose edges (p = 0 or 6) fall at an x0 near 0, and per
    channel the K values of dt around x0, plus special values."""
    mean = (rng.uniform(1, 3, C) * rng.choice([-1, 1], C)).astype(f32)
    invstd = rng.uniform(0.2, 3, C).astype(f32)
    w = (rng.uniform(0.5, 2, C) * rng.choice([-1, 1], C)).astype(f32)
    edge = np.where(np.arange(C) % 2 == 0, 0.0, 6.0)
    x0 = rng.uniform(-0.01, 0.01, C)
    b = (edge - (x0 - mean) * (invstd * w).astype(f64)).astype(f32)
    big = float(np.finfo(np.float16).max) if dt is np.float16 else 3.0e38
    specials = [np.inf, -np.inf, np.nan, 0.0, -0.0, big, -big, 1e-7, -1e-7]
    cols = [np.array(values_around(x0[c], dt, K)[:K - len(specials)] + specials, dtype=dt)
            for c in range(C)]
    return np.stack(cols, axis=1), mean, invstd, w, b  # (K, C)


def special_stats(C):
    """Channels with zero, subnormal, huge or negative scales, and huge
    means; then channels with non-finite statistics."""
    mean = np.array([0.5, -2, 0, 1e30, -1e30, 3, 0.25, 1, 0, 2, 1, -1], f32)[:C]
    invstd = np.array([1, 1, 1, 1, 1e-30, 1e30, 1, 2, 1, 1, 1, 1], f32)[:C]
    w = np.array([0, 0, 0, 1, -1, 1e-30, 1e-44, -3, 0, 1, 1, 1], f32)[:C]
    b = np.array([1, -1, 0, 2, 3, 5, 0, 4, 3, 7, 0.5, -0.5], f32)[:C]
    return mean, invstd, w, b


def c_library():
    path = Path(bnorm.get_library_dir()) / "libbnorm.so.0"
    if not path.exists():
        pytest.skip("a static build: no shared library to call")
    lib = ctypes.CDLL(str(path))
    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.bnorm_backward_fused.argtypes = [ctypes.c_int, i64, i64, i64] + [vp] * 11 + [
        ctypes.c_uint32]
    return lib


def check(dt, rows, mean, invstd, w, b, act):
    """dresidual of the fused backward with the mask from x (y NULL), which
    is dy where the mask is open, against expected_mask, bit for bit."""
    lib = c_library()
    code = {"float32": 1, "float16": 3, "bfloat16": 4}[np.dtype(dt).name]
    flags = 8 if act == "relu6" else 4
    rng = np.random.default_rng(5)
    g = rng.standard_normal(rows.shape).astype(dt)
    K, C = rows.shape
    layouts = (("rows", rows, g, -1, (K, C, 1)),
               ("planar", rows.T.reshape(1, C, K).copy(), g.T.reshape(1, C, K).copy(), 1,
                (1, C, K)))
    p = lambda a: a.ctypes.data  # noqa: E731
    for name, x, gg, axis, dims in layouts:
        want = np.where(expected_mask(x, mean, invstd, w, b, axis, act == "relu6"), gg,
                        np.zeros_like(gg))
        for frozen in (False, True):
            dx, dres = np.full_like(gg, 7), np.full_like(gg, 7)
            dw, db = np.zeros(C, f32), np.zeros(C, f32)
            st = lib.bnorm_backward_fused(code, *dims, p(gg), p(x), None, p(mean), p(invstd),
                                          p(w), p(b), p(dx), p(dw), p(db), p(dres),
                                          flags | (2 if frozen else 0))
            assert st == 0
            u = np.uint16 if dres.itemsize == 2 else np.uint32
            bad = np.flatnonzero(dres.view(u) != want.view(u))
            assert bad.size == 0, (name, frozen, act, bad[:10], x.ravel()[bad[:10]])
            # the reductions decide the same mask: dx, dweight and dbias are
            # those of the plain backward of the masked dy, bit for bit
            dx0 = np.full_like(gg, 7)
            dw0, db0 = np.zeros(C, f32), np.zeros(C, f32)
            st = lib.bnorm_backward_fused(code, *dims, p(want), p(x), None, p(mean), p(invstd),
                                          p(w), None, p(dx0), p(dw0), p(db0), None,
                                          2 if frozen else 0)
            assert st == 0
            for got, ref, what in ((dx, dx0, "dx"), (dw, dw0, "dweight"), (db, db0, "dbias")):
                uu = np.uint16 if got.itemsize == 2 else np.uint32
                assert np.array_equal(got.view(uu), ref.view(uu)), (name, frozen, act, what)


@pytest.mark.parametrize("act", ["relu", "relu6"])
@pytest.mark.parametrize("dt", [np.float32] + HALVES, ids=lambda d: np.dtype(d).name)
def test_mask_from_x_is_the_formula_next_to_its_edges(act, dt):
    rng = np.random.default_rng(17)
    rows, mean, invstd, w, b = edge_channels(rng, dt, 24, 400)
    check(dt, rows, mean, invstd, w, b, act)


@pytest.mark.parametrize("act", ["relu", "relu6"])
@pytest.mark.parametrize("dt", [np.float32] + HALVES, ids=lambda d: np.dtype(d).name)
def test_mask_from_x_with_special_statistics(act, dt):
    mean, invstd, w, b = special_stats(12)
    rng = np.random.default_rng(23)
    vals = np.concatenate([
        np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-40, -1e-40, 6, -6, 1e30, -1e30],
                 f64),
        rng.standard_normal(200) * 4, rng.uniform(-8, 8, 50)])
    rows = np.repeat(vals.astype(dt).reshape(-1, 1), 12, axis=1)
    check(dt, rows, mean, invstd, w, b, act)
    # statistics that are not finite: the formula decides (no interval)
    for k, bad in enumerate(([np.inf, 1, 1, 0], [1, np.inf, 1, 0], [np.nan, 1, 1, 0],
                             [0, 1, 1, np.inf], [0, 1, 1, -np.inf], [0, 1, np.inf, 1])):
        m2, i2, w2, b2 = (a.copy() for a in (mean, invstd, w, b))
        m2[k], i2[k], w2[k], b2[k] = (f32(v) for v in bad)
        check(dt, rows, m2, i2, w2, b2, act)
