"""Command line: ``python -m bnorm demo``, ``bench [--quick]``, ``syncbench``,
``accuracy``, ``info``,
and ``--includedir / --libdir / --cmake-dir / --pkgconfigdir`` for builds
of C/C++ code against the libbnorm in this package."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnorm",
                                     description="bnorm: batch normalization on the CPU")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--includedir", action="store_true",
                       help="print the directory holding bnorm/bnorm.h")
    where.add_argument("--libdir", action="store_true",
                       help="print the directory holding libbnorm")
    where.add_argument("--cmake-dir", "--cmakedir", dest="cmake_dir", action="store_true",
                       help="print the directory holding bnormConfig.cmake "
                            "(for -Dbnorm_DIR=...)")
    where.add_argument("--pkgconfigdir", action="store_true",
                       help="print the directory holding bnorm.pc "
                            "(for PKG_CONFIG_PATH)")
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser("bench", help="time bnorm against the NumPy reference "
                                         "and PyTorch (when installed)")
    bench.add_argument("--quick", action="store_true",
                       help="a short run on a few small shapes")
    bench.add_argument("--threads", type=int, default=None,
                       help="threads for bnorm and PyTorch (default: all)")
    bench.add_argument("--dtype", choices=["float32", "float64", "float16", "bfloat16"],
                       default="float32",
                       help="data type (bfloat16 needs ml_dtypes); parameters are float32 "
                            "for the half types")
    bench.add_argument("--repeat", type=int, default=None,
                       help="timed calls per case (median reported; default 15)")
    bench.add_argument("--shape", default=None,
                       help="one shape instead of the suite, e.g. 32x64x56x56 "
                            "(4-D shapes run as NCHW and NHWC)")
    bench.add_argument("--layout", choices=["both", "nchw", "nhwc"], default="both",
                       help="which layouts of 4-D shapes to run")
    bench.add_argument("--json", dest="json_path", default=None, metavar="PATH",
                       help="also write the results as JSON (- for stdout)")
    bench.add_argument("--report", default=None, metavar="PATH",
                       help="also write the printed tables as a Markdown page "
                            "(how docs/performance.md is made)")
    bench.add_argument("--fused", action="store_true",
                       help="the fused BN+ReLU and BN+Add+ReLU ops against the unfused pair")
    bench.add_argument("--compile", dest="with_compile", action="store_true",
                       help="also time torch.compile (Inductor) of the training forward and "
                            "of forward+backward (compiles once per shape: minutes)")
    bench.add_argument("--reference", action="store_true",
                       help="also time the NumPy reference (always on with --quick)")
    bench.add_argument("--model", default=None, metavar="NAME",
                       help="a whole network's training and inference step instead "
                            "(resnet18, resnet50, mobilenet_v2, densenet_small, "
                            "resnet18_leaky): native, convert, fuse (and --compile), "
                            "float32 and bfloat16 autocast (or --dtype), NCHW and "
                            "channels_last (or --layout)")
    bench.add_argument("--batch", type=int, default=16, help="--model: batch size (16)")
    bench.add_argument("--size", type=int, default=224, help="--model: image size (224)")
    bench.add_argument("--aa", action="store_true",
                       help="--model: also time a second copy of the native model (its "
                            "speedup is the run's own noise)")
    bench.add_argument("--bound", action="store_true",
                       help="--model: also time the network with its batch norms and "
                            "activations removed (free-bn: what no batch norm can beat)")
    bench.add_argument("--rounds", type=int, default=7,
                       help="--model: timed steps per configuration, interleaved (7)")
    demo = sub.add_parser("demo", help="the paper's first experiment in miniature: "
                                        "sigmoid networks with and without batch norm "
                                        "on handwritten digits (needs bnorm[demo])")
    demo.add_argument("--steps", type=int, default=50000,
                      help="training steps (default 50000, as in the paper)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    demo.add_argument("--out", default="bnorm-demo.png",
                      help="where to write the figure (default bnorm-demo.png; '' for none)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    sync = sub.add_parser("syncbench", help="the cost of SyncBatchNorm across processes "
                                             "(runs itself under mpiexec; needs bnorm[mpi])")
    sync.add_argument("--ranks", type=int, default=2, help="processes (default 2)")
    sync.add_argument("--repeat", type=int, default=15, help="timed steps per case")
    sync.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    sync.add_argument("--json", dest="json_path", default=None, metavar="PATH",
                      help="also write the results as JSON")
    sub.add_parser("accuracy", help="the worst errors against the reference, "
                                    "PyTorch and float64, measured")
    sub.add_parser("info", help="version, threads, and where the C library is")
    args = parser.parse_args(argv)

    if args.includedir or args.libdir or args.cmake_dir or args.pkgconfigdir:
        if args.command is not None:
            parser.error("the directory options take no command")
        import bnorm
        print(bnorm.get_include() if args.includedir else
              bnorm.get_library_dir() if args.libdir else
              bnorm.get_cmake_dir() if args.cmake_dir else
              bnorm.get_pkgconfig_dir())
        return 0

    if args.command == "bench":
        from .tools.bench import reporting, run
        if args.threads is not None and args.threads < 1:
            parser.error("--threads must be >= 1")
        with reporting(args.report, list(argv if argv is not None else sys.argv[1:])):
            if args.model is not None:
                from .tools import models
                if args.model not in models.MODELS:
                    parser.error(f"--model: one of {', '.join(models.MODELS)}")
                if args.batch < 2 or args.size < 32 or args.rounds < 1:
                    parser.error("--batch >= 2, --size >= 32 and --rounds >= 1, please")
                given = argv if argv is not None else sys.argv[1:]
                dtypes = ("float32", "bfloat16")
                if any(a.startswith("--dtype") for a in given):
                    if args.dtype not in dtypes:
                        parser.error("--model: --dtype float32 or bfloat16 (autocast)")
                    dtypes = (args.dtype,)
                formats = {"both": ("nchw", "channels_last"), "nchw": ("nchw",),
                           "nhwc": ("channels_last",)}[args.layout]
                from .tools.modelbench import run as run_model
                return run_model(args.model, batch=args.batch, size=args.size,
                                 rounds=args.rounds, threads=args.threads,
                                 with_compile=args.with_compile, dtypes=dtypes,
                                 formats=formats, json_path=args.json_path, aa=args.aa,
                                 bound=args.bound)
            if args.fused:
                from .tools.fusedbench import run as run_fused
                return run_fused(quick=args.quick, threads=args.threads, dtype=args.dtype,
                                 repeat=args.repeat, shape=args.shape, layout=args.layout)
            return run(quick=args.quick, threads=args.threads, dtype=args.dtype,
                       repeat=args.repeat, shape=args.shape, layout=args.layout,
                       json_path=args.json_path, with_reference=args.reference,
                       with_compile=args.with_compile)
    if args.command == "demo":
        if args.steps < 1:
            parser.error("--steps must be >= 1")
        if not args.lr > 0:
            parser.error("--lr must be > 0")
        try:
            from .tools.demo import run as run_demo
            import matplotlib  # noqa: F401
            import sklearn  # noqa: F401
            import tqdm  # noqa: F401
        except ImportError as e:
            print(f"the demo needs scikit-learn, matplotlib and tqdm ({e.name} is missing): "
                  f'pip install "bnorm[demo]"', file=sys.stderr)
            return 1
        run_demo(steps=args.steps, seed=args.seed, out=args.out or None, lr=args.lr,
                 progress=not args.no_progress)
        return 0
    if args.command == "syncbench":
        if args.ranks < 1 or args.repeat < 1:
            parser.error("--ranks and --repeat must be >= 1")
        from .tools.syncbench import launch
        return launch(args.ranks, args.repeat, args.dtype, args.json_path)
    if args.command == "accuracy":
        from .tools.accuracy import run as run_accuracy
        return run_accuracy()
    if args.command == "info":
        import bnorm
        print(f"bnorm {bnorm.__version__}")
        from ._core import kernel_isa, threading_backend
        print(f"kernels     {kernel_isa()}")
        print(f"threads     {bnorm.get_num_threads()} ({threading_backend()})")
        print(f"include dir {bnorm.get_include()}")
        print(f"library dir {bnorm.get_library_dir()}")
        print(f"cmake dir   {bnorm.get_cmake_dir()}")
        print(f"pkg-config  {bnorm.get_pkgconfig_dir()}")
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
