"""bnorm's operators in PyTorch (torch.ops.bnorm.*): torch.library.opcheck,
torch.compile with fullgraph=True, memory formats, and half precision
computed by bnorm (skipped without torch)."""
import copy
import os
import shutil

import pytest

torch = pytest.importorskip("torch")
import bnorm.torch as bt  # noqa: E402

F = torch.nn.functional
pytestmark = pytest.mark.torch
OPS = torch.ops.bnorm


def rand(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 0.5).to(dtype)


FORMATS = {
    2: [torch.contiguous_format],
    3: [torch.contiguous_format],
    4: [torch.contiguous_format, torch.channels_last],
    5: [torch.contiguous_format, torch.channels_last_3d],
}
SHAPES = [(6, 3), (4, 3, 7), (4, 3, 5, 6), (2, 3, 3, 4, 5)]


def in_format(t, fmt):
    return t.contiguous(memory_format=fmt)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("affine", [True, False])
def test_opcheck_every_op(shape, dtype, affine):
    pytest.importorskip("ml_dtypes") if dtype == torch.bfloat16 else None
    pd = torch.float64 if dtype == torch.float64 else torch.float32
    c = shape[1]
    for fmt in FORMATS[len(shape)]:
        x = in_format(rand(*shape, dtype=dtype), fmt)
        w = rand(c, dtype=pd, seed=1) if affine else None
        b = rand(c, dtype=pd, seed=2) if affine else None
        rm, rv = torch.zeros(c, dtype=pd), torch.ones(c, dtype=pd)
        mean, invstd = rand(c, dtype=pd, seed=3), rand(c, dtype=pd, seed=4).abs() + 0.5
        dy = in_format(rand(*shape, dtype=dtype, seed=5), fmt)
        for op, args in [
            (OPS.batch_norm_train.default, (x, w, b, rm, rv, 0.1, 1e-5)),
            (OPS.batch_norm_train.default, (x, w, b, None, None, 0.1, 1e-5)),
            (OPS.batch_norm_infer.default, (x, rm, rv, w, b, 1e-5)),
            (OPS.batch_norm_backward.default, (dy, x, mean, invstd, w, True)),
            (OPS.batch_norm_backward.default, (dy, x, mean, invstd, w, False)),
        ]:
            # (the autograd test of opcheck needs float64-like precision)
            utils = (("test_schema", "test_autograd_registration", "test_faketensor",
                      "test_aot_dispatch_dynamic") if dtype in (torch.float32, torch.float64)
                     else ("test_schema", "test_faketensor"))
            torch.library.opcheck(op, args, test_utils=utils)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_outputs_keep_the_memory_format(shape, training):
    c = shape[1]
    for fmt in FORMATS[len(shape)]:
        x = in_format(rand(*shape), fmt).requires_grad_()
        m = bt.BatchNorm1d(c) if len(shape) < 4 else (
            bt.BatchNorm2d(c) if len(shape) == 4 else bt.BatchNorm3d(c))
        m.train(training)
        y = m(x)
        assert y.is_contiguous(memory_format=fmt) and y.stride() == x.stride()
        y.backward(in_format(rand(*shape, seed=3), fmt))
        assert x.grad.stride() == x.stride()
        # and against PyTorch's own
        ref = copy.deepcopy(m)
        ref.__class__ = type(m).__mro__[2]  # the torch.nn class
        x2 = x.detach().clone().requires_grad_()
        y2 = ref(x2)
        y2.backward(in_format(rand(*shape, seed=3), fmt))
        torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)


# Inductor's generated code under the sanitizer pass (libasan preloaded into
# an uninstrumented interpreter) tests nothing of bnorm's and takes minutes
needs_compile = pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                                   reason="torch.compile under the sanitizer pass")
# Inductor compiles the C++ it generates: without a compiler (the wheel's
# test on a machine without one) torch.compile cannot run at all
needs_cxx = pytest.mark.skipif(
    not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")),
    reason="torch.compile needs a C++ compiler (Inductor)")


def conv_bn_relu():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))


