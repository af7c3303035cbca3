"""``python -m bnorm bench --fused``: the fused ops against the unfused pair.

Per case (the benchmark's suite, or ``--shape``) it times, in one run:
BN + ReLU, BN + ReLU6 and BN + Add + ReLU fused into bnorm's pass, against
bnorm's plain batch norm followed by the same steps as separate in-place
NumPy passes (``np.add(y, z, out=y)``, ``np.maximum(y, 0, out=y)`` or
``np.clip(y, 0, 6, out=y)``, and for the backward ``np.multiply(dy, y > 0)``
or ``np.multiply(dy, (y > 0) & (y < 6))`` before the plain backward) --
what a user without fusion would run. Also a plain copy of the tensor, for scale. A
measurement, never a pass/fail test.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

import bnorm

from .bench import _cases, _fmt_time, _median_time, _params


def run(quick: bool = False, threads: Optional[int] = None, dtype: str = "float32",
        repeat: Optional[int] = None, shape: Optional[str] = None,
        layout: str = "both") -> int:
    if threads is not None:
        bnorm.set_num_threads(threads)
    repeat = repeat or (7 if quick else 15)
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    print(f"bnorm {bnorm.__version__}, {bnorm.get_num_threads()} thread(s), {dt}, "
          f"median of {repeat} calls: fused against bnorm + separate NumPy passes")
    header = (f"{'op':<22} {'shape':<16} {'layout':<6} {'copy':>9} {'fused':>9} "
              f"{'unfused':>9} {'speedup':>8}")
    print(header)
    print("-" * len(header))
    speedups = []
    for label, shp, axis in _cases(quick, shape, layout):
        x = rng.standard_normal(shp).astype(dt)
        z = rng.standard_normal(shp).astype(dt)
        dy = rng.standard_normal(shp).astype(dt)
        w, b, rm, rv = _params(rng, shp[axis], dt)
        y = np.empty_like(x)
        dx = np.empty_like(x)
        g = np.empty_like(x)
        y_relu, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu")
        y_add, _, _ = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu",
                                             residual=z)
        y_six, _, _ = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu6")
        t_copy = _median_time(lambda: np.copyto(y, x), repeat)

        def unfused_fwd(train, add, six=False):
            def f():
                if train:
                    bnorm.batch_norm_train(x, w, b, axis=axis, out=y)
                else:
                    bnorm.batch_norm(x, rm, rv, w, b, axis=axis, out=y)
                if add:
                    np.add(y, z, out=y)
                if six:
                    np.clip(y, 0, 6, out=y)
                else:
                    np.maximum(y, 0, out=y)
            return f

        def unfused_bwd(yf, six=False):
            def f():
                np.multiply(dy, (yf > 0) & (yf < 6) if six else yf > 0, out=g)
                bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis, out=dx)
            return f

        cases = [
            ("train fwd BN+ReLU",
             lambda: bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu", out=y),
             unfused_fwd(True, False)),
            ("train fwd BN+ReLU6",
             lambda: bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu6", out=y),
             unfused_fwd(True, False, six=True)),
            ("train fwd BN+Add+ReLU",
             lambda: bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu",
                                            residual=z, out=y),
             unfused_fwd(True, True)),
            ("inference BN+ReLU",
             lambda: bnorm.batch_norm(x, rm, rv, w, b, axis=axis, activation="relu", out=y),
             unfused_fwd(False, False)),
            ("inference BN+Add+ReLU",
             lambda: bnorm.batch_norm(x, rm, rv, w, b, axis=axis, activation="relu",
                                      residual=z, out=y),
             unfused_fwd(False, True)),
            ("backward BN+ReLU (y)",
             lambda: bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                               activation="relu", y=y_relu, out=dx),
             unfused_bwd(y_relu)),
            ("backward BN+ReLU (x)",
             lambda: bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                               activation="relu", bias=b, out=dx),
             unfused_bwd(y_relu)),
            ("backward BN+ReLU6 (x)",
             lambda: bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                               activation="relu6", bias=b, out=dx),
             unfused_bwd(y_six, six=True)),
            ("backward BN+Add+ReLU",
             lambda: bnorm.batch_norm_backward(dy, x, sm, si, w, axis=axis,
                                               activation="relu", y=y_add,
                                               residual=True, out=dx),
             unfused_bwd(y_add)),
        ]
        for name, fused, unfused in cases:
            t_f = _median_time(fused, repeat)
            t_u = _median_time(unfused, repeat)
            speedups.append(t_u / t_f)
            print(f"{name:<22} {'x'.join(map(str, shp)):<16} {label:<6} "
                  f"{_fmt_time(t_copy):>9} {_fmt_time(t_f):>9} {_fmt_time(t_u):>9} "
                  f"{t_u / t_f:>7.2f}x", flush=True)
    print(f"\nfused over unfused: slowest {min(speedups):.2f}x, "
          f"geometric mean {float(np.exp(np.mean(np.log(speedups)))):.2f}x")
    return 0
