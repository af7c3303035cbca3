"""bnorm.torch.fuse and the fused operators under it: the same function as
the unfused model (float64, where bnorm and PyTorch agree to rounding), the
same parameters and state_dict, the patterns found and left, torch.compile,
channels_last and autocast; the end-to-end benchmark's networks."""

import copy
import operator
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import bnorm.torch as bt  # noqa: E402
from bnorm.tools import models  # noqa: E402

OPS = torch.ops.bnorm
needs_cxx = pytest.mark.skipif(
    not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")),
    reason="torch.compile needs a C++ compiler (Inductor)")


def rand(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def no_dropout(m):
    for mod in m.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0
    return m


def step(model, x, opt=None):
    """One training step's output, parameter gradients and input gradient."""
    x = x.detach().clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    y = model(x)
    (y.square().mean() + y.mean()).backward()
    if opt is not None:
        opt.step()
    return y.detach(), [p.grad.clone() for p in model.parameters()], x.grad


def assert_close_all(a, b, rtol=1e-9, atol=1e-9):
    """Output, input gradient and every parameter gradient of two steps
    agree, each to `atol` times its largest magnitude (and rtol)."""
    assert len(a[1]) == len(b[1])
    for ta, tb in [(a[0], b[0]), (a[2], b[2]), *zip(a[1], b[1])]:
        torch.testing.assert_close(ta, tb, rtol=rtol, atol=atol * max(1.0, ta.abs().max().item()))


# ---- the networks ----------------------------------------------------------------

def test_networks_have_the_usual_parameter_counts():
    # the counts of the common torchvision definitions
    counts = {models.resnet18: 11_689_512, models.resnet50: 25_557_032,
              models.mobilenet_v2: 3_504_872, models.densenet121: 7_978_856}
    for build, n in counts.items():
        assert sum(p.numel() for p in build().parameters()) == n, build.__name__
    with pytest.raises(ValueError, match="unknown model"):
        models.build("vgg16")


def test_patterns_found_in_the_networks():
    def kinds(name):
        out = {}
        for v in bt.fuse(models.build(name, 10)).bnorm_fusions.values():
            k = "unfused" if v.startswith("unfused") else v
            out[k] = out.get(k, 0) + 1
        return out
    # ResNet-18: stem and first BN of each block + ReLU, second BN + add + ReLU;
    # the three shortcut BNs feed the fused addition as its residual
    assert kinds("resnet18") == {"relu": 9, "add+relu": 8, "unfused": 3}
    assert kinds("resnet50") == {"relu": 33, "add+relu": 16, "unfused": 4}
    assert kinds("densenet_small") == {"relu": 121}
    # MobileNetV2: the stem, every expansion and depthwise BN and the last
    # one + ReLU6 (35); 10 projection BNs + the block's addition; the other
    # 7 projections have neither
    mb = bt.fuse(models.build("mobilenet_v2", 10)).bnorm_fusions
    assert kinds("mobilenet_v2") == {"relu6": 35, "add": 10, "unfused": 7}
    assert mb["features.0.1"] == "relu6"
    # LeakyReLU has no fused kernel here (convert_inplace_abn takes it)
    lk = bt.fuse(models.build("resnet18_leaky", 10)).bnorm_fusions
    assert "LeakyReLU" in lk["bn1"]


def test_fuse_computes_every_plain_batch_norm_with_bnorm():
    # fused or not, no batch norm of PyTorch's own classes is left in a fused
    # model: the unfused ones become bnorm's plain modules (as convert makes
    # them), sharing the original's tensors; the original is not changed
    for name in ("resnet18", "mobilenet_v2", "resnet18_leaky"):
        model = models.build(name, 10)
        fused = bt.fuse(model)
        kinds = {type(m) for m in fused.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        assert kinds <= {bt.BatchNorm2d, bt.BatchNormAct2d}, (name, kinds)
        assert all(type(m) is nn.BatchNorm2d for m in model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm)), name
        assert [n for n, _ in fused.named_parameters()] == \
            [n for n, _ in model.named_parameters()]
        assert all(a is b for a, b in zip(fused.parameters(), model.parameters()))
    # a lone batch norm: bnorm's module with its tensors, the original kept
    bn = nn.BatchNorm1d(3)
    f = bt.fuse(bn)
    assert type(f) is bt.BatchNorm1d and type(bn) is nn.BatchNorm1d
    assert f.weight is bn.weight and "" in f.bnorm_fusions
    assert not hasattr(bn, "bnorm_fusions")
    # a subclass (SyncBatchNorm) is left as it is
    sync = nn.Sequential(nn.SyncBatchNorm(3), nn.ReLU())
    assert type(bt.fuse(sync).get_submodule("0")) is nn.SyncBatchNorm


# ---- the same function ------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet_small"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_network_trains_like_the_original_in_float64(name, channels_last):
    torch.manual_seed(0)
    ref = no_dropout(models.build(name, 10)).double()
    fused = bt.fuse(copy.deepcopy(ref))
    x = rand(3, 3, 32, 32, seed=1)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
        ref = ref.to(memory_format=torch.channels_last)
        fused = fused.to(memory_format=torch.channels_last)
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in (ref, fused)]
    # one step (a second one through updated weights amplifies rounding: the
    # last stage's batch norms see 3 values per channel here)
    a = step(ref, x, opts[0])
    b = step(fused, x, opts[1])
    # (MobileNetV2's depthwise layers amplify the last-bit differences of
    # another summation order, now in all of its 52 batch norms, to ~4e-9 of
    # a gradient's largest value)
    tol = 1e-8 if name == "mobilenet_v2" else 1e-9
    assert_close_all(a, b, rtol=tol, atol=tol)
    if channels_last:
        assert b[2].is_contiguous(memory_format=torch.channels_last)
    for (ka, va), (kb, vb) in zip(ref.state_dict().items(), fused.state_dict().items()):
        assert ka == kb
        # (the update moves each weight by lr * its gradient, which agrees to
        # 1e-9 of the largest gradient)
        torch.testing.assert_close(va, vb, rtol=1e-7, atol=1e-7)
    ref.eval()
    fused.eval()
    # (after the update, through weights that agree to 1e-7; MobileNetV2's
    # depthwise layers amplify that to ~3e-7 of the largest output)
    with torch.no_grad():
        want = ref(x)
        torch.testing.assert_close(fused(x), want, rtol=1e-6, atol=1e-6 * want.abs().max().item())
    # eval mode with gradients: the frozen-statistics backward of the fused op
    # (MobileNetV2 channels_last: 2e-7 of the largest gradient, as for
    # convert alone, 1.3e-7: the amplified rounding of the step before)
    tol = 1e-6 if name == "mobilenet_v2" else 1e-7
    assert_close_all(step(ref, x), step(fused, x), rtol=tol, atol=tol)


