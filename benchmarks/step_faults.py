"""Page faults in a whole network's training step, native against fused
(needs torch):

    python benchmarks/step_faults.py [--model resnet18] [--format channels_last]
                                     [--batch 16] [--size 224] [--rounds 6]

A training step allocates its activations afresh. glibc's malloc gives the
large ones fresh pages (memory it returned to the system at the end of the
step before: a block above its mmap threshold, or the top of the heap past
its trim threshold), and each 4 KiB page costs a minor fault the first time
it is written: inside whichever kernel writes it first, a batch norm's
output among them. Native and fused steps alternate in one process; per
configuration, the best and median step time and the median count of minor
faults per step (getrusage). Then, for the fused model, the bnorm kernels'
share: their time and the faults taken inside them, per step.

Run it twice, the second time with glibc told to keep its memory (neither
trimming the heap nor mapping large blocks apart), to see what the faults
cost each configuration:

    MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_MMAP_THRESHOLD_=4294967296 \\
        python benchmarks/step_faults.py

A measurement, not a test.
"""
import copy
import resource
import statistics
import sys
import time

import torch

import bnorm
import bnorm.torch as bt
from bnorm.tools import models

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from model_layers import network_setup  # noqa: E402  (the shared options)


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main(argv=None):
    args, mf = network_setup(__doc__, argv, [("rounds", 6)])
    base = models.build(args.model)
    nets = {"native": copy.deepcopy(base).to(memory_format=mf),
            "fuse": bt.fuse(bt.convert(copy.deepcopy(base))).to(memory_format=mf)}
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=mf)
    target = torch.randint(0, 1000, (args.batch,))
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in nets.items()}

    def step(k):
        opts[k].zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(nets[k](x), target).backward()
        opts[k].step()

    # the bnorm kernels inside the fused step: their time and faults
    kern = {"calls": 0, "s": 0.0, "faults": 0, "on": False}

    def timed(f):
        def g(*a, **kw):
            if not kern["on"]:
                return f(*a, **kw)
            f0, t0 = faults(), time.perf_counter()
            r = f(*a, **kw)
            kern["s"] += time.perf_counter() - t0
            kern["faults"] += faults() - f0
            kern["calls"] += 1
            return r
        return g

    for name in ("batch_norm_train", "_backward_fused", "batch_norm_backward"):
        setattr(bt._bn, name, timed(getattr(bt._bn, name)))

    for k in nets:
        step(k)
        step(k)
    times = {k: [] for k in nets}
    flts = {k: [] for k in nets}
    for _ in range(args.rounds):
        for k in nets:
            kern["on"] = k == "fuse"
            f0, t0 = faults(), time.perf_counter()
            step(k)
            times[k].append(time.perf_counter() - t0)
            flts[k].append(faults() - f0)
    kern["on"] = False
    print(f"{args.model} {args.format} batch {args.batch} {args.size}x{args.size}, "
          f"{args.threads} threads, {args.rounds} rounds")
    print(f"{'config':>8} {'best ms':>9} {'median ms':>10} {'faults/step':>12}")
    for k in nets:
        print(f"{k:>8} {min(times[k]) * 1e3:9.1f} {statistics.median(times[k]) * 1e3:10.1f} "
              f"{statistics.median(flts[k]):12.0f}")
    print(f"native / fuse: best {min(times['native']) / min(times['fuse']):.3f}, median "
          f"{statistics.median(times['native']) / statistics.median(times['fuse']):.3f}")
    n = args.rounds
    print(f"fuse's bnorm kernels per step: {kern['calls'] // n} calls, "
          f"{kern['s'] / n * 1e3:.1f} ms, {kern['faults'] / n:.0f} faults")
    return 0


if __name__ == "__main__":
    sys.exit(main())
