"""In-Place Activated Batch Norm: bnorm_backward_from_output (NumPy and C)
against the reference, finite differences and torch autograd of the
equivalent composition; bitwise for 1 and N threads and with dx in place;
the bnorm.torch.InPlaceABN module (what autograd keeps, running statistics,
layouts, dtypes, torch.compile) and convert_inplace_abn."""

import copy
import os
import shutil

import numpy as np
import pytest

import bnorm
from bnorm import reference

CASES = [((4, 6, 5, 7), 1), ((64, 300), 1), ((8, 5, 9, 9), -1), ((3, 4, 5000), 1),
         ((2, 3, 4, 5, 6), 1), ((1000, 3), -1), ((16, 70, 3, 3), -1)]
ACTS = [("leaky_relu", 0.01), ("leaky_relu", 0.3), ("elu", 1.0), ("elu", 0.5),
        ("identity", 0.0)]


def make(rng, shape, axis, dtype, act, prm):
    c = shape[axis]
    y = rng.standard_normal(shape)
    if act == "elu":
        y = np.maximum(y, -prm * 0.99)  # an ELU's output is > -alpha
    dy = rng.standard_normal(shape)
    w = rng.uniform(0.3, 2.0, c) * rng.choice([-1, 1], c)
    b = rng.standard_normal(c)
    inv = rng.uniform(0.5, 2.0, c)
    pd = np.float64 if dtype == np.float64 else np.float32
    return (y.astype(dtype), dy.astype(dtype), inv.astype(pd), (np.abs(w) + 1e-5).astype(pd),
            b.astype(pd))


@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("act,prm", ACTS)
@pytest.mark.parametrize("training", [True, False])
def test_matches_the_reference(shape, axis, act, prm, training):
    rng = np.random.default_rng(0)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        y, dy, inv, sc, b = make(rng, shape, axis, dtype, act, prm)
        got = bnorm.batch_norm_backward_from_output(dy, y, inv, sc, b, axis=axis,
                                                    activation=act, activation_param=prm,
                                                    training=training)
        want = reference.batch_norm_backward_from_output(
            dy.astype(np.float64), y.astype(np.float64), inv, sc, b, axis=axis,
            activation=act, activation_param=prm, training=training)
        for g, w_, name in zip(got, want, ("dx", "dweight", "dbias")):
            assert g.dtype == (dtype if name == "dx" else inv.dtype)
            err = np.max(np.abs(g - w_)) / max(np.max(np.abs(w_)), 1e-30)
            assert err < tol, (name, dtype, err)


@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("act,prm", [("leaky_relu", 0.1), ("elu", 1.0), ("identity", 0.0)])
def test_with_a_residual_matches_the_reference(shape, axis, act, prm):
    rng = np.random.default_rng(5)
    y, dy, inv, sc, b = make(rng, shape, axis, np.float64, act, prm)
    r = rng.standard_normal(shape)
    got = bnorm.batch_norm_backward_from_output(dy, y, inv, sc, b, axis=axis, activation=act,
                                                activation_param=prm, residual=r)
    want = reference.batch_norm_backward_from_output(dy, y, inv, sc, b, axis=axis,
                                                     activation=act, activation_param=prm,
                                                     residual=r)
    assert len(got) == 4
    for g, w_ in zip(got, want):
        assert np.max(np.abs(g - w_)) <= 1e-12 * max(np.max(np.abs(w_)), 1.0)
    # dresidual and dx written over the inputs: the same bits
    if not (axis == -1 and len(shape) > 2):
        d2, r2 = dy.copy(), r.copy()
        out = bnorm.batch_norm_backward_from_output(d2, y, inv, sc, b, axis=axis,
                                                    activation=act, activation_param=prm,
                                                    residual=r2, out=r2, _dresidual_out=d2)
        assert r2.tobytes() == got[0].tobytes() and d2.tobytes() == got[3].tobytes()
        assert out[0] is r2


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_against_the_float64_reference(dtype):
    if dtype == "bfloat16":
        ml = pytest.importorskip("ml_dtypes")
        dt, ulp = ml.bfloat16, 2.0 ** -8
    else:
        dt, ulp = np.float16, 2.0 ** -11
    rng = np.random.default_rng(1)
    for shape, axis in CASES[:4]:
        y, dy, inv, sc, b = make(rng, shape, axis, dt, "leaky_relu", 0.1)
        got = bnorm.batch_norm_backward_from_output(dy, y, inv, sc, b, axis=axis,
                                                    activation="leaky_relu",
                                                    activation_param=0.1)
        want = reference.batch_norm_backward_from_output(
            dy.astype(np.float64), y.astype(np.float64), inv, sc, b, axis=axis,
            activation="leaky_relu", activation_param=0.1)
        # dx computed in float from the half inputs (float32 math), rounded
        # once to the half type; the sums in double, rounded to float32
        dx = got[0].astype(np.float64)
        assert np.max(np.abs(dx - want[0])) <= 2 * ulp * np.max(np.abs(want[0]))
        for g, w_ in zip(got[1:], want[1:]):
            assert np.max(np.abs(g - w_)) <= 1e-5 * np.max(np.abs(w_))


