"""Fused batch norm + residual + ReLU, forward and backward, held against
the unfused composition (bnorm or the reference, then NumPy), against
finite differences and against PyTorch's autograd."""
import numpy as np
import pytest

import bnorm
from bnorm import reference as ref

from conftest import TOL, assert_central_differences, assert_close, make_case

# planar and rows layouts; the larger ones take the non-blocked paths
CASES = [((4, 3, 5, 7), 1), ((6, 5, 4, 3), -1), ((40, 24), 1), ((3, 5, 4100), 1),
         ((64, 4, 64, 64), 1), ((8, 32, 32, 20), -1), ((300, 1024), 1)]


def relu(a):
    return np.where(a < 0, 0, a).astype(a.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", CASES)
def test_forward_is_the_composition_bit_for_bit(rng, shape, axis, dtype):
    x, w, b = make_case(rng, shape, axis, dtype, offset=0.5)
    z = rng.standard_normal(shape).astype(dtype)
    C = shape[axis]
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    rm2, rv2 = rm.copy(), rv.copy()
    y0, sm0, si0 = bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm, running_var=rv)
    # BN + ReLU
    y1, sm1, si1 = bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm2,
                                          running_var=rv2, activation="relu")
    assert np.array_equal(y1, relu(y0))
    assert np.array_equal(sm1, sm0) and np.array_equal(si1, si0)
    assert np.array_equal(rm2, rm) and np.array_equal(rv2, rv)
    # BN + Add + ReLU, and BN + Add
    y2, _, _ = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu", residual=z)
    assert np.array_equal(y2, relu(y0 + z))
    y3, _, _ = bnorm.batch_norm_train(x, w, b, axis=axis, residual=z)
    assert np.array_equal(y3, y0 + z)
    # inference
    yi = bnorm.batch_norm(x, rm, rv, w, b, axis=axis)
    assert np.array_equal(bnorm.batch_norm(x, rm, rv, w, b, axis=axis, activation="relu",
                                           residual=z), relu(yi + z))
    assert np.array_equal(bnorm.batch_norm(x, rm, rv, w, b, axis=axis, activation="relu"),
                          relu(yi))
    # training through batch_norm(training=True)
    assert np.array_equal(bnorm.batch_norm(x, None, None, w, b, True, axis=axis,
                                           activation="relu", residual=z), y2)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", CASES[:4])
def test_forward_against_the_reference(rng, shape, axis, dtype, activation):
    x, w, b = make_case(rng, shape, axis, dtype)
    if activation == "relu6":  # values past both bounds
        w, b = (np.abs(w) * 4 + 1).astype(dtype), (b + 2).astype(dtype)
    z = rng.standard_normal(shape).astype(dtype)
    y, _, _ = bnorm.batch_norm_train(x, w, b, axis=axis, activation=activation, residual=z)
    yr, _, _ = ref.batch_norm_train(x.astype(np.float64), w.astype(np.float64),
                                    b.astype(np.float64), axis=axis)
    want = np.maximum(yr + z, 0) if activation == "relu" else np.clip(yr + z, 0, 6)
    assert_close(y, want, dtype, what=f"{activation}(BN(x) + z)")


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", CASES)
def test_backward_is_the_composition_bit_for_bit(rng, shape, axis, dtype, frozen):
    x, w, b = make_case(rng, shape, axis, dtype, offset=0.5)
    z = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu", residual=z)
    g = np.where(y > 0, dy, 0).astype(dtype)
    dx0, dw0, db0 = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis, training=not frozen)
    dx, dw, db, dz = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                               training=not frozen, activation="relu",
                                               y=y, residual=True)
    for a, e in [(dx, dx0), (dw, dw0), (db, db0), (dz, g)]:
        assert a.dtype == e.dtype and np.array_equal(a, e)
    # the plain residual backward: dresidual = dy
    dx1, dw1, db1, dz1 = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                                   training=not frozen, residual=True)
    dx2, dw2, db2 = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                              training=not frozen)
    assert np.array_equal(dx1, dx2) and np.array_equal(dw1, dw2) and np.array_equal(dz1, dy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", CASES)
def test_backward_mask_recomputed_from_x(rng, shape, axis, dtype):
    """bias= instead of y=: the same gradients, reading no y."""
    x, w, b = make_case(rng, shape, axis, dtype, offset=0.5)
    dy = rng.standard_normal(shape).astype(dtype)
    y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu")
    # precondition of a bitwise comparison: no output within rounding of 0,
    # where the recomputed mask may differ from y > 0 (documented)
    pre, _, _ = bnorm.batch_norm_train(x, w, b, axis=axis)
    near = np.abs(pre) < 1e-4 * np.abs(pre).max()
    g = np.where(y > 0, dy, 0).astype(dtype)
    g[near] = 0
    dy = dy.copy()
    dy[near] = 0  # those values' mask does not matter then
    dx0, dw0, db0 = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis)
    dx, dw, db = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                           activation="relu", bias=b)
    for a, e in [(dx, dx0), (dw, dw0), (db, db0)]:
        assert np.array_equal(a, e)


