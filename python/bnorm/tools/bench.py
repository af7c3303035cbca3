"""The benchmark behind ``python -m bnorm bench``.

Per case it times, in one process and one run: the floor (the faster of
``numpy.copyto`` and a parallel memcpy with the run's thread count,
tools/floor.py), bnorm, PyTorch when it is installed, ``torch.compile`` of
the same functions with ``--compile``, and with ``--reference`` or
``--quick`` the NumPy reference. It prints medians, bnorm's ratio to the
floor (floor copies x copy time / bnorm time; the copies per op and layout
are floor.copies), the speedups over the others, and whether bnorm's
outputs are bitwise the same with 1 thread and with the run's thread count;
then the bar of the project's performance goals, each figure against its
threshold. It is a measurement, never a pass/fail test.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import bnorm
from bnorm import reference

# The benchmark's suite: each 4-D shape channels-first (NCHW, axis=1) and
# channels-last (NHWC, axis=-1), and one 2-D shape.
SUITE_4D: Sequence[Tuple[int, int, int, int]] = (
    (32, 64, 56, 56), (32, 128, 56, 56), (32, 256, 14, 14), (8, 32, 112, 112),
    (64, 2048, 7, 7), (32, 128, 112, 112))  # the last: 205 MB in float32
SUITE_2D: Sequence[Tuple[int, int]] = ((256, 1024),)
QUICK_4D: Sequence[Tuple[int, int, int, int]] = ((32, 64, 28, 28),)

OPS = ("inference", "train fwd", "backward")
# The bar (floor ratios; the L2-resident (256, 1024) has its own for
# training and backward), by dtype family.
BAR_FLOOR = {"float": {"inference": 0.9, "train fwd": 0.8, "backward": 0.75},
             "half": {"inference": 0.8, "train fwd": 0.7, "backward": 0.6}}
BAR_FLOOR_SMALL = {"train fwd": 0.6, "backward": 0.5}


class _Tee:
    """Writes to a stream and keeps a copy."""

    def __init__(self, stream):
        self.stream, self.parts = stream, []

    def write(self, text):
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


def _machine() -> str:
    """The CPU model and count, as the system reports them."""
    import os
    import platform
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


@contextlib.contextmanager
def reporting(path: Optional[str], args: Sequence[str]):
    """Within it, what is printed is also kept; at the end, with a path,
    written there as a Markdown page (the command, the date, the machine and
    the output as printed)."""
    if path is None:
        yield
        return
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        yield
    cmd = " ".join(["python -m bnorm", *args])
    with open(path, "w") as f:
        f.write(f"# `{cmd}`\n\n"
                f"Made by that command on {time.strftime('%Y-%m-%d')}, on {_machine()}. "
                "Timings on a shared machine move by tens of percent from run to run: "
                "compare the ratios within one run.\n\n```\n" + "".join(tee.parts).rstrip()
                + "\n```\n")
    print(f"wrote {path}")


def _params(rng, channels: int, dtype) -> Tuple[np.ndarray, ...]:
    """Weight, bias, running mean and running variance of one case."""
    return (rng.uniform(0.5, 1.5, channels).astype(dtype),
            rng.standard_normal(channels).astype(dtype),
            (0.1 * rng.standard_normal(channels)).astype(dtype),
            rng.uniform(0.5, 1.5, channels).astype(dtype))


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _interleaved_medians(fns: Dict[str, Callable[[], object]],
                         repeat: int) -> Dict[str, float]:
    """Median time of each of fns, called in turn round by round (each round
    starts one further along, so no one is always first): a slow spell of
    the machine hits all of them alike, where timing one after the other
    lets it land on one alone (seen here: the same bnorm call 1.9 ms in one
    run and 3.6 ms in the next, PyTorch's beside it 1.7-1.9 ms)."""
    names = list(fns)
    for name in names:  # warm-up
        fns[name]()
        fns[name]()
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(repeat):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _stats_limit() -> Optional[Tuple[float, str]]:
    """The float32 statistics' arithmetic alone on data in L1, one thread
    (the benchmark's own loop, _copy.pyx): ns per value and its instruction
    set; None without the compiled helper."""
    try:
        from . import _copy
    except ImportError:
        return None
    return _copy.stats_arithmetic_ns()


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def _fmt_time(t: Optional[float]) -> str:
    if t is None:
        return "-"
    if t < 1e-3:
        return f"{t * 1e6:.0f} us"
    return f"{t * 1e3:.2f} ms"


def data_dtype(name: str) -> np.dtype:
    """The NumPy dtype for a data type name; bfloat16 comes from ml_dtypes."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise SystemExit("bfloat16 data needs ml_dtypes: pip install ml_dtypes") from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _to_torch(torch, a: np.ndarray):
    """A tensor on a's memory (bfloat16 through its 16-bit words)."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _cases(quick: bool, shape: Optional[str], layout: str):
    """(label, shape in memory order, axis, NCHW shape for torch or None)."""
    if shape:
        try:
            dims = tuple(int(s) for s in shape.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--shape {shape!r}: sizes separated by 'x', e.g. 32x64x56x56")
        if any(d <= 0 for d in dims):
            raise SystemExit(f"--shape {shape!r}: every size must be positive")
        if len(dims) < 2:
            raise SystemExit("--shape needs at least two dimensions, e.g. 32x64x56x56")
        four = [dims] if len(dims) == 4 else []
        two = [dims] if len(dims) != 4 else []
    else:
        four = list(QUICK_4D if quick else SUITE_4D)
        two = list(SUITE_2D)
    out = []
    for s in four:
        if layout in ("both", "nchw"):
            out.append(("NCHW", s, 1))
        if layout in ("both", "nhwc"):
            out.append(("NHWC", (s[0], s[2], s[3], s[1]), -1))
    for s in two:
        out.append(("NC" if len(s) == 2 else "C@1", s, 1))
    return out


def _bnorm_outputs(x, dy, w, b, rm, rv, sm, si, axis) -> List[bytes]:
    rm_, rv_ = rm.copy(), rv.copy()
    y, m, s = bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm_,
                                     running_var=rv_)
    yi = bnorm.batch_norm(x, rm, rv, w, b, axis=axis)
    dx, dw, db = bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis)
    return [a.tobytes() for a in (y, m, s, rm_, rv_, yi, dx, dw, db)]


