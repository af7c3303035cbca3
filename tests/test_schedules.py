"""The schedules of a training-side call give the same bits.

A planar call whose blocks of channels fit in L2 is reduced block by block
(Plan::whole_block); the map then follows each block while it is in L2 when
the arrays it moves are larger than the last-level cache and it is a
backward or a forward with runs of at least 2 KiB ("fused"), or runs after
all blocks as one sweep ("deferred"). A call whose single channels do
not fit in L2 runs the phases over all threads ("phases"), unless it is
larger than the last-level cache: then blocks that fit in L3 ("l3
blocks"). Which one runs depends on the cache sizes alone, which
BNORM_L2_BYTES and BNORM_L3_BYTES replace for a process, so each schedule
is reached here with small tensors:

  deferred  L2 4 MiB, L3 1 GiB: every case's blocks fit, nothing is larger
            than the last-level cache;
  fused     L2 4 MiB, L3 1 MiB (the smallest the library accepts): every
            case moves more than 1 MiB (the forward of 64x160x7x7, in runs
            of 49 values, stays deferred; the other shapes' runs are long);
  phases    L2 128 KiB (the smallest accepted): a channel of the first shape
            is 72,000 values, more than 7/8 of that in every dtype.
  l3 blocks L2 128 KiB, L3 4 MiB: the first shape's channels do not fit in
            L2, its tensors are larger than L3, and one channel's arrays
            (864 KB in float32 backward, 432 KB in the half types) fit in
            half a thread's share of L3 (917 KB with 2 threads), so blocks
            of one channel are reduced and mapped in L3 (float64's do not
            fit: phases).

Blocks whose runs make short spans (under 16 KiB per outer index, as in
64x160x7x7 and 600x4x7x7) are widened to as many channels as the budget
of the map allows ("wide"): in deferred and fused, 600x4x7x7 takes wide
blocks; in phases, its float32 and float64 channels (117,600 bytes of x)
do not fit in L2 and it runs the phases.

Each case runs with 2 threads in each schedule and with 1 thread deferred;
all five must give the same bytes for every output (compared by their
SHA-256).
"""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import hashlib, json, sys
import numpy as np
import bnorm
bnorm.set_num_threads(int(sys.argv[1]))
dtypes = [np.float32, np.float64, np.float16]
try:
    import ml_dtypes
    dtypes.append(ml_dtypes.bfloat16)
except ImportError:
    pass
rng = np.random.default_rng(11)
out = {}
for shape in [(20, 12, 60, 60), (64, 160, 7, 7), (4, 6, 8, 8000), (600, 4, 7, 7)]:
    for dt in dtypes:
        pd = np.float64 if dt == np.float64 else np.float32
        x = (rng.standard_normal(shape) * 3 + 5).astype(dt)
        g = rng.standard_normal(shape).astype(dt)
        z = rng.standard_normal(shape).astype(dt)
        C = shape[1]
        w = rng.standard_normal(C).astype(pd)
        b = rng.standard_normal(C).astype(pd)
        rm, rv = np.zeros(C, pd), np.ones(C, pd)
        y, sm, si = bnorm.batch_norm_train(x, w, b, axis=1, running_mean=rm, running_var=rv)
        yf, smf, sif = bnorm.batch_norm_train(x, w, b, axis=1, activation="relu", residual=z)
        r = {"y": y, "sm": sm, "si": si, "rm": rm, "rv": rv, "yf": yf}
        for k, a in zip("dx dw db".split(), bnorm.batch_norm_backward(g, x, sm, si, w, axis=1)):
            r[k] = a
        fused = bnorm.batch_norm_backward(g, x, smf, sif, w, axis=1, activation="relu", y=yf,
                                          residual=True)
        for k, a in zip("fdx fdw fdb fdz".split(), fused):
            r[k] = a
        frm = bnorm.batch_norm_backward_from_output(g, y, si, np.abs(w) + pd(1e-5), b, axis=1,
                                                    activation="leaky_relu")
        for k, a in zip("odx odw odb".split(), frm):
            r[k] = a
        for k, a in r.items():
            out[f"{'x'.join(map(str, shape))}/{np.dtype(dt).name}/{k}"] = hashlib.sha256(a.tobytes()).hexdigest()
print(json.dumps(out))
"""

SCHEDULES = {
    "deferred": {"BNORM_L2_BYTES": str(4 << 20), "BNORM_L3_BYTES": str(1 << 30)},
    "fused": {"BNORM_L2_BYTES": str(4 << 20), "BNORM_L3_BYTES": str(1 << 20)},
    "phases": {"BNORM_L2_BYTES": str(128 << 10), "BNORM_L3_BYTES": str(1 << 30)},
    "l3 blocks": {"BNORM_L2_BYTES": str(128 << 10), "BNORM_L3_BYTES": str(4 << 20)},
}


def results(schedule, threads):
    env = dict(os.environ, **SCHEDULES[schedule])
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(threads)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def deferred():
    return results("deferred", 2)


@pytest.mark.parametrize("schedule,threads",
                         [("fused", 2), ("phases", 2), ("l3 blocks", 2), ("deferred", 1)])
def test_schedule_gives_the_same_bits(deferred, schedule, threads):
    other = results(schedule, threads)
    assert other.keys() == deferred.keys()
    bad = [k for k, v in deferred.items() if other[k] != v]
    assert not bad, f"{schedule} with {threads} thread(s) differs in {bad[:10]}"
