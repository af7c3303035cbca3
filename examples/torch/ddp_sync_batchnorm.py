"""Data-parallel training on CPUs with synchronized batch norm.

Two processes (gloo, on this machine) each take half of every batch; the
batch norms of the model, turned into bnorm.torch.SyncBatchNorm, normalize
with the statistics of the whole batch, and DistributedDataParallel averages
the gradients. Every rank ends with the same parameters.

    pip install "bnorm[torch]"
    python examples/torch/ddp_sync_batchnorm.py [--ranks 2] [--steps 20]
"""
import argparse
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import bnorm.torch as bt


def model():
    torch.manual_seed(0)  # the same initial weights on every rank
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1, bias=False), torch.nn.BatchNorm2d(32),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(32, 10))


def worker(rank, ranks, store, steps):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=ranks)
    net = bt.convert_sync_batchnorm(model())   # BatchNorm2d -> bnorm's SyncBatchNorm
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    data = torch.Generator().manual_seed(1)   # the same batches on every rank
    for step in range(steps):
        x = torch.randn(32, 3, 16, 16, generator=data)
        labels = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0].mean(dim=(1, 2)) > 0).long()
        shard = slice(rank * 32 // ranks, (rank + 1) * 32 // ranks)   # this rank's part
        loss = torch.nn.functional.cross_entropy(ddp(x[shard]), labels[shard])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rank == 0 and step % 5 == 0:
            print(f"step {step:3d}  loss on rank 0's shard {loss.item():.3f}")
    # every rank holds the same model
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(ranks)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        same = all(torch.equal(g, gathered[0]) for g in gathered)
        print(f"{ranks} ranks, parameters identical on every rank: {same}")
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(worker, args=(a.ranks, os.path.join(d, "store"), a.steps), nprocs=a.ranks)


if __name__ == "__main__":
    main()
