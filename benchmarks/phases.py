"""Where the time of a training forward and a backward goes, phase by phase.

    python benchmarks/phases.py [--lib PATH] [--dtype float16] [--threads 2]
                                [--shape 64x2048x7x7] [--layout nchw|nhwc]

For each case, timed alternately in one process (median of --repeat calls):

  copy       the benchmark's floor copy of x (the faster of numpy.copyto and a
             memcpy split over the threads)
  read       bnorm_moments: the statistics pass alone (reads x once)
  normalize  bnorm_forward_normalize: the map alone (reads x, writes y)
  train      bnorm_forward_training: both
  sums       bnorm_backward_reduce: the backward's reduction alone (dy, x)
  apply      bnorm_backward_apply: the backward's map alone (dy, x -> dx)
  backward   bnorm_backward: both

and the same in nanoseconds per value and per byte of a copy. train - read -
normalize and backward - sums - apply are what the one-call forms cost or
save over the two phases called apart (sharing the pass over cached data,
one parallel region instead of two). A measurement, not a test: it needs
NumPy, ml_dtypes for bfloat16, and the installed package (for its library,
unless --lib is given, and for the floor copy).
"""
from __future__ import annotations

import argparse
import ctypes

import numpy as np

from bnorm.tools.bench import _median_time as median
from bnorm.tools.floor import ParallelCopy

DTYPES = {"float32": 1, "float64": 2, "float16": 3, "bfloat16": 4}
SHAPES = [(32, 64, 56, 56), (32, 128, 56, 56), (32, 256, 14, 14), (8, 32, 112, 112),
          (64, 2048, 7, 7), (256, 1024)]
vp, i64, dbl = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double


def load(path):
    lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
    lib.bnorm_moments.argtypes = [ctypes.c_int, i64, i64, i64, vp, vp, vp]
    lib.bnorm_forward_normalize.argtypes = [ctypes.c_int, i64, i64, i64, vp, vp, i64, vp, vp] + [
        vp] * 6 + [dbl, dbl, ctypes.c_uint32]
    lib.bnorm_forward_training.argtypes = [ctypes.c_int, i64, i64, i64] + [vp] * 8 + [
        dbl, dbl, ctypes.c_uint32]
    lib.bnorm_backward_reduce.argtypes = [ctypes.c_int, i64, i64, i64, vp, vp, vp, vp, vp]
    lib.bnorm_backward_apply.argtypes = [ctypes.c_int, i64, i64, i64] + [vp] * 7 + [
        i64, vp, vp, vp]
    lib.bnorm_backward.argtypes = [ctypes.c_int, i64, i64, i64] + [vp] * 8 + [ctypes.c_uint32]
    lib.bnorm_set_num_threads.argtypes = [ctypes.c_int]
    return lib


def default_lib() -> str:
    import os
    import bnorm
    d = bnorm.get_library_dir()
    for name in sorted(os.listdir(d)):
        if name.startswith("libbnorm.so.") or name.endswith(".dll") or name.endswith(".dylib"):
            return os.path.join(d, name)
    raise SystemExit(f"no libbnorm.so* in {d}: pass --lib")


def data_dtype(name):
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def ptr(a):
    return None if a is None else a.ctypes.data


