"""Every instruction-set copy of the kernels against the scalar one.

The kernels are compiled once per instruction set and chosen at run time;
the environment variable BNORM_ISA selects one for a process. The copies
use one fixed order of operations (simd.hpp) and no FMA contraction, so
their results must be bitwise identical to the scalar copy's.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import isa_mismatches, scalar_results

ISAS = ["scalar", "avx2", "avx512", "baseline"]

SCRIPT = r"""
import json, sys
import numpy as np
import bnorm
from bnorm import _core
rng = np.random.default_rng(7)
out = {}
cases = [((4, 3, 5, 7), 1), ((6, 5, 7, 3), -1), ((2, 3, 4500), 1), ((64, 2048, 1), 1),
         ((8, 300), -1), ((16, 8, 33), 1), ((300, 17), -1), ((2, 4, 40, 40), 1),
         ((501, 32), -1), ((9, 7, 7, 64), -1), ((3000, 8), -1), ((70, 16), -1),
         ((3, 5, 29), 1), ((5, 2, 14, 14), 1), ((7, 1030), -1), ((3, 3, 3, 520), -1)]
for dt in (np.float32, np.float64):
    for i, (shape, axis) in enumerate(cases):
        x = (rng.standard_normal(shape) * 3 + 5).astype(dt)
        g = rng.standard_normal(shape).astype(dt)
        C = shape[axis]
        w = rng.standard_normal(C).astype(dt)
        b = rng.standard_normal(C).astype(dt)
        rm, rv = np.zeros(C, dt), np.ones(C, dt)
        y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm,
                                           running_var=rv)
        dx, dw, db = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis)
        dxf, _, _ = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis, training=False)
        yi = bnorm.batch_norm(x, rm, rv, w, b, axis=axis)
        # the fused forms (residual, ReLU; masks from y and from x) and the
        # split phases of bnorm.distributed
        z = rng.standard_normal(shape).astype(dt)
        yf, _, _ = bnorm.batch_norm_train(x, w, b, axis=axis, activation="relu", residual=z)
        yfi = bnorm.batch_norm(x, rm, rv, w, b, axis=axis, activation="relu", residual=z)
        fdx, fdw, fdb, fdz = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis,
                                                       activation="relu", y=yf, residual=True)
        rdx, rdw, _ = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis,
                                                activation="relu", bias=b)
        # ReLU6 (a scale of 4 puts values past both of its bounds)
        w6 = w * dt(4)
        y6, sm6, si6 = bnorm.batch_norm_train(x, w6, b, axis=axis, activation="relu6",
                                              residual=z)
        y6i = bnorm.batch_norm(x, rm, rv, w6, b, axis=axis, activation="relu6")
        d6 = bnorm.batch_norm_backward(g, x, sm6, si6, w6, axis=axis, activation="relu6",
                                       y=y6, residual=True)
        r6 = bnorm.batch_norm_backward(g, x, sm6, si6, w6, axis=axis, activation="relu6",
                                       bias=b)
        for name, a in zip("y6 y6i d6x d6w d6b d6z r6x r6w r6b".split(),
                           (y6, y6i, *d6, *r6)):
            out[f"{dt.__name__}/{i}/{name}"] = a.tobytes().hex()
        from bnorm import distributed as dist
        n, mu, m2 = dist.moments(x, axis=axis)
        s1, s2 = dist.backward_reduce(g, x, sm, axis=axis)
        names = "y sm si rm rv dx dw db dxf yi yf yfi fdx fdw fdb fdz rdx rdw mu m2 s1 s2"
        for name, a in zip(names.split(),
                           (y, sm, si, rm, rv, dx, dw, db, dxf, yi, yf, yfi, fdx, fdw, fdb,
                            fdz, rdx, rdw, mu, m2, s1, s2)):
            out[f"{dt.__name__}/{i}/{name}"] = a.tobytes().hex()
        # the backward from the output (In-Place ABN), every activation
        sc = np.abs(w) + dt(1e-5)
        for act, prm in (("leaky_relu", 0.01), ("elu", 1.0), ("identity", 0.0)):
            yo = np.maximum(y, dt(-0.999)) if act == "elu" else y
            for tr in (True, False):
                r = bnorm.batch_norm_backward_from_output(
                    g, yo, si, sc, b, axis=axis, activation=act, activation_param=prm,
                    training=tr)
                for name, a in zip("dx dw db".split(), r):
                    out[f"{dt.__name__}/{i}/from_output/{act}/{tr}/{name}"] = a.tobytes().hex()
            r = bnorm.batch_norm_backward_from_output(g, yo, si, sc, b, axis=axis, activation=act,
                                                      activation_param=prm, residual=z)
            for name, a in zip("dx dw db dz".split(), r):
                out[f"{dt.__name__}/{i}/from_output/{act}/res/{name}"] = a.tobytes().hex()
