"""bnorm.torch (autograd function and drop-in modules), DLPack input, and
threadpoolctl. Skips what needs torch or threadpoolctl when absent."""
import copy

import numpy as np
import pytest

import bnorm

torch = pytest.importorskip("torch")
import bnorm.torch as bt  # noqa: E402

pytestmark = pytest.mark.torch


def rand(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# -- the autograd function ---------------------------------------------------
GRADCHECK_SHAPES = [((6, 3), False), ((4, 3, 5), False), ((2, 3, 4, 5), False),
                    ((2, 3, 4, 5), True), ((2, 3, 2, 3, 2), False)]


@pytest.mark.parametrize("shape,channels_last", GRADCHECK_SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(shape, training, channels_last):
    x = rand(*shape) * 2 + 1
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    C = shape[1]
    w = (rand(C, seed=1) * 0.5 + 1).requires_grad_(True)
    b = rand(C, seed=2).requires_grad_(True)
    rm, rv = rand(C, seed=3) * 0.1, rand(C, seed=4).abs() + 0.5

    def f(x, w, b):
        return bt.batch_norm(x, None if training else rm, None if training else rv, w, b,
                             training=training)

    assert torch.autograd.gradcheck(f, (x, w, b), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_function_matches_torch(dtype, tol, channels_last):
    x = rand(4, 6, 5, 7, dtype=dtype) * 3 + 2
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w, b = rand(6, dtype=dtype, seed=1), rand(6, dtype=dtype, seed=2)
    rm1, rv1 = torch.zeros(6, dtype=dtype), torch.ones(6, dtype=dtype)
    rm2, rv2 = rm1.clone(), rv1.clone()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya = bt.batch_norm(xa, rm1, rv1, w, b, training=True, momentum=0.3)
    yb = torch.nn.functional.batch_norm(xb, rm2, rv2, w, b, training=True, momentum=0.3)
    if channels_last:  # zero-copy in and out: the output keeps the layout
        assert ya.is_contiguous(memory_format=torch.channels_last)
    g = rand(*x.shape, dtype=dtype, seed=5)
    ya.backward(g)
    yb.backward(g)
    for a, b_ in [(ya, yb), (rm1, rm2), (rv1, rv2), (xa.grad, xb.grad)]:
        err = (a.detach().double() - b_.detach().double()).abs().max().item()
        assert err <= tol * max(b_.detach().abs().max().item(), 1)


# -- the modules ---------------------------------------------------------------
@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (8, 4)), ("BatchNorm1d", (8, 4, 6)),
                                       ("BatchNorm2d", (4, 4, 5, 5)),
                                       ("BatchNorm3d", (2, 4, 3, 3, 3))])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine,track", [(True, True), (False, True), (True, False)])
def test_modules_match_torch_nn(cls, shape, momentum, affine, track):
    ref = getattr(torch.nn, cls)(4, momentum=momentum, affine=affine,
                                 track_running_stats=track).double()
    ours = getattr(bt, cls)(4, momentum=momentum, affine=affine,
                            track_running_stats=track).double()
    assert isinstance(ours, getattr(torch.nn, cls))
    ours.load_state_dict(ref.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    for step in range(3):
        x = rand(*shape, seed=step) * 2 + 1
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = ours(xa), ref(xb)
        torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
        g = rand(*shape, seed=10 + step)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-12)
    for (k, a), (_, b_) in zip(ours.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b_, rtol=1e-12, atol=1e-12, msg=k)
    if affine:
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-10, atol=1e-12)
    ours.eval()
    ref.eval()
    x = rand(*shape, seed=99).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    ya, yb = ours(x), ref(x2)
    torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
    ya.sum().backward()
    yb.sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-12)


def test_unsupported_tensors_fall_back_to_torch():
    m = bt.BatchNorm2d(3).to(torch.bfloat16)
    x = rand(2, 3, 4, 4).to(torch.bfloat16)
    ref = torch.nn.BatchNorm2d(3).to(torch.bfloat16)
    torch.testing.assert_close(m(x), ref(x))


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 6, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(6)
        self.conv2 = torch.nn.Conv2d(6, 8, 3, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)
        self.bn3 = torch.nn.BatchNorm1d(10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.fc(x.flatten(1)))


def test_convert_and_train_a_small_net_like_torch():
    torch.manual_seed(0)
    ref = SmallNet().double()
    ours = copy.deepcopy(ref)
    params_before = [id(p) for p in ours.parameters()]
    assert bt.convert(ours) is ours
    assert type(ours.bn1) is bt.BatchNorm2d and type(ours.bn3) is bt.BatchNorm1d
    assert [id(p) for p in ours.parameters()] == params_before  # the same objects
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for step in range(8):
        x = torch.randn(16, 1, 8, 8, generator=gen, dtype=torch.float64)
        target = torch.randint(0, 10, (16,), generator=gen)
        losses = []
        for net, opt in [(ref, opt_ref), (ours, opt_ours)]:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-10, abs=1e-12), step
    for (k, a), (_, b_) in zip(ours.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b_, rtol=1e-9, atol=1e-11, msg=k)
    ours.eval()
    ref.eval()
    x = torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-9, atol=1e-11)


# -- DLPack ------------------------------------------------------------------
def test_functions_accept_dlpack_tensors_without_copies():
    x = rand(4, 3, 5, dtype=torch.float32)
    rm, rv = torch.zeros(3), torch.ones(3)
    y, sm, si = bnorm.batch_norm_train(x, running_mean=rm, running_var=rv, momentum=1.0)
    want, wsm, wsi = bnorm.batch_norm_train(x.numpy())
    assert isinstance(y, np.ndarray) and np.array_equal(y, want)
    torch.testing.assert_close(rm, torch.from_numpy(wsm))  # updated in place
    # channels-last tensors are read in place, like channels-last NumPy views
    xc = rand(2, 3, 4, 5, dtype=torch.float32).to(memory_format=torch.channels_last)
    yc = bnorm.batch_norm(xc, rm, rv)
    assert np.array_equal(yc, bnorm.batch_norm(xc.numpy(), rm.numpy(), rv.numpy()))
    out = torch.empty(4, 3, 5)
    bnorm.batch_norm(x, rm, rv, out=out)
    assert np.array_equal(out.numpy(), bnorm.batch_norm(x.numpy(), rm.numpy(), rv.numpy()))
    dx, dw, db = bnorm.batch_norm_backward(torch.ones_like(x), x, sm, si)
    assert np.allclose(db, 20.0)


def test_a_tensor_that_requires_grad_gets_a_clear_error():
    x = rand(4, 3, dtype=torch.float32).requires_grad_(True)
    with pytest.raises(TypeError, match="x: cannot be read through DLPack"):
        bnorm.batch_norm_train(x)
