"""Inference batch norm inside inference runtimes, in one run: standalone
batch-norm ONNX models run by

  ov-native    OpenVINO's CPU plugin, the standard BatchNormalization node,
  ov-bnorm     OpenVINO's CPU plugin, bnorm's extension node
               (ai.bnorm BatchNormInference, integrations/openvino),
  ort          ONNX Runtime's CPU BatchNormalization,
  bnorm        bnorm's NumPy call (bnorm.batch_norm, out= a preallocated array),
               on its OpenMP threads, timed before the others (see main),

on (N, C), (N, C, L), NCHW and NHWC float32 tensors. ONNX's
BatchNormalization has its channels on axis 1, so the NHWC model of the
standard node is Transpose -> BatchNormalization -> Transpose (what an
NHWC network exported to ONNX carries; a runtime may fold the transposes);
bnorm's node takes axis=-1. Each figure is the best of 3 x --repeat rounds of
--calls calls, each runner in a block of its own; the ratios are
the runner's time over ov-bnorm's.

  python benchmarks/runtimes.py [--threads 2] [--repeat 7] [--extension PATH]

Builds the extension with CMake into build/ov-bench unless --extension is
given. Needs openvino, onnx, onnxruntime (pip install openvino onnx onnxruntime).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CASES = [("(N,C)", (4096, 256), 1), ("(N,C,L)", (64, 128, 256), 1),
         ("NCHW", (32, 64, 56, 56), 1), ("NHWC", (32, 56, 56, 64), -1)]


def build_extension(build: Path) -> Path:
    import openvino.utils
    import bnorm
    subprocess.run(["cmake", "-S", str(ROOT / "integrations" / "openvino"), "-B", str(build),
                    f"-DOpenVINO_DIR={openvino.utils.get_cmake_path()}",
                    f"-Dbnorm_DIR={bnorm.get_cmake_dir()}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    return build / "libbnorm_openvino.so"


def onnx_models(shape, axis):
    """(standard model, bnorm model) for one case; the inputs are X only, the
    parameters initializers (as in an exported network)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    c = shape[axis]
    rng = np.random.default_rng(0)
    inits = {"scale": rng.standard_normal(c), "B": rng.standard_normal(c),
             "mean": rng.standard_normal(c), "var": rng.uniform(0.5, 2, c)}
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in inits.items()]
    io = ([helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)])
    names = ["scale", "B", "mean", "var"]
    if axis == 1:
        nodes = [helper.make_node("BatchNormalization", ["X"] + names, ["Y"], epsilon=1e-5)]
    else:
        rank = len(shape)
        to_first = [0, rank - 1] + list(range(1, rank - 1))
        to_last = [0] + list(range(2, rank)) + [1]
        nodes = [helper.make_node("Transpose", ["X"], ["Xc"], perm=to_first),
                 helper.make_node("BatchNormalization", ["Xc"] + names, ["Yc"], epsilon=1e-5),
                 helper.make_node("Transpose", ["Yc"], ["Y"], perm=to_last)]
    standard = helper.make_model(helper.make_graph(nodes, "bn", *io, initializer=inits),
                                 opset_imports=[helper.make_opsetid("", 17)])
    ours = helper.make_model(
        helper.make_graph([helper.make_node("BatchNormInference", ["X"] + names, ["Y"],
                                            domain="ai.bnorm", epsilon=1e-5, axis=axis)],
                          "bnorm", *io, initializer=inits),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.bnorm", 1)])
    onnx.checker.check_model(standard)
    return standard, ours, {i.name: numpy_helper.to_array(i) for i in inits}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--extension", help="a built libbnorm_openvino.so")
    args = ap.parse_args(argv)

    import onnx
    import onnxruntime as ort
    import openvino as ov
    import bnorm

    ext = Path(args.extension) if args.extension else build_extension(ROOT / "build" / "ov-bench")
    core = ov.Core()
    core.add_extension(str(ext))
    config = {"INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": "f32"}
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    # ONNX Runtime's threads spin after each run by default, on the cores the
    # next runner needs
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    bnorm.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    print(f"OpenVINO {ov.__version__}, ONNX Runtime {ort.__version__}, bnorm {bnorm.__version__} "
          f"({bnorm._core.kernel_isa()} kernels), "
          f"{args.threads} threads, float32, best of {args.repeat} x {args.calls} calls")
    header = (f"{'case':<9} {'shape':<17} {'ov-native':>10} {'ov-bnorm':>10} {'ort':>10} "
              f"{'bnorm':>10}   {'ov-native/ov-bnorm':>18} {'ort/ov-bnorm':>12}")
    print(header)
    # bnorm's own NumPy call first, on its OpenMP threads, before OpenVINO's
    # and ONNX Runtime's thread teams exist
    bnorm_best, bnorm_out = {}, {}
    for name, shape, axis in CASES:
        _, _, p = onnx_models(shape, axis)
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        out = np.empty_like(x)
        bnorm_best[name] = float("inf")
        for _ in range(3 * args.repeat):
            t = time.perf_counter()
            for _ in range(args.calls):
                bnorm.batch_norm(x, p["mean"], p["var"], p["scale"], p["B"], axis=axis, out=out)
            bnorm_best[name] = min(bnorm_best[name], (time.perf_counter() - t) / args.calls)
        bnorm_out[name] = out
    for name, shape, axis in CASES:
        standard, ours, p = onnx_models(shape, axis)
        onnx.save(standard, str(tmp / "std.onnx"))
        onnx.save(ours, str(tmp / "ours.onnx"))
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        ov_std = core.compile_model(core.read_model(str(tmp / "std.onnx")), "CPU", config)
        ov_ours = core.compile_model(core.read_model(str(tmp / "ours.onnx")), "CPU", config)
        r_std, r_ours = ov_std.create_infer_request(), ov_ours.create_infer_request()
        sess = ort.InferenceSession(str(tmp / "std.onnx"), so, providers=["CPUExecutionProvider"])
        runners = {
            # (no copy of the input or the output: the runtime's fastest call)
            "ov-native": lambda: r_std.infer({"X": x}, share_inputs=True, share_outputs=True),
            "ov-bnorm": lambda: r_ours.infer({"X": x}, share_inputs=True, share_outputs=True),
            "ort": lambda: sess.run(None, {"X": x}),
        }
        # the same result from all four (a benchmark of wrong answers is none)
        want = sess.run(None, {"X": x})[0]
        for k, got in (("ov-native", r_std.infer({"X": x})[0]),
                       ("ov-bnorm", r_ours.infer({"X": x})[0])):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4, err_msg=k)
        np.testing.assert_allclose(bnorm_out[name], want, rtol=1e-4, atol=1e-4)
        # each runner in a block of its own: two OpenVINO models timed in
        # alternation keep both models' thread teams awake on the same two
        # cores, which slowed whichever ran second by up to 3x here); the
        # blocks come round three times, so that a burst of load from the
        # machine's other tenants does not decide a figure
        best = {k: float("inf") for k in runners}
        for _ in range(3):
            for k, f in runners.items():
                for _ in range(3):
                    f()
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    for _ in range(args.calls):
                        f()
                    best[k] = min(best[k], (time.perf_counter() - t) / args.calls)
        best["bnorm"] = bnorm_best[name]
        ms = {k: v * 1e3 for k, v in best.items()}
        print(f"{name:<9} {'x'.join(map(str, shape)):<17} {ms['ov-native']:>8.3f}ms "
              f"{ms['ov-bnorm']:>8.3f}ms {ms['ort']:>8.3f}ms {ms['bnorm']:>8.3f}ms   "
              f"{best['ov-native'] / best['ov-bnorm']:>18.2f} {best['ort'] / best['ov-bnorm']:>12.2f}")
    print(f"OS threads of the process at the end: "
          f"{int(open('/proc/self/status').read().split('Threads:')[1].split()[0])}; "
          f"bnorm's backend: {bnorm._core.threading_backend()}")


if __name__ == "__main__":
    sys.exit(main())
