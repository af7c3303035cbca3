"""The benchmark behind ``python -m bnorm bench``.

For each case it times, in one process and one run: a plain copy of the
tensor (the memory-bandwidth floor), bnorm, the NumPy reference, and PyTorch
when it is installed. It prints medians, bnorm's ratio to the floor (1.0 =
as fast as a copy; see PERF.md) and its speedup over the others. It is a
measurement, never a pass/fail test.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

import bnorm
from bnorm import reference

# (shape, axis, label)
QUICK_CASES: Sequence[Tuple[Tuple[int, ...], int, str]] = (
    ((32, 64, 28, 28), 1, "NCHW"),
    ((32, 28, 28, 64), -1, "NHWC"),
    ((256, 1024), 1, "NC"),
)
FULL_CASES: Sequence[Tuple[Tuple[int, ...], int, str]] = (
    ((32, 64, 56, 56), 1, "NCHW"),
    ((32, 56, 56, 64), -1, "NHWC"),
    ((32, 256, 14, 14), 1, "NCHW"),
    ((32, 14, 14, 256), -1, "NHWC"),
    ((8, 32, 112, 112), 1, "NCHW"),
    ((8, 112, 112, 32), -1, "NHWC"),
    ((64, 2048, 7, 7), 1, "NCHW"),
    ((64, 7, 7, 2048), -1, "NHWC"),
    ((256, 1024), 1, "NC"),
)

# floor multiple per op: backward reads two tensors and writes one (PERF.md)
FLOOR = {"inference": 1.0, "train fwd": 1.0, "backward": 1.5}


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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


def run(quick: bool = False, threads: Optional[int] = None,
        dtype: str = "float32", repeat: Optional[int] = None) -> int:
    torch = _torch()
    if threads is not None:
        bnorm.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
    repeat = repeat or (7 if quick else 15)
    cases = QUICK_CASES if quick else FULL_CASES
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)

    print(f"bnorm {bnorm.__version__}, {bnorm.get_num_threads()} thread(s), {dt}, "
          f"median of {repeat} calls"
          + (f"; torch {torch.__version__}" if torch is not None else
             "; PyTorch not installed"))
    header = (f"{'op':<10} {'shape':<20} {'layout':<6} {'bnorm':>10} "
              f"{'floor':>6} {'reference':>10} {'x ref':>7} {'torch':>10} {'x torch':>8}")
    print(header)
    print("-" * len(header))
    rows: List[str] = []
    for shape, axis, layout in cases:
        x = rng.standard_normal(shape).astype(dt)
        dy = rng.standard_normal(shape).astype(dt)
        C = shape[axis]
        w = rng.uniform(0.5, 1.5, C).astype(dt)
        b = rng.standard_normal(C).astype(dt)
        rm = np.zeros(C, dt)
        rv = np.ones(C, dt)
        y = np.empty_like(x)
        dx = np.empty_like(x)
        _, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis)
        t_copy = _median_time(lambda: np.copyto(y, x), repeat)

        ops = {
            "inference": (
                lambda: bnorm.batch_norm(x, rm, rv, w, b, axis=axis, out=y),
                lambda: reference.batch_norm(x, rm, rv, w, b, axis=axis)),
            "train fwd": (
                lambda: bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm,
                                               running_var=rv, out=y),
                lambda: reference.batch_norm_train(x, w, b, axis=axis,
                                                   running_mean=rm.copy(),
                                                   running_var=rv.copy())),
            "backward": (
                lambda: bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis, out=dx),
                lambda: reference.batch_norm_backward(dy, x, sm, si, w, axis=axis)),
        }
        torch_ops = {}
        if torch is not None:
            tx = torch.from_numpy(x)
            tdy = torch.from_numpy(dy)
            if layout == "NHWC":  # the same memory, as a channels_last tensor
                tx = tx.permute(0, 3, 1, 2)
                tdy = tdy.permute(0, 3, 1, 2)
            tw, tb = torch.from_numpy(w), torch.from_numpy(b)
            trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
            tsm, tsi = torch.from_numpy(sm), torch.from_numpy(si)

            def t_inf():
                with torch.no_grad():
                    torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, False)

            def t_train():
                with torch.no_grad():
                    torch.native_batch_norm(tx, tw, tb, trm, trv, True, 0.1, 1e-5)

            def t_bwd():
                torch.ops.aten.native_batch_norm_backward(
                    tdy, tx, tw, trm, trv, tsm, tsi, True, 1e-5, [True, True, True])

            torch_ops = {"inference": t_inf, "train fwd": t_train, "backward": t_bwd}

        for op, (f_bnorm, f_ref) in ops.items():
            t_b = _median_time(f_bnorm, repeat)
            t_r = _median_time(f_ref, max(3, repeat // 3))
            t_t = _median_time(torch_ops[op], repeat) if op in torch_ops else None
            floor = FLOOR[op] * t_copy / t_b
            line = (f"{op:<10} {'x'.join(map(str, shape)):<20} {layout:<6} "
                    f"{_fmt_time(t_b):>10} {floor:>6.2f} {_fmt_time(t_r):>10} "
                    f"{t_r / t_b:>6.1f}x {_fmt_time(t_t):>10} "
                    + (f"{t_t / t_b:>7.2f}x" if t_t is not None else f"{'-':>8}"))
            print(line, flush=True)
            rows.append(line)

    # the cost of the Python call itself
    xs = rng.standard_normal((2, 3, 4, 5)).astype(dt)
    ps = np.ones(3, dt)
    t_inf = _median_time(lambda: bnorm.batch_norm(xs, ps, ps), max(repeat, 200))
    t_tr = _median_time(lambda: bnorm.batch_norm_train(xs), max(repeat, 200))
    print(f"\nsmall call (2,3,4,5): inference {t_inf * 1e6:.1f} us, "
          f"training {t_tr * 1e6:.1f} us")
    print("floor = time of a copy of the tensor (x 1.5 for backward) / time; "
          "1.0 = as fast as a copy")
    return 0
