"""bnorm inside PyTorch, measured as a PyTorch user meets it (needs torch;
``pip install ".[torch]"``). Three measurements, each side by side in one
process, alternating, median of the repeats with the range:

    python benchmarks/torch_models.py resnet     # ResNet-18 steps, native vs converted
    python benchmarks/torch_models.py overhead   # the PyTorch path's cost per call
    python benchmarks/torch_models.py sync       # SyncBatchNorm on 2 gloo ranks vs local

``resnet``: a ResNet-18 (torchvision's architecture, defined here) at batch
32, 112x112, in NCHW and channels_last, training steps (forward, loss,
backward, SGD step) and eval forwards, float32 and bfloat16 autocast, with
PyTorch's BatchNorm2d and with ``bnorm.torch.convert``; then the profiler's
share of batch norm in one training step of each.
"""
import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn

import bnorm
import bnorm.torch as bt


# ---- ResNet-18 (He et al. 2016; the layout of torchvision's resnet18) ------------

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class ResNet18(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))

    def forward(self, x):
        return self.head(self.layers(self.pool(self.relu(self.bn1(self.conv1(x))))))


def timed(fn, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def fmt_range(ts):
    return (f"{statistics.median(ts) * 1e3:7.2f} ms [{min(ts) * 1e3:.2f}-"
            f"{max(ts) * 1e3:.2f}]")


def resnet(args):
    torch.manual_seed(0)
    native = ResNet18()
    converted = bt.convert(copy.deepcopy(native))
    x0 = torch.randn(args.batch, 3, args.size, args.size)
    target = torch.randint(0, 1000, (args.batch,))
    print(f"ResNet-18, batch {args.batch}, {args.size}x{args.size}, {torch.get_num_threads()} "
          f"thread(s), torch {torch.__version__}, bnorm {bnorm.__version__} "
          f"({bnorm._core.kernel_isa()}); median of {args.repeat} [min-max], alternating")
    print(f"{'layout':14s} {'mode':6s} {'dtype':9s} {'native':>26s} {'converted':>26s} "
          f"{'speedup':>8s}")
    for layout in (torch.contiguous_format, torch.channels_last):
        x = x0.contiguous(memory_format=layout)
        models = [m.to(memory_format=layout) for m in (native, converted)]
        for mode in ("train", "eval"):
            for dtype in ("float32", "bfloat16"):
                steps = []
                for m in models:
                    opt = torch.optim.SGD(m.parameters(), lr=1e-3)
                    m.train(mode == "train")

                    def step(m=m, opt=opt):
                        with torch.autocast("cpu", dtype=torch.bfloat16,
                                            enabled=dtype == "bfloat16"):
                            if mode == "train":
                                opt.zero_grad(set_to_none=True)
                                loss = nn.functional.cross_entropy(m(x).float(), target)
                                loss.backward()
                                opt.step()
                            else:
                                with torch.no_grad():
                                    m(x)
                    steps.append(step)
                for s in steps:  # warm-up
                    s()
                    s()
                times = [[], []]
                for _ in range(args.repeat):  # alternating, side by side
                    for k, s in enumerate(steps):
                        times[k] += timed(s, 1)
                sp = statistics.median(times[0]) / statistics.median(times[1])
                name = "channels_last" if layout is torch.channels_last else "NCHW"
                print(f"{name:14s} {mode:6s} {dtype:9s} {fmt_range(times[0]):>26s} "
                      f"{fmt_range(times[1]):>26s} {sp:7.2f}x", flush=True)
    if args.profile:
        profile_share(native, converted, x0, target)


# batch norm in the profiler: PyTorch's kernels, bnorm's operators and its
# eager autograd functions (whose self time holds bnorm's kernels)
def profile_only(args):
    torch.manual_seed(0)
    native = ResNet18()
    profile_share(native, bt.convert(copy.deepcopy(native)),
                  torch.randn(args.batch, 3, args.size, args.size),
                  torch.randint(0, 1000, (args.batch,)))


BN_OPS = ("aten::native_batch_norm", "aten::native_batch_norm_backward",
          "aten::_native_batch_norm_legit", "aten::_native_batch_norm_legit_functional",
          "bnorm::batch_norm_train", "bnorm::batch_norm_backward", "bnorm::batch_norm_infer",
          "_EagerTrain", "_EagerTrainBackward", "_EagerInfer", "_EagerInferBackward")


def profile_share(native, converted, x0, target):
    from torch.profiler import ProfilerActivity, profile
    print("\nprofiler, training steps (float32, median of 3): batch norm's time and share "
          "of the step, and the 6 most expensive ops of the last")
    for layout in (torch.contiguous_format, torch.channels_last):
        x = x0.contiguous(memory_format=layout)
        for name, m in (("native", native), ("converted", converted)):
            m = m.to(memory_format=layout).train()
            opt = torch.optim.SGD(m.parameters(), lr=1e-3)

            def step():
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(m(x), target).backward()
                opt.step()
            step()
            totals, bns = [], []
            for _ in range(3):  # three profiled steps: the median
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    step()
                ev = prof.key_averages()
                totals.append(sum(e.self_cpu_time_total for e in ev))
                bns.append(sum(e.self_cpu_time_total for e in ev if e.key in BN_OPS))
            total, bn = statistics.median(totals), statistics.median(bns)
            top = sorted(ev, key=lambda e: -e.self_cpu_time_total)[:6]
            lay = "channels_last" if layout is torch.channels_last else "NCHW"
            print(f"  {lay:13s} {name:9s} step {total / 1e3:6.0f} ms, batch norm "
                  f"{bn / 1e3:5.1f} ms ({100 * bn / total:4.1f}%); " +
                  ", ".join(f"{e.key} {e.self_cpu_time_total / 1e3:.0f}" for e in top))


def overhead(args):
    """A converted layer's forward + backward against bnorm's NumPy calls
    with out= on the same tensors, per call (small: the call path, large:
    the kernels dominate)."""
    print(f"per call, forward + backward, median of {args.repeat} x 200 calls; "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'shape':18s} {'numpy out=':>12s} {'torch op':>12s} {'torch native':>13s} "
          f"{'path cost':>10s}")
    for shape in ((2, 3, 4, 5), (8, 16, 14, 14), (32, 64, 56, 56)):
        c = shape[1]
        x = torch.randn(*shape)
        g = torch.randn(*shape)
        xn, gn = x.numpy(), g.numpy()
        w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
        y_out, dx_out = np.empty_like(xn), np.empty_like(xn)
        layer = bt.BatchNorm2d(c)
        ref = nn.BatchNorm2d(c)
        xr = x.clone().requires_grad_()
        n = 200 if x.numel() < 10 ** 6 else 10

        def np_calls():
            for _ in range(n):
                _, m, s = bnorm.batch_norm_train(xn, w, b, out=y_out)
                bnorm.batch_norm_backward(gn, xn, m, s, w, out=dx_out)

        def torch_calls(mod):
            for _ in range(n):
                xr.grad = None  # (no gradient accumulation: a pass of its own)
                mod.weight.grad = mod.bias.grad = None
                mod(xr).backward(g)
        for f in (np_calls, lambda: torch_calls(layer), lambda: torch_calls(ref)):
            f()
        t = [[], [], []]
        for _ in range(args.repeat):
            for k, f in enumerate((np_calls, lambda: torch_calls(layer),
                                   lambda: torch_calls(ref))):
                t[k] += [x / n for x in timed(f, 1)]
        a, b2, c2 = (statistics.median(v) * 1e6 for v in t)
        print(f"{str(shape):18s} {a:9.1f} us {b2:9.1f} us {c2:10.1f} us {b2 - a:7.1f} us")


