"""``python -m bnorm accuracy``: the worst errors bnorm makes, measured.

Prints, per dtype: the largest relative error (max |a - b| / max |b|) of
every op against ``bnorm.reference`` (float64 math) over a sweep of shapes
and layouts; the same against PyTorch when it is installed; and the float32
batch-variance error against float64 on data far from zero (the bound bnorm
holds to: 2e-6 at offset/std up to 1e5), per layout and thread count.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

import bnorm
from bnorm import reference

CASES: List[Tuple[Tuple[int, ...], int]] = [
    ((16, 3), 1), ((8, 5, 33), 1), ((4, 8, 9, 10), 1), ((4, 9, 10, 8), -1),
    ((2, 4, 3, 5, 6), 1), ((3, 2, 5000), 1), ((64, 300), -1), ((3, 5, 4, 2), 2),
]


def _err(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def _bnorm_ops(x, w, b, g, rm, rv, axis, eps=1e-5):
    rm_, rv_ = rm.copy(), rv.copy()
    y, sm, si = bnorm.batch_norm_train(x, w, b, eps, axis=axis, running_mean=rm_,
                                       running_var=rv_)
    dx, dw, db = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis)
    dxf, _, _ = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis, training=False)
    yi = bnorm.batch_norm(x, rm, rv, w, b, eps=eps, axis=axis)
    return {"train y": y, "save_mean": sm, "save_invstd": si, "running_mean": rm_,
            "running_var": rv_, "inference y": yi, "dx": dx, "dweight": dw,
            "dbias": db, "dx (frozen)": dxf}, (sm, si)


def _reference_ops(x, w, b, g, rm, rv, axis, saved, eps=1e-5):
    rm_, rv_ = rm.copy(), rv.copy()
    y, sm, si = reference.batch_norm_train(x, w, b, eps, axis=axis,
                                           running_mean=rm_, running_var=rv_)
    # the backward takes bnorm's own saved statistics, so only the backward
    # itself is compared
    dx, dw, db = reference.batch_norm_backward(g, x, *saved, w, axis=axis)
    dxf, _, _ = reference.batch_norm_backward(g, x, *saved, w, axis=axis,
                                              training=False)
    yi = reference.batch_norm(x, rm, rv, w, b, eps=eps, axis=axis)
    return {"train y": y, "save_mean": sm, "save_invstd": si, "running_mean": rm_,
            "running_var": rv_, "inference y": yi, "dx": dx, "dweight": dw,
            "dbias": db, "dx (frozen)": dxf}


def _torch_ops(torch, x, w, b, g, rm, rv, axis, eps=1e-5):
    """PyTorch's results in bnorm's layout (channels on axis 1 for torch)."""
    move = axis % x.ndim != 1
    xt = np.moveaxis(x, axis, 1) if move else x
    gt = np.moveaxis(g, axis, 1) if move else g
    F = torch.nn.functional
    tx = torch.tensor(np.ascontiguousarray(xt), requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    y = F.batch_norm(tx, trm, trv, tw, tb, training=True, eps=eps)
    y.backward(torch.tensor(np.ascontiguousarray(gt)))
    with torch.no_grad():
        yi = F.batch_norm(torch.tensor(np.ascontiguousarray(xt)), torch.tensor(rm),
                          torch.tensor(rv), tw, tb, training=False, eps=eps)
    back = (lambda a: np.moveaxis(a.detach().numpy(), 1, axis)) if move else \
        (lambda a: a.detach().numpy())
    return {"train y": back(y), "running_mean": trm.numpy(),
            "running_var": trv.numpy(), "inference y": back(yi),
            "dx": back(tx.grad), "dweight": tw.grad.numpy(), "dbias": tb.grad.numpy()}


def run() -> int:
    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(2015)
    print(f"bnorm {bnorm.__version__}: worst relative error, max|a-b| / max|b|")
    for dtype in (np.float32, np.float64):
        worst_ref: Dict[str, float] = {}
        worst_torch: Dict[str, float] = {}
        for shape, axis in CASES:
            x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
            g = rng.standard_normal(shape).astype(dtype)
            C = shape[axis]
            w = rng.uniform(-2, 2, C).astype(dtype)
            b = rng.standard_normal(C).astype(dtype)
            rm = rng.standard_normal(C).astype(dtype)
            rv = rng.uniform(0.5, 2, C).astype(dtype)
            ours, saved = _bnorm_ops(x, w, b, g, rm, rv, axis)
            for k, v in _reference_ops(x, w, b, g, rm, rv, axis, saved).items():
                worst_ref[k] = max(worst_ref.get(k, 0.0), _err(ours[k], v))
            if torch is not None:
                for k, v in _torch_ops(torch, x, w, b, g, rm, rv, axis).items():
                    worst_torch[k] = max(worst_torch.get(k, 0.0), _err(ours[k], v))
        name = np.dtype(dtype).name
        print(f"\n{name}, {len(CASES)} shapes/layouts")
        print(f"  {'output':<14} {'vs reference':>13} {'vs torch':>10}")
        for k, v in worst_ref.items():
            t = f"{worst_torch[k]:.2e}" if k in worst_torch else "-"
            print(f"  {k:<14} {v:>13.2e} {t:>10}")
    if torch is None:
        print("\n(PyTorch not installed: no comparison with it)")

    print("\nfloat32 batch variance vs float64 on the same data, "
          "x = offset + N(0, 1), bar 2e-6")
    before = bnorm.get_num_threads()
    print(f"  {'layout':<24} {'threads':>7} {'1e3':>9} {'1e4':>9} {'1e5':>9}")
    for label, shape, axis in [("NCHW 64x16x32x32", (64, 16, 32, 32), 1),
                               ("NHWC 64x32x32x16", (64, 32, 32, 16), -1),
                               ("(N, C) 4096x16", (4096, 16), -1)]:
        for nt in (1, 2):
            bnorm.set_num_threads(nt)
            errs = []
            for offset in (1e3, 1e4, 1e5):
                x = (offset + rng.standard_normal(shape)).astype(np.float32)
                C = shape[axis]
                rm, rv = np.zeros(C, np.float32), np.zeros(C, np.float32)
                bnorm.batch_norm_train(x, axis=axis, running_mean=rm, running_var=rv,
                                       momentum=1.0, unbiased=False)
                axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
                v64 = x.astype(np.float64).var(axis=axes)
                errs.append(float(np.max(np.abs(rv - v64) / v64)))
            print(f"  {label:<24} {nt:>7} " + " ".join(f"{e:>9.2e}" for e in errs))
    bnorm.set_num_threads(before)
    return 0
