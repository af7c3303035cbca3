"""One OpenMP runtime per process. libbnorm needs libgomp.so.1 by its
SONAME; PyTorch's wheel ships libgomp.so.1 under that SONAME too, and a
wheel of bnorm bundles its own the same way (never renamed), so the dynamic
loader keeps one: the first loaded, whichever package imports first. Checked
in a fresh interpreter for both import orders: the mapped files, what
threadpoolctl reports, and that each library's thread count holds."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("threadpoolctl")

SCRIPT = r"""
import json, sys
for name in sys.argv[1:]:
    __import__(name)
import numpy as np
import threadpoolctl
import torch
import bnorm
import bnorm.torch  # the operators: bnorm's work inside a torch program
maps = open("/proc/self/maps").read().splitlines()
gomp = sorted({l.split()[-1] for l in maps if "libgomp" in l.rsplit("/", 1)[-1]})
openmp = [i["filepath"] for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openmp"]
bnorm.set_num_threads(1)
torch.set_num_threads(2)
x = torch.randn(8, 16, 12, 12)
m = bnorm.torch.BatchNorm2d(16)
for _ in range(3):
    m(x).square().sum().backward()
    (x @ x.transpose(-1, -2)).sum()
    bnorm.batch_norm_train(np.ones((4, 3, 5), np.float32))
held = [bnorm.get_num_threads(), torch.get_num_threads()]
bnorm.set_num_threads(2)
torch.set_num_threads(1)
m(x).sum().backward()
held += [bnorm.get_num_threads(), torch.get_num_threads()]
with threadpoolctl.threadpool_limits(1):
    limited = [bnorm.get_num_threads(), torch.get_num_threads()]
print(json.dumps({"gomp": gomp, "openmp": openmp, "held": held, "limited": limited,
                  "backend": bnorm._core.threading_backend()}))
"""


@pytest.mark.parametrize("first", ["torch", "bnorm"])
def test_one_openmp_runtime_beside_torch_in_either_import_order(first):
    second = "bnorm" if first == "torch" else "torch"
    out = subprocess.run([sys.executable, "-c", SCRIPT, first, second], check=True,
                         capture_output=True, text=True, timeout=300).stdout
    got = json.loads(out.strip().splitlines()[-1])
    if got["backend"] == "none":
        pytest.skip("bnorm built without OpenMP")
    assert len(got["gomp"]) == 1, got["gomp"]        # one libgomp mapped
    assert got["openmp"] == got["gomp"], got         # and threadpoolctl sees that one
    assert got["held"] == [1, 2, 2, 1]               # each library's own count holds
    assert got["limited"] == [1, 1]                  # threadpoolctl limits both


def test_the_package_carries_no_renamed_openmp_runtime():
    # auditwheel's default would graft libgomp under a new name and SONAME
    # (bnorm.libs/libgomp-<hash>.so.1.0.0): a second runtime beside PyTorch's.
    # A wheel carries it as bnorm/lib/libgomp.so.1, SONAME libgomp.so.1.
    import bnorm
    from pathlib import Path
    pkg = Path(bnorm.__file__).parent
    renamed = [p.name for p in pkg.parent.glob("bnorm.libs/*gomp*")]
    assert not renamed, renamed
    bundled = pkg / "lib" / "libgomp.so.1"
    if bundled.exists():
        data = bundled.read_bytes()
        assert b"libgomp.so.1\0" in data            # its SONAME string, unchanged
        lib = (pkg / "lib" / "libbnorm.so.0").read_bytes()
        assert b"$ORIGIN" in lib                     # libbnorm finds it beside itself
