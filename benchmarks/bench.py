"""Run the benchmark from a source checkout: ``python benchmarks/bench.py``.

The same as ``python -m bnorm bench`` (see ``python/bnorm/tools/bench.py``); it
needs bnorm installed (``pip install .``).
"""
import sys

from bnorm.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
