"""More than 2**31 elements in one tensor: indexing must be 64-bit
throughout. One float32 buffer of 2**31 + 14 values (8 GiB) is used in place
for inference, backward (dy = x = dx) and training forward, each checked
against closed-form results, including at the values past index 2**31.

Needs about 9 GiB of free memory and runs only when BNORM_TEST_LARGE=1 (CI
sets it for one of its test runs)."""
import os

import numpy as np
import pytest

import bnorm


def mem_available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


pytestmark = pytest.mark.skipif(
    os.environ.get("BNORM_TEST_LARGE") != "1" or mem_available_bytes() < (11 << 30),
    reason="set BNORM_TEST_LARGE=1 (needs ~9 GiB free) to run the > 2**31-element test")

INNER = (1 << 30) + 7          # odd
SHAPE = (1, 2, INNER)          # 2**31 + 14 elements


def fill(x):
    """Channel 0: 1, 3, 1, 3, ...; channel 1: 10, 14, 10, ... and its last
    value (element 2**31 + 13 of the buffer) is 1000."""
    x[0, 0, 0::2] = 1.0
    x[0, 0, 1::2] = 3.0
    x[0, 1, 0::2] = 10.0
    x[0, 1, 1::2] = 14.0
    x[0, 1, -1] = 1000.0


def exact_stats():
    n = INNER
    n_even, n_odd = (n + 1) // 2, (n - 1) // 2
    out = []
    for lo, hi, last in [(1.0, 3.0, None), (10.0, 14.0, 1000.0)]:
        vals = [(lo, n_even - (last is not None)), (hi, n_odd)]
        if last is not None:
            vals.append((last, 1))
        s1 = sum(v * k for v, k in vals)
        mean = s1 / n
        var = sum(k * (v - mean) ** 2 for v, k in vals) / n
        out.append((mean, var, s1))
    return out


def test_more_than_2_31_elements_in_place(threads):
    bnorm.set_num_threads(2)
    x = np.empty(SHAPE, np.float32)
    assert x.size > 2 ** 31
    (m0, v0, s0), (m1, v1, s1) = exact_stats()
    eps = 1e-5

    # inference, in place
    fill(x)
    rm = np.array([2.0, 12.0], np.float32)
    rv = np.array([1.0, 4.0], np.float32)
    y = bnorm.batch_norm(x, rm, rv, eps=eps, out=x)
    assert y is x
    inv = 1 / np.sqrt(np.float64(rv) + eps)
    assert x[0, 1, -1] == pytest.approx((1000 - 12) * inv[1], rel=1e-6)
    assert x[0, 1, -2] == pytest.approx((14 - 12) * inv[1], rel=1e-6)
    assert x[0, 0, 0] == pytest.approx(-inv[0], rel=1e-6)

    # backward with dy = x, dx written over them
    fill(x)
    sm = np.array([m0, m1], np.float32)
    si = (1 / np.sqrt(np.array([v0, v1]) + eps)).astype(np.float32)
    dx, dw, db = bnorm.batch_norm_backward(x, x, sm, si, out=x)
    assert db == pytest.approx([s0, s1], rel=1e-6)
    # sum(x (x - mean_saved)) * invstd = m (var + (mean - mean_saved) mean) * invstd
    for c, (m, v, _) in enumerate([(m0, v0, s0), (m1, v1, s1)]):
        want = INNER * (v + (m - float(sm[c])) * m) * float(si[c])
        assert dw[c] == pytest.approx(want, rel=1e-5)

    # training forward, in place
    fill(x)
    y, save_mean, save_invstd = bnorm.batch_norm_train(x, eps=eps, out=x)
    assert save_mean == pytest.approx([m0, m1], rel=1e-6)
    assert save_invstd == pytest.approx(1 / np.sqrt(np.array([v0, v1]) + eps), rel=1e-5)
    assert x[0, 1, -1] == pytest.approx((1000 - m1) / np.sqrt(v1 + eps), rel=1e-5)
    assert x[0, 0, 1] == pytest.approx((3 - m0) / np.sqrt(v0 + eps), rel=1e-5)
