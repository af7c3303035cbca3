"""Numerical robustness, invariances, NaN isolation and thread determinism."""
import numpy as np
import pytest

import bnorm
from conftest import effective_threads, make_case, rel_err

LAYOUTS = [((64, 16, 32, 32), 1), ((64, 32, 32, 16), -1), ((4096, 16), -1)]


@pytest.mark.parametrize("shape,axis", LAYOUTS)
@pytest.mark.parametrize("offset", [1e3, 1e4, 1e5])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_float32_variance_bar(rng, threads, shape, axis, offset, nthreads):
    # The accuracy bound bnorm holds to: float32 variance within 2e-6 of float64 on the same data.
    bnorm.set_num_threads(nthreads)
    x = (offset + rng.standard_normal(shape)).astype(np.float32)
    C = shape[axis]
    rm, rv = np.zeros(C, np.float32), np.zeros(C, np.float32)
    y, sm, si = bnorm.batch_norm_train(x, axis=axis, running_mean=rm,
                                       running_var=rv, momentum=1.0,
                                       unbiased=False)
    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    x64 = x.astype(np.float64)
    var64 = x64.var(axis=axes)
    mean64 = x64.mean(axis=axes)
    var_err = float(np.max(np.abs(rv - var64) / var64))
    assert var_err <= 2e-6, f"variance relative error {var_err:.3g}"
    assert float(np.max(np.abs(sm - mean64) / np.abs(mean64))) <= 1e-7
    # normalized output: mean 0, variance var/(var + eps) per channel
    y64 = y.astype(np.float64)
    assert float(np.max(np.abs(y64.mean(axis=axes)))) < 1e-6
    want = var64 / (var64 + 1e-5)
    assert float(np.max(np.abs(y64.var(axis=axes) - want))) < 2e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((8, 3, 5, 5), 1), ((8, 5, 5, 3), -1)])
def test_scale_invariance(rng, dtype, shape, axis):
    # BN(a x) = BN(x) (the paper's scale invariance). For a power of two every
    # operation scales exactly, so with eps scaled by a^2 the bits agree.
    x, w, b = make_case(rng, shape, axis, dtype, offset=0.3)
    g = rng.standard_normal(shape).astype(dtype)
    eps = 1e-5
    y, sm, si = bnorm.batch_norm_train(x, w, b, eps, axis=axis)
    dx, dw, db = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis)
    for a in [0.25, 8.0, 1024.0]:
        xa = (x * dtype(a)).astype(dtype)
        ya, sma, sia = bnorm.batch_norm_train(xa, w, b, eps * a * a, axis=axis)
        np.testing.assert_array_equal(ya, y)
        dxa, dwa, dba = bnorm.batch_norm_backward(g, xa, sma, sia, w, axis=axis)
        # d BN(a x) / d(a x) = (1/a) d BN(x) / dx
        np.testing.assert_array_equal(dxa * dtype(a), dx)
        np.testing.assert_array_equal(dwa, dw)
    # any a > 0 (eps scaled with the variance): equal to rounding
    for a in [3.7, 1e-3, 1e4]:
        ya, _, _ = bnorm.batch_norm_train(x * dtype(a), w, b, eps * a * a, axis=axis)
        assert rel_err(ya, y) < (2e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("shape,axis", [((6, 4, 5), 1), ((6, 5, 4), -1)])
def test_nan_inf_stay_in_their_channel(rng, bad, shape, axis):
    x, w, b = make_case(rng, shape, axis, np.float64)
    C = shape[axis]
    xb = x.copy()
    idx = [slice(None)] * x.ndim
    idx[axis] = 2
    sub = xb[tuple(idx)]
    sub.flat[3] = bad
    rm, rv = np.zeros(C), np.ones(C)
    rm0, rv0 = np.zeros(C), np.ones(C)
    y, sm, si = bnorm.batch_norm_train(xb, w, b, axis=axis, running_mean=rm,
                                       running_var=rv)
    y0, sm0, si0 = bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm0,
                                          running_var=rv0)
    others = [c for c in range(C) if c != 2]
    take = lambda a: np.take(a, others, axis=axis)  # noqa: E731
    np.testing.assert_array_equal(take(y), take(y0))
    np.testing.assert_array_equal(sm[others], sm0[others])
    np.testing.assert_array_equal(rv[others], rv0[others])
    assert np.isnan(np.take(y, 2, axis=axis)).all()
    assert not np.isfinite(sm[2]) or not np.isfinite(si[2])
    g = rng.standard_normal(shape)
    dx, dw, db = bnorm.batch_norm_backward(g, xb, sm, si, w, axis=axis)
    dx0, dw0, db0 = bnorm.batch_norm_backward(g, x, sm0, si0, w, axis=axis)
    np.testing.assert_array_equal(take(dx), take(dx0))
    np.testing.assert_array_equal(dw[others], dw0[others])


# Shapes that exercise each way the work is cut: many channels, few channels
# with a long batch (split into groups), channels-last with several channel
# blocks, tiny inputs that run on one thread.
DETERMINISM_SHAPES = [
    ((16, 32, 20, 20), 1), ((2, 3, 70000), 1), ((1, 2, 300000), 1),
    ((20000, 3), -1), ((300, 600), -1), ((8, 20, 20, 64), -1), ((5, 3), 1),
]


