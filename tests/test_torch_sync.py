"""bnorm.torch.SyncBatchNorm over gloo on CPU tensors: 2 and 3 processes with
uneven shards (one empty with 3) must give the batch norm of the whole batch
in one process (float64, within 1e-12), the same running statistics on every
rank, and a DistributedDataParallel net made with convert_sync_batchnorm must
train identically on every rank. State dicts load into PyTorch's modules.
(Skipped without torch.)"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import bnorm.torch as bt  # noqa: E402

pytestmark = pytest.mark.torch
WORKER = Path(__file__).parent / "distributed" / "torch_sync_worker.py"
sys.path.insert(0, str(WORKER.parent))
import torch_sync_worker as tsw  # noqa: E402


def rel(a, ref):
    ref = np.asarray(ref, np.float64)
    if ref.size == 0:
        return 0.0
    return float(np.max(np.abs(np.asarray(a) - ref)) / max(np.max(np.abs(ref)), 1e-300))


def run_ranks(world, tmp_path):
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(world), str(store),
                               str(tmp_path / f"rank{r}.npz")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a rank hung")
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o
    return [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(world)]


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_sync_batchnorm_equals_one_process_on_the_whole_batch(world, tmp_path):
    ranks = run_ranks(world, tmp_path)
    # one process, the whole batch, PyTorch's own BatchNorm2d
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tsw.N, tsw.C, tsw.H, tsw.W, generator=g, dtype=torch.float64) * 3 + 1
    dy = torch.randn(tsw.N, tsw.C, tsw.H, tsw.W, generator=g, dtype=torch.float64)
    ref = torch.nn.BatchNorm2d(tsw.C).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64))
        ref.bias.copy_(torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64))
    for step in range(2):
        xr = x.clone().requires_grad_()
        ref.weight.grad = ref.bias.grad = None
        y = ref(xr)
        (y * dy).sum().backward()
        assert rel(np.concatenate([r[f"y{step}"] for r in ranks]), y.detach()) <= 1e-12
        assert rel(np.concatenate([r[f"dx{step}"] for r in ranks]), xr.grad) <= 1e-12
        # each rank holds its shard's part of the gradients of weight and bias
        assert rel(sum(r[f"dw{step}"] for r in ranks), ref.weight.grad) <= 1e-12
        assert rel(sum(r[f"db{step}"] for r in ranks), ref.bias.grad) <= 1e-12
    for r in ranks:
        assert rel(r["running_mean"], ref.running_mean) <= 1e-12
        assert rel(r["running_var"], ref.running_var) <= 1e-12
        assert np.array_equal(r["running_mean"], ranks[0]["running_mean"])
        assert np.array_equal(r["running_var"], ranks[0]["running_var"])
        ref.eval()
        assert rel(r["y_eval"], ref(x[:2]).detach()) <= 1e-12
        ref.train()
    # the data-parallel net: every rank ends with the same parameters
    for r in ranks[1:]:
        for k in ranks[0]:
            if k.startswith("net."):
                np.testing.assert_allclose(r[k], ranks[0][k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_module_state_and_conversion():
    m = bt.SyncBatchNorm(4, eps=1e-3, momentum=0.2)
    assert isinstance(m, torch.nn.SyncBatchNorm)
    sd = m.state_dict()
    torch.nn.SyncBatchNorm(4).load_state_dict(sd)
    torch.nn.BatchNorm2d(4).load_state_dict(sd)
    m.load_state_dict(torch.nn.BatchNorm2d(4).state_dict())
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4),
                              torch.nn.Sequential(bt.BatchNorm1d(2)))
    w = net[1].weight
    conv = bt.SyncBatchNorm.convert_sync_batchnorm(net)
    assert type(conv[1]) is bt.SyncBatchNorm and type(conv[2][0]) is bt.SyncBatchNorm
    assert conv[1].weight is w  # the same parameters
    assert type(bt.convert_sync_batchnorm(torch.nn.BatchNorm3d(2))) is bt.SyncBatchNorm
    # without a process group: bnorm's local batch norm, like torch's BatchNorm2d
    x = torch.randn(4, 4, 3, 3)
    ref = torch.nn.BatchNorm2d(4, eps=1e-3, momentum=0.2)
    torch.testing.assert_close(m(x), ref(x))
    torch.testing.assert_close(m.running_var, ref.running_var)
