"""float16 and bfloat16 data (float32 parameters, statistics and
arithmetic), held against float64 math on the same data.

The bound: every output element within half a unit in the last place of the
correctly rounded result, plus 2**-20 of the largest output magnitude (the
float32 arithmetic before the one rounding); statistics and gradients of
weight and bias (float32) within the float32 bar of conftest.TOL.
"""
import numpy as np
import pytest

import bnorm
from bnorm import reference as ref

from conftest import TOL

try:  # bfloat16 arrays need ml_dtypes (bnorm[half]); float16 needs nothing
    import ml_dtypes
except ImportError:
    ml_dtypes = None
needs_ml_dtypes = pytest.mark.skipif(ml_dtypes is None,
                                     reason="bfloat16 needs ml_dtypes (pip install 'bnorm[half]')")
HALVES = [np.dtype(np.float16),
          pytest.param(np.dtype(ml_dtypes.bfloat16) if ml_dtypes else None,
                       marks=needs_ml_dtypes, id="bfloat16")]
CASES = [((8, 4, 5, 5), 1), ((6, 5, 5, 8), -1), ((300, 7), 1), ((3, 5, 4100), 1),
         ((64, 4, 64, 64), 1), ((8, 32, 32, 20), -1)]


def ulp(a, dt):
    """Spacing of dt around |a| (normal numbers, or the subnormal step)."""
    mant, emin = (10, -14) if dt == np.float16 else (7, -126)
    e = np.floor(np.log2(np.maximum(np.abs(np.asarray(a, np.float64)), 2.0 ** emin)))
    return 2.0 ** (e - mant)


def assert_rounded(got, want, dt, what):
    """got (of dt) is want rounded to dt, to within the bound above."""
    assert got.dtype == dt, (what, got.dtype)
    want = np.asarray(want, np.float64)
    err = np.abs(got.astype(np.float64) - want)
    bound = 0.5 * ulp(want, dt) + 2.0 ** -20 * np.abs(want).max()
    worst = float(np.max(err / bound)) if err.size else 0.0
    assert worst <= 1.0, f"{what}: error {worst:.3g} x the bound"


def assert_f32(got, want, what, factor=1.0):
    assert got.dtype == np.float32, (what, got.dtype)
    want = np.asarray(want, np.float64)
    err = float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-300)
    assert err <= TOL[np.dtype(np.float32)] * factor, f"{what}: relative error {err:.3g}"


def case(rng, shape, axis, dt, offset=3.0):
    x = (offset + 2 * rng.standard_normal(shape)).astype(dt)
    C = shape[axis]
    w = rng.uniform(0.5, 2, C).astype(np.float32) * rng.choice([-1, 1], C).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    return x, w, b


@pytest.mark.parametrize("dt", HALVES, ids=str)
@pytest.mark.parametrize("shape,axis", CASES)
def test_training_and_backward_against_float64(rng, dt, shape, axis):
    x, w, b = case(rng, shape, axis, dt)
    C = shape[axis]
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm, running_var=rv)
    xd = x.astype(np.float64)  # the same data, exactly
    rmd, rvd = np.zeros(C), np.ones(C)
    yr, smr, sir = ref.batch_norm_train(xd, w.astype(np.float64), b.astype(np.float64),
                                        axis=axis, running_mean=rmd, running_var=rvd)
    assert_rounded(y, yr, dt, "y")
    assert_f32(sm, smr, "save_mean")
    assert_f32(si, sir, "save_invstd")
    assert_f32(rm, rmd, "running_mean")
    assert_f32(rv, rvd, "running_var")
    dy = rng.standard_normal(shape).astype(dt)
    dx, dw, db = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis)
    dxr, dwr, dbr = ref.batch_norm_backward(dy.astype(np.float64), xd, smr, sir,
                                            w.astype(np.float64), axis=axis)
    assert_rounded(dx, dxr, dt, "dx")
    assert_f32(dw, dwr, "dweight", 4)
    assert_f32(db, dbr, "dbias", 4)
    # inference and frozen backward
    yi = bnorm.batch_norm(x, rm, rv, w, b, axis=axis)
    yir = ref.batch_norm(xd, rm.astype(np.float64), rv.astype(np.float64),
                         w.astype(np.float64), b.astype(np.float64), axis=axis)
    assert_rounded(yi, yir, dt, "inference y")
    dxf, _, _ = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis, training=False)
    dxfr, _, _ = ref.batch_norm_backward(dy.astype(np.float64), xd, sm.astype(np.float64),
                                         si.astype(np.float64), w.astype(np.float64),
                                         axis=axis, training=False)
    assert_rounded(dxf, dxfr, dt, "frozen dx")


