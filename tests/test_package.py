"""The package as users see it: version, paths, threads, the command line."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bnorm
from conftest import effective_threads

ROOT = Path(__file__).resolve().parent.parent


def test_version_comes_from_the_header():
    header = (Path(bnorm.get_include()) / "bnorm" / "bnorm.h").read_text()
    parts = [re.search(rf"#define BNORM_VERSION_{p} (\d+)", header).group(1)
             for p in ("MAJOR", "MINOR", "PATCH")]
    assert bnorm.__version__ == ".".join(parts)
    src = (ROOT / "cpp" / "include" / "bnorm" / "bnorm.h")
    if src.exists():  # the installed header is the source header
        assert src.read_text() == header
    from importlib.metadata import version
    assert version("bnorm") == bnorm.__version__


def test_paths():
    assert (Path(bnorm.get_include()) / "bnorm" / "bnorm.h").is_file()
    cmake = Path(bnorm.get_cmake_dir())
    assert (cmake / "bnormConfig.cmake").is_file()
    assert (cmake / "bnormConfigVersion.cmake").is_file()


def test_thread_setting(threads):
    from bnorm._core import threading_backend
    bnorm.set_num_threads(1)
    assert bnorm.get_num_threads() == 1
    bnorm.set_num_threads(3)
    # a build without OpenMP (-DBNORM_OPENMP=OFF) always runs on one thread
    assert bnorm.get_num_threads() == (1 if threading_backend() == "none" else 3)
    assert threading_backend() in ("openmp", "none")


def test_public_names():
    for name in ["batch_norm", "batch_norm_train", "batch_norm_backward",
                 "BatchNorm", "reference", "set_num_threads", "get_num_threads",
                 "get_include", "get_cmake_dir", "get_library_dir",
                 "get_pkgconfig_dir", "inference_scale_shift", "fold_batch_norm",
                 "__version__"]:
        assert hasattr(bnorm, name), name
    for name in ["batch_norm", "batch_norm_train", "batch_norm_backward"]:
        assert callable(getattr(bnorm.reference, name))
    assert (Path(bnorm.__file__).parent / "py.typed").is_file()


def test_gil_is_released_during_compute():
    # Two Python threads computing at once must not corrupt each other.
    import threading
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((16, 8, 64, 64)).astype(np.float32) for _ in range(4)]
    want = [bnorm.batch_norm_train(x)[0] for x in xs]
    got = [None] * 4

    def work(i):
        for _ in range(3):
            got[i] = bnorm.batch_norm_train(xs[i])[0]

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_bench_quick_runs():
    r = subprocess.run([sys.executable, "-m", "bnorm", "bench", "--quick",
                        "--repeat", "3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "train fwd" in r.stdout and "backward" in r.stdout
    assert "small call (2,3,4,5)" in r.stdout


def test_bench_fused_runs_every_fused_op():
    r = subprocess.run([sys.executable, "-m", "bnorm", "bench", "--fused", "--quick",
                        "--repeat", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for op in ("train fwd BN+ReLU ", "train fwd BN+ReLU6", "train fwd BN+Add+ReLU",
               "inference BN+ReLU ", "backward BN+ReLU (y)", "backward BN+ReLU6 (x)",
               "backward BN+Add+ReLU"):
        assert op in r.stdout, op
    assert "fused over unfused: slowest" in r.stdout


@pytest.mark.parametrize("shape", ["32,64,56,56", "4x0x6x6", "4xfoo"])
def test_bench_bad_shape_is_a_clear_error(shape):
    r = subprocess.run([sys.executable, "-m", "bnorm", "bench", "--shape", shape],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "--shape" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_bench_interleaves_its_timings(monkeypatch):
    # every function runs in every round, each round starting one further
    # along, and each gets the median of its own times
    from bnorm.tools import bench
    order = []
    fake_clock = iter(range(10**6))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(fake_clock))
    costs = {"a": 0, "b": 5, "c": 9}  # extra clock ticks each call takes

    def make(name):
        def fn():
            order.append(name)
            for _ in range(costs[name]):
                next(fake_clock)
        return fn

    med = bench._interleaved_medians({k: make(k) for k in costs}, 4)
    assert order[:6] == ["a", "a", "b", "b", "c", "c"]  # the warm-up
    assert order[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert med == {"a": 1, "b": 6, "c": 10}


def test_bench_json_for_one_shape(tmp_path):
    import json
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "bnorm", "bench", "--shape", "4x8x6x6",
                        "--threads", "2", "--repeat", "2", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["threads"] == effective_threads(2)
    cases = doc["cases"]
    assert {(c["op"], c["layout"]) for c in cases} == {
        (op, lay) for op in ("inference", "train fwd", "backward")
        for lay in ("NCHW", "NHWC")}
    for c in cases:
        assert c["bnorm_s"] > 0 and c["copy_s"] > 0
        assert c["copy_s"] == min(c["copy_numpy_s"], c["copy_parallel_s"])
        assert c["statistics_s"] > 0 and c["statistics_ns_per_value_per_thread"] > 0
        assert c["floor_copies"] == {"inference": 1.0, "train fwd": 1.0, "backward": 1.5}[c["op"]]
        assert c["bitwise_1_vs_n_threads"] is True
    bar = doc["summary"]["bar"]
    assert any(b["what"].startswith("small call, training") for b in bar)
    for b in bar:
        assert b["holds"] == (b["measured"] <= b["bar"] if "small call" in b["what"]
                              else b["measured"] >= b["bar"])
    assert "the bar (float data" in r.stdout
    # the statistics' arithmetic limit, from the compiled helper
    limit = doc["summary"]["statistics_arithmetic_limit_ns"]
    assert 0 < limit < 100, limit
    assert doc["summary"]["statistics_limit_isa"] in ("plain", "avx2", "avx512")


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 1000, 100003])
def test_parallel_copy_floor_copies_exactly(threads, n, compiled):
    from bnorm.tools.floor import ParallelCopy
    src = np.random.default_rng(n).integers(0, 255, n, dtype=np.uint8)
    dst = np.zeros_like(src)
    pc = ParallelCopy(threads, compiled=compiled)
    try:
        pc(dst, src)
        np.testing.assert_array_equal(dst, src)
        with pytest.raises(ValueError, match="one size"):
            pc(dst[: n // 2], src) if n > 1 else pc(np.zeros(n + 1, np.uint8), src)
    finally:
        pc.close()


def test_compiled_floor_copy_runs_a_team_of_the_threads_asked():
    # the floor is the machine's copy speed with the run's thread count: the
    # installed package's copy is compiled, with OpenMP exactly when libbnorm
    # has it, and its OpenMP team has that many threads; a build without
    # OpenMP times the copy on Python threads instead
    from bnorm._core import threading_backend
    from bnorm.tools import _copy
    from bnorm.tools.floor import ParallelCopy
    with_openmp = threading_backend() != "none"
    assert _copy.openmp == with_openmp
    assert ParallelCopy(2).kind == ("openmp" if with_openmp else "python-threads")
    src = np.arange(1 << 16, dtype=np.float32)
    for threads in (1, 2, 3):
        dst = np.zeros_like(src)
        assert _copy.parallel_copy(dst, src, threads) == (threads if with_openmp else 1)
        np.testing.assert_array_equal(dst, src)
    # the read pass: the OR of the 8-byte words, every word read whatever
    # the thread count and wherever the one set bit is
    words = np.zeros(1001, np.uint64)
    for threads in (1, 2, 3, 8):
        for at in (0, 1, 499, 1000):
            words[:] = 0
            words[at] = np.uint64(1) << np.uint64(at % 64)
            assert _copy.parallel_read(words, threads) == 1 << (at % 64)
            if with_openmp:
                assert ParallelCopy(threads).read(words) == 1 << (at % 64)
    if not with_openmp:
        # the Python-threads stand-in has no read pass; it says so
        pc = ParallelCopy(2)
        try:
            with pytest.raises(RuntimeError, match="compiled helper"):
                pc.read(words)
        finally:
            pc.close()
    assert _copy.parallel_read(np.zeros(0, np.uint64), 2) == 0
    with pytest.raises(ValueError, match="C-contiguous"):
        _copy.parallel_read(words[::2], 2)
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros_like(src)
        ro.flags.writeable = False
        _copy.parallel_copy(ro, src, 2)
    with pytest.raises(ValueError, match="at least 1"):
        _copy.parallel_copy(np.zeros_like(src), src, 0)


def test_floor_copies_by_op_and_layout():
    from bnorm.tools.floor import copies, last_level_cache_bytes
    llc = 32 << 20
    assert [copies(op, True, llc + 1, llc) for op in ("inference", "train fwd", "backward")] \
        == [1.0, 1.5, 2.5]
    assert [copies(op, True, llc, llc) for op in ("inference", "train fwd", "backward")] \
        == [1.0, 1.0, 1.5]
    assert copies("backward", False, 10 * llc, llc) == 1.5
    assert copies("train fwd", True, 10 * llc, None) == 1.0
    with pytest.raises(ValueError):
        copies("forward", True, 1, llc)
    size = last_level_cache_bytes()
    assert size is None or size >= 1 << 16


@pytest.mark.parametrize("flag,getter", [("--includedir", "get_include"),
                                         ("--libdir", "get_library_dir"),
                                         ("--cmake-dir", "get_cmake_dir"),
                                         ("--pkgconfigdir", "get_pkgconfig_dir")])
def test_directory_options(flag, getter):
    r = subprocess.run([sys.executable, "-m", "bnorm", flag], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    assert path == Path(getattr(bnorm, getter)()) and path.is_dir()
    marker = {"--includedir": "bnorm/bnorm.h", "--libdir": "libbnorm.so.0",
              "--cmake-dir": "bnormConfig.cmake", "--pkgconfigdir": "bnorm.pc"}[flag]
    assert (path / marker).is_file()


def test_directory_options_are_exclusive():
    r = subprocess.run([sys.executable, "-m", "bnorm", "--libdir", "--includedir"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_info_command():
    r = subprocess.run([sys.executable, "-m", "bnorm", "info"], capture_output=True,
                       text=True)
    assert r.returncode == 0
    assert f"bnorm {bnorm.__version__}" in r.stdout


def test_accuracy_command_runs():
    r = subprocess.run([sys.executable, "-m", "bnorm", "accuracy"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "vs reference" in r.stdout and "float32 batch variance" in r.stdout


# -- threadpoolctl -----------------------------------------------------------
def test_threadpoolctl_sees_and_limits_bnorm(threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    bnorm.set_num_threads(2)
    info = [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "bnorm"]
    assert len(info) == 1 and info[0]["version"] == bnorm.__version__
    assert info[0]["num_threads"] == effective_threads(2)
    assert "libbnorm" in info[0]["filepath"]
    with threadpoolctl.threadpool_limits(limits=1):
        assert bnorm.get_num_threads() == 1
    assert bnorm.get_num_threads() == effective_threads(2)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert bnorm.get_num_threads() == 1


def test_library_does_not_import_the_tools():
    # the command-line tools live in bnorm.tools; importing the library (and
    # its PyTorch and MPI modules' pure-Python parts) loads none of them
    code = ("import sys, bnorm, bnorm.distributed; "
            "print(sorted(m for m in sys.modules if m.startswith('bnorm.tools')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out


def test_bench_report_writes_the_printed_table(tmp_path):
    page = tmp_path / "perf.md"
    r = subprocess.run([sys.executable, "-m", "bnorm", "bench", "--shape", "4x8x6x6",
                        "--layout", "nchw", "--repeat", "3", "--report", str(page)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = page.read_text()
    assert text.startswith("# `python -m bnorm bench --shape 4x8x6x6"), text[:200]
    # the table as printed, inside one code block
    table = [ln for ln in r.stdout.splitlines() if ln.startswith(("inference", "train fwd"))]
    assert len(table) == 2 and all(ln in text for ln in table), (table, text)
    assert text.count("```") == 2
