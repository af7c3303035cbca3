"""Each batch norm of a fused network inside a real training step, against
its copy floor (needs torch):

    python benchmarks/model_layers.py [--model resnet18] [--format channels_last]
                                      [--batch 16] [--size 224] [--steps 3]

Runs ``bnorm.torch.fuse(convert(model))`` training steps under PyTorch's
profiler and reads, per batch-norm call in forward order, the time of its
fused forward and of its backward (the autograd node of the same call,
matched in reverse order), the median over ``--steps`` profiled steps.
Beside them: the floor of that call as ``python -m bnorm bench --model``
counts it (bnorm.tools.modelbench.bn_floor_us: the kernel benchmark's
copies of the tensor, timed as parallel copies, from cache and from
memory). Where the
time of a layer is far above both floors is where the step still loses
time to batch norm. A measurement, not a test.
"""
import argparse
import copy
import statistics
import sys

import torch

import bnorm
import bnorm.torch as bt
from bnorm.tools import modelbench, models

FWD = {"_EagerActTrain", "_EagerTrain"}
BWD = {"_EagerActTrainBackward", "_EagerTrainBackward"}


def network_setup(doc, argv, extra):
    """The options a whole-network script shares (model, format, batch,
    size, threads; ``extra``: (name, default) integer options), parsed, with
    the threads set and the seed fixed; returns (args, memory format)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--format", choices=["nchw", "channels_last"], default="channels_last")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    for name, default in extra:
        ap.add_argument(f"--{name}", type=int, default=default)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bnorm.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args, (torch.channels_last if args.format == "channels_last"
                  else torch.contiguous_format)


def main(argv=None):
    args, mf = network_setup(__doc__, argv, [("steps", 3)])
    model = bt.fuse(bt.convert(copy.deepcopy(models.build(args.model)))).to(memory_format=mf)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=mf)
    target = torch.randint(0, 1000, (args.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), target).backward()
        opt.step()

    calls = modelbench.bn_calls(model, x, torch.autocast("cpu", enabled=False))
    modelbench.bn_floor_us(calls, args.threads)  # each call's floors, into its dict
    step()
    step()
    fwd = [[] for _ in calls]
    bwd = [[] for _ in calls]
    for _ in range(args.steps):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
        evs = sorted((e for e in prof.events() if e.name in FWD | BWD),
                     key=lambda e: e.time_range.start)
        f = [e.cpu_time_total for e in evs if e.name in FWD]
        b = [e.cpu_time_total for e in evs if e.name in BWD][::-1]
        if len(f) != len(calls) or len(b) != len(calls):
            print(f"found {len(f)} forward and {len(b)} backward events for {len(calls)} "
                  "batch norms: not all of them ran as bnorm ops", file=sys.stderr)
            return 1
        for i in range(len(calls)):
            fwd[i].append(f[i])
            bwd[i].append(b[i])
    print(f"{args.model} {args.format} batch {args.batch} {args.size}x{args.size}, "
          f"{args.threads} threads: per batch norm, forward and backward in the step (us, "
          f"median of {args.steps}), its copy floor (cached / memory) and time over floor")
    print(f"{'shape':>18} {'kind':>14} {'fwd':>8} {'bwd':>8} {'sum':>8} {'cached':>8} "
          f"{'memory':>8} {'x cached':>9} {'x memory':>9}")
    tot = [0.0, 0.0, 0.0, 0.0]
    for c, fs, bs in zip(calls, fwd, bwd):
        kind = ("+".join(["bn"] + (["add"] if c["residual"] else [])
                         + ([c["activation"]] if c["activation"] else [])))
        f, b = statistics.median(fs), statistics.median(bs)
        tot[0] += f
        tot[1] += b
        tot[2] += c["cached_us"]
        tot[3] += c["memory_us"]
        print(f"{'x'.join(map(str, c['shape'])):>18} {kind:>14} {f:8.0f} {b:8.0f} {f + b:8.0f} "
              f"{c['cached_us']:8.0f} {c['memory_us']:8.0f} {(f + b) / c['cached_us']:8.1f}x "
              f"{(f + b) / c['memory_us']:8.1f}x")
    print(f"{'all':>18} {'':>14} {tot[0]:8.0f} {tot[1]:8.0f} {tot[0] + tot[1]:8.0f} "
          f"{tot[2]:8.0f} {tot[3]:8.0f} {(tot[0] + tot[1]) / tot[2]:8.1f}x "
          f"{(tot[0] + tot[1]) / tot[3]:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
