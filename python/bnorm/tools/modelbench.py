"""``python -m bnorm bench --model NAME``: whole networks, as a user meets
bnorm.

For one of the networks of ``bnorm.tools.models`` it runs, side by side in
one process, configurations that differ in one thing each:

  native     PyTorch's own batch norm
  convert    ``bnorm.torch.convert``: bnorm computes each batch norm
  fuse       ``bnorm.torch.fuse``: batch norm + ReLU and batch norm + add
             (+ ReLU) as one bnorm op
  iabn       (``resnet18_leaky`` only) every BatchNorm2d + LeakyReLU an
             In-Place ABN (``bnorm.torch.InPlaceABN``)
  compile    ``torch.compile`` of native and of fuse (``--compile``)
  native-aa  (``--aa``) a second copy of the native model, timed like the
             others: its speedup is native against itself, the noise of
             this run (an A/A comparison) against which the others' margins
             can be read
  free-bn    (``--bound``) the network with every batch norm and every
             activation module (ReLU, ReLU6, LeakyReLU: in these networks
             each follows a batch norm) replaced by ``nn.Identity``: batch
             norm at no cost, moving no data and allocating nothing. No
             batch norm, however fast, can make a step faster than this
             one, so its speedup bounds every other row's. It computes
             another function: its convolutions are rescaled once (as LSUV
             initialization does) so that its activations keep unit scale
             without batch norm, its SGD steps use a learning rate of 0
             (the same work, weights unchanged), and the benchmark checks
             that its output is finite after the timed steps. The times of
             the convolutions do not depend on the values, as long as they
             stay in range.

each in float32 and under bfloat16 autocast, with NCHW and channels_last
input. Per configuration:

  train      a training step (forward, backward, SGD with momentum), median
             over the rounds; the configurations take turns in each round,
             so drift hits all alike
  infer      an inference step (eval mode, no_grad)
  speedup    native's step over this one's in the same round (same dtype
             and format), median over the rounds
  saved      the bytes autograd holds for the backward after the forward
             (saved-tensor hooks; each storage once, parameters excluded)
  peak       the growth of the resident set during one training step above
             what was resident before it (VmHWM after resetting it)
  bn share   from profiled steps (eager only; 3 rounds over the
             configurations, the median): the time of batch norm, the
             activations after it and the residual additions (forward and
             backward), over the step
  ceiling    Amdahl's limit: 1 / ((1 - f) + f / s), f native's bn share and
             s native's bn time over this configuration's, in the same
             profiled round; the median over the rounds
  copy ceil  the speedup over native that batch norm (with what fuses with
             it) would give if it ran at the machine's copy speed: native's
             profiled step with its bn time replaced by the floor of the
             fused model's batch norms (each one's copies by the kernel
             benchmark's rule, bnorm.tools.floor.copies, plus half a copy
             per residual read
             and a copy for the fused backward's y read and dresidual write,
             each timed as a parallel copy of that tensor with the run's
             threads); the same for every configuration of a dtype and
             format. No batch-norm implementation in that place can beat it

A measurement, never a pass/fail test: timings on a shared 2-core machine
move 20-40% between runs, which is why the configurations are interleaved.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Dict, List, Optional

import torch
from torch import nn

import bnorm
import bnorm.torch as bt

from . import models

# profiled training steps per eager configuration (interleaved rounds)
_PROFILE_ROUNDS = 3

# the ops that batch norm and what fuses with it account for, in PyTorch's
# profiler: forward ops and autograd nodes, PyTorch's and bnorm's
_BN_OPS = {
    "aten::batch_norm", "NativeBatchNormBackward0", "aten::native_batch_norm_backward",
    "aten::relu", "aten::relu_", "ReluBackward0", "aten::threshold_backward",
    "aten::hardtanh", "aten::hardtanh_", "HardtanhBackward0",
    "aten::leaky_relu", "aten::leaky_relu_", "LeakyReluBackward0", "LeakyReluBackward1",
    "aten::add", "AddBackward0",
    "_EagerTrain", "_EagerTrainBackward", "_EagerInfer", "_EagerInferBackward",
    "_EagerActTrain", "_EagerActTrainBackward", "_EagerActInfer", "_EagerActInferBackward",
    "_InPlaceABNFunction", "_InPlaceABNFunctionBackward",
}


def _bn_time_us(prof) -> float:
    """The CPU time of the top-most events of _BN_OPS (their children not
    counted again)."""
    total = 0.0
    for e in prof.events():
        if e.name not in _BN_OPS:
            continue
        p, nested = e.cpu_parent, False
        while p is not None:
            if p.name in _BN_OPS:
                nested = True
                break
            p = p.cpu_parent
        if not nested:
            total += e.cpu_time_total
    return total


def _rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _quiet_stderr:
    """The profiler's tracing library prints a line on each start and stop to
    file descriptor 2: sent to /dev/null meanwhile."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)