def test_against_finite_differences_of_the_composition():
    # x -> y = act(BN(x)) computed with the plain forward; the backward from
    # y alone must give d(sum(y * r))/dx
    rng = np.random.default_rng(2)
    shape, c = (5, 3, 4), 3
    x = rng.standard_normal(shape)
    r = rng.standard_normal(shape)
    w = np.abs(rng.standard_normal(c)) + 0.5
    b = rng.standard_normal(c)
    for act, prm in (("leaky_relu", 0.2), ("elu", 0.7), ("identity", 0.0)):
        def f(x):
            z = reference.batch_norm_train(x, w, b)[0]
            if act == "leaky_relu":
                z = np.where(z > 0, z, prm * z)
            elif act == "elu":
                z = np.where(z > 0, z, prm * np.expm1(np.minimum(z, 0)))
            return z
        y = f(x)
        _, _, inv = reference.batch_norm_train(x, w, b)
        dx, dw, db = bnorm.batch_norm_backward_from_output(r, y, inv, w, b, activation=act,
                                                           activation_param=prm)
        h = 1e-6
        num = np.zeros_like(x)
        for i in np.ndindex(shape):
            e = np.zeros_like(x)
            e[i] = h
            num[i] = ((f(x + e) * r).sum() - (f(x - e) * r).sum()) / (2 * h)
        np.testing.assert_allclose(dx, num, rtol=1e-5, atol=1e-6)


def test_one_and_many_threads_and_in_place_give_the_same_bits(threads):
    rng = np.random.default_rng(3)
    for shape, axis in CASES + [((32, 64, 56, 56), 1), ((32, 56, 56, 64), -1)]:
        for act, prm in (("leaky_relu", 0.01), ("elu", 1.0)):
            y, dy, inv, sc, b = make(rng, shape, axis, np.float32, act, prm)
            runs = []
            for n in (1, 2, 3):
                bnorm.set_num_threads(n)
                runs.append(bnorm.batch_norm_backward_from_output(
                    dy, y, inv, sc, b, axis=axis, activation=act, activation_param=prm))
            for r in runs[1:]:
                for a, b_ in zip(r, runs[0]):
                    assert a.tobytes() == b_.tobytes(), (shape, act)
            # dx written over dy, and over y: the bits of the out-of-place call
            for target in ("dy", "y"):
                d2, y2 = dy.copy(), y.copy()
                if axis == -1 and len(shape) > 2:
                    continue  # (out= takes C-contiguous arrays in their own order)
                out = d2 if target == "dy" else y2
                bnorm.batch_norm_backward_from_output(d2, y2, inv, sc, b, axis=axis,
                                                      activation=act, activation_param=prm,
                                                      out=out)
                assert out.tobytes() == runs[0][0].tobytes(), (shape, act, target)


def test_errors():
    y = np.ones((4, 3), np.float32)
    inv = np.ones(3, np.float32)
    f = bnorm.batch_norm_backward_from_output
    with pytest.raises(ValueError, match="activation must be"):
        f(y, y, inv, activation="relu")
    with pytest.raises(ValueError, match="activation_param"):
        f(y, y, inv, activation="leaky_relu", activation_param=0.0)
    with pytest.raises(ValueError, match="activation_param"):
        f(y, y, inv, activation="elu", activation_param=float("nan"))
    with pytest.raises(ValueError, match="inconsistent"):
        f(y, y, inv, np.array([1, 0, 1], np.float32))  # a zero scale has no inverse
    with pytest.raises(ValueError, match="inconsistent"):
        f(y, y, inv, np.array([1, np.inf, 1], np.float32))
    with pytest.raises(ValueError, match="more than 1 value"):
        f(y[:1], y[:1], inv)
    with pytest.raises(ValueError, match="shape"):
        f(y[:2], y, inv)
    with pytest.raises(ValueError, match="save_invstd"):
        f(y, y, None)
    dx, dw, db = f(y[:1], y[:1], inv, training=False)  # frozen: one value is fine
    assert dx.shape == (1, 3)