def test_gradients_against_finite_differences():
    rng = np.random.default_rng(5)
    shape, axis = (5, 3, 4), 1
    x = rng.standard_normal(shape)
    z = rng.standard_normal(shape)
    w = rng.uniform(0.5, 2, 3)
    b = rng.standard_normal(3)
    c = rng.standard_normal(shape)  # loss = sum(c * y)

    def loss(x_, z_, w_, b_):
        y, _, _ = bnorm.batch_norm_train(x_, w_, b_, axis=axis, activation="relu", residual=z_)
        return float(np.sum(c * y))

    y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu", residual=z)
    dx, dw, db, dz = bnorm.batch_norm_backward(c, x, sm, si, w, axis=axis,
                                               activation="relu", y=y, residual=True)
    assert_central_differences(lambda: loss(x, z, w, b), [(x, dx), (z, dz), (w, dw), (b, db)],
                               every=5)


def test_fused_in_place_and_layouts(rng):
    x = rng.standard_normal((4, 6, 5, 5)).astype(np.float32)
    z = rng.standard_normal(x.shape).astype(np.float32)
    y0, _, _ = bnorm.batch_norm_train(x, activation="relu", residual=z)
    zz = z.copy()
    bnorm.batch_norm_train(x, activation="relu", residual=zz, out=zz)  # y into z
    assert np.array_equal(zz, y0)
    # a channels_last view of x with a contiguous residual: one common layout
    xc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    y1, _, _ = bnorm.batch_norm_train(xc, activation="relu", residual=z)
    np.testing.assert_allclose(y1, y0, rtol=0, atol=2e-6)


def test_fused_errors(rng):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    y, sm, si = bnorm.batch_norm_train(x, activation="relu")
    with pytest.raises(ValueError, match="activation must be None, 'relu' or 'relu6'"):
        bnorm.batch_norm_train(x, activation="tanh")
    with pytest.raises(ValueError, match="residual has shape"):
        bnorm.batch_norm_train(x, residual=x[:2])
    with pytest.raises(TypeError, match="residual has dtype"):
        bnorm.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32),
                         residual=x.astype(np.float64))
    with pytest.raises(ValueError, match="with activation='relu'"):
        bnorm.batch_norm_backward(x, x, sm, si, y=y)
    with pytest.raises(ValueError, match="cannot be recomputed"):
        bnorm.batch_norm_backward(x, x, sm, si, activation="relu", residual=True)
    with pytest.raises(TypeError, match="residual must be True or False"):
        bnorm.batch_norm_backward(x, x, sm, si, residual=x)
    with pytest.raises(ValueError, match="y has shape"):
        bnorm.batch_norm_backward(x, x, sm, si, activation="relu", y=y[:1])
    with pytest.raises(ValueError):  # out= partially over the residual
        buf = np.zeros(2 * x.size, np.float32)
        bnorm.batch_norm_train(x, residual=buf[1:x.size + 1].reshape(x.shape),
                               out=buf[:x.size].reshape(x.shape))


