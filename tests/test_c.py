"""The C side, tested the way C users meet it: the C unit tests (built with
CMake from this source tree), the header under strict compilers, a consumer
project finding the pip-installed package, and the exported symbols."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bnorm

ROOT = Path(__file__).resolve().parent.parent
HAVE_CMAKE = shutil.which("cmake") is not None
HAVE_CC = shutil.which("cc") is not None or shutil.which("gcc") is not None
needs_toolchain = pytest.mark.skipif(not (HAVE_CMAKE and HAVE_CC),
                                     reason="needs cmake and a C compiler")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@needs_toolchain
@pytest.mark.parametrize("openmp", ["ON", "OFF"])
def test_c_unit_tests(tmp_path, openmp):
    build = tmp_path / "build"
    run(["cmake", "-S", ROOT, "-B", build, "-DBNORM_BUILD_TESTS=ON",
         f"-DBNORM_OPENMP={openmp}", "-DCMAKE_BUILD_TYPE=Release"])
    run(["cmake", "--build", build, "-j2"])
    out = run(["ctest", "--output-on-failure"], cwd=build)
    assert "100% tests passed" in out


@pytest.mark.parametrize("lang,std", [("c", "c99"), ("c", "c11"), ("c++", "c++11"),
                                      ("c++", "c++17")])
def test_header_compiles_strictly(tmp_path, lang, std):
    cc = shutil.which("gcc" if lang == "c" else "g++")
    if cc is None:
        pytest.skip("no gcc/g++")
    src = tmp_path / ("h.c" if lang == "c" else "h.cpp")
    src.write_text("#include <bnorm/bnorm.h>\nint main(void) { return BNORM_OK; }\n")
    run([cc, f"-std={std}", "-Wall", "-Wextra", "-pedantic", "-Werror",
         "-I", bnorm.get_include(), "-c", src, "-o", tmp_path / "h.o"])


@needs_toolchain
def test_consumer_finds_installed_package(tmp_path):
    build = tmp_path / "build"
    run(["cmake", "-S", ROOT / "tests" / "consumer", "-B", build,
         f"-Dbnorm_DIR={bnorm.get_cmake_dir()}"])
    run(["cmake", "--build", build])
    out = run([build / "consumer"])
    assert out.strip() == f"ok {bnorm.__version__}"


@pytest.mark.skipif(shutil.which("pkg-config") is None or not HAVE_CC,
                    reason="needs pkg-config and a C compiler")
def test_pkg_config_from_installed_package(tmp_path):
    pcdir = Path(bnorm.get_cmake_dir()).parent.parent / "pkgconfig"
    env = dict(os.environ, PKG_CONFIG_PATH=str(pcdir))
    flags = run(["pkg-config", "--cflags", "--libs", "bnorm"], env=env).split()
    assert run(["pkg-config", "--modversion", "bnorm"], env=env).strip() == bnorm.__version__
    libdir = [f[2:] for f in flags if f.startswith("-L")][0]
    exe = tmp_path / "consumer"
    run(["cc", ROOT / "tests" / "consumer" / "main.c", *flags, "-lm", "-o", exe,
         f"-Wl,-rpath,{libdir}"])
    assert run([exe]).startswith("ok ")


@pytest.mark.skipif(shutil.which("nm") is None or not sys.platform.startswith("linux"),
                    reason="needs nm on Linux")
def test_only_bnorm_symbols_are_exported():
    lib = Path(bnorm.get_cmake_dir()).parent.parent / "libbnorm.so.0"
    out = run(["nm", "-D", "--defined-only", lib])
    names = sorted(line.split()[-1] for line in out.splitlines() if line.strip())
    assert names and all(n.startswith("bnorm_") for n in names), names
    assert {"bnorm_forward_training", "bnorm_forward_inference", "bnorm_backward",
            "bnorm_status_string", "bnorm_version_number", "bnorm_version_string",
            "bnorm_set_num_threads", "bnorm_get_num_threads"} <= set(names)
    soname = run(["readelf", "-d", lib]) if shutil.which("readelf") else ""
    if soname:
        assert "[libbnorm.so.0]" in soname
