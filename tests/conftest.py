import os

import numpy as np
import pytest

import bnorm

# Accuracy bounds the tests hold the core to, as the largest absolute error
# relative to the largest magnitude of the reference result.
TOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-12}


def values_around(x0, dt, k):
    """The k consecutive values of the type dt centred on dt(x0), in
    increasing order (the values next to a mask's edge)."""
    up, down = [dt(x0)], [dt(x0)]
    for _ in range(k // 2):
        up.append(np.nextafter(up[-1], dt(np.inf)))
        down.append(np.nextafter(down[-1], dt(-np.inf)))
    return (down[::-1] + up[1:])[:k]


def rel_err(a, ref):
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-300)
    return float(np.max(np.abs(a - ref))) / scale if ref.size else 0.0


def assert_close(a, ref, dtype, factor=1.0, what=""):
    err = rel_err(a, ref)
    bound = TOL[np.dtype(dtype)] * factor
    assert err <= bound, f"{what}: relative error {err:.3g} > {bound:.3g}"


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def effective_threads(n):
    """What get_num_threads() reports after set_num_threads(n): n, except in
    a build without OpenMP (-DBNORM_OPENMP=OFF), which always runs on one."""
    from bnorm._core import threading_backend
    return 1 if threading_backend() == "none" else n


@pytest.fixture
def threads():
    """Restores bnorm's thread count after a test that changes it."""
    before = bnorm.get_num_threads()
    yield
    bnorm.set_num_threads(before)


def make_case(rng, shape, axis, dtype, offset=0.0, scale=1.0):
    x = (offset + scale * rng.standard_normal(shape)).astype(dtype)
    C = shape[axis]
    w = rng.uniform(0.5, 2.0, C).astype(dtype) * rng.choice([-1, 1], C)
    b = rng.standard_normal(C).astype(dtype)
    return x, w, b


def assert_central_differences(loss, pairs, every=1, h=1e-6, tol=1e-5):
    """Each (array, gradient) pair of ``pairs``: every ``every``-th element's
    gradient matches the central difference of ``loss()`` (which reads the
    arrays, changed in place and restored) to tol * (1 + |difference|)."""
    for arr, grad in pairs:
        for idx in list(np.ndindex(arr.shape))[::every]:
            old = arr[idx]
            arr[idx] = old + h
            up = loss()
            arr[idx] = old - h
            down = loss()
            arr[idx] = old
            num = (up - down) / (2 * h)
            assert abs(num - grad[idx]) <= tol * (1 + abs(num)), (idx, num, grad[idx])


def run_with_isa(script, isa):
    """The JSON that script prints, run in a process whose kernels are the
    instruction-set copy isa (BNORM_ISA; the best supported if not)."""
    import json
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, BNORM_ISA=isa),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def scalar_results(script):
    """The results script prints (a JSON {"isa", "results"}) with the scalar copy."""
    res = run_with_isa(script, "scalar")
    assert res["isa"] == "scalar"
    return res["results"]


def isa_mismatches(script, isa, scalar):
    """The keys of script's results that differ between isa and the scalar
    copy's `scalar` (skips when this CPU lacks isa)."""
    res = run_with_isa(script, isa)
    if res["isa"] != isa:
        pytest.skip(f"{isa} is not supported here (got {res['isa']})")
    assert res["results"].keys() == scalar.keys()
    return [k for k, v in scalar.items() if res["results"][k] != v]
