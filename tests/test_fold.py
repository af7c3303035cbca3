"""Inference helpers: per-channel scale/shift and folding a batch norm into
the layer before it. The folded layer must give the outputs of the layer
followed by the batch norm (computed here with bnorm.reference and plain
NumPy, or with torch when installed)."""
import numpy as np
import pytest

import bnorm
from bnorm import reference

# Folding changes the rounding: conv(x, W*a) vs (conv(x, W) - mean)*a. Bounds
# relative to the largest output, with sums of up to 72 products.
FOLD_TOL = {np.float32: 2e-6, np.float64: 1e-13}


def bn_params(rng, c, dtype):
    return dict(running_mean=rng.normal(0.3, 1.0, c).astype(dtype),
                running_var=rng.uniform(0.2, 3.0, c).astype(dtype),
                weight=rng.normal(1.0, 0.3, c).astype(dtype),
                bias=rng.normal(0.0, 0.5, c).astype(dtype))


def bn_eval(y, p, axis, eps=1e-5):
    return reference.batch_norm(y, p["running_mean"], p["running_var"], p["weight"],
                                p["bias"], training=False, eps=eps, axis=axis)


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def conv2d_nchw(x, w, b):
    """Valid 2-D convolution (cross-correlation), x [N,Ci,H,W], w [Co,Ci,kh,kw]."""
    kh, kw = w.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    y = np.einsum("nchwij,ocij->nohw", win, w)
    return y if b is None else y + b[None, :, None, None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_shift_matches_formula_and_inference(dtype):
    rng = np.random.default_rng(0)
    c = 37
    p = bn_params(rng, c, dtype)
    scale, shift = bnorm.inference_scale_shift(p["running_mean"], p["running_var"],
                                               p["weight"], p["bias"], eps=1e-3)
    assert scale.dtype == dtype and shift.dtype == dtype and scale.shape == (c,)
    m, v, w, b = (p[k].astype(np.float64) for k in
                  ("running_mean", "running_var", "weight", "bias"))
    want_scale = w / np.sqrt(v + 1e-3)
    # rounded once from double: within half an ulp of the dtype
    ulp = np.finfo(dtype).eps
    assert rel_err(scale, want_scale) <= ulp
    assert np.max(np.abs(shift - (b - m * want_scale)) / np.abs(b - m * want_scale)) <= ulp
    x = rng.normal(0, 2, (4, c, 5)).astype(dtype)
    y = bnorm.batch_norm(x, p["running_mean"], p["running_var"], p["weight"],
                         p["bias"], eps=1e-3)
    y2 = x * scale[:, None] + shift[:, None]
    assert rel_err(y2, y.astype(np.float64)) < FOLD_TOL[dtype] * 4


def test_scale_shift_defaults_and_layer():
    mean = np.array([1.0, -2.0])
    var = np.array([3.0, 0.5])
    scale, shift = bnorm.inference_scale_shift(mean, var)
    np.testing.assert_allclose(scale, 1 / np.sqrt(var + 1e-5), rtol=1e-15)
    np.testing.assert_allclose(shift, -mean / np.sqrt(var + 1e-5), rtol=1e-15)
    layer = bnorm.BatchNorm(2, dtype=np.float64)
    layer.running_mean[...] = mean
    layer.running_var[...] = var
    layer.weight[...] = [2.0, 3.0]
    layer.bias[...] = [0.5, -0.5]
    s, t = layer.inference_scale_shift()
    np.testing.assert_allclose(s, [2.0, 3.0] / np.sqrt(var + 1e-5), rtol=1e-15)
    np.testing.assert_allclose(t, [0.5, -0.5] - mean * s, rtol=1e-15)
    with pytest.raises(RuntimeError, match="running statistics"):
        bnorm.BatchNorm(2, track_running_stats=False).inference_scale_shift()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [True, False])
