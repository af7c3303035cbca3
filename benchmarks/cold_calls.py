"""A batch norm module's call with cold caches, as inside a network (needs
torch):

    python benchmarks/cold_calls.py [--threads 2] [--calls 30]

Inside a network each batch norm runs right after a convolution that has
streamed tens of MB through the caches, so the Python and torch code of the
call (and its objects) come back from memory. Here a 48 MiB NumPy array is
rewritten before each timed call, which does the same; the table gives the
median time per call with and without that flush for PyTorch's eval
BatchNorm2d (+ ReLU) and bnorm's converted and fused modules on small
channels-last tensors, and then single torch calls of the kind the
operators' glue makes, each after a flush, and last a converted module's
eval call rebuilt piece by piece from its kernel call up. A measurement,
not a test.
"""
import argparse
import statistics
import sys
import time

import numpy as np
import torch

import bnorm
import bnorm.torch as bt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=30)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bnorm.set_num_threads(args.threads)
    junk = np.ones(48 << 18, np.float32)  # 48 MiB

    def median_us(f, flush=True):
        ts = []
        for _ in range(args.calls):
            if flush:
                np.multiply(junk, 1.0000001, out=junk)
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e6

    cl = torch.channels_last
    print(f"eval, no_grad, channels_last, {args.threads} threads: us per call "
          f"(median of {args.calls}), warm / after a 48 MiB flush")
    print(f"{'shape':>14} {'native BN':>16} {'convert':>16} {'native BN+ReLU':>16} "
          f"{'fused':>16}")
    with torch.no_grad():
        for shape in [(2, 64, 7, 7), (16, 512, 7, 7), (16, 128, 28, 28)]:
            c = shape[1]
            x = torch.randn(*shape).contiguous(memory_format=cl)
            mods = [torch.nn.BatchNorm2d(c),
                    bt.convert(torch.nn.BatchNorm2d(c)),
                    torch.nn.Sequential(torch.nn.BatchNorm2d(c), torch.nn.ReLU(inplace=True)),
                    bt.fuse(torch.nn.Sequential(bt.convert(torch.nn.BatchNorm2d(c)),
                                                torch.nn.ReLU()))]
            cells = []
            for m in mods:
                m.eval()
                cells.append(f"{median_us(lambda: m(x), False):6.1f} / "
                             f"{median_us(lambda: m(x)):6.1f}")
            print(f"{'x'.join(map(str, shape)):>14} " + " ".join(f"{s:>16}" for s in cells))
        x = torch.randn(16, 512, 7, 7).contiguous(memory_format=cl)
        w = torch.nn.Parameter(torch.ones(512))
        calls = {
            "(nothing)": lambda: None,
            "x.is_neg()": lambda: x.is_neg(),
            "x.resolve_conj()": lambda: x.resolve_conj(),
            "x.is_contiguous()": lambda: x.is_contiguous(),
            "x.movedim(1, -1)": lambda: x.movedim(1, -1),
            "torch.empty_like(x)": lambda: torch.empty_like(x),
            "x.numpy()": lambda: x.numpy(),
            "x.numpy().transpose(...)": lambda: x.numpy().transpose(0, 2, 3, 1),
            "w.detach().numpy()": lambda: w.detach().numpy(),
            "torch.compiler.is_compiling()": lambda: torch.compiler.is_compiling(),
        }
        print("single calls after a flush (us, median):")
        for name, f in calls.items():
            print(f"  {name:32s} {median_us(f):6.1f}")
        glue_steps(median_us)
    return 0


def glue_steps(median_us):
    """A converted module's eval call on 2x64x7x7 channels-last (the kernel
    itself a few us), rebuilt step by step from the kernel call up, each
    line adding one piece of the glue, all after a flush: what a leaner
    glue could save at most."""
    from bnorm import _core
    x = torch.randn(2, 64, 7, 7).contiguous(memory_format=torch.channels_last)
    m = bt.convert(torch.nn.BatchNorm2d(64)).eval()
    ps = (m.running_mean, m.running_var, m.weight, m.bias)
    arrays = [t.detach().numpy() for t in ps]  # parameter views made once

    def kernel():  # output, views of x and y, the kernel: nothing else
        y = torch.empty_like(x)
        _core.fast_inference(x.numpy().transpose(0, 2, 3, 1), *arrays, 1e-5, -1,
                             y.numpy().transpose(0, 2, 3, 1), None, 0)

    def bookkeeping():  # what torch's own module forward does first
        m._check_input_dim(x)
        bt._module_step(m)

    def checks():  # which path (dtypes and devices, compiling, grad)
        bt._supported(x, *ps)
        bt._compiling()
        return torch.is_grad_enabled() and x.requires_grad

    def layout():  # the kernel call with the layout read and parameter views per call
        x2, xs, axis = bt._input(x)
        y = bt._output_like(x2)
        pd = bt._param_dtype(x2.dtype)
        _core.fast_inference(xs, *(bt._param(t, pd) for t in ps), 1e-5, axis,
                             bt._as_input(y, axis), None, 0)

    def built(*pieces):  # the pieces one after the other
        return lambda: [p() for p in pieces]

    steps = {"kernel call, views, output": kernel,
             "+ module bookkeeping": built(bookkeeping, kernel),
             "+ path checks": built(bookkeeping, checks, kernel),
             "+ layout and parameter views": built(bookkeeping, checks, layout),
             "the converted module (all of it)": lambda: m(x)}
    nat = torch.nn.BatchNorm2d(64).eval()
    steps["PyTorch's module"] = lambda: nat(x)
    print("a converted module's eval call (2x64x7x7 channels-last), built up piece by piece,"
          " after a flush (us; median, then min-max of 4 repeats):")
    res = {k: [median_us(f) for _ in range(4)] for k, f in steps.items()}
    for k, v in res.items():
        print(f"  {k:36s} {statistics.median(v):6.1f}  ({min(v):.1f}-{max(v):.1f})")


if __name__ == "__main__":
    sys.exit(main())