def _compiled_peers(torch, tx, tdy, tw, tb, t_rm, t_rv):
    """torch.compile (Inductor) of the training forward, and of forward and
    backward, on this case's tensors: {"train fwd": fn, "fwd+bwd": fn}."""
    import torch.nn.functional as F
    torch._dynamo.reset()  # a fresh graph per shape

    def forward(x, w, b, rm, rv):
        return F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)

    compiled = torch.compile(forward, dynamic=False)
    xg = tx.detach().clone().requires_grad_(True)
    wg = tw.detach().clone().requires_grad_(True)
    bg = tb.detach().clone().requires_grad_(True)

    def train():
        with torch.no_grad():
            compiled(tx, tw, tb, t_rm, t_rv)

    def fwd_bwd():
        xg.grad = wg.grad = bg.grad = None
        compiled(xg, wg, bg, t_rm, t_rv).backward(tdy)

    return {"train fwd": train, "fwd+bwd": fwd_bwd}


def _bar(results, summary, family: str, small_float32: Optional[Tuple[float, float]]):
    """The bar's lines: (what, measured, threshold, holds)."""
    lines = []
    for op in OPS:
        rows = [r for r in results if r["op"] == op]
        for small in (False, True):
            part = [r for r in rows if (r["shape"] == [256, 1024]) == small]
            if not part:
                continue
            need = (BAR_FLOOR_SMALL.get(op) if small and family == "float" else None) \
                or BAR_FLOOR[family][op]
            worst = min(part, key=lambda r: r["floor_ratio"])
            where = "(256, 1024)" if small else "every other case"
            lines.append((f"{op} floor ratio, {where}", worst["floor_ratio"], need,
                          worst["floor_ratio"] >= need,
                          f"worst {'x'.join(map(str, worst['shape']))} {worst['layout']}"))
    vs_torch = [r for r in results if r["speedup_vs_torch"]]
    if vs_torch:
        worst = min(vs_torch, key=lambda r: r["speedup_vs_torch"])
        lines.append(("x PyTorch eager, every case and op", worst["speedup_vs_torch"], 1.0,
                      worst["speedup_vs_torch"] >= 1.0,
                      f"worst {worst['op']} {'x'.join(map(str, worst['shape']))} "
                      f"{worst['layout']}"))
        geo = summary.get("geomean_speedup_vs_torch_train_and_backward")
        need = 2.5 if family == "float" else 1.5
        if geo:
            lines.append(("x PyTorch eager, geometric mean of training and backward", geo,
                          need, geo >= need, ""))
    vs_compile = [r for r in results if r.get("speedup_vs_compile")]
    if vs_compile:
        worst = min(vs_compile, key=lambda r: r["speedup_vs_compile"])
        lines.append(("x torch.compile, training forward and forward+backward",
                      worst["speedup_vs_compile"], 1.5, worst["speedup_vs_compile"] >= 1.5,
                      f"worst {worst['op']} {'x'.join(map(str, worst['shape']))} "
                      f"{worst['layout']}"))
    inf, tr = summary["latency_inference_s"] * 1e6, summary["latency_training_s"] * 1e6
    if family == "float":
        lines.append(("small call, inference (us)", inf, 0.6, inf <= 0.6, "at most"))
        lines.append(("small call, training (us)", tr, 1.0, tr <= 1.0, "at most"))
    elif small_float32:
        fi, ft = small_float32[0] * 1e6, small_float32[1] * 1e6
        lines.append(("small call, inference over float32's (us)", inf - fi, 1.0,
                      inf - fi <= 1.0, "at most"))
        lines.append(("small call, training over float32's (us)", tr - ft, 1.0,
                      tr - ft <= 1.0, "at most"))
    return lines