def test_fold_linear(dtype, with_bias):
    rng = np.random.default_rng(1)
    W = rng.normal(0, 0.2, (24, 40)).astype(dtype)
    bl = rng.normal(0, 0.1, 24).astype(dtype) if with_bias else None
    p = bn_params(rng, 24, dtype)
    x = rng.normal(0, 1, (16, 40)).astype(np.float64)
    h = x @ W.astype(np.float64).T + (0 if bl is None else bl.astype(np.float64))
    want = bn_eval(h, {k: v.astype(np.float64) for k, v in p.items()}, axis=1)
    Wf, bf = bnorm.fold_batch_norm(W, bl, **p)
    assert Wf.dtype == dtype and bf.dtype == dtype and Wf.shape == W.shape
    got = x @ Wf.astype(np.float64).T + bf.astype(np.float64)
    assert rel_err(got, want) < FOLD_TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fold_conv2d_nchw(dtype):
    rng = np.random.default_rng(2)
    W = rng.normal(0, 0.2, (8, 3, 3, 3)).astype(dtype)
    bl = rng.normal(0, 0.1, 8).astype(dtype)
    p = bn_params(rng, 8, dtype)
    x = rng.normal(0, 1, (2, 3, 9, 9))
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    want = bn_eval(conv2d_nchw(x, W.astype(np.float64), bl.astype(np.float64)), p64, axis=1)
    Wf, bf = bnorm.fold_batch_norm(W, bl, **p)
    got = conv2d_nchw(x, Wf.astype(np.float64), bf.astype(np.float64))
    assert rel_err(got, want) < FOLD_TOL[dtype]
    # and the layer method agrees with the function, bit for bit
    layer = bnorm.BatchNorm(8, dtype=dtype)
    layer.load_state_dict(dict(p, num_batches_tracked=np.int64(5)))
    Wl, bl2 = layer.fold_into(W, bl)
    assert np.array_equal(Wl, Wf) and np.array_equal(bl2, bf)


def test_fold_channels_last_and_transposed_layouts():
    rng = np.random.default_rng(3)
    p = bn_params(rng, 6, np.float64)
    a = p["weight"] / np.sqrt(p["running_var"] + 1e-5)
    hwio = rng.normal(size=(3, 3, 4, 6))  # output channels last
    Wf, bf = bnorm.fold_batch_norm(hwio, None, **p, axis=-1)
    np.testing.assert_allclose(Wf, hwio * a, rtol=1e-15)
    np.testing.assert_allclose(bf, -p["running_mean"] * a + p["bias"], rtol=1e-14)
    tconv = rng.normal(size=(4, 6, 2, 2))  # [in, out, kh, kw]
    Wt, _ = bnorm.fold_batch_norm(tconv, None, **p, axis=1)
    np.testing.assert_allclose(Wt, tconv * a[None, :, None, None], rtol=1e-15)
    # a non-contiguous weight is read correctly and the input is untouched
    base = rng.normal(size=(6, 10))
    before = base.copy()
    Wn, _ = bnorm.fold_batch_norm(base[:, ::2], None, **p)
    np.testing.assert_allclose(Wn, before[:, ::2] * a[:, None], rtol=1e-15)
    assert np.array_equal(base, before)


def test_fold_errors():
    p = bn_params(np.random.default_rng(4), 4, np.float32)
    W = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="running_mean has 3 elements, expected 4"):
        bnorm.fold_batch_norm(W, None, **dict(p, running_mean=p["running_mean"][:3]))
    with pytest.raises(ValueError, match="layer_bias has 5 elements"):
        bnorm.fold_batch_norm(W, np.zeros(5, np.float32), **p)
    with pytest.raises(TypeError, match="layer_weight has dtype int64"):
        bnorm.fold_batch_norm(np.ones((4, 3), np.int64), None, **p)
    with pytest.raises(np.exceptions.AxisError):
        bnorm.fold_batch_norm(W, None, **p, axis=2)
    with pytest.raises(ValueError, match="eps"):
        bnorm.fold_batch_norm(W, None, **p, eps=0.0)
    with pytest.raises(ValueError, match="running_var is required"):
        bnorm.fold_batch_norm(W, None, p["running_mean"], None)
    with pytest.raises(ValueError, match="running_var has 2 elements"):
        bnorm.inference_scale_shift(np.zeros(3), np.ones(2))
    with pytest.raises(ValueError,
                       match=r"running_mean has shape \(3, 1\), expected one value per channel"):
        bnorm.inference_scale_shift(np.zeros((3, 1)), np.ones(3))


def test_fold_matches_torch_conv_bn():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3, bias=True).double()
    bn = torch.nn.BatchNorm2d(5).double()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    bn.eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    want = bn(conv(x)).detach().numpy()
    Wf, bf = bnorm.fold_batch_norm(
        conv.weight.detach().numpy(), conv.bias.detach().numpy(),
        bn.running_mean.numpy(), bn.running_var.numpy(),
        bn.weight.detach().numpy(), bn.bias.detach().numpy(), eps=bn.eps)
    got = torch.nn.functional.conv2d(x, torch.from_numpy(Wf), torch.from_numpy(bf)).numpy()
    assert rel_err(got, want) < 1e-13