# half-precision data (float parameters): every op of the suite
halves = [np.float16]
try:
    import ml_dtypes
    halves.append(ml_dtypes.bfloat16)
except ImportError:
    pass
for dt in halves:
    for i, (shape, axis) in enumerate(cases):
        x = (rng.standard_normal(shape) * 3 + 5).astype(dt)
        g = rng.standard_normal(shape).astype(dt)
        C = shape[axis]
        w = rng.standard_normal(C).astype(np.float32)
        b = rng.standard_normal(C).astype(np.float32)
        rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
        y, sm, si = bnorm.batch_norm_train(x, w, b, axis=axis, running_mean=rm,
                                           running_var=rv)
        dx, dw, db = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis)
        yi = bnorm.batch_norm(x, rm, rv, w, b, axis=axis, activation="relu", residual=g)
        fdx, _, _ = bnorm.batch_norm_backward(g, x, sm, si, w, axis=axis,
                                              activation="relu", bias=b)
        y6 = bnorm.batch_norm(x, rm, rv, w * 4, b, axis=axis, activation="relu6", residual=g)
        r6, _, _ = bnorm.batch_norm_backward(g, x, sm, si, w * 4, axis=axis,
                                             activation="relu6", bias=b)
        out[f"{np.dtype(dt).name}/{i}/y6"] = y6.tobytes().hex()
        out[f"{np.dtype(dt).name}/{i}/r6"] = r6.tobytes().hex()
        yo = np.maximum(y, dt(-0.99))
        od = bnorm.batch_norm_backward_from_output(g, yo, si, np.abs(w) + np.float32(1e-5), b,
                                                   axis=axis, activation="elu",
                                                   activation_param=1.0)
        ol = bnorm.batch_norm_backward_from_output(g, y, si, np.abs(w) + np.float32(1e-5), b,
                                                   axis=axis, activation="leaky_relu")
        for name, a in zip("y sm si rm rv dx dw db yi fdx odx odw ldx ldb".split(),
                           (y, sm, si, rm, rv, dx, dw, db, yi, fdx, od[0], od[1], ol[0],
                            ol[2])):
            out[f"{np.dtype(dt).name}/{i}/{name}"] = a.tobytes().hex()