@pytest.mark.slow
def test_fused_float32_is_as_close_to_float64_as_pytorch_is():
    torch.manual_seed(0)
    m64 = models.build("resnet18", 10).double()
    x = rand(4, 3, 32, 32, seed=2)
    exact = step(m64, x)
    native = step(copy.deepcopy(m64).float(), x.float())
    fused = step(bt.fuse(copy.deepcopy(m64).float()), x.float())

    def err(a):
        return max(((g - e).abs().max() / e.abs().max()).item() for g, e in zip(a[1], exact[1]))
    # (measured: both about 1e-5 on this network; PyTorch's own is the bound)
    assert err(fused) <= max(3 * err(native), 1e-4)


def test_parameters_and_state_dict_are_the_originals():
    model = models.build("resnet18", 10)
    fused = bt.fuse(model)
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert all(p is q for p, q in zip(fused.parameters(), model.parameters()))
    assert list(fused.state_dict()) == list(model.state_dict())
    assert all(a is b for a, b in zip(fused.buffers(), model.buffers()))
    # the original is unchanged: PyTorch's classes, its own forward
    assert type(model.layer1[0].bn2) is nn.BatchNorm2d
    assert type(fused.layer1[0].bn2) is bt.BatchNormAct2d
    assert fused.layer1[0].bn2.activation == "relu"
    # a checkpoint of either loads into the other
    other = models.build("resnet18", 10)
    other.load_state_dict(fused.state_dict())
    fused2 = bt.fuse(models.build("resnet18", 10))
    fused2.load_state_dict(other.state_dict())
    x = rand(2, 3, 32, 32, dtype=torch.float32)
    for m in (model, other, fused, fused2):
        m.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused2(x), model(x), rtol=1e-5, atol=1e-5)


