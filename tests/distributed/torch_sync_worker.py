"""One rank of the bnorm.torch.SyncBatchNorm check (run by
tests/test_torch_sync.py, one process per rank):

    python tests/distributed/torch_sync_worker.py RANK WORLD STORE_FILE OUT.npz

Every rank builds the same global batch from one seed and takes its shard
(uneven; with 3 ranks the middle one is empty), runs SyncBatchNorm forward
and backward over gloo, then trains a small conv net made with
convert_sync_batchnorm under DistributedDataParallel for 3 steps (shards
without the empty one). It saves its shard's results and the net's final
parameters for the test to compare with one process on the whole batch.
"""
import sys

import numpy as np
import torch
import torch.distributed as dist

import bnorm.torch as bt

N, C, H, W = 9, 3, 4, 5


def shard_sizes(n, world, allow_empty=True):
    if world == 1:
        return [n]
    weights = np.arange(1, world + 1, dtype=np.float64)
    if world >= 3 and allow_empty:
        weights[1] = 0
    sizes = np.floor(weights / weights.sum() * n).astype(int)
    sizes[-1] += n - sizes.sum()
    return sizes.tolist()


def net():
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Conv2d(C, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * H * W, 2),
        torch.nn.BatchNorm1d(2)).double()


def main():
    rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, H, W, generator=g, dtype=torch.float64) * 3 + 1
    dy = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    sizes = shard_sizes(N, world)
    lo = sum(sizes[:rank])
    xs = x[lo:lo + sizes[rank]].clone().requires_grad_()
    m = bt.SyncBatchNorm(C).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64))
        m.bias.copy_(torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64))
    results = {}
    for step in range(2):  # two steps: the running statistics move twice
        if xs.grad is not None:
            xs.grad = None
            m.weight.grad = None
            m.bias.grad = None
        y = m(xs)
        (y * dy[lo:lo + sizes[rank]]).sum().backward()
        results[f"y{step}"] = y.detach().numpy()
        results[f"dx{step}"] = xs.grad.numpy().copy()
        results[f"dw{step}"] = m.weight.grad.numpy().copy()
        results[f"db{step}"] = m.bias.grad.numpy().copy()
    results["running_mean"] = m.running_mean.numpy()
    results["running_var"] = m.running_var.numpy()
    m.eval()
    results["y_eval"] = m(x[:2]).detach().numpy()

    # DistributedDataParallel on a converted net, 3 steps
    model = bt.convert_sync_batchnorm(net())
    assert sum(isinstance(mod, bt.SyncBatchNorm) for mod in model.modules()) == 2
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    sizes = shard_sizes(N, world, allow_empty=False)
    lo = sum(sizes[:rank])
    target = torch.randn(N, 2, generator=g, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        loss = ((ddp(x[lo:lo + sizes[rank]]) - target[lo:lo + sizes[rank]]) ** 2).sum() / N
        loss.backward()
        opt.step()
    for k, v in model.state_dict().items():
        results["net." + k] = v.numpy()
    np.savez(out, **results)
    # every rank past its last collective before any tears its group down: a
    # rank that destroyed its gloo group while a peer's transfer to it was
    # still open made the peer's gloo thread end the process ("terminate
    # called without an active exception"; seen once, on 3 ranks on 2 cores)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
