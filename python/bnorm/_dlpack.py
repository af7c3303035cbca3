"""bfloat16 tensors through DLPack.

NumPy has no bfloat16, so ``numpy.from_dlpack`` refuses such tensors; with
ml_dtypes installed, this reads them as an ml_dtypes ``bfloat16`` array on
the producer's memory (no copy), following the DLPack protocol: the capsule
is marked used and the producer's deleter runs when the array is freed.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

_kDLCPU = 1
_kDLBfloat = 4


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    pass


_Deleter = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                             ("deleter", _Deleter)]

_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_name = ctypes.pythonapi.PyCapsule_SetName
_set_name.restype = ctypes.c_int
_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_is_valid = ctypes.pythonapi.PyCapsule_IsValid
_is_valid.restype = ctypes.c_int
_is_valid.argtypes = [ctypes.py_object, ctypes.c_char_p]


class _Owner:
    """Keeps the producer's tensor alive; calls its deleter when freed."""

    def __init__(self, managed):
        self.managed = managed

    def __del__(self):
        m = self.managed
        if m and m.contents.deleter:
            m.contents.deleter(m)


def is_bfloat16(obj: Any) -> bool:
    """Whether obj's DLPack dtype is bfloat16 (without consuming it)."""
    dt = getattr(obj, "dtype", None)
    return "bfloat16" in str(dt)


def bfloat16_from_dlpack(obj: Any) -> np.ndarray:
    import ml_dtypes  # raises ImportError: the caller turns it into a message

    capsule = obj.__dlpack__()
    if not _is_valid(capsule, b"dltensor"):
        raise BufferError("not an unused DLPack capsule")
    managed = ctypes.cast(_get_pointer(capsule, b"dltensor"),
                          ctypes.POINTER(_DLManagedTensor))
    t = managed.contents.dl_tensor
    if t.device.device_type != _kDLCPU:
        raise BufferError("the tensor is not in CPU memory")
    if (t.dtype.code, t.dtype.bits, t.dtype.lanes) != (_kDLBfloat, 16, 1):
        raise BufferError("the tensor is not bfloat16")
    _set_name(capsule, b"used_dltensor")  # ours now: the deleter is ours to call
    owner = _Owner(managed)
    ndim = t.ndim
    shape = tuple(t.shape[i] for i in range(ndim))
    if t.strides:
        strides = tuple(t.strides[i] for i in range(ndim))
    else:  # compact row-major
        strides, acc = [], 1
        for n in reversed(shape):
            strides.insert(0, acc)
            acc *= n
        strides = tuple(strides)
    count = int(np.prod(shape)) if shape else 1
    address = (t.data or 0) + t.byte_offset
    if count == 0:
        return np.empty(shape, ml_dtypes.bfloat16)
    lo = sum(min(0, (n - 1) * s) for n, s in zip(shape, strides))
    hi = sum(max(0, (n - 1) * s) for n, s in zip(shape, strides))
    words = (ctypes.c_uint16 * (hi - lo + 1)).from_address(address + 2 * lo)
    words._owner = owner  # the arrays below keep `words` alive, and it the tensor
    base = np.frombuffer(words, np.uint16)
    arr = np.lib.stride_tricks.as_strided(base[-lo:], shape, tuple(2 * s for s in strides),
                                          writeable=True)
    return arr.view(ml_dtypes.bfloat16)
