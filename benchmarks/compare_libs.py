"""Two builds of libbnorm side by side in one process, for engine changes.

    python benchmarks/compare_libs.py OLD/libbnorm.so.0 NEW/libbnorm.so.0 [--threads N]

Loads both shared libraries (ctypes, each with its own symbols), and times
each case's C call alternately on the two, on the same arrays, so that both
see the same machine state. Prints per case the median time of each and
new/old speed (>1: the new one is faster), and checks that both give the
same bits. A measurement, not a test; it needs only NumPy (and ml_dtypes
for bfloat16).
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time

import numpy as np

SHAPES = [  # (N, C, H, W) as NCHW and as NHWC, and (N, C)
    (32, 64, 56, 56), (32, 128, 56, 56), (32, 256, 14, 14), (8, 32, 112, 112),
    (64, 2048, 7, 7), (256, 1024), (2, 3, 4, 5)]
DTYPES = {"float32": 1, "float64": 2, "float16": 3, "bfloat16": 4}  # bnorm_dtype

vp = ctypes.c_void_p
i64 = ctypes.c_int64


def load(path):
    lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
    lib.bnorm_forward_training_fused.argtypes = [ctypes.c_int, i64, i64, i64] + [vp] * 9 + [
        ctypes.c_double, ctypes.c_double, ctypes.c_uint32]
    lib.bnorm_forward_inference_fused.argtypes = [ctypes.c_int, i64, i64, i64] + [vp] * 7 + [
        ctypes.c_double, ctypes.c_uint32]
    lib.bnorm_backward_fused.argtypes = [ctypes.c_int, i64, i64, i64] + [vp] * 11 + [
        ctypes.c_uint32]
    lib.bnorm_set_num_threads.argtypes = [ctypes.c_int]
    return lib


def ptr(a):
    return None if a is None else a.ctypes.data


def cases(dtype_name, shapes):
    rng = np.random.default_rng(0)
    if dtype_name == "bfloat16":
        import ml_dtypes
        dt = np.dtype(ml_dtypes.bfloat16)
    else:
        dt = np.dtype(dtype_name)
    pd = np.float64 if dt == np.float64 else np.float32
    for shape in shapes:
        layouts = [("nchw", 1), ("nhwc", 3)] if len(shape) == 4 else [("nc", 1)]
        for name, axis in layouts:
            s = shape if axis == 1 else (shape[0], shape[2], shape[3], shape[1])
            C = s[axis]
            outer = int(np.prod(s[:axis]))
            inner = int(np.prod(s[axis + 1:]))
            x = rng.standard_normal(s).astype(dt)
            yield "x".join(map(str, shape)) + " " + name, (outer, C, inner), x, \
                rng.standard_normal(s).astype(dt), pd


def run(lib, op, code, dims, bufs, flags=0):
    o, c, i = dims
    x, g, y, dx, w, b, sm, si, rm, rv, dw, db, z = bufs
    if op == "train":
        st = lib.bnorm_forward_training_fused(code, o, c, i, ptr(x), None, ptr(y), ptr(w), ptr(b),
                                              ptr(sm), ptr(si), ptr(rm), ptr(rv), 1e-5, 0.1, 0)
    elif op == "train relu+res":
        st = lib.bnorm_forward_training_fused(code, o, c, i, ptr(x), ptr(z), ptr(y), ptr(w),
                                              ptr(b), ptr(sm), ptr(si), None, None, 1e-5, 0.1, 4)
    elif op == "inference":
        st = lib.bnorm_forward_inference_fused(code, o, c, i, ptr(x), None, ptr(y), ptr(rm),
                                               ptr(rv), ptr(w), ptr(b), 1e-5, 0)
    elif op == "backward":
        st = lib.bnorm_backward_fused(code, o, c, i, ptr(g), ptr(x), None, ptr(sm), ptr(si),
                                      ptr(w), None, ptr(dx), ptr(dw), ptr(db), None, 0)
    elif op == "backward relu":  # the mask from y
        st = lib.bnorm_backward_fused(code, o, c, i, ptr(g), ptr(x), ptr(y), ptr(sm), ptr(si),
                                      ptr(w), ptr(b), ptr(dx), ptr(dw), ptr(db), None, 4)
    elif op in ("backward relu x", "backward relu6 x", "frozen relu x"):
        # the mask recomputed from x (no y given); frozen: the map pass alone
        fl = (8 if "relu6" in op else 4) | (2 if op.startswith("frozen") else 0)
        st = lib.bnorm_backward_fused(code, o, c, i, ptr(g), ptr(x), None, ptr(sm), ptr(si),
                                      ptr(w), ptr(b), ptr(dx), ptr(dw), ptr(db), None, fl)
    else:
        raise SystemExit(f"unknown op {op!r}")
    assert st == 0, (op, st)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--ops", default="train,inference,backward,train relu+res,backward relu",
                    help="comma-separated; also 'backward relu x', 'backward relu6 x' "
                         "(the mask from x) and 'frozen relu x' (its map pass alone)")
    ap.add_argument("--shape", action="append",
                    help="a shape instead of the suite, e.g. 256x1024 (repeatable)")
    args = ap.parse_args(argv)
    libs = [load(args.old), load(args.new)]
    if args.threads:
        for lib in libs:
            lib.bnorm_set_num_threads(args.threads)
    code = DTYPES[args.dtype]
    ratios = []
    print(f"{'case':28s} {'op':16s} {'old':>10s} {'new':>10s} {'new/old speed':>14s}  bits")
    shapes = ([tuple(int(v) for v in s.split("x")) for s in args.shape] if args.shape
              else SHAPES)
    for label, dims, x, g, pd in cases(args.dtype, shapes):
        C = dims[1]
        for op in args.ops.split(","):
            outs = []
            for lib in libs:
                y, dx, z = np.zeros_like(x), np.zeros_like(x), g.copy()
                w, b = np.linspace(0.5, 1.5, C).astype(pd), np.linspace(-1, 1, C).astype(pd)
                sm, si, rm, rv = (np.zeros(C, pd), np.zeros(C, pd), np.zeros(C, pd),
                                  np.ones(C, pd))
                dw, db = np.zeros(C, pd), np.zeros(C, pd)
                bufs = (x, g, y, dx, w, b, sm, si, rm, rv, dw, db, z)
                run(lib, "train", code, dims, bufs)  # statistics for the backward
                outs.append(bufs)
            times = [[], []]
            for _ in range(args.repeat + 2):
                for k in (0, 1):
                    t0 = time.perf_counter()
                    run(libs[k], op, code, dims, outs[k])
                    times[k].append(time.perf_counter() - t0)
            t_old, t_new = (statistics.median(t[2:]) for t in times)
            same = all(np.array_equal(a.view(np.uint8), b.view(np.uint8))
                       for a, b in zip(outs[0][2:], outs[1][2:]))
            ratios.append(t_old / t_new)
            print(f"{label:28s} {op:16s} {t_old * 1e6:8.0f}us {t_new * 1e6:8.0f}us "
                  f"{t_old / t_new:13.2f}x  {'same' if same else 'DIFFER'}")
    gm = float(np.exp(np.mean(np.log(ratios))))
    print(f"geometric mean new/old speed: {gm:.3f} over {len(ratios)} cases "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
