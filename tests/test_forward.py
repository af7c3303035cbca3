"""The core's forward passes against bnorm.reference."""
import numpy as np
import pytest

import bnorm
from bnorm import reference as ref
from conftest import assert_close, make_case

SHAPES = [
    ((6, 3), 1), ((6, 3), -1), ((5, 4, 7), 1), ((5, 7, 4), -1),
    ((4, 3, 5, 6), 1), ((4, 5, 6, 3), -1), ((3, 2, 3, 4, 5), 1),
    ((3, 3, 4, 5, 2), -1), ((2, 3, 4100), 1),  # a run longer than one chunk
    ((40, 300), -1),  # more channels than one channel block
    ((37, 16), -1), ((5, 3, 7, 32), -1),  # channel counts with fixed-width loops
    ((2, 5, 3, 4), 2),  # a middle axis: outer and inner both > 1
]
DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("running", [True, False])
def test_train_matches_reference(rng, shape, axis, dtype, affine, running):
    x, w, b = make_case(rng, shape, axis, dtype, offset=2.0, scale=3.0)
    if not affine:
        w = b = None
    C = shape[axis]
    rm, rv = rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    kw = dict(running_mean=rm, running_var=rv, momentum=0.3) if running else {}
    kw_ref = dict(running_mean=rm_ref, running_var=rv_ref, momentum=0.3) if running else {}
    y, sm, si = bnorm.batch_norm_train(x, w, b, 1e-3, axis=axis, **kw)
    yr, smr, sir = ref.batch_norm_train(x, w, b, 1e-3, axis=axis, **kw_ref)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert sm.dtype == si.dtype == np.dtype(dtype) and sm.shape == (C,)
    assert_close(y, yr, dtype, what="y")
    assert_close(sm, smr, dtype, what="save_mean")
    assert_close(si, sir, dtype, what="save_invstd")
    assert_close(rm, rm_ref, dtype, what="running_mean")
    assert_close(rv, rv_ref, dtype, what="running_var")
    if not running:
        assert rm_ref.tolist() == rm.tolist()


@pytest.mark.parametrize("shape,axis", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
def test_inference_matches_reference(rng, shape, axis, dtype, affine):
    x, w, b = make_case(rng, shape, axis, dtype, offset=-1.0, scale=2.0)
    if not affine:
        w = b = None
    C = shape[axis]
    rm = rng.standard_normal(C).astype(dtype)
    rv = rng.uniform(0.1, 3, C).astype(dtype)
    y = bnorm.batch_norm(x, rm, rv, w, b, eps=1e-4, axis=axis)
    yr = ref.batch_norm(x, rm, rv, w, b, eps=1e-4, axis=axis)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert_close(y, yr, dtype, what="y")


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_training_flag_updates_running_stats(rng, dtype):
    x, w, b = make_case(rng, (8, 4, 3, 3), 1, dtype)
    rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
    y = bnorm.batch_norm(x, rm, rv, w, b, training=True, momentum=0.2)
    rm2, rv2 = np.zeros(4, dtype), np.ones(4, dtype)
    yr = ref.batch_norm(x, rm2, rv2, w, b, training=True, momentum=0.2)
    assert_close(y, yr, dtype)
    assert_close(rm, rm2, dtype)
    assert_close(rv, rv2, dtype)
    # training without running statistics is allowed
    y3 = bnorm.batch_norm(x, None, None, w, b, training=True)
    assert_close(y3, yr, dtype)


def test_unbiased_flag_onnx_convention(rng):
    x = rng.standard_normal((10, 3)).astype(np.float64)
    rm, rv = np.zeros(3), np.zeros(3)
    bnorm.batch_norm_train(x, running_mean=rm, running_var=rv, momentum=1.0,
                           unbiased=False)
    np.testing.assert_allclose(rv, x.var(axis=0), rtol=1e-13)
    bnorm.batch_norm_train(x, running_mean=rm, running_var=rv, momentum=1.0)
    np.testing.assert_allclose(rv, x.var(axis=0, ddof=1), rtol=1e-13)
    np.testing.assert_allclose(rm, x.mean(axis=0), rtol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [1, -1])
def test_non_contiguous_inputs(rng, dtype, axis):
    big = rng.standard_normal((8, 6, 10, 12)).astype(dtype)
    x = big[::2, :, 1:9:2, ::3]  # strided in every dimension
    assert not x.flags.c_contiguous
    C = x.shape[axis]
    w = rng.standard_normal(2 * C).astype(dtype)[::2]  # strided parameters
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    y, sm, si = bnorm.batch_norm_train(x, w, None, axis=axis, running_mean=rm,
                                       running_var=rv)
    rm2, rv2 = np.zeros(C, dtype), np.ones(C, dtype)
    yr, smr, sir = ref.batch_norm_train(np.ascontiguousarray(x), w, None, axis=axis,
                                        running_mean=rm2, running_var=rv2)
    assert_close(y, yr, dtype)
    assert_close(rv, rv2, dtype)
    yi = bnorm.batch_norm(x, rm, rv, w, axis=axis)
    assert_close(yi, ref.batch_norm(x, rm, rv, w, axis=axis), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_channels_last_memory_is_used_in_place(rng, dtype):
    # An NCHW-shaped view of NHWC memory (PyTorch's channels_last): no copy,
    # and the output keeps the input's memory layout.
    nhwc = rng.standard_normal((4, 5, 6, 3)).astype(dtype)
    x = nhwc.transpose(0, 3, 1, 2)
    w = rng.standard_normal(3).astype(dtype)
    y, sm, si = bnorm.batch_norm_train(x, w, None, axis=1)
    yr, _, _ = ref.batch_norm_train(x, w, None, axis=1)
    assert_close(y, yr, dtype)
    assert y.transpose(0, 2, 3, 1).flags.c_contiguous
    yi = bnorm.batch_norm(x, sm, 1 / si ** 2, axis=1, eps=1e-5)
    assert yi.transpose(0, 2, 3, 1).flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [1, -1])
def test_out_and_in_place(rng, dtype, axis):
    x, w, b = make_case(rng, (4, 3, 5, 3), axis, dtype)
    C = x.shape[axis]
    rm, rv = rng.standard_normal(C).astype(dtype), rng.uniform(1, 2, C).astype(dtype)
    out = np.full_like(x, np.nan)
    y = bnorm.batch_norm(x, rm, rv, w, b, axis=axis, out=out)
    assert y is out
    assert_close(out, ref.batch_norm(x, rm, rv, w, b, axis=axis), dtype)

    out2 = np.full_like(x, np.nan)
    y2, _, _ = bnorm.batch_norm_train(x, w, b, axis=axis, out=out2)
    assert y2 is out2
    yr, _, _ = ref.batch_norm_train(x, w, b, axis=axis)
    assert_close(out2, yr, dtype)

    xi = x.copy()
    y3, _, _ = bnorm.batch_norm_train(xi, w, b, axis=axis, out=xi)
    assert y3 is xi
    assert_close(xi, yr, dtype)

    xi = x.copy()
    bnorm.batch_norm(xi, rm, rv, w, b, axis=axis, out=xi)
    assert_close(xi, ref.batch_norm(x, rm, rv, w, b, axis=axis), dtype)


def test_out_with_non_contiguous_input(rng):
    x = rng.standard_normal((6, 4, 8)).astype(np.float32)[:, :, ::2]
    out = np.empty(x.shape, np.float32)
    bnorm.batch_norm_train(x, out=out)
    assert_close(out, ref.batch_norm_train(x)[0], np.float32)


def test_empty_inference_returns_empty(rng):
    for shape in [(0, 3), (0, 3, 4, 4), (2, 3, 0), (2, 0, 4)]:
        C = shape[1]
        x = np.zeros(shape, np.float32)
        y = bnorm.batch_norm(x, np.zeros(C, np.float32), np.ones(C, np.float32))
        assert y.shape == shape and y.dtype == np.float32


def test_parameters_accept_lists_and_other_dtypes(rng):
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y1 = bnorm.batch_norm(x, [0, 0, 0], [1, 1, 1], [1, 2, 3], np.zeros(3, np.float64))
    y2 = bnorm.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32),
                          np.array([1, 2, 3], np.float32))
    np.testing.assert_array_equal(y1, y2)
    # data given as a list is float64
    y3 = bnorm.batch_norm(x.astype(np.float64).tolist(), [0, 0, 0], [1, 1, 1])
    assert y3.dtype == np.float64


