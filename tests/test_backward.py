"""The backward pass against bnorm.reference and central finite differences."""
import numpy as np
import pytest

import bnorm
from bnorm import reference as ref
from conftest import assert_close, make_case
from test_forward import DTYPES, SHAPES


@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_backward_matches_reference(rng, shape, axis, dtype, affine, training):
    x, w, _ = make_case(rng, shape, axis, dtype, offset=1.0, scale=2.0)
    if not affine:
        w = None
    dy = rng.standard_normal(shape).astype(dtype)
    _, sm, si = bnorm.batch_norm_train(x, w, None, 1e-3, axis=axis)
    dx, dw, db = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                           training=training)
    dxr, dwr, dbr = ref.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                            training=training)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    # dx in training mode subtracts two sums from dy: allow a few more ulps
    assert_close(dx, dxr, dtype, factor=4, what="dx")
    assert_close(dw, dwr, dtype, what="dweight")
    assert_close(db, dbr, dtype, what="dbias")


def _loss_and_grads(x, w, b, axis, g, eps):
    """L = sum(g * BN(x)) and its gradients by bnorm."""
    y, sm, si = bnorm.batch_norm_train(x, w, b, eps, axis=axis)
    dx, dw, db = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis)
    return float(np.sum(g * y)), dx, dw, db


@pytest.mark.parametrize("shape,axis", [((5, 3), 1), ((3, 4, 5), 1),
                                        ((2, 3, 3, 2), -1), ((2, 2, 3, 2, 2), 1)])
def test_gradients_against_finite_differences(rng, shape, axis):
    x, w, b = make_case(rng, shape, axis, np.float64, offset=0.5, scale=1.5)
    g = rng.standard_normal(shape)
    eps = 1e-3
    _, dx, dw, db = _loss_and_grads(x, w, b, axis, g, eps)
    h = 1e-6

    def f(xx, ww, bb):
        y, _, _ = bnorm.batch_norm_train(xx, ww, bb, eps, axis=axis)
        return float(np.sum(g * y))

    num_dx = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        num_dx[i] = (f(xp, w, b) - f(xm, w, b)) / (2 * h)
    num_dw = np.zeros_like(w)
    num_db = np.zeros_like(b)
    for c in range(w.size):
        wp, wm = w.copy(), w.copy()
        wp[c] += h
        wm[c] -= h
        num_dw[c] = (f(x, wp, b) - f(x, wm, b)) / (2 * h)
        bp, bm = b.copy(), b.copy()
        bp[c] += h
        bm[c] -= h
        num_db[c] = (f(x, w, bp) - f(x, w, bm)) / (2 * h)
    # central differences: truncation O(h^2) plus rounding O(1e-16/h)
    np.testing.assert_allclose(dx, num_dx, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, num_dw, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, num_db, rtol=1e-6, atol=1e-8)


def test_frozen_gradients_against_finite_differences(rng):
    shape, axis = (4, 3, 5), 1
    x, w, b = make_case(rng, shape, axis, np.float64)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    g = rng.standard_normal(shape)
    eps = 1e-5
    si = 1 / np.sqrt(rv + eps)
    dx, dw, db = bnorm.batch_norm_backward(g, x, rm, si, w, training=False)

    def f(xx, ww):
        return float(np.sum(g * bnorm.batch_norm(xx, rm, rv, ww, b, eps=eps)))

    h = 1e-6
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        num[i] = (f(xp, w) - f(xm, w)) / (2 * h)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)
    num_dw = np.array([(f(x, w + h * e) - f(x, w - h * e)) / (2 * h)
                       for e in np.eye(3)])
    np.testing.assert_allclose(dw, num_dw, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, g.sum(axis=(0, 2)), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_out_in_place_and_layouts(rng, dtype):
    x, w, _ = make_case(rng, (4, 5, 6, 3), -1, dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    _, sm, si = bnorm.batch_norm_train(x, w, axis=-1)
    dxr, dwr, dbr = ref.batch_norm_backward(dy, x, sm, si, w, axis=-1)
    out = np.full_like(x, np.nan)
    dx, dw, db = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=-1, out=out)
    assert dx is out
    assert_close(out, dxr, dtype, factor=4)
    g = dy.copy()  # in place over dy
    dx, _, _ = bnorm.batch_norm_backward(g, x, sm, si, w, axis=-1, out=g)
    assert dx is g
    assert_close(g, dxr, dtype, factor=4)
    # the same data as channels_last NCHW views: used without copies
    xv, dyv = x.transpose(0, 3, 1, 2), dy.transpose(0, 3, 1, 2)
    dx2, dw2, db2 = bnorm.batch_norm_backward(dyv, xv, sm, si, w, axis=1)
    assert_close(dx2.transpose(0, 2, 3, 1), dxr, dtype, factor=4)
    assert_close(dw2, dwr, dtype)
    # mixed layouts: dy contiguous NCHW, x channels-last
    dx3, _, _ = bnorm.batch_norm_backward(np.ascontiguousarray(dyv), xv, sm, si, w,
                                          axis=1)
    assert_close(dx3.transpose(0, 2, 3, 1), dxr, dtype, factor=4)


def test_frozen_backward_on_empty_input():
    x = np.zeros((0, 3, 4), np.float32)
    dx, dw, db = bnorm.batch_norm_backward(x, x, np.zeros(3, np.float32),
                                           np.ones(3, np.float32), training=False)
    assert dx.shape == x.shape
    assert dw.tolist() == [0, 0, 0] and db.tolist() == [0, 0, 0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((4, 3, 5), 1), ((6, 5, 3), -1), ((7, 2), 1)])
@pytest.mark.parametrize("training", [True, False])
def test_fast_and_general_backward_paths_agree(rng, dtype, shape, axis, training):
    """The lean path for plain arrays (with or without out=, in place over dy
    or x) and the general one (taken here by a weight that needs conversion)
    give the same bits."""
    x, w, _ = make_case(rng, shape, axis, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    _, sm, si = bnorm.batch_norm_train(x, w, axis=axis)
    general = bnorm.batch_norm_backward(dy, x, sm, si, list(w), axis=axis,
                                        training=training)
    fast = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis, training=training)
    out = np.full_like(x, np.nan)
    into = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis, training=training,
                                     out=out)
    assert into[0] is out
    for a, b, c in zip(general, fast, into):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    for which in ("dy", "x"):
        g, xx = dy.copy(), x.copy()
        dst = g if which == "dy" else xx
        got = bnorm.batch_norm_backward(g, xx, sm, si, w, axis=axis, training=training,
                                        out=dst)
        assert got[0] is dst
        np.testing.assert_array_equal(dst, general[0])