@pytest.mark.parametrize("dt", HALVES, ids=str)
def test_statistics_far_from_zero(rng, dt):
    """Data whose mean is far from zero relative to its spread: the float32
    variance bar holds (the statistics accumulate in double)."""
    offset = 1000.0 if dt == np.float16 else 1e5
    x = (offset + rng.standard_normal((64, 16, 32, 32)) * offset / 50).astype(dt)
    _, sm, si = bnorm.batch_norm_train(x)
    xd = x.astype(np.float64)
    var = xd.var(axis=(0, 2, 3))
    got = 1 / si.astype(np.float64) ** 2 - 1e-5
    assert np.max(np.abs(got - var) / var) <= 2e-6
    np.testing.assert_allclose(sm, xd.mean(axis=(0, 2, 3)), rtol=1e-7)


@pytest.mark.parametrize("dt", HALVES, ids=str)
@pytest.mark.parametrize("shape,axis", CASES[:3])
def test_fused_and_split_phases(rng, dt, shape, axis):
    x, w, b = case(rng, shape, axis, dt, offset=0.5)
    z = rng.standard_normal(shape).astype(dt)
    dy = rng.standard_normal(shape).astype(dt)
    y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu", residual=z)
    xd, zd = x.astype(np.float64), z.astype(np.float64)
    yr, smr, sir = ref.batch_norm_train(xd, w.astype(np.float64), b.astype(np.float64),
                                        axis=axis)
    assert_rounded(y, np.maximum(yr + zd, 0), dt, "relu(BN(x) + z)")
    dx, dw, db, dz = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                               activation="relu", y=y, residual=True)
    g = np.where(y > 0, dy, 0).astype(dt)
    assert np.array_equal(dz.view(np.uint16), g.view(np.uint16))
    dx0, dw0, db0 = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis)
    assert np.array_equal(dx.view(np.uint16), dx0.view(np.uint16))
    assert np.array_equal(dw, dw0) and np.array_equal(db, db0)
    from bnorm import distributed as dist
    n, mu, m2 = dist.moments(x, axis=axis)
    y2, sm2, si2 = dist.normalize(x, n, mu, m2, w, b, axis=axis)
    y1, sm1, si1 = bnorm.batch_norm_train(x, w, b, axis=axis)
    assert np.array_equal(y2.view(np.uint16), y1.view(np.uint16)) and np.array_equal(sm2, sm1)


@pytest.mark.parametrize("dt", HALVES, ids=str)
def test_threads_give_the_same_bits(rng, dt, threads):
    x, w, b = case(rng, (16, 8, 40, 40), 1, dt)
    dy = rng.standard_normal(x.shape).astype(dt)
    out = []
    for n in (1, 2):
        bnorm.set_num_threads(n)
        y, sm, si = bnorm.batch_norm_train(x, w, b)
        dx, dw, db = bnorm.batch_norm_backward(dy, x, sm, si, w)
        out.append([a.view(np.uint8).tobytes() for a in (y, sm, si, dx, dw, db)])
    assert out[0] == out[1]