# ---- the patterns -----------------------------------------------------------------

class Patterns(nn.Module):
    def __init__(self):
        super().__init__()
        self.bns = nn.ModuleList(nn.BatchNorm2d(4) for _ in range(8))
        self.shared = nn.BatchNorm2d(4)

    def forward(self, x):
        b = self.bns
        a = F.relu(b[0](x))                  # relu
        c = torch.relu(b[1](a))              # relu
        d = b[2](c).relu_()                  # relu
        e = b[3](d)
        e += c                               # add (bn on the left) ...
        e = F.relu(e, inplace=True)          # ... + relu
        f = torch.add(b[4](e), d)            # add without relu
        g = f.add_(b[5](d))                  # in place into another tensor: left
        h = b[6](g)
        h2 = h * 2 + h                       # two uses: left
        i = self.shared(h2) + self.shared(h2)  # called twice: left
        return torch.sigmoid(b[7](i)) + g


def test_pattern_table():
    torch.manual_seed(0)
    model = Patterns().double()
    fused = bt.fuse(copy.deepcopy(model))
    rep = fused.bnorm_fusions
    assert [rep[f"bns.{k}"] for k in range(5)] == ["relu", "relu", "relu", "add+relu", "add"]
    assert rep["bns.5"].startswith("unfused")
    assert "several uses" in rep["bns.6"]
    assert "more than once" in rep["shared"]
    assert "sigmoid" in rep["bns.7"]
    # the ones left unfused compute with bnorm's plain module
    for name in ("bns.5", "bns.6", "bns.7", "shared"):
        assert type(fused.get_submodule(name)) is bt.BatchNorm2d, name
    x = rand(3, 4, 5, 5, seed=3)
    assert_close_all(step(model, x), step(fused, x))


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.block(x)
        if y.sum() > 0:  # data-dependent: fx cannot trace this module
            y = y * 2
        return F.relu(self.bn(y))