def case(lib, copy, dt, shape, axis, repeat):
    code = DTYPES[dt.name if dt.name in DTYPES else "bfloat16"]
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32).astype(dt)
    dy = rng.standard_normal(shape).astype(np.float32).astype(dt)
    outer = int(np.prod(shape[:axis]))
    C = shape[axis]
    inner = int(np.prod(shape[axis + 1:]))
    pd = np.float64 if dt == np.float64 else np.float32
    w = rng.uniform(0.5, 1.5, C).astype(pd)
    b = rng.standard_normal(C).astype(pd)
    y, dx, dst = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    mean, m2 = np.empty(C), np.empty(C)
    sm, si = np.empty(C, pd), np.empty(C, pd)
    s1, s2 = np.empty(C), np.empty(C)
    dw, db = np.empty(C, pd), np.empty(C, pd)
    m = outer * inner
    lib.bnorm_forward_training(code, outer, C, inner, ptr(x), ptr(y), ptr(w), ptr(b),
                               ptr(sm), ptr(si), None, None, 1e-5, 0.1, 0)
    lib.bnorm_moments(code, outer, C, inner, ptr(x), ptr(mean), ptr(m2))
    lib.bnorm_backward_reduce(code, outer, C, inner, ptr(dy), ptr(x), ptr(sm), ptr(s1), ptr(s2))
    fns = {
        "copy": lambda: copy(dst, x),
        "read": lambda: lib.bnorm_moments(code, outer, C, inner, ptr(x), ptr(mean), ptr(m2)),
        "normalize": lambda: lib.bnorm_forward_normalize(
            code, outer, C, inner, ptr(x), ptr(y), m, ptr(mean), ptr(m2), ptr(w), ptr(b),
            ptr(sm), ptr(si), None, None, 1e-5, 0.1, 0),
        "train": lambda: lib.bnorm_forward_training(
            code, outer, C, inner, ptr(x), ptr(y), ptr(w), ptr(b), ptr(sm), ptr(si), None,
            None, 1e-5, 0.1, 0),
        "sums": lambda: lib.bnorm_backward_reduce(code, outer, C, inner, ptr(dy), ptr(x),
                                                  ptr(sm), ptr(s1), ptr(s2)),
        "apply": lambda: lib.bnorm_backward_apply(
            code, outer, C, inner, ptr(dy), ptr(x), ptr(sm), ptr(si), ptr(w), ptr(s1),
            ptr(s2), m, ptr(dx), ptr(dw), ptr(db)),
        "backward": lambda: lib.bnorm_backward(code, outer, C, inner, ptr(dy), ptr(x),
                                               ptr(sm), ptr(si), ptr(w), ptr(dx), ptr(dw),
                                               ptr(db), 0),
    }
    for k, f in fns.items():
        if k != "copy" and f() != 0:
            raise SystemExit(f"{k}: bnorm status {f()}")
    t = {k: [] for k in fns}
    for _ in range(3):  # rounds, interleaved, so that all see the same machine state
        for k, f in fns.items():
            t[k].append(median(f, repeat))
    return {k: min(v) for k, v in t.items()}, x.size, x.nbytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=None)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--shape", default=None, help="e.g. 64x2048x7x7 (4-D: NCHW and NHWC)")
    ap.add_argument("--layout", choices=["both", "nchw", "nhwc"], default="both")
    a = ap.parse_args()
    lib = load(a.lib or default_lib())
    lib.bnorm_set_num_threads(a.threads)
    copy = ParallelCopy(a.threads)
    dt = data_dtype(a.dtype)
    shapes = [tuple(int(s) for s in a.shape.split("x"))] if a.shape else SHAPES
    names = ["copy", "read", "normalize", "train", "sums", "apply", "backward"]
    print(f"{a.dtype}, {a.threads} thread(s), best of 3 medians of {a.repeat}; times in us, "
          "then train and backward over the sum of their phases")
    print(f"{'shape':<16} {'layout':<6} " + " ".join(f"{n:>9}" for n in names)
          + f" {'tr/ph':>6} {'bw/ph':>6} {'ns/v rd':>8}")
    for shape in shapes:
        layouts = [("nchw", 1), ("nhwc", 3)] if len(shape) == 4 else [("nc", 1)]
        for name, axis in layouts:
            if a.layout != "both" and len(shape) == 4 and name != a.layout:
                continue
            s = shape if axis == 1 else (shape[0], shape[2], shape[3], shape[1])
            t, n, _ = case(lib, copy, dt, s, axis, a.repeat)
            print(f"{'x'.join(map(str, s)):<16} {name:<6} "
                  + " ".join(f"{t[k] * 1e6:9.1f}" for k in names)
                  + f" {t['train'] / (t['read'] + t['normalize']):6.2f}"
                  + f" {t['backward'] / (t['sums'] + t['apply']):6.2f}"
                  + f" {t['read'] / n * 1e9 * a.threads:8.3f}")
    print("ns/v rd: the statistics pass's nanoseconds per value per thread")


if __name__ == "__main__":
    main()
