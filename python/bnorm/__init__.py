"""bnorm: batch normalization on the CPU.

Functions (PyTorch's conventions; see the README's API table):
``batch_norm``, ``batch_norm_train``, ``batch_norm_backward``, the
``BatchNorm`` layer, the inference helpers ``inference_scale_shift`` and
``fold_batch_norm``, and ``bnorm.reference``, the same math in plain NumPy
written from the paper.
"""

from __future__ import annotations

import os as _os

from . import reference
from ._core import (BnormError, BnormInternalError, BnormMemoryError, BnormTypeError,
                    BnormUnknownStatusError, BnormValueError)
from ._core import get_num_threads as _get_num_threads
from ._core import set_num_threads as _set_num_threads
from ._core import version_string as _version_string
from ._fold import fold_batch_norm, inference_scale_shift
from ._functional import (batch_norm, batch_norm_backward, batch_norm_backward_from_output,
                          batch_norm_train)
from ._layer import BatchNorm
from ._population import PopulationStats

__version__ = _version_string()

# threadpoolctl, when installed, sees and limits bnorm's threads.
from ._threadpoolctl import register as _register_threadpoolctl  # noqa: E402

_register_threadpoolctl()

__all__ = [
    "BatchNorm",
    "BnormError",
    "BnormInternalError",
    "BnormMemoryError",
    "BnormTypeError",
    "BnormUnknownStatusError",
    "BnormValueError",
    "PopulationStats",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_backward_from_output",
    "batch_norm_train",
    "fold_batch_norm",
    "get_cmake_dir",
    "get_include",
    "get_library_dir",
    "get_pkgconfig_dir",
    "get_num_threads",
    "inference_scale_shift",
    "reference",
    "set_num_threads",
    "__version__",
]


def set_num_threads(n: int) -> None:
    """Sets how many threads bnorm's kernels use (process-wide, n >= 1).
    Results do not depend on it: they are bitwise the same for any n."""
    import operator
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an integer, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads bnorm's kernels use."""
    return _get_num_threads()


def get_include() -> str:
    """Directory holding ``bnorm/bnorm.h``, for building C/C++ code against
    the libbnorm inside this package."""
    return _os.path.join(_os.path.dirname(__file__), "include")


def get_library_dir() -> str:
    """Directory holding libbnorm (``libbnorm.so.0``, and ``libbnorm.so`` to
    link with ``-lbnorm``): the very library this package's extension uses."""
    return _os.path.join(_os.path.dirname(__file__), "lib")


def get_pkgconfig_dir() -> str:
    """Directory holding ``bnorm.pc``: put it on ``PKG_CONFIG_PATH``."""
    return _os.path.join(get_library_dir(), "pkgconfig")


def get_cmake_dir() -> str:
    """Directory holding ``bnormConfig.cmake``: pass it as ``bnorm_DIR`` (or
    on ``CMAKE_PREFIX_PATH``) to ``find_package(bnorm CONFIG)``."""
    return _os.path.join(get_library_dir(), "cmake", "bnorm")