print(json.dumps({"isa": _core.kernel_isa(), "results": out}))
"""


@pytest.fixture(scope="module")
def scalar():
    return scalar_results(SCRIPT)


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "scalar"])
def test_vector_copy_matches_scalar_bitwise(scalar, isa):
    bad = isa_mismatches(SCRIPT, isa, scalar)
    assert not bad, f"{isa} differs from scalar in {bad[:10]}"


# Pre-activations at the edge of the ReLU and ReLU6 masks: the vector copies
# recompute a mask from x in double lanes (DxMaskOp::in_registers, and the
# reducers), which must give the scalar copy's double decision on every
# value, and would not if any of them decided it in float. Each channel's bias puts
# (x - m) s + b at 0 (or 6) for an x0 near 0, and its x values are the 400
# floats (or halves) around x0: far smaller than m, so float's x - m drops
# their low bits, and on float32 data a few dozen values a run get a
# nonzero float pre-activation of the other sign than double's (and
# thousands an exact float 0 or 6), which a float-only decision gets wrong.
BORDER_SCRIPT = r"""
import hashlib, json
import numpy as np
import bnorm
from bnorm import _core
rng = np.random.default_rng(11)
out = {}
C, K = 24, 400
for dt in (np.float32, np.float16):
    f32 = np.float32
    mean = (rng.uniform(1, 3, C) * rng.choice([-1, 1], C)).astype(f32)
    invstd = rng.uniform(0.2, 3, C).astype(f32)
    w = (rng.uniform(0.5, 2, C) * rng.choice([-1, 1], C)).astype(f32)
    edge = np.where(np.arange(C) < C // 2, 0.0, 6.0)
    x0 = rng.uniform(-0.01, 0.01, C)
    b = (edge - (x0 - mean) * (invstd * w).astype(np.float64)).astype(f32)
    cols = []
    for c in range(C):
        up, down = [dt(x0[c])], [dt(x0[c])]
        for _ in range(K // 2):
            up.append(np.nextafter(up[-1], dt(np.inf)))
            down.append(np.nextafter(down[-1], dt(-np.inf)))
        cols.append(np.array(down[::-1] + up[1:], dtype=dt)[:K])
    rows = np.stack(cols, axis=1)  # (K, C): channel c's values down column c
    g = rng.standard_normal(rows.shape).astype(dt)
    cases = (("rows", rows, g, -1), ("planar", rows.T.reshape(1, C, K), g.T.reshape(1, C, K), 1),
             ("planar 2", rows.T.reshape(C, 2, K // 2).transpose(1, 0, 2).copy(),
              g.T.reshape(C, 2, K // 2).transpose(1, 0, 2).copy(), 1))
    for layout, x, gg, axis in cases:
        for act in ("relu", "relu6"):
            for training in (True, False):
                r = bnorm.batch_norm_backward(gg, x, mean, invstd, w, axis=axis,
                                              training=training, activation=act, bias=b)
                h = hashlib.sha256()
                for a in r:
                    h.update(np.ascontiguousarray(a).tobytes())
                out[f"{np.dtype(dt).name}/{layout}/{act}/{training}"] = h.hexdigest()
print(json.dumps({"isa": _core.kernel_isa(), "results": out}))
"""


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_mask_from_x_at_its_edges_matches_scalar(isa):
    scalar = scalar_results(BORDER_SCRIPT)
    assert len(scalar) == 24
    bad = isa_mismatches(BORDER_SCRIPT, isa, scalar)
    assert not bad, f"{isa} differs from scalar in {bad}"


def kernel_isa_when_asked(isa=None):
    """The copy a new process runs with BNORM_ISA=isa (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "BNORM_ISA"}
    if isa is not None:
        env["BNORM_ISA"] = isa
    r = subprocess.run([sys.executable, "-c",
                        "from bnorm import _core; print(_core.kernel_isa())"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_default_is_the_best_supported():
    isa = kernel_isa_when_asked()
    assert isa in ISAS
    runnable = [i for i in ISAS if i != "scalar" and kernel_isa_when_asked(i) == i]
    if not runnable:
        # a build of the scalar copy alone (-DBNORM_VECTOR_KERNELS=OFF), or a
        # CPU none of the vector copies runs on
        assert isa == "scalar"
        pytest.skip("no vector copy of the kernels runs here")
    assert isa != "scalar" and isa in runnable
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if " avx512f " in flags and " avx512bw " in flags and " avx512vl " in flags \
            and " avx512dq " in flags:
        assert isa == "avx512"


def test_unknown_isa_request_falls_back():
    res = subprocess.run([sys.executable, "-c",
                          "from bnorm import _core; print(_core.kernel_isa())"],
                         env=dict(os.environ, BNORM_ISA="nonsense"),
                         capture_output=True, text=True)
    assert res.stdout.strip() in ISAS