@pytest.mark.parametrize("shape,axis", DETERMINISM_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_identical_for_any_thread_count(rng, threads, shape, axis, dtype):
    x, w, b = make_case(rng, shape, axis, dtype, offset=10.0, scale=3.0)
    g = rng.standard_normal(shape).astype(dtype)
    C = shape[axis]
    results = []
    for n in [1, 2, 3, 4]:
        bnorm.set_num_threads(n)
        assert bnorm.get_num_threads() == effective_threads(n)
        rm, rv = np.full(C, 0.5, dtype), np.full(C, 2.0, dtype)
        y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm,
                                           running_var=rv)
        dx, dw, db = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis)
        dxf, _, _ = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis,
                                              training=False)
        yi = bnorm.batch_norm(x, rm, rv, w, b, axis=axis)
        results.append([a.tobytes() for a in (y, sm, si, rm, rv, dx, dw, db, dxf, yi)])
    for r in results[1:]:
        assert r == results[0]


def test_long_channel_merging_is_accurate(rng):
    # A million values per channel, mean far from zero: many chunks merged.
    x = (1e4 + rng.standard_normal((1, 2, 1 << 20))).astype(np.float32)
    rm, rv = np.zeros(2, np.float32), np.zeros(2, np.float32)
    bnorm.batch_norm_train(x, running_mean=rm, running_var=rv, momentum=1.0,
                           unbiased=False)
    var64 = x.astype(np.float64).var(axis=(0, 2))
    assert float(np.max(np.abs(rv - var64) / var64)) <= 2e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", DETERMINISM_SHAPES[:-1])
def test_nan_policy_on_every_code_path(rng, threads, dtype, shape, axis):
    """SPEC: a NaN or Inf in a channel reaches that channel's outputs and
    statistics only, whatever path the shape takes (threads, channel blocks,
    groups); also NaN in dy, and a NaN running statistic in inference."""
    bnorm.set_num_threads(2)
    x, w, b = make_case(rng, shape, axis, dtype)
    C = shape[axis]
    bad_c = C // 2
    others = [c for c in range(C) if c != bad_c]
    take = lambda a: np.take(a, others, axis=axis)  # noqa: E731
    chan = lambda a: np.take(a, bad_c, axis=axis)  # noqa: E731
    xb = x.copy()
    idx = [slice(None)] * x.ndim
    idx[axis] = bad_c
    view = xb[tuple(idx)]
    view.flat[view.size // 2] = np.nan
    view.flat[-1] = np.inf
    y0, sm0, si0 = bnorm.batch_norm_train(x, w, b, axis=axis)
    y, sm, si = bnorm.batch_norm_train(xb, w, b, axis=axis)
    assert np.array_equal(take(y), take(y0)) and np.isnan(chan(y)).all()
    assert np.array_equal(sm[others], sm0[others]) and np.isnan(sm[bad_c])
    # NaN in dy of one channel
    g = rng.standard_normal(shape).astype(dtype)
    gb = g.copy()
    gview = gb[tuple(idx)]
    gview.flat[0] = np.nan
    dx0, dw0, db0 = bnorm.batch_norm_backward(g, x, sm0, si0, w, axis=axis)
    dx, dw, db = bnorm.batch_norm_backward(gb, x, sm0, si0, w, axis=axis)
    assert np.array_equal(take(dx), take(dx0)) and np.isnan(chan(dx)).all()
    assert np.array_equal(dw[others], dw0[others]) and np.isnan(dw[bad_c])
    assert np.array_equal(db[others], db0[others]) and np.isnan(db[bad_c])
    # inference: a NaN running variance spoils its channel only
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    yi0 = bnorm.batch_norm(x, rm, rv, w, b, axis=axis)
    rv[bad_c] = np.nan
    yi = bnorm.batch_norm(x, rm, rv, w, b, axis=axis)
    assert np.array_equal(take(yi), take(yi0)) and np.isnan(chan(yi)).all()


def _at_offset(a, offset):
    """A copy of a whose data starts `offset` bytes past a 64-byte boundary."""
    buf = np.empty(a.nbytes + 128, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape,axis", [((4, 6, 9, 37), 1), ((64, 48), -1),
                                        ((3, 5, 7, 40), -1), ((2, 3, 300), 1)])
def test_results_do_not_depend_on_alignment(rng, dtype, shape, axis):
    # The elementwise passes peel iterations until their output is aligned
    # to a vector register, and the row reductions until x is (simd.hpp); a
    # peel must never change a value. Every op at every element offset
    # within a cache line, inputs and outputs moved together and apart.
    x0 = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    g0 = rng.standard_normal(shape).astype(dtype)
    z0 = rng.standard_normal(shape).astype(dtype)
    C = shape[axis]
    pdt = np.float64 if dtype == np.float64 else np.float32
    w = rng.uniform(0.5, 1.5, C).astype(pdt)
    b = rng.standard_normal(C).astype(pdt)
    rm, rv = rng.standard_normal(C).astype(pdt), rng.uniform(0.5, 2, C).astype(pdt)

    def run(xo, yo):
        x, g, z = _at_offset(x0, xo), _at_offset(g0, xo), _at_offset(z0, yo)
        y = _at_offset(np.zeros_like(x0), yo)
        dx = _at_offset(np.zeros_like(x0), yo)
        outs = [bnorm.batch_norm(x, rm, rv, w, b, axis=axis, out=y).copy()]
        yt, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, out=y)
        outs += [yt.copy(), sm, si]
        outs += list(bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis, out=dx))
        outs[-3] = outs[-3].copy()
        outs.append(bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis,
                                              training=False)[0])
        yf = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu", residual=z)[0]
        outs.append(yf)
        outs += list(bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis,
                                               activation="relu", y=yf, residual=True))
        return [o.tobytes() for o in outs]

    want = run(0, 0)
    step = np.dtype(dtype).itemsize
    for xo in range(0, 64, step):
        for yo in (xo, (xo + 16) % 64):
            assert run(xo, yo) == want, (xo, yo)
