"""bnorm.torch's large outputs from NumPy's allocator (huge pages) against
PyTorch's allocator, in whole training steps (needs torch):

    python benchmarks/huge_outputs.py [--model resnet18] [--format channels_last]
                                      [--rounds 9]

A fused network (``bnorm.torch.fuse(convert(model))``) takes training steps
with its outputs of 4 MiB and more from NumPy (the default) and from
PyTorch's allocator (the size bound raised past any tensor), beside native
PyTorch, the three in turns within each round. Prints each one's median
step and the per-round ratios. A measurement, not a test.
"""
import copy
import statistics
import sys
import time

import torch

import bnorm.torch as bt
from bnorm import torch as bnorm_torch
from bnorm.tools import models
from model_layers import network_setup  # (this folder, the script's own)


def main(argv=None):
    args, mf = network_setup(__doc__, argv, [("rounds", 9)])
    base = models.build(args.model)
    fused = bt.fuse(bt.convert(copy.deepcopy(base))).to(memory_format=mf)
    native = copy.deepcopy(base).to(memory_format=mf)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=mf)
    target = torch.randint(0, 1000, (args.batch,))
    opts = {id(m): torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
            for m in (fused, native)}

    def step(m):
        m.train()
        opts[id(m)].zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(m(x), target).backward()
        opts[id(m)].step()

    bound = bnorm_torch._HUGE_OUTPUT_BYTES
    times = {"huge pages": [], "torch allocator": [], "native": []}
    for _ in range(2):
        step(fused)
        step(native)
    try:
        for r in range(args.rounds):
            order = list(times) if r % 2 == 0 else list(times)[::-1]
            for k in order:
                bnorm_torch._HUGE_OUTPUT_BYTES = bound if k == "huge pages" else 1 << 62
                t0 = time.perf_counter()
                step(native if k == "native" else fused)
                times[k].append(time.perf_counter() - t0)
    finally:
        bnorm_torch._HUGE_OUTPUT_BYTES = bound
    print(f"{args.model} {args.format} batch {args.batch} {args.size}x{args.size}, "
          f"{args.threads} threads, {args.rounds} rounds")
    for k, v in times.items():
        print(f"  {k:16s} {statistics.median(v) * 1e3:8.1f} ms  ({min(v) * 1e3:.0f}-"
              f"{max(v) * 1e3:.0f})")
    h = times["huge pages"]
    for k in ("torch allocator", "native"):
        ratio = statistics.median(o / n for n, o in zip(h, times[k]))
        print(f"  {k} over huge pages, per round: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
