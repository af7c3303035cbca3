"""Each batch norm's forward inside a real training step, split into its
kernel call and the glue around it, PyTorch's against bnorm's fused model
(needs torch):

    python benchmarks/step_kernels.py [--model resnet18] [--format channels_last]
                                      [--batch 16] [--size 224] [--rounds 6]

Native and ``bnorm.torch.fuse`` copies of one network train side by
side. Forward hooks time each batch norm module; inside them, a timer around the kernel call (``F.batch_norm`` for PyTorch's
modules, bnorm's NumPy-level training call for the fused ones) gives the
kernel's share, and the rest of the module's time is glue (Python, the
autograd function, views). PyTorch's separate ReLU/ReLU6 modules are
timed too, and the whole backward. Medians over the rounds after the
first; then the kernels per feature-map size and channel range. A
measurement, not a test.
"""
import collections
import copy
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.modules.batchnorm as torch_bn

import bnorm.torch as bt
from bnorm.tools import models

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from model_layers import network_setup  # noqa: E402  (the shared options)


def main(argv=None):
    args, mf = network_setup(__doc__, argv, [("rounds", 6)])
    base = models.build(args.model)
    nets = {k: m.to(memory_format=mf) for k, m in
            (("native", copy.deepcopy(base)), ("fuse", bt.fuse(copy.deepcopy(base))))}
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=mf)
    target = torch.randint(0, 1000, (args.batch,))

    current = ["native"]
    kernel = {k: [] for k in nets}
    module = {k: [] for k in nets}
    shapes = {k: [] for k in nets}
    act = {k: [] for k in nets}
    backward = {k: [] for k in nets}

    def timed(fn):
        def call(*a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            kernel[current[0]].append(time.perf_counter() - t0)
            return out
        return call

    class _F:  # torch.nn.functional as PyTorch's batch norm module sees it
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)
        batch_norm = staticmethod(timed(torch.nn.functional.batch_norm))

    saved_f, saved_train = torch_bn.F, bt._bn.batch_norm_train
    torch_bn.F, bt._bn.batch_norm_train = _F(), timed(bt._bn.batch_norm_train)
    try:
        for k, m in nets.items():
            m.train()
            for mod in m.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    into, shape_into = module[k], shapes[k]
                elif isinstance(mod, (torch.nn.ReLU, torch.nn.ReLU6)):
                    into, shape_into = act[k], None
                else:
                    continue

                def pre(mod, a):
                    mod._bench_t0 = time.perf_counter()

                def post(mod, a, out, into=into, shape_into=shape_into):
                    into.append(time.perf_counter() - mod._bench_t0)
                    if shape_into is not None:
                        shape_into.append(tuple(a[0].shape))
                mod.register_forward_pre_hook(pre)
                mod.register_forward_hook(post)
        opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
                for k, m in nets.items()}
        for _ in range(args.rounds):
            for k, m in nets.items():
                current[0] = k
                opts[k].zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(m(x), target)
                t0 = time.perf_counter()
                loss.backward()
                backward[k].append(time.perf_counter() - t0)
                opts[k].step()
    finally:
        torch_bn.F, bt._bn.batch_norm_train = saved_f, saved_train

    def per_call(v):  # median over the rounds after the first, per call
        return np.median(np.array(v).reshape(args.rounds, -1)[1:], axis=0) * 1e6

    print(f"{args.model} {args.format}, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.threads} threads, "
          f"training forward per batch norm (median of {args.rounds - 1} steps)")
    k_us = {}
    for k in nets:
        kern, mod = per_call(kernel[k]), per_call(module[k])
        k_us[k] = kern
        acts = per_call(act[k]).sum() / 1e3 if act[k] else 0.0
        print(f"  {k:6s}: {len(mod)} calls; kernels {kern.sum() / 1e3:6.1f} ms, modules "
              f"{mod.sum() / 1e3:6.1f} ms, glue {(mod - kern).sum() / 1e3:5.1f} ms "
              f"({np.median(mod - kern):.0f} us a call); separate activations {acts:5.1f} ms; "
              f"whole backward {statistics.median(backward[k][1:]) * 1e3:6.1f} ms")
    # each network's calls grouped by their own shapes (fuse may call its
    # batch norms in another order: one with a residual runs after it)
    groups = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for i, k in enumerate(nets):
        for shape, t in zip(shapes[k], k_us[k]):
            g = groups[(shape[2], shape[1] // 64 * 64)]
            g[i] += t
            g[2] += i == 0
    print("  forward kernels by feature map and channels (native / fuse, ms):")
    for (hw, c), (a, b, n) in sorted(groups.items()):
        print(f"    {hw:3d}x{hw:<3d} {c:4d}-{c + 63:<4d} {n:3d} calls {a / 1e3:7.2f} / "
              f"{b / 1e3:7.2f}  ({a / b:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