# ---- PyTorch -------------------------------------------------------------------------

torch_needed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="needs torch")
needs_cxx = pytest.mark.skipif(
    not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")),
    reason="torch.compile needs a C++ compiler (Inductor)")


def _composition(x, m, training):
    """What InPlaceABN computes, in PyTorch's own ops."""
    import torch
    import torch.nn.functional as F
    scale = m.weight.abs() + m.eps if m.weight is not None else None
    z = F.batch_norm(x, m.running_mean, m.running_var, scale, m.bias, training,
                     m.momentum, m.eps)
    if m.activation == "leaky_relu":
        return F.leaky_relu(z, m.activation_param)
    if m.activation == "elu":
        return F.elu(z, m.activation_param)
    return z


@torch_needed
@pytest.mark.parametrize("act,prm", [("leaky_relu", 0.01), ("elu", 1.0), ("identity", 0.0)])
@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
@pytest.mark.parametrize("training", [True, False])
def test_module_against_torch_autograd_of_the_composition(act, prm, fmt, training):
    import torch
    import bnorm.torch as bt
    torch.manual_seed(0)
    m = bt.InPlaceABN(6, activation=act, activation_param=prm).double()
    with torch.no_grad():
        m.weight.copy_(torch.randn(6))
        m.weight[0] = 0.0  # |w| + eps at 0, and its gradient there
        m.bias.copy_(torch.randn(6))
        m.running_mean.copy_(torch.randn(6))
        m.running_var.copy_(torch.rand(6) + 0.5)
    ref = copy.deepcopy(m)
    m.train(training)
    ref.train(training)
    x0 = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    if fmt == "channels_last":
        x0 = x0.to(memory_format=torch.channels_last)
    dy = torch.randn_like(x0)
    xa = x0.clone().requires_grad_()
    ya = _composition(xa, ref, training)
    ya.backward(dy)
    xb = x0.clone().requires_grad_()
    inp = xb * 1.0  # not a leaf: the module may write over it
    yb = m(inp)
    assert yb.data_ptr() == inp.data_ptr()  # computed in place
    if fmt == "channels_last":
        assert yb.is_contiguous(memory_format=torch.channels_last)
    yb.backward(dy)
    torch.testing.assert_close(yb, ya, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(m.weight.grad, ref.weight.grad, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(m.bias.grad, ref.bias.grad, rtol=1e-9, atol=1e-10)
    assert m.weight.grad[0] == 0
    torch.testing.assert_close(m.running_mean, ref.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.running_var, ref.running_var, rtol=1e-12, atol=1e-12)


@torch_needed
def test_gradcheck_of_the_module():
    import torch
    import bnorm.torch as bt
    torch.manual_seed(1)
    m = bt.InPlaceABN(3, activation="leaky_relu", activation_param=0.2, inplace=False).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([0.5, -1.5, 2.0]))
    x = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)

    def f(x, w, b):
        m.weight.data, m.bias.data = w.detach(), b.detach()
        m.running_mean.zero_()
        m.running_var.fill_(1)
        return bt._InPlaceABNFunction.apply(x, r, w, b, m.running_mean, m.running_var, True,
                                            0.1, m.eps, m.activation, m.activation_param, False)
    w = m.weight.detach().clone().requires_grad_()
    b = m.bias.detach().clone().requires_grad_()
    r = None
    torch.autograd.gradcheck(f, (x, w, b), eps=1e-6, atol=1e-5)
    r = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)  # with a residual
    torch.autograd.gradcheck(lambda x, w, b, r_: f(x, w, b), (x, w, b, r), eps=1e-6, atol=1e-5)