@pytest.mark.slow
@needs_compile
@needs_cxx
def test_compile_fullgraph_trains_like_eager_and_torch():
    torch.manual_seed(0)
    ref = conv_bn_relu()
    eager = bt.convert(copy.deepcopy(ref))
    compiled_module = bt.convert(copy.deepcopy(ref))
    compiled = torch.compile(compiled_module, fullgraph=True)  # a graph break raises
    x = rand(6, 3, 10, 10, seed=7)
    models = (ref, eager, compiled)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (ref, eager, compiled_module)]
    for _ in range(3):
        ys = []
        for m, opt in zip(models, opts):
            opt.zero_grad()
            y = m(x)
            y.square().mean().backward()
            opt.step()
            ys.append(y.detach())
        torch.testing.assert_close(ys[1], ys[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ys[2], ys[1], rtol=1e-4, atol=1e-4)
    for a, b in zip(compiled_module.state_dict().values(), eager.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for m in (ref, eager, compiled_module):
        m.eval()
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(eager(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@needs_compile
@needs_cxx
def test_compile_dynamic_shapes():
    m = bt.BatchNorm2d(4)
    f = torch.compile(m, fullgraph=True, dynamic=True)
    for n in (2, 3, 5):
        x = rand(n, 4, 3, 3, seed=n)
        torch.testing.assert_close(f(x), F.batch_norm(x, None, None, m.weight, m.bias, True))


@needs_compile
def test_export():
    m = bt.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))).eval()
    ep = torch.export.export(m, (rand(2, 3, 4, 4),))
    assert any("bnorm.batch_norm_infer" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(rand(2, 3, 4, 4)), m(rand(2, 3, 4, 4)))


def _ulp(t, dtype):
    mant = 10 if dtype == torch.float16 else 7
    e = torch.floor(torch.log2(t.abs().clamp_min(2.0 ** -14)))
    return 2.0 ** (e - mant)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_half_precision_is_computed_by_bnorm(dtype, fmt, monkeypatch):
    if dtype == torch.bfloat16:
        pytest.importorskip("ml_dtypes")
    x = in_format(rand(8, 4, 5, 5, dtype=dtype), fmt).requires_grad_()
    m = bt.BatchNorm2d(4)  # float32 parameters and running statistics
    ref = torch.nn.BatchNorm2d(4)
    x2 = x.detach().clone().requires_grad_()
    y2 = ref(x2)
    # bnorm, not PyTorch's kernel: the fallback would call this
    monkeypatch.setattr(torch.nn.functional, "batch_norm",
                        lambda *a, **k: pytest.fail("fell back to PyTorch's kernel"))
    y = m(x)
    monkeypatch.undo()
    assert y.dtype == dtype and y.stride() == x.stride()
    # both round float32 arithmetic once: at most one unit apart
    err = (y.detach().float() - y2.detach().float()).abs() / _ulp(y2.detach().float(), dtype)
    assert float(err.max()) <= 1.0
    torch.testing.assert_close(m.running_mean, ref.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.running_var, ref.running_var, rtol=1e-5, atol=1e-6)
    g = in_format(rand(8, 4, 5, 5, dtype=dtype, seed=9), fmt)
    y.backward(g)
    y2.backward(g)
    assert x.grad.dtype == dtype and m.weight.grad.dtype == torch.float32
    # PyTorch's half backward rounds differently: a few units of the largest
    scale = float(x2.grad.float().abs().max())
    assert float((x.grad.float() - x2.grad.float()).abs().max()) <= 4 * float(_ulp(
        torch.tensor(scale), dtype))
    torch.testing.assert_close(m.weight.grad, ref.weight.grad, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(m.bias.grad, ref.bias.grad, rtol=1e-3, atol=1e-3)


def test_bfloat16_autocast_training_step():
    pytest.importorskip("ml_dtypes")
    torch.manual_seed(0)
    ref = conv_bn_relu()
    conv = bt.convert(copy.deepcopy(ref))
    x = rand(6, 3, 10, 10, seed=11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ref, y = ref(x), conv(x)
    assert y.dtype == y_ref.dtype
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=0.05, atol=0.05)
    y.float().square().mean().backward()
    y_ref.float().square().mean().backward()
    for (name, p), q in zip(conv.named_parameters(), ref.parameters()):
        assert p.grad is not None and p.grad.dtype == p.dtype, name
        torch.testing.assert_close(p.grad, q.grad, rtol=0.1, atol=0.05)
