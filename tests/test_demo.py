"""The demo, briefly: at the same step the batch-norm network must beat the
plain one, and its inference form with population statistics must work.
Needs the demo extra (scikit-learn, matplotlib, tqdm)."""
import subprocess
import sys

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from bnorm.tools.demo import run  # noqa: E402


@pytest.mark.slow
def test_batch_norm_network_learns_faster(tmp_path):
    out = tmp_path / "demo.png"
    r = run(steps=600, seed=0, out=str(out), quiet=True, progress=False)
    c = r["curve"]
    assert c["step"][-1] == 600 and len(c["step"]) == len(c["bn"]) == len(c["plain"])
    # the paper's Figure 1(a): with BN, higher test accuracy at the same step
    assert c["bn"][-1] > c["plain"][-1] + 0.2, (c["bn"][-1], c["plain"][-1])
    assert c["bn"][-1] > 0.9
    # Algorithm 2's inference network (population statistics) works as well
    assert r["bn_final_population"] > 0.9
    # Figure 1(b, c): percentile bands are ordered
    for key in ("plain_pct", "bn_pct"):
        for p15, p50, p85 in c[key]:
            assert p15 <= p50 <= p85
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_demo_command(tmp_path):
    out = tmp_path / "fig.png"
    r = subprocess.run([sys.executable, "-m", "bnorm", "demo", "--steps", "200",
                        "--out", str(out), "--no-progress"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "final test accuracy" in r.stdout and "population statistics" in r.stdout
    assert out.is_file()