# the eager configurations Config builds (compile is a flag on top)
_VARIANTS = ("native", "convert", "fuse", "iabn", "native-aa", "free-bn")
_FREE = (nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU)


def _free_batch_norm(model: nn.Module) -> None:
    """Every batch norm and activation module of model replaced by
    nn.Identity, in place (the free-bn configuration)."""
    for name, child in list(model.named_children()):
        if isinstance(child, _FREE):
            setattr(model, name, nn.Identity())
        else:
            _free_batch_norm(child)


def _unit_scale(model: nn.Module, x: torch.Tensor) -> None:
    """Rescales each convolution and linear layer of model once, in one
    forward pass over x, so that its output has unit standard deviation
    (as LSUV initialization does): without its batch norms a deep network's
    activations would otherwise overflow, and values far out of range (or
    denormal) could change the times. Timing is what free-bn is for; the
    scale of its weights does not change the work."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    def hook(mod, inputs, out):
        scale = float(out.float().std())
        if not scale > 0:  # (NaN too)
            return out
        mod.weight.mul_(1.0 / scale)
        if mod.bias is not None:
            mod.bias.mul_(1.0 / scale)
        return out / scale
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()


class Config:
    def __init__(self, variant: str, compiled: bool, dtype: str, fmt: str, base: nn.Module,
                 num_classes: int):
        self.variant, self.compiled, self.dtype, self.fmt = variant, compiled, dtype, fmt
        self.name = f"{variant}{'+compile' if compiled else ''}"
        model = copy.deepcopy(base)
        if variant == "convert":
            bt.convert(model)
        elif variant == "fuse":
            model = bt.fuse(model)
        elif variant == "iabn":
            model = bt.convert_inplace_abn(model)
        elif variant == "free-bn":
            _free_batch_norm(model)
        if fmt == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        self.module = model
        self.run = torch.compile(model) if compiled else model
        # free-bn's SGD does the same work with a learning rate of 0: its
        # weights stay where _unit_scale put them (a deep network without
        # batch norm diverges in a few steps, to values that are not finite)
        lr = 0.0 if variant == "free-bn" else 1e-3
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        self.loss = nn.CrossEntropyLoss()
        self.train_times: List[float] = []
        self.infer_times: List[float] = []
        self.saved = self.peak = None
        self.prof_bn_us: List[float] = []  # per profiled round
        self.prof_step_us: List[float] = []

    def autocast(self):
        if self.dtype == "bfloat16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, x, target):
        self.module.train()
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.run(x)
        self.loss(out.float(), target).backward()
        self.opt.step()

    def infer_step(self, x):
        self.module.eval()
        with torch.no_grad(), self.autocast():
            self.run(x)

    def saved_bytes(self, x, target) -> int:
        """Bytes autograd holds for the backward once the forward is done:
        every saved tensor's storage once, parameters and buffers excluded."""
        self.module.train()
        params = {p.untyped_storage().data_ptr() for p in self.module.parameters()}
        params |= {b.untyped_storage().data_ptr() for b in self.module.buffers()}
        seen: Dict[int, int] = {}

        def pack(t):
            s = t.untyped_storage()
            if s.data_ptr() not in params:
                seen[s.data_ptr()] = s.nbytes()
            return t
        self.opt.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), self.autocast():
            out = self.run(x)
        self.loss(out.float(), target).backward()
        self.opt.zero_grad(set_to_none=True)
        return sum(seen.values())


