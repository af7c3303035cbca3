"""Parity with PyTorch, the semantics oracle (skipped without torch)."""
import numpy as np
import pytest

import bnorm
from conftest import rel_err

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.torch

# Both sides are correct to a few float32 ulps; they differ in rounding.
TORCH_TOL = {np.float32: 1e-5, np.float64: 1e-12}


def check(a, b, dtype, what=""):
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    err = rel_err(a, b)
    assert err <= TORCH_TOL[dtype], f"{what}: {err:.3g} vs torch"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 7), (4, 3, 5, 6), (2, 3, 3, 4, 5)])
@pytest.mark.parametrize("training", [True, False])
def test_functional_batch_norm(rng, dtype, shape, training):
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    C = shape[1]
    w = rng.standard_normal(C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    rm = rng.standard_normal(C).astype(dtype)
    rv = rng.uniform(0.5, 2, C).astype(dtype)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    yt = F.batch_norm(torch.tensor(x), trm, trv, torch.tensor(w), torch.tensor(b),
                      training=training, momentum=0.2, eps=1e-4)
    y = bnorm.batch_norm(x, rm, rv, w, b, training=training, momentum=0.2, eps=1e-4)
    check(y, yt, dtype, "y")
    check(rm, trm, dtype, "running_mean")
    check(rv, trv, dtype, "running_var")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_autograd(rng, dtype, channels_last, training):
    shape = (4, 3, 5, 6)
    x = (rng.standard_normal(shape) * 3 - 2).astype(dtype)
    w = rng.standard_normal(3).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    rm = rng.standard_normal(3).astype(dtype)
    rv = rng.uniform(0.5, 2, 3).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    if training:
        yt = F.batch_norm(tx, None, None, tw, tb, training=True, eps=1e-5)
    else:
        yt = F.batch_norm(tx, torch.tensor(rm), torch.tensor(rv), tw, tb,
                          training=False, eps=1e-5)
    yt.backward(torch.tensor(g))

    axis = 1
    xa, ga = x, g
    if channels_last:
        xa = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        ga = np.ascontiguousarray(g.transpose(0, 2, 3, 1))
        axis = -1
    if training:
        y, sm, si = bnorm.batch_norm_train(xa, w, b, 1e-5, axis=axis)
    else:
        y = bnorm.batch_norm(xa, rm, rv, w, b, eps=1e-5, axis=axis)
        sm, si = rm, (1 / np.sqrt(rv.astype(np.float64) + 1e-5)).astype(dtype)
    dx, dw, db = bnorm.batch_norm_backward(ga, xa, sm, si, w, axis=axis,
                                           training=training)
    if channels_last:
        y, dx = y.transpose(0, 3, 1, 2), dx.transpose(0, 3, 1, 2)
    check(y, yt, dtype, "y")
    check(dx, tx.grad, dtype, "dx")
    check(dw, tw.grad, dtype, "dweight")
    check(db, tb.grad, dtype, "dbias")


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm2d_state_over_training_steps(rng, momentum, dtype):
    tlayer = torch.nn.BatchNorm2d(4, momentum=momentum, dtype=torch.float64
                                  if dtype == np.float64 else torch.float32)
    layer = bnorm.BatchNorm(4, momentum=momentum, dtype=dtype)
    with torch.no_grad():
        tlayer.weight.copy_(torch.tensor(rng.uniform(0.5, 2, 4)))
        tlayer.bias.copy_(torch.tensor(rng.standard_normal(4)))
    layer.load_state_dict({k: v.numpy() for k, v in tlayer.state_dict().items()})
    for step in range(5):
        x = (rng.standard_normal((6, 4, 5, 5)) * (step + 1) + step).astype(dtype)
        g = rng.standard_normal(x.shape).astype(dtype)
        tx = torch.tensor(x, requires_grad=True)
        yt = tlayer(tx)
        yt.backward(torch.tensor(g))
        y = layer(x)
        dx = layer.backward(g)
        check(y, yt, dtype, f"y step {step}")
        check(dx, tx.grad, dtype, f"dx step {step}")
        check(layer.grad_weight, tlayer.weight.grad, dtype, "grad_weight")
        check(layer.grad_bias, tlayer.bias.grad, dtype, "grad_bias")
        tlayer.weight.grad = tlayer.bias.grad = None
        for k, v in tlayer.state_dict().items():
            mine = layer.state_dict()[k]
            if k == "num_batches_tracked":
                assert int(mine) == int(v)
            else:
                check(mine, v, dtype, k)
    # eval mode: running statistics, frozen backward
    tlayer.eval()
    layer.eval()
    x = rng.standard_normal((3, 4, 5, 5)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    yt = tlayer(tx)
    yt.backward(torch.tensor(g))
    check(layer(x), yt, dtype, "eval y")
    check(layer.backward(g), tx.grad, dtype, "eval dx")
    check(layer.grad_weight, tlayer.weight.grad, dtype, "eval grad_weight")
    # and the state loads back into torch
    t2 = torch.nn.BatchNorm2d(4, dtype=tlayer.weight.dtype)
    t2.load_state_dict({k: torch.from_numpy(np.asarray(v))
                        for k, v in layer.state_dict().items()})


def test_m_equals_one_error_matches_torch():
    x = np.zeros((1, 3), np.float32)
    with pytest.raises(ValueError) as ours:
        bnorm.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32),
                         training=True)
    with pytest.raises(ValueError) as theirs:
        F.batch_norm(torch.zeros(1, 3), torch.zeros(3), torch.ones(3), training=True)
    prefix = "Expected more than 1 value per channel when training"
    assert str(ours.value).startswith(prefix) and str(theirs.value).startswith(prefix)