def test_relu6_patterns_compute_the_same_function():
    """BN + ReLU6 (module and F.relu6) and BN + add + ReLU6 fuse, and give
    the original's step in float64, train and eval, NCHW and channels_last."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, padding=1)
            self.bns = nn.ModuleList(nn.BatchNorm2d(6) for _ in range(3))
            self.act = nn.ReLU6(inplace=True)
            for bn in self.bns:  # a scale that takes values past 6
                nn.init.uniform_(bn.weight, 3, 5)

        def forward(self, x):
            h = self.conv(x)
            a = self.act(self.bns[0](h))               # relu6 (module)
            b = F.relu6(self.bns[1](a))                # relu6 (function)
            return F.relu6(self.bns[2](b) + a)         # add+relu6

    torch.manual_seed(0)
    ref = Net().double()
    fused = bt.fuse(copy.deepcopy(ref))
    assert list(fused.bnorm_fusions.values()) == ["relu6", "relu6", "add+relu6"]
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = rand(4, 3, 8, 8, seed=3).to(memory_format=fmt)
        r, f = ref.to(memory_format=fmt), fused.to(memory_format=fmt)
        r.train(), f.train()
        a, b = step(r, x), step(f, x)
        assert (a[0] == 6).any() and (a[0] == 0).any()
        assert_close_all(a, b)
        r.eval(), f.eval()
        assert_close_all(step(r, x), step(f, x))


def test_a_model_that_does_not_trace_has_its_children_fused():
    torch.manual_seed(0)
    model = Untraceable().double()
    fused = bt.fuse(model)
    rep = fused.bnorm_fusions
    assert rep["block.1"] == "relu"
    assert rep["bn"].startswith("unfused: the module around it does not trace")
    assert type(model.block) is nn.Sequential and type(model.block[1]) is nn.BatchNorm2d
    # the one left unfused is bnorm's, the original's is still PyTorch's
    assert type(fused.bn) is bt.BatchNorm2d and type(model.bn) is nn.BatchNorm2d
    assert fused.bn.running_mean is model.bn.running_mean
    x = rand(2, 3, 6, 6, seed=4)
    assert_close_all(step(model, x), step(fused, x))


# ---- the operators ----------------------------------------------------------------

@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_act_against_finite_differences(residual, activation, training):
    x = rand(3, 4, 3, 3, seed=5).requires_grad_()
    r = rand(3, 4, 3, 3, seed=6).requires_grad_() if residual else None
    # (for the ReLU6, a scale that takes values past 6)
    w = (rand(4, seed=7) * (5 if activation == "relu6" else 1)).requires_grad_()
    b = rand(4, seed=8).requires_grad_()
    rm, rv = rand(4, seed=9), rand(4, seed=10).abs() + 0.5

    def f(x, r, w, b):
        return bt.batch_norm_act(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5,
                                 residual=r, activation=activation)
    if activation == "relu6":
        with torch.no_grad():
            y = f(x, r, w, b)
        assert (y == 6).any() and (y == 0).any()
    torch.autograd.gradcheck(f, (x, r, w, b), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fmt", ["nchw", "nhwc"])
def test_opcheck_fused_ops(dtype, fmt):
    c = 5
    x, r, dy = (rand(2, c, 3, 4, dtype=dtype, seed=s) for s in (1, 2, 3))
    if fmt == "nhwc":
        x, r, dy = (t.to(memory_format=torch.channels_last) for t in (x, r, dy))
    pd = torch.float64 if dtype == torch.float64 else torch.float32
    w, b = rand(c, dtype=pd, seed=4), rand(c, dtype=pd, seed=5)
    rm, rv = torch.zeros(c, dtype=pd), torch.ones(c, dtype=pd)
    mean, invstd = rand(c, dtype=pd, seed=6), rand(c, dtype=pd, seed=7).abs() + 0.5
    y = torch.relu(x)
    for op, args in [
        (OPS.batch_norm_act_train.default, (x, r, w, b, rm, rv, 0.1, 1e-5, "relu")),
        (OPS.batch_norm_act_train.default, (x, None, w, b, None, None, 0.1, 1e-5, "relu6")),
        (OPS.batch_norm_act_train.default, (x, r, None, None, rm, rv, 0.1, 1e-5, "identity")),
        (OPS.batch_norm_act_infer.default, (x, r, rm, rv, w, b, 1e-5, "relu")),
        (OPS.batch_norm_act_infer.default, (x, None, rm, rv, w, b, 1e-5, "relu6")),
        (OPS.batch_norm_act_backward.default, (dy, x, y, mean, invstd, w, b, True, "relu",
                                               True)),
        (OPS.batch_norm_act_backward.default, (dy, x, y, mean, invstd, w, b, True, "relu6",
                                               True)),
        (OPS.batch_norm_act_backward.default, (dy, x, None, mean, invstd, w, b, False, "relu",
                                               False)),
    ]:
        torch.library.opcheck(op, args, test_utils=(
            "test_schema", "test_autograd_registration", "test_faketensor",
            "test_aot_dispatch_dynamic"))


def test_fallback_where_bnorm_does_not_compute():
    # residual of another dtype: PyTorch's ops, the same function
    x = rand(2, 3, 4, 4, dtype=torch.float32)
    r = rand(2, 3, 4, 4, seed=1)
    rm, rv = torch.zeros(3), torch.ones(3)
    y = bt.batch_norm_act(x, rm, rv, training=False, residual=r)
    torch.testing.assert_close(y, torch.relu(F.batch_norm(x, rm, rv) + r))
    with pytest.raises(ValueError, match="activation"):
        bt.batch_norm_act(x, rm, rv, activation="gelu")
    with pytest.raises(ValueError, match="running_mean"):
        bt.batch_norm_act(x, None, None, training=False)


def test_relu_without_residual_keeps_no_output_for_backward():
    # the mask is recomputed from x: the output is not held by autograd
    held = []

    def pack(t):
        held.append(t)
        return t
    x = rand(4, 8, 6, 6, dtype=torch.float32, seed=2).requires_grad_()
    m = bt.BatchNormAct2d(8)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = m(x)
    assert not any(t.data_ptr() == y.data_ptr() for t in held)
    assert sum(t.numel() for t in held) < x.numel() + 100
    y.sum().backward()


@pytest.mark.slow
@needs_cxx
def test_compile_fullgraph_of_a_fused_network():
    # (a small network of ResNet blocks: BN+ReLU, BN+add+ReLU and a
    # projection shortcut, compiled in seconds rather than a minute)
    torch.manual_seed(0)
    relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
    ref = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), relu(),
                        models.BasicBlock(8, 8, 1, relu), models.BasicBlock(8, 16, 2, relu),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).double()
    fused = bt.fuse(copy.deepcopy(ref)).to(memory_format=torch.channels_last)
    assert sorted(fused.bnorm_fusions.values()).count("add+relu") == 2
    compiled = torch.compile(fused, fullgraph=True)  # a graph break raises
    x = rand(4, 3, 16, 16).to(memory_format=torch.channels_last)
    assert_close_all(step(ref, x), step(compiled, x), rtol=1e-7, atol=1e-7)


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.slow
def test_bfloat16_autocast_step_of_a_fused_network():
    pytest.importorskip("ml_dtypes")
    torch.manual_seed(0)
    ref = models.build("resnet18", 10)
    x = rand(4, 3, 64, 64, dtype=torch.float32)
    exact = step(ref, x)
    errs = []
    for m in (copy.deepcopy(ref), bt.fuse(copy.deepcopy(ref))):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = step(m, x)
        errs.append((rel(got[0], exact[0]), max(rel(g, e) for g, e in zip(got[1], exact[1]))))
        assert all(torch.isfinite(g).all() for g in got[1])
    (native_y, native_g), (fused_y, fused_g) = errs
    # bfloat16 has 8 bits: the fused network is as close to float32 as
    # PyTorch's own bfloat16 autocast is (within a factor of 2)
    assert fused_y <= 2 * native_y + 1e-3 and fused_g <= 2 * native_g + 1e-3, errs


def test_model_benchmark_pairs_its_profiled_rounds(tmp_path, capsys):
    # the end-to-end benchmark on a tiny input: every eager configuration
    # has _PROFILE_ROUNDS profiled steps, native's ceiling is exactly 1, and
    # the share and ceiling it prints are the medians of the paired rounds
    import json
    import statistics
    from bnorm.tools import modelbench
    out = tmp_path / "m.json"
    assert modelbench.run("resnet18", batch=2, size=32, rounds=1, threads=1,
                          dtypes=("float32",), formats=("nchw",), json_path=str(out),
                          num_classes=10) == 0
    rows = {r["config"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"native", "convert", "fuse"}
    assert rows["native"]["ceiling"] == pytest.approx(1.0)
    for r in rows.values():
        assert len(r["profiled_bn_us"]) == modelbench._PROFILE_ROUNDS
        assert len(r["profiled_step_us"]) == modelbench._PROFILE_ROUNDS
        assert 0 < r["bn_share"] < 1
        assert r["bn_share"] == pytest.approx(statistics.median(
            b / t for b, t in zip(r["profiled_bn_us"], r["profiled_step_us"])))
    nat, fu = rows["native"], rows["fuse"]
    ceil = statistics.median(
        1 / ((1 - nb / nt) + (nb / nt) * cb / nb)
        for nb, nt, cb in zip(nat["profiled_bn_us"], nat["profiled_step_us"],
                              fu["profiled_bn_us"]))
    assert fu["ceiling"] == pytest.approx(ceil)
    assert "medians over 3 profiled rounds" in capsys.readouterr().out


def _native_and(tmp_path, **extra):
    """The rows of a tiny float32 NCHW ResNet-18 model benchmark of native
    and what the extra options add, by configuration."""
    import json
    from bnorm.tools import modelbench
    out = tmp_path / "m.json"
    assert modelbench.run("resnet18", batch=2, size=32, rounds=2, threads=1,
                          dtypes=("float32",), formats=("nchw",), variants=["native"],
                          json_path=str(out), num_classes=10, **extra) == 0
    return {r["config"]: r for r in json.loads(out.read_text())["rows"]}


def test_model_benchmark_aa_and_bound_configurations(tmp_path):
    import statistics
    from bnorm.tools import modelbench
    # --aa: a second, unconverted copy of the native model, timed and
    # profiled like the others, its speedup native's step over its own
    rows = _native_and(tmp_path, aa=True)
    assert set(rows) == {"native", "native-aa"}
    nat, aa = rows["native"], rows["native-aa"]
    assert aa["train_speedup"] == pytest.approx(statistics.median(
        a / b for a, b in zip(nat["train_ms"], aa["train_ms"])))
    assert len(aa["profiled_bn_us"]) == modelbench._PROFILE_ROUNDS
    # the same network: the same bytes saved for the backward
    assert aa["saved_bytes"] == nat["saved_bytes"]
    # --bound: the network with no batch norm and no activation module
    rows = _native_and(tmp_path, bound=True)
    assert set(rows) == {"native", "free-bn"}
    free = models.build("resnet18", 10)
    modelbench._free_batch_norm(free)
    assert not any(isinstance(m, modelbench._FREE) for m in free.modules())
    # 20 batch norms, 17 ReLUs (the stem's and two per block)
    assert sum(isinstance(m, nn.Identity) for m in free.modules()) == 20 + 17
    # it holds less for the backward (no batch norm inputs, no masks)
    assert rows["free-bn"]["saved_bytes"] < rows["native"]["saved_bytes"]
    # without batch norms ResNet-50's outputs grow to ~1e5 here (and its
    # training steps overflow); rescaled once, to a unit output per layer,
    # they are of unit order
    torch.manual_seed(0)
    deep = models.build("resnet50", 10)
    modelbench._free_batch_norm(deep)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert float(deep(x).std()) > 1e3
        modelbench._unit_scale(deep, x)
        out = deep(x)
    assert torch.isfinite(out).all() and 0.1 < float(out.std()) < 10
    with pytest.raises(ValueError, match="unknown configurations"):
        modelbench.run("resnet18", batch=2, size=32, rounds=1, variants=["native", "nope"])


def test_model_benchmark_copy_floor_counts_resnet18s_batch_norms(tmp_path):
    # the copy floor's inputs: ResNet-18's 20 batch norms as the fused model
    # calls them (the stem's and 8 first-in-block ones BN + ReLU, 8 BN + add
    # + ReLU, 3 plain shortcut ones), their bytes, and PERF's copies per
    # pattern; and the copy ceiling recomputed from the JSON
    import json
    import statistics
    from bnorm.tools import modelbench
    out = tmp_path / "m.json"
    assert modelbench.run("resnet18", batch=2, size=32, rounds=1, threads=1,
                          dtypes=("float32",), formats=("channels_last",),
                          variants=["native", "fuse"], json_path=str(out),
                          num_classes=10) == 0
    doc = json.loads(out.read_text())
    (floor,) = doc["bn_floors"]
    calls = floor["calls"]
    kinds = [(c["activation"], c["residual"]) for c in calls]
    assert kinds.count(("relu", False)) == 9
    assert kinds.count(("relu", True)) == 8
    assert kinds.count((None, False)) == 3
    assert len(calls) == 20
    stem = calls[0]
    assert stem["shape"] == [2, 64, 16, 16] and stem["nbytes"] == 2 * 64 * 16 * 16 * 4
    # (a 1x1 map is contiguous as well: bnorm reads it as planar)
    assert all(c["channels_last"] for c in calls if c["shape"][2] * c["shape"][3] > 1)
    # tensors this small sit in the last-level cache: forward 1 copy,
    # backward 1.5, and with a residual and a ReLU 1.5 more
    for c in calls:
        assert c["copies"] == (4.0 if c["residual"] else 2.5)
    assert 0 < floor["floor_us"] and 0 < floor["memory_floor_us"]
    rows = {r["config"]: r for r in doc["rows"]}
    nat = rows["native"]
    want = statistics.median(nt / (nt - nb + floor["floor_us"])
                             for nb, nt in zip(nat["profiled_bn_us"], nat["profiled_step_us"]))
    for r in rows.values():
        assert r["copy_ceiling"] == pytest.approx(want)
        assert r["bn_floor_us"] == floor["floor_us"]