def bn_calls(model: nn.Module, x: torch.Tensor, autocast) -> List[dict]:
    """Each batch-norm module call of one training-mode forward of
    ``model``: the bytes of its input, whether it is channels-last, whether
    a residual was added and the fused activation (BatchNormAct's, or None).
    Runs on a copy: the model's running statistics are not touched."""
    from torch.nn.modules.batchnorm import _BatchNorm
    model = copy.deepcopy(model)
    calls: List[dict] = []

    def hook(mod, args, kwargs, out):
        t = args[0]
        res = args[1] if len(args) > 1 else kwargs.get("residual")
        rows = (t.dim() >= 3 and not t.is_contiguous()
                and t.movedim(1, -1).is_contiguous())
        calls.append(dict(shape=list(t.shape), dtype=str(t.dtype).replace("torch.", ""),
                          nbytes=t.numel() * t.element_size(), channels_last=bool(rows),
                          residual=res is not None,
                          activation=getattr(mod, "activation", None)))
    handles = [m.register_forward_hook(hook, with_kwargs=True)
               for m in model.modules() if isinstance(m, _BatchNorm)]
    try:
        model.train()
        with torch.no_grad(), autocast:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def bn_floor_us(calls: List[dict], threads: int, repeat: int = 15) -> Dict[str, float]:
    """The least time the batch norms ``calls`` (bn_calls) can take in a
    training step, forward and backward, at copy speed: per call, the copies
    of its tensor that the kernel benchmark's floors count (forward 1,
    backward 1.5; 1.5 and 2.5 for a channels-last tensor larger than the
    last-level cache), half a copy more for reading a residual in the forward, one more
    for the fused backward's read of y and write of dresidual (a residual
    with an activation), each copy timed as a parallel copy of that many
    bytes with ``threads`` threads (median of ``repeat``). Returns
    {"cached": that sum, the copies of tensors that fit in the last-level
    cache timed there (repeated copies, as when the tensor was just written),
    "memory": every copy at the speed of one four times the last-level
    cache's size (the data from memory, as a saved x is in the backward)};
    each call's dict receives its "copies", "cached_us" and "memory_us"."""
    import numpy as np

    from .floor import ParallelCopy, copies, last_level_cache_bytes
    llc = last_level_cache_bytes()
    pc = ParallelCopy(threads)
    copy_us: Dict[int, float] = {}
    big = 4 * (llc or 32 << 20)
    try:
        for n in sorted({c["nbytes"] for c in calls} | {big}):
            src, dst = np.ones(n, np.uint8), np.empty(n, np.uint8)
            ts = []
            for k in range(repeat + 3):
                t0 = time.perf_counter()
                pc(dst, src)
                if k >= 3:
                    ts.append(time.perf_counter() - t0)
            copy_us[n] = statistics.median(ts) * 1e6
    finally:
        pc.close()
    cached = memory = 0.0
    for c in calls:
        n, rows = c["nbytes"], c["channels_last"]
        k = copies("train fwd", rows, n, llc) + copies("backward", rows, n, llc)
        if c["residual"]:
            k += 0.5 + (1.0 if c["activation"] else 0.0)
        c["copies"] = k
        c["cached_us"] = k * copy_us[n]
        c["memory_us"] = k * copy_us[big] * n / big
        cached += c["cached_us"]
        memory += c["memory_us"]
    return dict(cached=cached, memory=memory)


def _fmt_ms(ts: List[float]) -> str:
    if not ts:
        return "-"
    return f"{statistics.median(ts) * 1e3:8.1f}"