@pytest.mark.parametrize("dt", HALVES, ids=str)
def test_layer_and_population(rng, dt):
    layer = bnorm.BatchNorm(4, dtype=dt)
    assert layer.weight.dtype == np.float32 and layer.running_mean.dtype == np.float32
    x, _, _ = case(rng, (8, 4, 3, 3), 1, dt)
    y = layer(x)
    assert y.dtype == dt
    dx = layer.backward(np.ones_like(x))
    assert dx.dtype == dt and layer.grad_weight.dtype == np.float32
    layer.eval()
    assert layer(x).dtype == dt
    pop = bnorm.PopulationStats(4)
    pop.update(x)
    np.testing.assert_allclose(pop.mean, x.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-12)
    with pytest.raises(TypeError, match=f"expected {dt}"):
        layer(x.astype(np.float32))


def test_nan_and_inf_stay_in_their_channel(rng):
    x = rng.standard_normal((6, 3, 4)).astype(np.float16)
    x[1, 0, 2] = np.inf
    x[2, 2, 1] = np.nan
    y, sm, si = bnorm.batch_norm_train(x)
    assert np.isnan(y[:, 0]).any() and np.isnan(y[:, 2]).all()
    assert np.isfinite(y[:, 1]).all()


def test_parameters_must_be_float32_for_half_data(rng):
    x = rng.standard_normal((4, 3)).astype(np.float16)
    rm = np.zeros(3, np.float16)
    with pytest.raises(TypeError, match="running_mean has dtype float16, expected float32"):
        bnorm.batch_norm_train(x, running_mean=rm, running_var=np.ones(3, np.float16))
    # weight, bias and statistics passed as inputs are converted
    y = bnorm.batch_norm(x, np.zeros(3, np.float16), np.ones(3), np.ones(3, np.float16))
    assert y.dtype == np.float16


@pytest.mark.torch
@pytest.mark.parametrize("name", ["float16", pytest.param("bfloat16", marks=needs_ml_dtypes)])
def test_against_torch(rng, name):
    torch = pytest.importorskip("torch")
    dt = np.dtype(np.float16) if name == "float16" else np.dtype(ml_dtypes.bfloat16)
    for shape, perm in [((8, 4, 5, 5), (0, 1, 2, 3)), ((6, 5, 5, 8), (0, 3, 1, 2))]:
        axis = 1 if perm[1] == 1 else -1
        x, w, b = case(rng, shape, axis, dt)
        tx = torch.from_numpy(x.view(np.uint16)).view(getattr(torch, name)).permute(*perm)
        ty = torch.nn.functional.batch_norm(tx, None, None, torch.from_numpy(w),
                                            torch.from_numpy(b), training=True)
        tyn = ty.permute(*np.argsort(perm)).float().numpy().astype(np.float64)
        y, _, _ = bnorm.batch_norm_train(x, w, b, axis=axis)
        # both round float arithmetic once: at most one unit apart
        assert np.max(np.abs(tyn - y.astype(np.float64)) / ulp(tyn, dt)) <= 1.0


@pytest.mark.torch
@needs_ml_dtypes
def test_bfloat16_tensors_through_dlpack(rng):
    """NumPy cannot take a bfloat16 tensor through DLPack; bnorm reads it
    as an ml_dtypes array on the tensor's memory."""
    torch = pytest.importorskip("torch")
    import gc

    from bnorm._functional import _array
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    y, _, _ = bnorm.batch_norm_train(x)
    xd = x.float().numpy().astype(np.float64)  # the tensor's values, exactly
    assert_rounded(y, ref.batch_norm_train(xd)[0], np.dtype(ml_dtypes.bfloat16), "y")
    xc = x.contiguous(memory_format=torch.channels_last)  # a strided view
    y2, _, _ = bnorm.batch_norm_train(xc)
    assert np.array_equal(y2.view(np.uint16), y.view(np.uint16))
    t = torch.zeros(4, 2, dtype=torch.bfloat16)
    a = _array(t, "t")
    a[...] = 1.5  # the same memory
    assert bool((t == 1.5).all())
    a = _array(torch.arange(6, dtype=torch.float32).to(torch.bfloat16), "t")
    gc.collect()  # the tensor lives as long as the array
    assert a.astype(np.float32).tolist() == [0, 1, 2, 3, 4, 5]
