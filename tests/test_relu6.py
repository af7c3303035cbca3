"""Batch norm fused with a ReLU6 (MobileNet's activation), forward and
backward: y = min(max(BN(x) + residual?, 0), 6), and the gradient let through
where 0 < value < 6. Held against the unfused composition bit for bit and
finite differences (the reference and PyTorch's autograd: test_fused.py)."""
import numpy as np
import pytest

import bnorm

from conftest import assert_central_differences, make_case

CASES = [((4, 3, 5, 7), 1), ((6, 5, 4, 3), -1), ((40, 24), 1), ((3, 5, 4100), 1),
         ((64, 4, 64, 64), 1), ((8, 32, 32, 20), -1), ((300, 1024), 1)]


def relu6(a):
    """NumPy's min(max(a, 0), 6) keeping a NaN a NaN, in a's dtype."""
    return np.where(a < 0, 0, np.where(a > 6, 6, a)).astype(a.dtype)


def wide_case(rng, shape, axis, dtype):
    """x, weight, bias with BN(x) spread over about (-8, 12): values on both
    sides of both bounds of the ReLU6."""
    x, w, b = make_case(rng, shape, axis, dtype, offset=0.5)
    return x, (np.abs(w) * 4 + 1).astype(w.dtype), (b + 2).astype(b.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", CASES)
def test_forward_is_the_composition_bit_for_bit(rng, shape, axis, dtype):
    x, w, b = wide_case(rng, shape, axis, dtype)
    z = rng.standard_normal(shape).astype(dtype)
    C = shape[axis]
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    rm2, rv2 = rm.copy(), rv.copy()
    y0, sm0, si0 = bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm, running_var=rv)
    y1, sm1, si1 = bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm2,
                                          running_var=rv2, activation="relu6")
    assert (y0 > 6).any() and (y0 < 0).any()  # both bounds are reached
    assert np.array_equal(y1, relu6(y0))
    assert np.array_equal(sm1, sm0) and np.array_equal(si1, si0)
    assert np.array_equal(rm2, rm) and np.array_equal(rv2, rv)
    y2, _, _ = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu6", residual=z)
    assert np.array_equal(y2, relu6(y0 + z))
    yi = bnorm.batch_norm(x, rm, rv, w, b, axis=axis)
    assert np.array_equal(bnorm.batch_norm(x, rm, rv, w, b, axis=axis, activation="relu6",
                                           residual=z), relu6(yi + z))
    assert np.array_equal(bnorm.batch_norm(x, rm, rv, w, b, axis=axis, activation="RELU6"),
                          relu6(yi))


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", CASES)
def test_backward_is_the_composition_bit_for_bit(rng, shape, axis, dtype, frozen):
    """The mask from y: g = dy where 0 < y < 6; dresidual = g."""
    x, w, b = wide_case(rng, shape, axis, dtype)
    z = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu6", residual=z)
    g = np.where((y > 0) & (y < 6), dy, 0).astype(dtype)
    assert (y == 6).any() and (y == 0).any()
    dx0, dw0, db0 = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis, training=not frozen)
    dx, dw, db, dz = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                               training=not frozen, activation="relu6",
                                               y=y, residual=True)
    for a, e in [(dx, dx0), (dw, dw0), (db, db0), (dz, g)]:
        assert a.dtype == e.dtype and np.array_equal(a, e)
    # without the residual
    dx2, dw2, db2 = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                              training=not frozen, activation="relu6", y=y)
    assert np.array_equal(dx2, dx0) and np.array_equal(dw2, dw0) and np.array_equal(db2, db0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", CASES)
def test_backward_mask_recomputed_from_x(rng, shape, axis, dtype):
    """bias= instead of y=: the same gradients, reading no y (away from the
    bounds, where the recomputed mask can differ from y's by rounding)."""
    x, w, b = wide_case(rng, shape, axis, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu6")
    pre, _, _ = bnorm.batch_norm_train(x, w, b, axis=axis)
    scale = np.abs(pre).max()
    near = (np.abs(pre) < 1e-4 * scale) | (np.abs(pre - 6) < 1e-4 * scale)
    dy = dy.copy()
    dy[near] = 0
    g = np.where((y > 0) & (y < 6), dy, 0).astype(dtype)
    dx0, dw0, db0 = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis)
    dx, dw, db = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                           activation="relu6", bias=b)
    for a, e in [(dx, dx0), (dw, dw0), (db, db0)]:
        assert np.array_equal(a, e)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_against_float(rng, dtype):
    """Half-precision data: the forward is relu6 of the plain forward bit for
    bit, and the backward is the plain backward of the masked gradient."""
    if dtype == "bfloat16":
        dt = pytest.importorskip("ml_dtypes").bfloat16
    else:
        dt = np.float16
    shape, axis = (8, 16, 9, 9), 1
    x32, w, b = wide_case(rng, shape, axis, np.float32)
    x = x32.astype(dt)
    z = rng.standard_normal(shape).astype(dt)
    dy = rng.standard_normal(shape).astype(dt)
    # BN(x) + z rounds once to dt in the kernel; the clamp to [0, 6] commutes
    # with that rounding (both bounds are representable), so y is relu6 of
    # the fused forward without activation, bit for bit
    y0, _, _ = bnorm.batch_norm_train(x, w, b, axis=axis, residual=z)
    y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu6", residual=z)
    ref_y = np.clip(y0.astype(np.float32), 0, 6).astype(dt)
    assert np.array_equal(y.astype(np.float32), ref_y.astype(np.float32))
    assert (ref_y.astype(np.float32) == 6).any()
    g = np.where((y.astype(np.float32) > 0) & (y.astype(np.float32) < 6), dy, dt(0)).astype(dt)
    dx0, dw0, db0 = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis)
    dx, dw, db, dz = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                               activation="relu6", y=y, residual=True)
    for a, e in [(dx, dx0), (dw, dw0), (db, db0), (dz, g)]:
        assert np.array_equal(a.astype(np.float32), e.astype(np.float32))