def run(name: str = "resnet18", batch: int = 16, size: int = 224, rounds: int = 7,
        threads: Optional[int] = None, with_compile: bool = False,
        dtypes=("float32", "bfloat16"), formats=("nchw", "channels_last"),
        variants: Optional[List[str]] = None, json_path: Optional[str] = None,
        num_classes: int = 1000, aa: bool = False, bound: bool = False) -> int:
    if threads is not None:
        torch.set_num_threads(threads)
        bnorm.set_num_threads(threads)
    torch.manual_seed(0)
    base = models.build(name, num_classes)
    if variants is None:
        variants = ["native", "convert", "fuse"] + (["iabn"] if name == "resnet18_leaky" else [])
    for flag, extra in ((aa, "native-aa"), (bound, "free-bn")):
        if flag and extra not in variants:
            variants = list(variants) + [extra]
    unknown = set(variants) - set(_VARIANTS)
    if unknown:
        raise ValueError(f"unknown configurations {sorted(unknown)}")
    if "bfloat16" in dtypes:
        try:
            import ml_dtypes  # noqa: F401
        except ImportError:
            print("bfloat16 needs ml_dtypes (pip install ml_dtypes): skipped")
            dtypes = tuple(d for d in dtypes if d != "bfloat16")
    configs: List[Config] = []
    for dtype in dtypes:
        for fmt in formats:
            for v in variants:
                configs.append(Config(v, False, dtype, fmt, base, num_classes))
            if with_compile:
                for v in ("native", "fuse"):
                    configs.append(Config(v, True, dtype, fmt, base, num_classes))
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(batch, 3, size, size, generator=g)
    target = torch.randint(0, num_classes, (batch,), generator=g)
    xs = {"nchw": x0, "channels_last": x0.to(memory_format=torch.channels_last)}
    print(f"bnorm {bnorm.__version__}, torch {torch.__version__}, {name}, batch {batch}, "
          f"{size}x{size}, {torch.get_num_threads()} torch thread(s), "
          f"{bnorm.get_num_threads()} bnorm thread(s), {len(configs)} configurations, "
          f"{rounds} rounds")
    t_start = time.perf_counter()
    for c in configs:
        if c.variant == "free-bn":
            _unit_scale(c.module, xs[c.fmt])
    for c in configs:  # warm up (and compile) before anything is timed
        t0 = time.perf_counter()
        for _ in range(2):
            c.train_step(xs[c.fmt], target)
            c.infer_step(xs[c.fmt])
        if c.compiled:
            print(f"  compiled {c.name} {c.dtype} {c.fmt} in {time.perf_counter() - t0:.0f} s",
                  flush=True)
    for c in configs:
        c.saved = c.saved_bytes(xs[c.fmt], target)
        if _reset_peak():
            before = _rss_bytes("VmRSS")
            c.train_step(xs[c.fmt], target)
            c.peak = _rss_bytes("VmHWM") - before
    # profiled steps: one untimed session first (the profiler's first
    # session pays its own start-up), then _PROFILE_ROUNDS rounds over the
    # eager configurations, so that native's share and each configuration's
    # batch-norm time pair up round by round
    profiled = [c for c in configs if not c.compiled]
    for r in range(_PROFILE_ROUNDS + 1):
        for c in profiled:
            with _quiet_stderr(), torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                c.train_step(xs[c.fmt], target)
                step = (time.perf_counter() - t0) * 1e6
            if r > 0:
                c.prof_step_us.append(step)
                c.prof_bn_us.append(_bn_time_us(prof))
    # the floor of batch norm's part of each (dtype, format), from the fused
    # model's batch norms
    floors: Dict[tuple, dict] = {}
    for dtype in dtypes:
        for fmt in formats:
            fused = next((c for c in configs if c.variant == "fuse" and c.dtype == dtype
                          and c.fmt == fmt), None)
            if fused is None:
                fused = Config("fuse", False, dtype, fmt, base, num_classes)
            calls = bn_calls(fused.module, xs[fmt], fused.autocast())
            fl = bn_floor_us(calls, torch.get_num_threads())
            floors[(dtype, fmt)] = dict(floor_us=fl["cached"], memory_floor_us=fl["memory"],
                                        calls=calls)
    for r in range(rounds):
        for c in configs:
            t0 = time.perf_counter()
            c.train_step(xs[c.fmt], target)
            c.train_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            c.infer_step(xs[c.fmt])
            c.infer_times.append(time.perf_counter() - t0)
        print(f"  round {r + 1}/{rounds} done ({time.perf_counter() - t_start:.0f} s)",
              flush=True)

    for c in configs:  # after the timed steps (SGD has moved its weights)
        if c.variant == "free-bn":
            with torch.no_grad(), c.autocast():
                finite = bool(torch.isfinite(c.module(xs[c.fmt])).all())
            if not finite:
                print(f"  free-bn {c.dtype} {c.fmt}: the output is not finite; its times "
                      "may not compare with the others'")
    natives = {(c.dtype, c.fmt): c for c in configs if c.variant == "native" and not c.compiled}
    header = (f"{'config':<16} {'dtype':<9} {'format':<14} {'train ms':>9} {'range':>13} "
              f"{'speedup':>8} {'infer ms':>9} {'speedup':>8} {'saved MB':>9} {'peak MB':>8} "
              f"{'bn share':>9} {'ceiling':>8} {'copy ceil':>9}")
    print(header)
    print("-" * len(header))
    rows = []
    for c in configs:
        nat = natives.get((c.dtype, c.fmt))
        tr = statistics.median(c.train_times)
        inf = statistics.median(c.infer_times)
        # paired: native's step over this one's in the same round, median
        # over the rounds (a round's steps run within seconds of each other)
        sp = statistics.median(a / b for a, b in zip(nat.train_times, c.train_times)) \
            if nat else None
        spi = statistics.median(a / b for a, b in zip(nat.infer_times, c.infer_times)) \
            if nat else None
        share = ceiling = None
        if not c.compiled and c.prof_bn_us and nat is not None and nat.prof_bn_us:
            # per profiled round: this one's share, and Amdahl's limit from
            # native's share and native's bn time over this one's in that
            # round; the medians over the rounds
            share = statistics.median(b / t for b, t in zip(c.prof_bn_us, c.prof_step_us))
            ceilings = []
            for nb, nt, cb in zip(nat.prof_bn_us, nat.prof_step_us, c.prof_bn_us):
                f = nb / nt
                s = nb / cb if cb > 0 else float("inf")
                ceilings.append(1.0 / ((1 - f) + f / s))
            ceiling = statistics.median(ceilings)
        fl = floors.get((c.dtype, c.fmt))
        copy_ceiling = None
        if fl is not None and nat is not None and nat.prof_bn_us:
            copy_ceiling = statistics.median(
                nt / (nt - nb + fl["floor_us"]) for nb, nt in zip(nat.prof_bn_us,
                                                                  nat.prof_step_us))
        rows.append(dict(config=c.name, variant=c.variant, compiled=c.compiled, dtype=c.dtype,
                         format=c.fmt, train_ms=[t * 1e3 for t in c.train_times],
                         infer_ms=[t * 1e3 for t in c.infer_times], train_speedup=sp,
                         infer_speedup=spi, saved_bytes=c.saved, peak_rss_bytes=c.peak,
                         bn_share=share, ceiling=ceiling, copy_ceiling=copy_ceiling,
                         bn_floor_us=fl["floor_us"] if fl else None,
                         profiled_step_us=c.prof_step_us, profiled_bn_us=c.prof_bn_us))
        rng = f"{min(c.train_times) * 1e3:.0f}-{max(c.train_times) * 1e3:.0f}"
        print(f"{c.name:<16} {c.dtype:<9} {c.fmt:<14} {tr * 1e3:9.1f} {rng:>13} "
              f"{(f'{sp:.2f}x' if sp else '-'):>8} {inf * 1e3:9.1f} "
              f"{(f'{spi:.2f}x' if spi else '-'):>8} {c.saved / 2**20:9.1f} "
              f"{(f'{c.peak / 2**20:.0f}' if c.peak is not None else '-'):>8} "
              f"{(f'{share:.1%}' if share is not None else '-'):>9} "
              f"{(f'{ceiling:.2f}x' if ceiling is not None else '-'):>8} "
              f"{(f'{copy_ceiling:.2f}x' if copy_ceiling is not None else '-'):>9}")
    print(f"({time.perf_counter() - t_start:.0f} s; speedup: native's step over this one's in "
          "the same round, median over the rounds; bn share and ceiling: medians over "
          f"{_PROFILE_ROUNDS} profiled rounds)")
    for (dtype, fmt), fl in floors.items():
        nat = natives.get((dtype, fmt))
        nb = statistics.median(nat.prof_bn_us) / 1e3 if nat and nat.prof_bn_us else None
        moved = sum(c["copies"] * c["nbytes"] * 2 for c in fl["calls"]) / 1e6
        mem = ""
        if nat and nat.prof_bn_us:
            mc = statistics.median(nt / (nt - b + fl["memory_floor_us"])
                                   for b, nt in zip(nat.prof_bn_us, nat.prof_step_us))
            mem = f", {mc:.2f}x over native"
        print(f"copy floor of batch norm's part, {dtype} {fmt}: {len(fl['calls'])} batch norms, "
              f"{moved:.0f} MB read and written: {fl['floor_us'] / 1e3:.1f} ms at cached copy "
              f"speed (copy ceil), {fl['memory_floor_us'] / 1e3:.1f} ms at memory copy speed"
              f"{mem}" + (f"; native's profiled bn time {nb:.1f} ms" if nb is not None else ""))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(dict(model=name, batch=batch, size=size, rounds=rounds,
                           threads=torch.get_num_threads(), bnorm=bnorm.__version__,
                           torch=torch.__version__, rows=rows,
                           bn_floors=[dict(dtype=d, format=f_, floor_us=v["floor_us"],
                                           memory_floor_us=v["memory_floor_us"],
                                           calls=v["calls"])
                                      for (d, f_), v in floors.items()]), f, indent=1)
        print(f"wrote {json_path}")
    return 0