def _sync_rank(rank, world, store, shape, repeat, out):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    x = torch.randn(*shape).requires_grad_()
    g = torch.randn(*shape)
    sync, local = bt.SyncBatchNorm(shape[1]), bt.BatchNorm2d(shape[1])
    res = {}
    for name, m in (("sync", sync), ("local", local)):
        for _ in range(3):
            m(x).backward(g)
        dist.barrier()
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            m(x).backward(g)
            ts.append(time.perf_counter() - t0)
        res[name] = ts
    # the transport alone: the two all_gathers of one step, bare
    c = shape[1]
    a, b = torch.zeros(2 * c + 1, dtype=torch.float64), torch.zeros(2 * c, dtype=torch.float64)
    pa = [torch.empty_like(a) for _ in range(world)]
    pb = [torch.empty_like(b) for _ in range(world)]
    dist.barrier()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        dist.all_gather(pa, a)
        dist.all_gather(pb, b)
        ts.append(time.perf_counter() - t0)
    res["gather"] = ts
    np.savez(out, **res)
    dist.destroy_process_group()


def sync(args):
    import torch.multiprocessing as mp
    print(f"SyncBatchNorm over gloo, 2 ranks of 1 thread each, forward + backward on each "
          f"rank's shard; median of {args.repeat} [min-max]")
    print(f"{'shard':18s} {'local':>24s} {'sync':>24s} {'2 all_gathers':>24s} {'cost':>8s}")
    for shape in ((16, 64, 28, 28), (16, 256, 7, 7), (4, 32, 8, 8)):
        with tempfile.TemporaryDirectory() as d:
            outs = [os.path.join(d, f"r{r}.npz") for r in range(2)]
            mp.spawn(_sync_rank_entry, args=(2, os.path.join(d, "store"), shape, args.repeat,
                                             outs), nprocs=2, join=True)
            r0 = np.load(outs[0])
            loc, syn, gat = list(r0["local"]), list(r0["sync"]), list(r0["gather"])
        print(f"{str(shape):18s} {fmt_range(loc):>24s} {fmt_range(syn):>24s} "
              f"{fmt_range(gat):>24s} {statistics.median(syn) / statistics.median(loc):7.2f}x")


def _sync_rank_entry(rank, world, store, shape, repeat, outs):
    _sync_rank(rank, world, store, shape, repeat, outs[rank])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("resnet", "profile", "overhead", "sync"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--no-profile", dest="profile", action="store_false")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    bnorm.set_num_threads(args.threads)
    {"resnet": resnet, "profile": profile_only, "overhead": overhead,
     "sync": sync}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