def _small_calls(dt, pdt, repeat: int, rng) -> Tuple[float, float]:
    """Median seconds of a (2, 3, 4, 5) inference and training call."""
    xs = rng.standard_normal((2, 3, 4, 5)).astype(dt)
    ps = np.ones(3, pdt)
    return (_median_time(lambda: bnorm.batch_norm(xs, ps, ps), max(repeat, 200)),
            _median_time(lambda: bnorm.batch_norm_train(xs), max(repeat, 200)))


def run(quick: bool = False, threads: Optional[int] = None, dtype: str = "float32",
        repeat: Optional[int] = None, shape: Optional[str] = None,
        layout: str = "both", json_path: Optional[str] = None,
        with_reference: bool = False, with_compile: bool = False) -> int:
    from .floor import ParallelCopy, copies, last_level_cache_bytes
    torch = _torch()
    if with_compile and torch is None:
        raise SystemExit("--compile needs PyTorch")
    if threads is not None:
        bnorm.set_num_threads(threads)
    nthreads = bnorm.get_num_threads()
    if torch is not None:
        torch.set_num_threads(nthreads)
    other = max(2, nthreads)  # the thread count compared with 1 thread
    repeat = repeat or (7 if quick else 15)
    with_reference = with_reference or quick
    dt = data_dtype(dtype)
    pdt = np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)
    rng = np.random.default_rng(0)
    from bnorm import _core
    from bnorm._functional import _View

    llc = last_level_cache_bytes()
    pcopy = ParallelCopy(nthreads)
    print(f"bnorm {bnorm.__version__} ({_core.kernel_isa()}), {nthreads} thread(s), "
          f"{dt}, median of {repeat} calls, interleaved with the peers and the floor copies"
          + (f"; torch {torch.__version__}" if torch is not None else
             "; PyTorch not installed")
          + (f"; last-level cache {llc / 2**20:.0f} MiB" if llc else "")
          + f"; floor copy: numpy.copyto or memcpy on {nthreads} {pcopy.kind} thread(s)")
    header = (f"{'op':<10} {'shape':<16} {'layout':<6} {'bnorm':>9} {'floor':>6} "
              + (f"{'reference':>10} {'x ref':>7} " if with_reference else "")
              + f"{'torch':>9} {'x torch':>8} {'torch floor':>11}"
              + (f" {'compile':>9} {'x compile':>9}" if with_compile else "")
              + f" {'1t=Nt':>6}")
    print(header)
    print("-" * len(header))
    results: List[Dict[str, Any]] = []
    for label, shp, axis in _cases(quick, shape, layout):
        x = rng.standard_normal(shp).astype(dt)
        dy = rng.standard_normal(shp).astype(dt)
        w, b, rm, rv = _params(rng, shp[axis], pdt)
        y = np.empty_like(x)
        dx = np.empty_like(x)
        _, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis)

        # bitwise: 1 thread against this run's thread count (2 if that is 1)
        bnorm.set_num_threads(1)
        one = _bnorm_outputs(x, dy, w, b, rm, rv, sm, si, axis)
        bnorm.set_num_threads(other)
        many = _bnorm_outputs(x, dy, w, b, rm, rv, sm, si, axis)
        bnorm.set_num_threads(nthreads)
        bitwise = one == many

        # one pass that only reads x, beside the copy: what a second read of
        # x costs (training and backward read x twice)
        if pcopy.kind == "openmp":
            med = _interleaved_medians({"numpy copy": lambda: np.copyto(y, x),
                                        "parallel copy": lambda: pcopy(y, x),
                                        "read": lambda: pcopy.read(x)}, repeat)
            t_read = med["read"]
            t_case_copy = min(med["numpy copy"], med["parallel copy"])
        else:
            t_read = t_case_copy = None
        in_llc = llc is not None and x.nbytes <= llc
        # the training statistics alone (one read of x and the arithmetic in
        # double), in ns per value per thread, set beside the arithmetic's
        # limit below
        view = _View(x, axis % x.ndim, allow_channels_last=False)
        st_mean, st_m2 = np.empty(view.channels), np.empty(view.channels)
        t_stats = _median_time(lambda: _core.moments(
            (view.flat, st_mean, st_m2), view.outer, view.channels, view.inner), repeat)
        stats_ns = t_stats * nthreads / x.size * 1e9
        rows_layout = axis % len(shp) == len(shp) - 1  # channels last, or (N, C)
        trm, trv = rm.copy(), rv.copy()
        ops = {
            "inference": lambda: bnorm.batch_norm(x, rm, rv, w, b, axis=axis, out=y),
            "train fwd": lambda: bnorm.batch_norm_train(
                x, w, b, axis=axis, running_mean=trm, running_var=trv, out=y),
            "backward": lambda: bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                                          out=dx),
        }
        refs = {
            "inference": lambda: reference.batch_norm(x, rm, rv, w, b, axis=axis),
            "train fwd": lambda: reference.batch_norm_train(
                x, w, b, axis=axis, running_mean=rm.copy(), running_var=rv.copy()),
            "backward": lambda: reference.batch_norm_backward(dy, x, sm, si, w, axis=axis),
        }
        torch_ops: Dict[str, Callable[[], object]] = {}
        if torch is not None and len(shp) in (2, 4):
            tx = _to_torch(torch, x)
            tdy = _to_torch(torch, dy)
            if label == "NHWC":  # the same memory, as a channels_last tensor
                tx = tx.permute(0, 3, 1, 2)
                tdy = tdy.permute(0, 3, 1, 2)
            tw, tb = torch.from_numpy(w), torch.from_numpy(b)
            t_rm, t_rv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
            tsm, tsi = torch.from_numpy(sm), torch.from_numpy(si)

            def t_inf():
                with torch.no_grad():
                    torch.nn.functional.batch_norm(tx, t_rm, t_rv, tw, tb, False)

            def t_train():
                with torch.no_grad():
                    torch.native_batch_norm(tx, tw, tb, t_rm, t_rv, True, 0.1, 1e-5)

            def t_bwd():
                torch.ops.aten.native_batch_norm_backward(
                    tdy, tx, tw, t_rm, t_rv, tsm, tsi, True, 1e-5, [True, True, True])

            torch_ops = {"inference": t_inf, "train fwd": t_train, "backward": t_bwd}

            def t_fwd_bwd():
                t_train()
                t_bwd()

            torch_ops["fwd+bwd"] = t_fwd_bwd

        compiled: Dict[str, Callable[[], object]] = {}
        if with_compile and torch_ops:
            compiled = _compiled_peers(torch, tx, tdy, tw, tb, t_rm, t_rv)

        def fwd_bwd():
            ops["train fwd"]()
            ops["backward"]()

        ops["fwd+bwd"] = fwd_bwd
        for op in OPS + (("fwd+bwd",) if compiled else ()):
            # bnorm, its peers and the floor's two copies, interleaved
            fns = {"bnorm": ops[op], "numpy copy": lambda: np.copyto(y, x),
                   "parallel copy": lambda: pcopy(y, x)}
            if op in torch_ops:
                fns["torch"] = torch_ops[op]
            if op in compiled:
                fns["compiled"] = compiled[op]
            med = _interleaved_medians(fns, repeat)
            t_b, t_t, t_c = med["bnorm"], med.get("torch"), med.get("compiled")
            t_numpy, t_parallel = med["numpy copy"], med["parallel copy"]
            t_copy = min(t_numpy, t_parallel)
            t_r = (_median_time(refs[op], max(3, repeat // 3))
                   if with_reference and op in refs else None)
            n_copies = (copies("train fwd", rows_layout, x.nbytes, llc)
                        + copies("backward", rows_layout, x.nbytes, llc)
                        if op == "fwd+bwd" else copies(op, rows_layout, x.nbytes, llc))
            floor = n_copies * t_copy / t_b
            torch_floor = n_copies * t_copy / t_t if t_t else None
            row = {
                "op": op, "shape": list(shp), "layout": label, "axis": axis,
                "dtype": dt.name, "threads": nthreads, "bnorm_s": t_b, "copy_s": t_copy,
                "copy_numpy_s": t_numpy, "copy_parallel_s": t_parallel, "read_s": t_read,
                "read_over_copy": (t_read / t_case_copy) if t_read else None, "in_llc": in_llc,
                "statistics_s": t_stats, "statistics_ns_per_value_per_thread": stats_ns,
                "floor_copies": n_copies, "floor_ratio": floor, "reference_s": t_r,
                "torch_s": t_t, "speedup_vs_torch": (t_t / t_b) if t_t else None,
                "torch_floor_ratio": torch_floor, "compile_s": t_c,
                "speedup_vs_compile": (t_c / t_b) if t_c else None,
                "bitwise_1_vs_n_threads": bitwise, "bitwise_compared_threads": [1, other],
            }
            results.append(row)
            line = (f"{op:<10} {'x'.join(map(str, shp)):<16} {label:<6} "
                    f"{_fmt_time(t_b):>9} {floor:>6.2f} "
                    + (f"{_fmt_time(t_r):>10} {t_r / t_b:>6.1f}x " if t_r else
                       (f"{'-':>10} {'-':>7} " if with_reference else ""))
                    + f"{_fmt_time(t_t):>9} "
                    + (f"{t_t / t_b:>7.2f}x" if t_t else f"{'-':>8}")
                    + (f" {torch_floor:>11.2f}" if torch_floor else f" {'-':>11}")
                    + ((f" {_fmt_time(t_c):>9} {t_c / t_b:>8.2f}x" if t_c else
                        f" {'-':>9} {'-':>9}") if with_compile else "")
                    + f" {'yes' if bitwise else 'NO':>6}")
            print(line, flush=True)
    pcopy.close()

    # the cost of the Python call itself
    t_inf, t_tr = _small_calls(dt, pdt, repeat, rng)
    family = "float" if dt in (np.float32, np.float64) else "half"
    small_f32 = _small_calls(np.dtype(np.float32), np.dtype(np.float32), repeat, rng) \
        if family == "half" else None
    print(f"\nsmall call (2,3,4,5): inference {t_inf * 1e6:.2f} us, "
          f"training {t_tr * 1e6:.2f} us"
          + (f" (float32: {small_f32[0] * 1e6:.2f} us, {small_f32[1] * 1e6:.2f} us)"
             if small_f32 else ""))
    summary: Dict[str, Any] = {"latency_inference_s": t_inf, "latency_training_s": t_tr}
    if small_f32:
        summary["latency_float32_inference_s"], summary["latency_float32_training_s"] = \
            small_f32
    for op in OPS:
        ratios = [r["floor_ratio"] for r in results if r["op"] == op]
        if ratios:
            summary[f"min_floor_ratio_{op.replace(' ', '_')}"] = min(ratios)
    results_ops = [r for r in results if r["op"] in OPS]
    speedups = [r["speedup_vs_torch"] for r in results_ops
                if r["op"] in ("train fwd", "backward") and r["speedup_vs_torch"]]
    if speedups:
        geo = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
        summary["geomean_speedup_vs_torch_train_and_backward"] = geo
        print(f"geometric-mean speedup over PyTorch, training forward and backward: "
              f"{geo:.2f}x; slowest case {min(speedups):.2f}x")
    reads = [(r["read_over_copy"], r["in_llc"])
             for r in results_ops if r["op"] == "inference" and r["read_over_copy"]]
    for fits, where in ((True, "within"), (False, "larger than")):
        got = [q for q, f in reads if f == fits]
        if got:
            summary[f"read_over_copy_{'in' if fits else 'above'}_llc"] = [min(got), max(got)]
            print(f"a pass that only reads x, tensors {where} the last-level cache: "
                  f"{min(got):.2f}-{max(got):.2f} of a copy's time")
    stats = [(r["statistics_ns_per_value_per_thread"], r["in_llc"], r["shape"])
             for r in results_ops if r["op"] == "inference"]
    limit = _stats_limit()
    if stats:
        incache = [ns for ns, fits, _ in stats if fits]
        parts = ([f"{min(incache):.3f}-{max(incache):.3f} within the last-level cache"]
                 if incache else [])
        parts += [f"{ns:.3f} on {'x'.join(map(str, shp))}" for ns, _, shp in stats
                  if len(shp) == 2]
        summary["statistics_ns_per_value_per_thread"] = [min(q[0] for q in stats),
                                                          max(q[0] for q in stats)]
        text = "the statistics pass alone, ns per value per thread: " + ", ".join(parts)
        if limit:
            summary["statistics_arithmetic_limit_ns"], summary["statistics_limit_isa"] = limit
            text += (f"; their arithmetic alone (float32, double sums, {limit[1]}) on data "
                     f"in L1, one thread: {limit[0]:.3f}")
        print(text)
    print("lowest floor ratio: " + ", ".join(
        f"{op} {summary[f'min_floor_ratio_' + op.replace(' ', '_')]:.2f}"
        for op in OPS if f"min_floor_ratio_{op.replace(' ', '_')}" in summary))
    print("floor = copies x the time of the faster copy (numpy.copyto, or a memcpy on "
          f"{nthreads} {pcopy.kind} thread(s)) / time; 1.0 = as fast as a copy. "
          "Copies: 1 for inference and training, 1.5 for backward; "
          "channels-last tensors larger than the "
          "last-level cache 1.5 and 2.5 (a second read); fwd+bwd the sum. "
          f"1t=Nt: outputs bitwise equal for 1 and {other} threads")
    bar = _bar(results_ops + [r for r in results if r["op"] == "fwd+bwd"], summary,
               family, small_f32)
    print(f"\nthe bar ({family} data, {nthreads} thread(s)):")
    for what, got, need, holds, note in bar:
        print(f"  {'holds ' if holds else 'misses'}  {what}: {got:.3g} "
              f"(bar {need:g}{'; ' + note if note else ''})")
    summary["bar"] = [{"what": w, "measured": g, "bar": n, "holds": h, "note": t}
                      for w, g, n, h, t in bar]
    if json_path:
        doc = {"bnorm": bnorm.__version__, "isa": _core.kernel_isa(),
               "threads": nthreads, "dtype": dt.name, "repeat": repeat,
               "floor_copy": pcopy.kind, "torch": getattr(torch, "__version__", None),
               "cases": results,
               "summary": summary}
        if json_path == "-":
            json.dump(doc, sys.stdout, indent=1)
            print()
        else:
            with open(json_path, "w") as f:
                json.dump(doc, f, indent=1)
            print(f"wrote {json_path}")
    return 0 if all(r["bitwise_1_vs_n_threads"] for r in results) else 1