def test_input_is_not_modified(rng):
    x, w, b = make_case(rng, (4, 3, 5), 1, np.float32)
    x0, w0, b0 = x.copy(), w.copy(), b.copy()
    y, sm, si = bnorm.batch_norm_train(x, w, b)
    bnorm.batch_norm(x, sm, si, w, b)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dy0 = dy.copy()
    bnorm.batch_norm_backward(dy, x, sm, si, w)
    for a, a0 in [(x, x0), (w, w0), (b, b0), (dy, dy0)]:
        np.testing.assert_array_equal(a, a0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((4, 3, 5), 1), ((6, 5, 3), -1), ((7, 2), 1)])
def test_fast_and_general_call_paths_agree(rng, dtype, shape, axis):
    """The lean path for plain arrays (with or without out=) and the general
    one (taken here by arguments needing conversion) give the same bits."""
    x, w, b = make_case(rng, shape, axis, dtype)
    C = shape[axis]
    rm1, rv1 = np.zeros(C, dtype), np.ones(C, dtype)
    rm2, rv2 = rm1.copy(), rv1.copy()
    y1, m1, s1 = bnorm.batch_norm_train(x, w, b, 1e-3, axis=axis, running_mean=rm1,
                                        running_var=rv1, momentum=0.25)
    y2, m2, s2 = bnorm.batch_norm_train(x, list(w), b, 1e-3, axis=np.int64(axis),
                                        running_mean=rm2, running_var=rv2,
                                        momentum=0.25, out=np.empty_like(x))
    for a, c in [(y1, y2), (m1, m2), (s1, s2), (rm1, rm2), (rv1, rv2)]:
        np.testing.assert_array_equal(a, c)
    i1 = bnorm.batch_norm(x, rm1, rv1, w, b, eps=1e-3, axis=axis)
    i2 = bnorm.batch_norm(x, rm1, rv1, list(w), b, eps=1e-3, axis=axis,
                          out=np.empty_like(x))
    np.testing.assert_array_equal(i1, i2)
    out = np.empty_like(x)
    i3 = bnorm.batch_norm(x, rm1, rv1, w, b, eps=1e-3, axis=axis, out=out)
    assert i3 is out
    np.testing.assert_array_equal(i1, i3)
    out = np.empty_like(x)
    y3, m3, s3 = bnorm.batch_norm_train(x, w, b, 1e-3, axis=axis, out=out)
    assert y3 is out
    for a, c in [(y1, y3), (m1, m3), (s1, s3)]:
        np.testing.assert_array_equal(a, c)