def test_nan_policy_with_relu(rng):
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)
    x[2, 1, 0] = np.nan
    y, sm, si = bnorm.batch_norm_train(x, activation="relu")
    assert np.isnan(y[:, 1]).all() and np.isfinite(y[:, [0, 2]]).all()


@pytest.mark.torch
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_against_torch_autograd(rng, activation):
    torch = pytest.importorskip("torch")
    act = {"relu": torch.relu, "relu6": torch.nn.functional.relu6}[activation]
    for shape, axis in [((4, 3, 5, 6), 1), ((6, 5, 4, 3), -1)]:
        x, w, b = make_case(rng, shape, axis, np.float64)
        if activation == "relu6":  # values past both bounds
            w, b = np.abs(w) * 4 + 1, b + 2
        z = rng.standard_normal(shape)
        dy = rng.standard_normal(shape)
        perm = (0, 3, 1, 2) if axis == -1 else (0, 1, 2, 3)
        tx = torch.tensor(x, requires_grad=True)
        tz = torch.tensor(z, requires_grad=True)
        tw = torch.tensor(w, requires_grad=True)
        tb = torch.tensor(b, requires_grad=True)
        out = act(torch.nn.functional.batch_norm(
            tx.permute(*perm), None, None, tw, tb, training=True) + tz.permute(*perm))
        out.backward(torch.tensor(dy).permute(*perm))
        if activation == "relu6":
            assert (out == 6).any() and (out == 0).any()
        y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, activation=activation,
                                           residual=z)
        np.testing.assert_allclose(y, out.detach().permute(*np.argsort(perm)).numpy(),
                                   rtol=0, atol=1e-12)
        dx, dw, db, dz = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                                   activation=activation, y=y, residual=True)
        for a, t in [(dx, tx.grad), (dz, tz.grad), (dw, tw.grad), (db, tb.grad)]:
            np.testing.assert_allclose(a, t.numpy(), rtol=0,
                                       atol=1e-10 * max(1, float(t.abs().max())))


def test_fused_calls_refuse_misfits_before_writing(rng):
    """The fused calls' quick path (C-contiguous arrays) takes only arrays of
    x's shape, and leaves overlaps to the library's check: each misfit is
    the general path's clear error, with nothing written."""
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, sm, si = bnorm.batch_norm_train(x, activation="relu")
    same_size = rng.standard_normal((5, 3, 4)).astype(np.float32)  # x's size, not its shape
    with pytest.raises(ValueError, match="residual has shape"):
        bnorm.batch_norm_train(x, residual=same_size, activation="relu")
    with pytest.raises(ValueError, match="residual has shape"):
        bnorm.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32),
                         residual=same_size, activation="relu6")
    with pytest.raises(ValueError, match="y has shape"):
        bnorm.batch_norm_backward(dy, x, sm, si, activation="relu", y=same_size)
    # dx partly over y: refused, y unchanged
    buf = np.zeros(2 * x.size, np.float32)
    yy = buf[1:x.size + 1].reshape(x.shape)
    yy[...] = y
    before = buf.copy()
    with pytest.raises(ValueError):
        bnorm.batch_norm_backward(dy, x, sm, si, activation="relu", y=yy,
                                  out=buf[:x.size].reshape(x.shape))
    assert np.array_equal(buf, before)
    # dresidual and dx may not share memory (each may be an input)
    with pytest.raises(ValueError):
        bnorm._functional._backward_fused(dy, x, sm, si, None, 1, True, "relu", y, None, True,
                                          y, dresidual_out=y)
