"""The C side, tested the way C and C++ users meet it:

- the library built from this source tree three ways (shared with OpenMP,
  shared without OpenMP, static), each installed with ``cmake --install``;
  its C unit tests (ctest) run on each build;
- the examples in examples/c (a C and a C++ program) built against each
  install prefix with ``find_package(bnorm)`` and with pkg-config, and
  against the pip-installed wheel (``bnorm.get_cmake_dir()``, its .pc file);
- the header under strict C and C++ compilers, and the exported symbols.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bnorm

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "c"
HAVE_CMAKE = shutil.which("cmake") is not None
HAVE_CC = shutil.which("cc") is not None and shutil.which("c++") is not None
HAVE_PKG_CONFIG = shutil.which("pkg-config") is not None
needs_toolchain = pytest.mark.skipif(not (HAVE_CMAKE and HAVE_CC),
                                     reason="needs cmake and C/C++ compilers")
needs_pkg_config = pytest.mark.skipif(not (HAVE_PKG_CONFIG and HAVE_CC),
                                      reason="needs pkg-config and C/C++ compilers")

# The exported C API, in full: a new function must be added here on purpose
# (and to the ABI baseline, tests/abi).
API = sorted([
    "bnorm_backward", "bnorm_fold_into_layer", "bnorm_forward_inference",
    "bnorm_forward_training", "bnorm_get_num_threads", "bnorm_inference_scale_shift",
    "bnorm_kernel_isa", "bnorm_set_num_threads", "bnorm_set_parallel_for",
    "bnorm_status_string", "bnorm_threading_backend", "bnorm_version_number",
    "bnorm_version_string",
    # 0.2: statistics across processes
    "bnorm_moments", "bnorm_merge_moments", "bnorm_forward_normalize",
    "bnorm_backward_reduce", "bnorm_backward_apply",
    # 0.2: population statistics
    "bnorm_population_init", "bnorm_population_add", "bnorm_population_merge",
    "bnorm_population_result",
    # 0.2: fused residual and ReLU
    "bnorm_forward_training_fused", "bnorm_forward_inference_fused",
    "bnorm_backward_fused",
    # 0.3: caller-owned workspace
    "bnorm_workspace_size", "bnorm_forward_training_ws", "bnorm_backward_ws",
    "bnorm_moments_ws", "bnorm_forward_normalize_ws", "bnorm_backward_reduce_ws",
    "bnorm_backward_apply_ws",
    # 0.4: In-Place ABN's backward from the output
    "bnorm_backward_from_output", "bnorm_backward_from_output_ws",
])

# The shared build carries debug information for the ABI check (abidw).
# These builds test the library's forms (shared, static, without OpenMP),
# its install and its ABI, not the kernels: each holds the scalar copy alone,
# about a quarter of the compile time. The vector copies are held to the scalar
# copy's bits through the installed package (test_isa.py, test_half_bits.py)
# and run these C tests in the sanitized build (tests/sanitizers/run.sh).
BUILDS = {
    "shared": ["-DBNORM_OPENMP=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
               "-DBNORM_VECTOR_KERNELS=OFF"],
    "shared-no-openmp": ["-DBNORM_OPENMP=OFF", "-DCMAKE_BUILD_TYPE=Release",
                         "-DBNORM_VECTOR_KERNELS=OFF"],
    "static": ["-DBNORM_OPENMP=ON", "-DBNORM_SHARED=OFF", "-DCMAKE_BUILD_TYPE=Release",
               "-DBNORM_VECTOR_KERNELS=OFF"],
}
_built = {}


def run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def build_and_install(kind, tmp_path_factory):
    """(kind, build dir, install prefix) of one build of this source tree,
    built once per test session."""
    if not (HAVE_CMAKE and HAVE_CC):
        pytest.skip("needs cmake and C/C++ compilers")
    if kind not in _built:
        tmp = tmp_path_factory.mktemp(kind)
        build, prefix = tmp / "build", tmp / "prefix"
        run(["cmake", "-S", ROOT, "-B", build, "-DBNORM_BUILD_TESTS=ON",
             f"-DCMAKE_INSTALL_PREFIX={prefix}", "-DCMAKE_INSTALL_LIBDIR=lib",
             *BUILDS[kind]])
        run(["cmake", "--build", build, "-j2"])
        run(["cmake", "--install", build])
        _built[kind] = (kind, build, prefix)
    return _built[kind]


@pytest.fixture(scope="module", params=list(BUILDS))
def installed(request, tmp_path_factory):
    return build_and_install(request.param, tmp_path_factory)


def run_examples(bindir):
    out = run([bindir / "train_step"])
    assert out.rstrip().endswith("ok") and "step 2" in out
    out = run([bindir / "inference"])
    assert out.rstrip().endswith("ok") and "threading host, 4 threads" in out


def test_c_unit_tests(installed):
    kind, build, _ = installed
    out = run(["ctest", "-j2", "--output-on-failure"], cwd=build)
    assert "100% tests passed" in out, out


def test_install_layout(installed):
    kind, _, prefix = installed
    lib = prefix / "lib"
    assert (prefix / "include" / "bnorm" / "bnorm.h").is_file()
    assert (lib / "cmake" / "bnorm" / "bnormConfig.cmake").is_file()
    assert (lib / "cmake" / "bnorm" / "bnormConfigVersion.cmake").is_file()
    assert (lib / "pkgconfig" / "bnorm.pc").is_file()
    if kind == "static":
        assert (lib / "libbnorm.a").is_file() and not (lib / "libbnorm.so").exists()
    else:
        # the usual chain: link name -> SONAME -> real file
        assert os.readlink(lib / "libbnorm.so") == "libbnorm.so.0"
        assert os.readlink(lib / "libbnorm.so.0") == f"libbnorm.so.{bnorm.__version__}"


def test_examples_with_find_package_from_install_prefix(installed, tmp_path):
    kind, _, prefix = installed
    run(["cmake", "-S", EXAMPLES, "-B", tmp_path, f"-DCMAKE_PREFIX_PATH={prefix}"])
    run(["cmake", "--build", tmp_path])
    run_examples(tmp_path)
    if shutil.which("readelf"):
        needed = [line.split("[")[1].rstrip("]") for line in
                  run(["readelf", "-d", tmp_path / "train_step"]).splitlines()
                  if "(NEEDED)" in line]
        if kind == "static":  # nothing of bnorm's is needed at run time
            assert not any("bnorm" in n for n in needed), needed
        else:  # OpenMP stays private to libbnorm: the program does not link it
            assert "libbnorm.so.0" in needed and not any("gomp" in n for n in needed), needed


@needs_pkg_config
def test_examples_with_pkg_config_from_install_prefix(installed, tmp_path):
    kind, _, prefix = installed
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))
    static = ["--static"] if kind == "static" else []
    flags = run(["pkg-config", *static, "--cflags", "--libs", "bnorm"], env=env).split()
    assert run(["pkg-config", "--modversion", "bnorm"], env=env).strip() == bnorm.__version__
    rpath = f"-Wl,-rpath,{prefix / 'lib'}"
    run(["cc", "-std=c99", EXAMPLES / "train_step.c", *flags, "-lm", rpath,
         "-o", tmp_path / "train_step"])
    run(["c++", "-std=c++11", EXAMPLES / "inference.cpp", *flags, "-pthread", rpath,
         "-o", tmp_path / "inference"])
    run_examples(tmp_path)


def test_install_prefix_is_relocatable(tmp_path_factory, tmp_path):
    """A prefix moved elsewhere still works through CMake and pkg-config."""
    _, _, prefix = build_and_install("shared", tmp_path_factory)
    moved = tmp_path / "moved"
    shutil.copytree(prefix, moved, symlinks=True)
    run(["cmake", "-S", EXAMPLES, "-B", tmp_path / "b", f"-DCMAKE_PREFIX_PATH={moved}"])
    cache = (tmp_path / "b" / "CMakeCache.txt").read_text()
    assert f"bnorm_DIR:PATH={moved}/lib/cmake/bnorm" in cache
    if HAVE_PKG_CONFIG:
        env = dict(os.environ, PKG_CONFIG_PATH=str(moved / "lib" / "pkgconfig"))
        flags = run(["pkg-config", "--cflags", "--libs", "bnorm"], env=env).split()
        assert f"-L{moved}/lib" in [os.path.normpath(f) if not f.startswith("-L") else
                                    "-L" + os.path.normpath(f[2:]) for f in flags]
        assert f"-I{moved}/include" in ["-I" + os.path.normpath(f[2:]) for f in flags
                                       if f.startswith("-I")]


VALGRIND = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite", "--show-possibly-lost=no"]


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_examples_and_c_tests_clean_under_valgrind(tmp_path_factory, tmp_path):
    """memcheck: no invalid read or write, no use of uninitialised memory, no
    definite leak, in the examples and in the C API and hostile-input tests.
    (OpenMP's thread stacks show as 'possibly lost': they live as long as
    its team.)"""
    _, build, prefix = build_and_install("shared", tmp_path_factory)
    run(["cmake", "-S", EXAMPLES, "-B", tmp_path, f"-DCMAKE_PREFIX_PATH={prefix}"])
    run(["cmake", "--build", tmp_path])
    for exe in [tmp_path / "train_step", tmp_path / "inference",
                build / "tests" / "c" / "test_c_api", build / "tests" / "c" / "test_hostile"]:
        r = subprocess.run(VALGRIND + [str(exe)], capture_output=True, text=True)
        assert r.returncode == 0, f"{exe.name}:\n{r.stdout}\n{r.stderr}"


@needs_toolchain
def test_examples_with_find_package_from_wheel(tmp_path):
    run(["cmake", "-S", EXAMPLES, "-B", tmp_path, f"-Dbnorm_DIR={bnorm.get_cmake_dir()}"])
    run(["cmake", "--build", tmp_path])
    run_examples(tmp_path)
    # they run against the very library in the package
    if shutil.which("ldd"):
        assert str(Path(bnorm.get_library_dir()) / "libbnorm.so.0") in \
            run(["ldd", tmp_path / "train_step"])


@needs_pkg_config
def test_examples_with_pkg_config_from_wheel(tmp_path):
    env = dict(os.environ, PKG_CONFIG_PATH=bnorm.get_pkgconfig_dir())
    flags = run(["pkg-config", "--cflags", "--libs", "bnorm"], env=env).split()
    assert run(["pkg-config", "--modversion", "bnorm"], env=env).strip() == bnorm.__version__
    rpath = f"-Wl,-rpath,{bnorm.get_library_dir()}"
    run(["cc", EXAMPLES / "train_step.c", *flags, "-lm", rpath, "-o", tmp_path / "train_step"])
    run(["c++", EXAMPLES / "inference.cpp", *flags, "-pthread", rpath,
         "-o", tmp_path / "inference"])
    run_examples(tmp_path)


@pytest.mark.skipif(shutil.which("ldd") is None, reason="needs ldd")
def test_extension_uses_the_packaged_library():
    import bnorm._core as core
    out = run(["ldd", core.__file__])
    line = [l for l in out.splitlines() if "libbnorm.so.0" in l]
    assert line, out
    assert Path(line[0].split("=>")[1].split("(")[0].strip()).resolve() == \
        (Path(bnorm.get_library_dir()) / "libbnorm.so.0").resolve()


def test_wheel_holds_one_copy_of_the_library():
    lib = Path(bnorm.get_library_dir())
    copies = [p.name for p in lib.iterdir() if p.name.startswith("libbnorm.so")]
    assert sorted(copies) == ["libbnorm.so", "libbnorm.so.0"]
    # the link name is a linker script, not a second copy
    assert (lib / "libbnorm.so").stat().st_size < 200
    assert "INPUT(libbnorm.so.0)" in (lib / "libbnorm.so").read_text()


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


@pytest.mark.skipif(shutil.which("nm") is None or not sys.platform.startswith("linux"),
                    reason="needs nm on Linux")
def test_only_the_api_is_exported():
    lib = Path(bnorm.get_library_dir()) / "libbnorm.so.0"
    out = run(["nm", "-D", "--defined-only", lib])
    names = sorted(line.split()[-1] for line in out.splitlines() if line.strip())
    assert names == API
    if shutil.which("readelf"):
        assert "[libbnorm.so.0]" in run(["readelf", "-d", lib])


# -- ABI stability ----------------------------------------------------------
ABI_CHECK = ROOT / "tests" / "abi" / "check.sh"
BASELINE = ROOT / "tests" / "abi" / "libbnorm.abi"
needs_abigail = pytest.mark.skipif(
    shutil.which("abidw") is None or shutil.which("abidiff") is None
    or shutil.which("bash") is None,
    reason="needs abidw and abidiff (apt-get install abigail-tools)")


@pytest.fixture(scope="module")
def debug_library(tmp_path_factory):
    _, build, _ = build_and_install("shared", tmp_path_factory)
    return build / "cpp" / "libbnorm.so.0"


def abi_check(lib, baseline=None):
    cmd = ["bash", ABI_CHECK, lib] + ([baseline] if baseline else [])
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True)


@needs_abigail
def test_abi_matches_the_baseline(debug_library):
    r = abi_check(debug_library)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no change" in r.stdout, r.stdout


def _decl(text, name):
    m = re.search(rf"    <function-decl name='{name}'.*?</function-decl>\n", text, re.S)
    assert m, name
    return m.group(0)


@needs_abigail
def test_abi_check_fails_on_removed_or_changed_functions(debug_library, tmp_path):
    base = BASELINE.read_text()
    # the baseline holds a function the library no longer has: removed
    sym = re.search(r"    <elf-symbol name='bnorm_backward'[^\n]*\n", base).group(0)
    removed = base.replace(sym, sym + sym.replace("bnorm_backward", "bnorm_gone"))
    decl = _decl(removed, "bnorm_backward")
    removed = removed.replace(decl, decl + decl.replace("bnorm_backward", "bnorm_gone"))
    (tmp_path / "removed.abi").write_text(removed)
    r = abi_check(debug_library, tmp_path / "removed.abi")
    assert r.returncode == 1 and "1 Removed" in r.stdout, r.stdout + r.stderr
    # a parameter's type differs (int64_t channels -> int32_t)
    int32 = re.search(r"<typedef-decl name='int32_t' type-id='[^']+' id='([^']+)'", base).group(1)
    decl = _decl(base, "bnorm_forward_inference")
    changed = re.sub(r"<parameter type-id='[^']+' name='channels'/>",
                     f"<parameter type-id='{int32}' name='channels'/>", decl)
    assert changed != decl
    (tmp_path / "changed.abi").write_text(base.replace(decl, changed))
    r = abi_check(debug_library, tmp_path / "changed.abi")
    assert r.returncode == 1 and "1 Changed" in r.stdout, r.stdout + r.stderr


@needs_abigail
def test_abi_check_accepts_additions(debug_library, tmp_path):
    base = BASELINE.read_text()
    # a baseline without bnorm_threading_backend: the library adds it
    sym = re.search(r"    <elf-symbol name='bnorm_threading_backend'[^\n]*\n", base).group(0)
    older = base.replace(sym, "").replace(_decl(base, "bnorm_threading_backend"), "")
    (tmp_path / "older.abi").write_text(older)
    r = abi_check(debug_library, tmp_path / "older.abi")
    assert r.returncode == 0 and "additions only" in r.stdout, r.stdout + r.stderr