@torch_needed
def test_autograd_keeps_the_output_not_the_input():
    import torch
    import bnorm.torch as bt
    held = []

    def pack(t):
        held.append(t)
        return t
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    for module, kind in ((bt.InPlaceABN(8), "iabn"),
                         (torch.nn.Sequential(torch.nn.BatchNorm2d(8),
                                              torch.nn.LeakyReLU(0.01)), "native")):
        held.clear()
        x = torch.randn(2, 4, 16, 16, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            h = conv(x)
            ptr = h.data_ptr()
            y = module(h)
        params = {p.data_ptr() for p in conv.parameters()} | {
            p.data_ptr() for p in module.parameters()}
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held
                    if t.numel() > 100 and t.data_ptr() not in params}
        big = sum(storages.values())
        if kind == "iabn":
            assert y.data_ptr() == ptr          # written over the conv's output
            assert big == x.numel() * 4 + y.numel() * 4  # x (for the conv) and y only
            iabn_big = big
        else:
            assert big > iabn_big               # the conv's output is kept too
        y.sum().backward()


@torch_needed
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_module_half_precision(dtype):
    import torch
    import bnorm.torch as bt
    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes")
    dt = getattr(torch, dtype)
    torch.manual_seed(2)
    m = bt.InPlaceABN(5)
    x32 = torch.randn(6, 5, 7, 7)
    x = x32.to(dt).requires_grad_()
    y = m(x * 1)
    assert y.dtype == dt
    y.float().square().sum().backward()
    ref = copy.deepcopy(bt.InPlaceABN(5)).double()
    xr = x.detach().double().requires_grad_()
    yr = _composition(xr, ref, True)
    yr.square().sum().backward()
    rel = ((y.double() - yr).norm() / yr.norm()).item()
    grel = ((x.grad.double() - xr.grad).norm() / xr.grad.norm()).item()
    assert rel < 1e-2 and grel < 5e-2, (rel, grel)


@torch_needed
def test_errors_of_the_module():
    import torch
    import bnorm.torch as bt
    with pytest.raises(ValueError, match="activation must be"):
        bt.InPlaceABN(3, activation="relu")
    with pytest.raises(ValueError, match="invertible"):
        bt.InPlaceABN(3, activation="leaky_relu", activation_param=0.0)
    with pytest.raises(ValueError, match="3 channels"):
        bt.InPlaceABN(3)(torch.randn(2, 4, 5))
    with pytest.raises(TypeError, match="CPU tensors"):
        bt.InPlaceABN(3)(torch.randn(2, 3, 5, dtype=torch.complex64))


@torch_needed
def test_convert_inplace_abn_of_the_leaky_resnet():
    import torch
    import bnorm.torch as bt
    from bnorm.tools import models
    torch.manual_seed(3)
    model = models.build("resnet18_leaky", 10).double()
    conv = bt.convert_inplace_abn(model)
    rep = conv.bnorm_conversions
    # the stem's and each block's first batch norm take their LeakyReLU; at
    # each block's end one batch norm takes the addition and the LeakyReLU
    # (with the other branch as its residual)
    assert len(rep) == 20
    assert sum(v == "leaky_relu" for v in rep.values()) == 9
    assert sum(v == "add+leaky_relu" for v in rep.values()) == 8
    assert sum(v == "identity" for v in rep.values()) == 3
    assert list(conv.state_dict()) == list(model.state_dict())
    assert all(p is q for p, q in zip(conv.parameters(), model.parameters()))
    # with every weight >= 0 the function is the original's but for the
    # eps added to the scale
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1 and p.shape[0] != 10:
                pass
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.eps = 1e-12
        for m in conv.modules():
            if isinstance(m, bt.InPlaceABN):
                m.eps = 1e-12
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = model(xa), conv(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-8, atol=1e-8)
    ya.square().sum().backward()
    yb.square().sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-7, atol=1e-7 * xa.grad.abs().max())


@pytest.mark.slow
@torch_needed
@needs_cxx
def test_compile_fullgraph_of_inplace_abn():
    import torch
    import bnorm.torch as bt
    torch.manual_seed(4)
    eager = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), bt.InPlaceABN(8)).double()
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    for m in (eager, compiled):
        m(x).square().sum().backward()
    torch.testing.assert_close(compiled_module[0].weight.grad, eager[0].weight.grad,
                               rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(compiled_module[1].weight.grad, eager[1].weight.grad,
                               rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(compiled_module[1].running_var, eager[1].running_var)
    eager.eval()
    compiled_module.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x))
