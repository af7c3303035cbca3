"""Property-based tests of the Python API (hypothesis): random shapes, channel
axes, dtypes, memory layouts (contiguous, channels-last views, strided,
reversed) and values, held against bnorm.reference; and values that include
NaN, Inf, denormals and huge numbers, where the SPEC's policy must hold: a
channel's non-finite results stay in that channel."""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import bnorm  # noqa: E402
from bnorm import reference  # noqa: E402

SETTINGS = dict(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Error bounds, as a multiple of the magnitudes that flow into each result
# (random data can be badly conditioned: a channel of nearly equal values far
# from zero), in units of: float64 rounding for float64 data, float32
# rounding of the inputs and outputs for float32 data. eps = 1e-3 keeps
# 1/std finite.
TOL = {np.float32: 2e-5, np.float64: 1e-11}
EPS = 1e-3


@st.composite
def cases(draw, finite=True):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    ndim = draw(st.integers(2, 4))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(-ndim, ndim - 1))
    if finite:
        offset = draw(st.sampled_from([0.0, 1.0, -50.0, 1e3]))
        elements = st.floats(-100, 100, allow_nan=False, allow_infinity=False,
                             allow_subnormal=True, width=32)
    else:
        offset = 0.0
        big = 1e30 if dtype == np.float32 else 1e300
        elements = st.one_of(
            st.floats(-100, 100, width=32),
            st.sampled_from([np.nan, np.inf, -np.inf, big, -big, 1e-40, -1e-310, 0.0]))
    x = draw(hnp.arrays(dtype, shape, elements=elements)) + dtype(offset)
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided", "reversed"]))
    x = relayout(x, axis % ndim, layout)
    return dtype, x, axis


def relayout(x, axis, layout):
    """The same values in another memory layout."""
    if layout == "channels_last":
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(x, axis, -1)), -1, axis)
    if layout == "strided":
        big = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(x[::-1])[::-1]
    return x


def within(a, ref, scale, dtype, what):
    err = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(ref, np.float64))))
    assert err <= TOL[dtype] * scale, f"{what}: error {err:.3g} > {TOL[dtype]:.1g} * {scale:.3g}"


@settings(**SETTINGS)
@given(cases(), st.booleans(), st.data())
def test_training_forward_and_backward_match_the_reference(case, affine, data):
    dtype, x, axis = case
    C = x.shape[axis]
    m = x.size // C
    if m < 2:
        with pytest.raises(ValueError):
            bnorm.batch_norm_train(x, axis=axis)
        return
    w = data.draw(hnp.arrays(dtype, C, elements=st.floats(0.25, 4, width=32))) if affine else None
    b = data.draw(hnp.arrays(dtype, C, elements=st.floats(-2, 2, width=32))) if affine else None
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    y, sm, si = bnorm.batch_norm_train(x, w, b, EPS, axis=axis, running_mean=rm,
                                       running_var=rv)
    y_ref, sm_ref, si_ref = reference.batch_norm_train(x, w, b, EPS, axis=axis,
                                                       running_mean=rm_ref,
                                                       running_var=rv_ref)
    assert y.shape == x.shape and y.dtype == dtype
    X = float(np.max(np.abs(x)))                    # input magnitude
    S = float(np.max(si_ref.astype(np.float64)))    # largest 1/std
    K = X * S                                       # largest |x| in units of std
    W = float(np.max(np.abs(w))) if affine else 1.0
    B = float(np.max(np.abs(b))) if affine else 0.0
    within(y, y_ref, W * (K + 1) + B, dtype, "y")
    within(sm, sm_ref, X, dtype, "save_mean")
    within(si, si_ref, S * (1 + K * K), dtype, "save_invstd")
    within(rm, rm_ref, X, dtype, "running_mean")
    within(rv, rv_ref, X * X + 1, dtype, "running_var")
    dy = data.draw(hnp.arrays(dtype, x.shape, elements=st.floats(-10, 10, width=32)))
    G = max(float(np.max(np.abs(dy))), 1e-30)
    dx, dw, db = bnorm.batch_norm_backward(dy, x, sm_ref, si_ref, w, axis=axis)
    dx_ref, dw_ref, db_ref = reference.batch_norm_backward(dy, x, sm_ref, si_ref, w,
                                                           axis=axis)
    within(dx, dx_ref, G * S * W * (1 + K) ** 2, dtype, "dx")
    within(dw, dw_ref, m * G * (K + 1), dtype, "dweight")
    within(db, db_ref, m * G, dtype, "dbias")


@settings(**SETTINGS)
@given(cases(), st.data())
def test_inference_matches_the_reference(case, data):
    dtype, x, axis = case
    C = x.shape[axis]
    rm = data.draw(hnp.arrays(dtype, C, elements=st.floats(-100, 100, width=32)))
    rv = data.draw(hnp.arrays(dtype, C, elements=st.floats(0, 1e4, width=32)))
    y = bnorm.batch_norm(x, rm, rv, axis=axis, eps=EPS)
    S = float(np.max(1 / np.sqrt(rv.astype(np.float64) + EPS)))
    X = float(np.max(np.abs(x))) + float(np.max(np.abs(rm)))
    within(y, reference.batch_norm(x, rm, rv, axis=axis, eps=EPS), X * S, dtype, "y")


@settings(**SETTINGS)
@given(cases(finite=False))
def test_non_finite_and_extreme_values_stay_in_their_channel(case):
    dtype, x, axis = case
    C = x.shape[axis]
    moved = np.moveaxis(x, axis, 0).reshape(C, -1)
    bad = ~np.all(np.isfinite(moved) & (np.abs(moved) < 1e15), axis=1)
    clean = x.copy(order="K")  # same memory layout: the same code path
    np.moveaxis(clean, axis, 0)[bad] = 0.0  # the same data without the bad channels
    good = ~bad
    take = lambda a: np.moveaxis(a, axis, 0)[good]  # noqa: E731
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    y = bnorm.batch_norm(x, rm, rv, axis=axis)
    y0 = bnorm.batch_norm(clean, rm, rv, axis=axis)
    assert np.array_equal(take(y), take(y0))
    if x.size // C < 2:
        return
    y, sm, si = bnorm.batch_norm_train(x, axis=axis)
    y0, sm0, si0 = bnorm.batch_norm_train(clean, axis=axis)
    assert np.array_equal(take(y), take(y0))
    assert np.array_equal(sm[good], sm0[good]) and np.array_equal(si[good], si0[good])
    dx, dw, db = bnorm.batch_norm_backward(x, x, sm, si, axis=axis)
    dx0, dw0, db0 = bnorm.batch_norm_backward(clean, clean, sm0, si0, axis=axis)
    assert np.array_equal(take(dx), take(dx0))
    assert np.array_equal(dw[good], dw0[good]) and np.array_equal(db[good], db0[good])