def test_gradients_against_finite_differences():
    rng = np.random.default_rng(11)
    shape, axis = (5, 3, 4), 1
    x = rng.standard_normal(shape)
    z = rng.standard_normal(shape)
    w = rng.uniform(3, 5, 3)
    b = rng.uniform(1, 3, 3)
    c = rng.standard_normal(shape)  # loss = sum(c * y)

    def loss(x_, z_, w_, b_):
        y, _, _ = bnorm.batch_norm_train(x_, w_, b_, axis=axis, activation="relu6",
                                         residual=z_)
        return float(np.sum(c * y))

    y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu6", residual=z)
    assert (y == 6).any() and (y == 0).any() and ((y > 0) & (y < 6)).any()
    pre = bnorm.batch_norm_train(x, w, b, axis=axis)[0] + z
    dx, dw, db, dz = bnorm.batch_norm_backward(c, x, sm, si, w, axis=axis,
                                               activation="relu6", y=y, residual=True)
    # (no value within 1e-4 of a bound: there the difference quotient would
    # straddle the kink)
    assert np.min(np.abs(pre)) > 1e-4 and np.min(np.abs(pre - 6)) > 1e-4
    assert_central_differences(lambda: loss(x, z, w, b), [(x, dx), (z, dz), (w, dw), (b, db)],
                               every=3)


def test_threads_bitwise(rng):
    x, w, b = wide_case(rng, (16, 32, 30, 30), 1, np.float32)
    z = rng.standard_normal(x.shape).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    old = bnorm.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            bnorm.set_num_threads(n)
            y, sm, si = bnorm.batch_norm_train(x, w, b, activation="relu6", residual=z)
            d = bnorm.batch_norm_backward(dy, x, sm, si, w, activation="relu6", y=y,
                                          residual=True)
            r = bnorm.batch_norm_backward(dy, x, sm, si, w, activation="relu6", bias=b)
            results.append([y, *d, *r])
    finally:
        bnorm.set_num_threads(old)
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            assert np.array_equal(a, e)


def test_in_place_matches_out_of_place(rng):
    x, w, b = wide_case(rng, (4, 6, 5, 5), 1, np.float32)
    z = rng.standard_normal(x.shape).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y0, sm, si = bnorm.batch_norm_train(x, w, b, activation="relu6", residual=z)
    zz = z.copy()
    bnorm.batch_norm_train(x, w, b, activation="relu6", residual=zz, out=zz)  # y into z
    assert np.array_equal(zz, y0)
    dx0, dw0, db0, dz0 = bnorm.batch_norm_backward(dy, x, sm, si, w, activation="relu6",
                                                   y=y0, residual=True)
    yy = y0.copy()
    dx1, dw1, db1 = bnorm.batch_norm_backward(dy, x, sm, si, w, activation="relu6", y=yy,
                                              out=yy)  # dx over y
    g = np.where((y0 > 0) & (y0 < 6), dy, 0).astype(np.float32)
    assert np.array_equal(dx1, bnorm.batch_norm_backward(g, x, sm, si, w)[0])
    assert np.array_equal(dx0, dx1) and np.array_equal(dz0, g)


def test_nan_stays_nan(rng):
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    x[2, 1, 0] = np.nan
    y, _, _ = bnorm.batch_norm_train(x, activation="relu6")
    assert np.isnan(y[:, 1]).all() and np.isfinite(y[:, [0, 2]]).all()
    assert (y[:, [0, 2]] >= 0).all() and (y[:, [0, 2]] <= 6).all()


def test_errors(rng):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="'relu' or 'relu6'"):
        bnorm.batch_norm_train(x, activation="relu8")
    _, sm, si = bnorm.batch_norm_train(x, activation="relu6")
    with pytest.raises(ValueError, match="cannot be recomputed"):
        bnorm.batch_norm_backward(x, x, sm, si, activation="relu6", residual=True)

